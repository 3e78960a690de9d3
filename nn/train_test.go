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
