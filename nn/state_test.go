package nn_test

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// TestBatchNormRunningStats recomputes the first batch norm's input (conv0
// of a one-block ConvNet) by hand and checks the running statistics after
// two training-mode forward passes, then that evaluation mode uses and
// keeps them.
func TestBatchNormRunningStats(t *testing.T) {
	m, err := nn.NewConvNet[float64](nn.ConvNetConfig{InChannels: 2, Height: 6, Width: 6, Classes: 3, NetWidth: 3, Depth: 1, Norm: "batchnorm"}, tensor.NewRNG(1, 1))
	if err != nil {
		t.Fatal(err)
	}
	if !m.Training() {
		t.Fatal("a new model should be in training mode")
	}
	if got := m.BufferNames(); !slices.Equal(got, []string{"norm0.running_mean", "norm0.running_var"}) {
		t.Fatalf("buffer names %v", got)
	}
	rm, rv := m.Buffers()[0], m.Buffers()[1]
	wantM, wantV := []float64{0, 0, 0}, []float64{1, 1, 1}
	for step := range 2 {
		x := randTensor[float64](uint64(10+step), 4, 2, 6, 6)
		// conv0 by hand: 3×3, pad 1, bias; then per-channel mean and
		// unbiased variance over N·H·W = 144 values.
		w, b := m.Params()[0], m.Params()[1]
		for f := range 3 {
			var vals []float64
			for n := range 4 {
				for i := range 6 {
					for j := range 6 {
						s := b.Data[f]
						for c := range 2 {
							for di := range 3 {
								for dj := range 3 {
									ii, jj := i+di-1, j+dj-1
									if ii < 0 || jj < 0 || ii >= 6 || jj >= 6 {
										continue
									}
									s += w.Data[((f*2+c)*3+di)*3+dj] * x.Data[((n*2+c)*6+ii)*6+jj]
								}
							}
						}
						vals = append(vals, s)
					}
				}
			}
			var mean, ss float64
			for _, v := range vals {
				mean += v
			}
			mean /= float64(len(vals))
			for _, v := range vals {
				ss += (v - mean) * (v - mean)
			}
			wantM[f] = 0.9*wantM[f] + 0.1*mean
			wantV[f] = 0.9*wantV[f] + 0.1*ss/float64(len(vals)-1)
		}
		tp := ag.NewTape[float64]()
		m.Forward(tp.Const(x), nn.BindConst(tp, m))
		if err := tp.Err(); err != nil {
			t.Fatal(err)
		}
		tp.Release()
		for f := range 3 {
			if math.Abs(rm.Data[f]-wantM[f]) > 1e-12 || math.Abs(rv.Data[f]-wantV[f]) > 1e-12 {
				t.Fatalf("after step %d channel %d: running mean %g var %g, want %g %g", step+1, f, rm.Data[f], rv.Data[f], wantM[f], wantV[f])
			}
		}
	}

	// Evaluation mode: running statistics used, not changed. With the
	// running statistics set to the exact statistics of a batch, eval and
	// train logits of that batch agree; with other statistics they differ.
	x := randTensor[float64](20, 4, 2, 6, 6)
	logits := func() []float64 {
		tp := ag.NewTape[float64]()
		defer tp.Release()
		y := m.Forward(tp.Const(x), nn.BindConst(tp, m))
		if err := tp.Err(); err != nil {
			t.Fatal(err)
		}
		return slices.Clone(y.Value.Data)
	}
	m.SetTraining(false)
	before := slices.Concat(rm.Data, rv.Data)
	evalOut := logits()
	if !slices.Equal(before, slices.Concat(rm.Data, rv.Data)) {
		t.Fatal("evaluation mode changed the running statistics")
	}
	m.SetTraining(true)
	trainOut := logits()
	if slices.Equal(evalOut, trainOut) {
		t.Fatal("evaluation and training mode give the same logits")
	}
	// Set the running statistics to the batch's, solved from the update
	// the training-mode pass just made.
	for f := range 3 {
		// after the update r' = 0.9 r + 0.1 s, so s = (r' − 0.9 r)/0.1.
		rm.Data[f] = (rm.Data[f] - 0.9*before[f]) / 0.1
		// The eval formula uses the biased variance; convert from unbiased.
		rv.Data[f] = (rv.Data[f] - 0.9*before[3+f]) / 0.1 * 143 / 144
	}
	m.SetTraining(false)
	evalOut = logits()
	for i := range evalOut {
		if math.Abs(evalOut[i]-trainOut[i]) > 1e-9 {
			t.Fatalf("eval with the batch's statistics: logit %d = %g, training mode %g", i, evalOut[i], trainOut[i])
		}
	}
}

func TestBatchNormNeedsMoreThanOneValue(t *testing.T) {
	c, err := nn.NewConvNet[float32](nn.ConvNetConfig{InChannels: 1, Height: 2, Width: 2, Classes: 2, NetWidth: 2, Depth: 1, Norm: "batchnorm"}, tensor.NewRNG(1, 1))
	if err != nil {
		t.Fatal(err)
	}
	tp := ag.NewTape[float32]()
	c.Forward(tp.Const(tensor.New[float32](1, 1, 2, 2)), nn.Bind(tp, c))
	if tp.Err() != nil {
		t.Fatalf("1×2×2 maps are 4 values per channel: %v", tp.Err())
	}
	cfg := c.Config()
	cfg.Height, cfg.Width = 1, 1
	cfg.Pool = "none"
	c1, err := nn.NewConvNet[float32](cfg, tensor.NewRNG(1, 1))
	if err != nil {
		t.Fatal(err)
	}
	tp = ag.NewTape[float32]()
	c1.Forward(tp.Const(tensor.New[float32](1, 1, 1, 1)), nn.Bind(tp, c1))
	if err := tp.Err(); err == nil || !strings.Contains(err.Error(), "more than one value") {
		t.Fatalf("batch norm of one value per channel: error %v", err)
	}
	c1.SetTraining(false)
	tp = ag.NewTape[float32]()
	c1.Forward(tp.Const(tensor.New[float32](1, 1, 1, 1)), nn.Bind(tp, c1))
	if err := tp.Err(); err != nil {
		t.Fatalf("evaluation mode needs no batch: %v", err)
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "w.npz")
	shape := []int{3, 32, 32}
	a, err := nn.New[float32]("resnet18", shape, 10, tensor.NewRNG(1, 1))
	if err != nil {
		t.Fatal(err)
	}
	// Move the running statistics off their initial values.
	tp := ag.NewTape[float32]()
	a.Forward(tp.Const(randTensor[float32](1, 2, 3, 32, 32)), nn.BindConst(tp, a))
	if err := tp.Err(); err != nil {
		t.Fatal(err)
	}
	tp.Release()
	if err := nn.Save(path, a); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("the directory holds %d entries after Save, want only the file (no temporaries)", len(ents))
	}
	b, _ := nn.New[float32]("resnet18", shape, 10, tensor.NewRNG(2, 1))
	if err := nn.Load(path, b); err != nil {
		t.Fatal(err)
	}
	ab, bb := a.(nn.Buffered[float32]), b.(nn.Buffered[float32])
	for _, pair := range [][2][]*tensor.Tensor[float32]{{a.Params(), b.Params()}, {ab.Buffers(), bb.Buffers()}} {
		for i := range pair[0] {
			if !slices.Equal(pair[0][i].Data, pair[1][i].Data) {
				t.Fatalf("tensor %d differs after the round trip", i)
			}
		}
	}
	if rm := bb.Buffers()[0].Data; rm[0] == 0 && rm[1] == 0 {
		t.Error("running mean was not saved")
	}

	// float64 model, in memory: same values.
	c, _ := nn.New[float64]("resnet18", shape, 10, tensor.NewRNG(3, 1))
	var buf bytes.Buffer
	if err := nn.WriteWeights(&buf, a); err != nil {
		t.Fatal(err)
	}
	if err := nn.ReadWeights(bytes.NewReader(buf.Bytes()), int64(buf.Len()), c); err != nil {
		t.Fatal(err)
	}
	if float32(c.Params()[0].Data[5]) != a.Params()[0].Data[5] {
		t.Error("float64 model loaded other values")
	}
}

func TestLoadMismatch(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "w.npz")
	mk := func(width int, seed uint64) *nn.ConvNet[float32] {
		m, err := nn.NewConvNet[float32](nn.ConvNetConfig{InChannels: 1, Height: 28, Width: 28, Classes: 10, NetWidth: width}, tensor.NewRNG(seed, 1))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if err := nn.Save(path, mk(16, 1)); err != nil {
		t.Fatal(err)
	}
	other := mk(32, 2)
	orig := slices.Clone(other.Params()[0].Data)
	err := nn.Load(path, other)
	if err == nil {
		t.Fatal("loading width-16 weights into a width-32 ConvNet succeeded")
	}
	for _, want := range []string{"conv0.weight", "[16 1 3 3]", "[32 1 3 3]"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if !slices.Equal(orig, other.Params()[0].Data) {
		t.Error("a failed Load changed the model")
	}

	// Missing and unexpected names.
	bn, _ := nn.NewConvNet[float32](nn.ConvNetConfig{InChannels: 1, Height: 28, Width: 28, Classes: 10, NetWidth: 16, Norm: "batchnorm"}, tensor.NewRNG(1, 1))
	if err := nn.Load(path, bn); err == nil || !strings.Contains(err.Error(), "norm0.running_mean") {
		t.Errorf("loading weights without buffers into a batch-norm model: error %v", err)
	}
	bnPath := filepath.Join(dir, "bn.npz")
	if err := nn.Save(bnPath, bn); err != nil {
		t.Fatal(err)
	}
	if err := nn.Load(bnPath, mk(16, 3)); err == nil || !strings.Contains(err.Error(), "running_var") {
		t.Errorf("loading batch-norm weights into an instance-norm model: error %v", err)
	}
	if err := nn.Load(filepath.Join(dir, "missing.npz"), bn); err == nil {
		t.Error("loading a missing file succeeded")
	}
}
