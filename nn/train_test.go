package nn_test

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// separable returns n 1×8×8 images of 4 classes: class k has a bright 4×4
// quadrant k on top of noise.
func separable(n int, seed uint64) (*tensor.Tensor[float32], []int) {
	rng := tensor.NewRNG(seed, 3)
	x := tensor.New[float32](n, 1, 8, 8)
	tensor.FillNormal(rng, x, 0, 1)
	y := make([]int, n)
	for i := range y {
		k := rng.IntN(4)
		y[i] = k
		r0, c0 := 4*(k/2), 4*(k%2)
		for r := r0; r < r0+4; r++ {
			for c := c0; c < c0+4; c++ {
				x.Data[i*64+r*8+c] += 1
			}
		}
	}
	return x, y
}

func TestTrainSeparable(t *testing.T) {
	xtr, ytr := separable(256, 1)
	xte, yte := separable(200, 2)
	set, err := nn.NewTensorDataset(xtr, ytr)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"mlp", "convnet-bn"} {
		t.Run(name, func(t *testing.T) {
			var m nn.Model[float32]
			rng := tensor.NewRNG(5, 1)
			if name == "mlp" {
				m, err = nn.NewMLP[float32](nn.MLPConfig{InChannels: 1, Height: 8, Width: 8, Classes: 4, Hidden: []int{32}}, rng)
			} else {
				m, err = nn.NewConvNet[float32](nn.ConvNetConfig{InChannels: 1, Height: 8, Width: 8, Classes: 4, NetWidth: 8, Depth: 2, Norm: "batchnorm"}, rng)
			}
			if err != nil {
				t.Fatal(err)
			}
			acc0, loss0, err := nn.Evaluate(m, xte, yte, 64)
			if err != nil {
				t.Fatal(err)
			}
			cfg := nn.DefaultTrainConfig[float32]()
			cfg.Epochs, cfg.BatchSize, cfg.LR, cfg.Seed = 10, 32, 0.05, 7
			cfg.Schedule = nn.HalfwayDecay(cfg.Epochs)
			var reports []nn.Progress
			if err := nn.Train(m, set, cfg, func(p nn.Progress) { reports = append(reports, p) }); err != nil {
				t.Fatal(err)
			}
			acc, loss, err := nn.Evaluate(m, xte, yte, 64)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("before: acc %.3f loss %.3f; after: acc %.3f loss %.3f", acc0, loss0, acc, loss)
			if acc < 0.93 || loss >= loss0 {
				t.Errorf("after training: accuracy %.3f (want ≥ 0.93), loss %.3f (before %.3f)", acc, loss, loss0)
			}
			if len(reports) != 10*8 {
				t.Fatalf("%d progress reports, want 80", len(reports))
			}
			last := reports[len(reports)-1]
			if last.Epoch != 9 || last.Step != 7 || last.Steps != 8 || last.GlobalStep != 80 || last.TotalSteps != 80 || !last.EpochDone || last.Images != 256 || !(last.ImagesPerSec > 0) {
				t.Errorf("last report %+v", last)
			}
			if reports[0].LR != 0.05 || math.Abs(last.LR-0.005) > 1e-12 {
				t.Errorf("learning rates %g … %g, want 0.05 … 0.005", reports[0].LR, last.LR)
			}
			if !m.(nn.Trainable).Training() {
				t.Error("Train and Evaluate did not restore training mode")
			}
		})
	}
}

func TestTrainDeterministicAndAugment(t *testing.T) {
	xtr, ytr := separable(64, 1)
	set, _ := nn.NewTensorDataset(xtr, ytr)
	run := func(seed uint64, aug bool) []float32 {
		m, err := nn.NewMLP[float32](nn.MLPConfig{InChannels: 1, Height: 8, Width: 8, Classes: 4, Hidden: []int{8}}, tensor.NewRNG(1, 1))
		if err != nil {
			t.Fatal(err)
		}
		cfg := nn.DefaultTrainConfig[float32]()
		cfg.Epochs, cfg.BatchSize, cfg.Seed = 2, 16, seed
		calls := 0
		if aug {
			cfg.Augment = func(tp *ag.Tape[float32], x *ag.Var[float32]) *ag.Var[float32] {
				calls++
				return ag.Scale(x, -1)
			}
		}
		if err := nn.Train(m, set, cfg, nil); err != nil {
			t.Fatal(err)
		}
		if aug && calls != 8 {
			t.Errorf("augmentation called %d times, want 8", calls)
		}
		return slices.Clone(m.Params()[0].Data)
	}
	a, b, c, d := run(1, false), run(1, false), run(2, false), run(1, true)
	if !slices.Equal(a, b) {
		t.Error("same seed, different weights")
	}
	if slices.Equal(a, c) {
		t.Error("different seeds, same weights")
	}
	if slices.Equal(a, d) {
		t.Error("augmentation had no effect")
	}
}

func TestTrainErrors(t *testing.T) {
	m, _ := nn.NewMLP[float32](nn.MLPConfig{InChannels: 1, Height: 8, Width: 8, Classes: 4}, tensor.NewRNG(1, 1))
	x, y := separable(16, 1)
	if _, err := nn.NewTensorDataset(x, y[:3]); err == nil {
		t.Error("3 labels for 16 images accepted")
	}
	bad, _ := nn.NewTensorDataset(tensor.New[float32](4, 3, 8, 8), []int{0, 1, 2, 3})
	if err := nn.Train(m, bad, nn.DefaultTrainConfig[float32](), nil); err == nil || !strings.Contains(err.Error(), "expects input") {
		t.Errorf("wrong image shape: error %v", err)
	}
	set, _ := nn.NewTensorDataset(x, y)
	cfg := nn.DefaultTrainConfig[float32]()
	cfg.LR, cfg.Epochs, cfg.BatchSize = 1e30, 3, 4
	if err := nn.Train(m, set, cfg, nil); err == nil {
		t.Error("divergence not reported")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cfg = nn.DefaultTrainConfig[float32]()
	cfg.Context = ctx
	if err := nn.Train(m, set, cfg, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled training: error %v", err)
	}
	if _, _, err := nn.Evaluate(m, x, []int{0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 4); err == nil {
		t.Error("label 9 of 4 classes accepted by Evaluate")
	}
}

// TestEvaluateLeavesModelAlone checks that Evaluate does not touch the
// running statistics and that the result does not depend on the batch
// size (no batch statistics in evaluation mode).
func TestEvaluateLeavesModelAlone(t *testing.T) {
	m, err := nn.New[float32]("convnet-bn", []int{1, 8, 8}, 4, tensor.NewRNG(1, 1))
	if err != nil {
		t.Fatal(err)
	}
	x, y := separable(50, 3)
	bufs := m.(nn.Buffered[float32]).Buffers()
	before := slices.Clone(bufs[0].Data)
	acc1, loss1, err := nn.Evaluate(m, x, y, 7)
	if err != nil {
		t.Fatal(err)
	}
	acc2, loss2, err := nn.Evaluate(m, x, y, 50)
	if err != nil {
		t.Fatal(err)
	}
	if acc1 != acc2 || math.Abs(loss1-loss2) > 1e-5 {
		t.Errorf("batch 7: %g %g; batch 50: %g %g", acc1, loss1, acc2, loss2)
	}
	if !slices.Equal(before, bufs[0].Data) {
		t.Error("Evaluate changed the running statistics")
	}
}

// TestTrainMix: a Mix hook sees the batch after augmentation, its changes
// reach the network, and the step's loss is r·CE(targets) +
// (1−r)·CE(targets∘perm), with hard labels and with soft targets.
func TestTrainMix(t *testing.T) {
	const n, r = 16, 0.3
	x, y := separable(n, 4)
	set, _ := nn.NewTensorDataset(x, y)
	soft := tensor.New[float32](n, 4)
	for i := range n {
		for k := range 4 {
			soft.Data[i*4+k] = 0.1
		}
		soft.Data[i*4+(y[i]+1)%4] = 0.7
	}
	newModel := func() nn.Model[float32] {
		m, err := nn.NewMLP[float32](nn.MLPConfig{InChannels: 1, Height: 8, Width: 8, Classes: 4, Hidden: []int{8}}, tensor.NewRNG(3, 1))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	// rowOf finds a batch image's index in the data set (the images are
	// distinct: they carry Gaussian noise). Mix zeroes pixel 0 first.
	rowOf := func(img []float32) int {
		for i := range n {
			if slices.Equal(img[1:], x.Data[i*64+1:(i+1)*64]) {
				return i
			}
		}
		t.Fatal("a batch image is not in the data set")
		return -1
	}
	for _, useSoft := range []bool{false, true} {
		cfg := nn.DefaultTrainConfig[float32]()
		cfg.BatchSize, cfg.Seed = n, 9
		if useSoft {
			cfg.SoftTargets = soft
		}
		var seen *tensor.Tensor[float32]
		perm := make([]int, n)
		for i := range perm {
			perm[i] = n - 1 - i
		}
		cfg.Mix = func(b *tensor.Tensor[float32]) ([]int, float64) {
			for i := range n {
				b.Data[i*64] = 0
			}
			seen = b.Clone()
			return perm, r
		}
		var loss float64
		if err := nn.Train(newModel(), set, cfg, func(p nn.Progress) { loss = p.Loss }); err != nil {
			t.Fatal(err)
		}
		// The same loss from the untrained model on the batch Mix left.
		tp := ag.NewTape[float32]()
		m0 := newModel()
		logits := m0.Forward(tp.Const(seen), nn.Bind(tp, m0)).Value
		target := func(i int) []float64 {
			t := make([]float64, 4)
			src := rowOf(seen.Data[i*64 : (i+1)*64])
			if useSoft {
				for k := range 4 {
					t[k] = float64(soft.Data[src*4+k])
				}
			} else {
				t[y[src]] = 1
			}
			return t
		}
		var want float64
		for i := range n {
			row := logits.Data[i*4 : (i+1)*4]
			mx := slices.Max(row)
			var z float64
			for _, v := range row {
				z += math.Exp(float64(v - mx))
			}
			ce := func(t []float64) (s float64) {
				for k, p := range t {
					s -= p * (float64(row[k]-mx) - math.Log(z))
				}
				return s
			}
			want += r*ce(target(i)) + (1-r)*ce(target(perm[i]))
		}
		want /= n
		if math.Abs(loss-want) > 1e-5 {
			t.Errorf("soft %v: mixed loss %.6f, want %.6f", useSoft, loss, want)
		}
	}
	cfg := nn.DefaultTrainConfig[float32]()
	cfg.Mix = func(*tensor.Tensor[float32]) ([]int, float64) { return []int{0}, 0.5 }
	if err := nn.Train(newModel(), set, cfg, nil); err == nil || !strings.Contains(err.Error(), "permutation of 1") {
		t.Errorf("short permutation: %v", err)
	}
}
