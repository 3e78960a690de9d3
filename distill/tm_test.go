package distill

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// tinyTask returns a float64 trajectory task on a width-4 ConvNet with
// 8×8 inputs: 6 synthetic images of 2 classes, 3 student steps on
// batches of 4 with per-sample DSA, from one random network towards
// another.
func tinyTask(t *testing.T, soft bool) (*TrajectoryTask[float64], *tensor.Tensor[float64]) {
	t.Helper()
	rng := tensor.NewRNG(21, 0)
	m, err := nn.NewConvNet[float64](nn.ConvNetConfig{InChannels: 1, Height: 8, Width: 8, Classes: 2, NetWidth: 4, Depth: 2}, rng)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := nn.NewConvNet[float64](nn.ConvNetConfig{InChannels: 1, Height: 8, Width: 8, Classes: 2, NetWidth: 4, Depth: 2}, rng)
	var start, target []*tensor.Tensor[float64]
	for i, p := range m.Params() {
		start = append(start, p.Clone())
		target = append(target, other.Params()[i].Clone())
	}
	x := tensor.New[float64](6, 1, 8, 8)
	tensor.FillNormal(rng, x, 0, 1)
	dsa := &data.DSA{Strategy: []string{data.DSAColor, data.DSACrop, data.DSAScale, data.DSARotate}, Params: data.DefaultDSAParams()}
	dsa.Params.Mode = data.DSAMultiple
	task := &TrajectoryTask[float64]{Model: m, Start: start, Target: target, Denom: ParamDistance(start, target),
		Batches: [][]int{{0, 1, 2, 3}, {4, 5, 0, 1}, {2, 3, 4, 5}}, Y: []int{0, 0, 0, 1, 1, 1}}
	for range task.Batches {
		task.Augs = append(task.Augs, dsa.Sample(rng, 4, 8, 8))
	}
	if soft {
		task.SoftY = tensor.New[float64](6, 2)
		tensor.FillNormal(rng, task.SoftY, 0, 1)
	}
	return task, x
}

// The unrolled meta-gradient (through 3 student steps, the learnable step
// size and DSA) agrees with central finite differences in float64, for
// the images, the step size and the soft labels.
func TestUnrolledMatchGradFiniteDifference(t *testing.T) {
	for _, soft := range []bool{false, true} {
		task, x := tinyTask(t, soft)
		const lr = 0.3
		g, err := UnrolledMatchGrad(task, x, lr)
		if err != nil {
			t.Fatal(err)
		}
		lossAt := func(x *tensor.Tensor[float64], lr float64) float64 {
			r, err := UnrolledMatchGrad(task, x, lr)
			if err != nil {
				t.Fatal(err)
			}
			return r.Loss
		}
		if !(g.Loss > 0) {
			t.Fatalf("loss %v", g.Loss)
		}
		const eps = 1e-6
		check := func(what string, analytic, numeric float64) {
			t.Helper()
			if math.Abs(numeric-analytic) > 1e-6*math.Max(1e-3, math.Abs(numeric)) {
				t.Errorf("soft %v %s: analytic %.10g, finite difference %.10g", soft, what, analytic, numeric)
			}
		}
		for trial := range 2 {
			v := tensor.New[float64](x.Shape...)
			tensor.FillNormal(tensor.NewRNG(5, uint64(trial)), v, 0, 1)
			plus, minus := x.Clone(), x.Clone()
			var analytic float64
			for i := range v.Data {
				plus.Data[i] += eps * v.Data[i]
				minus.Data[i] -= eps * v.Data[i]
				analytic += g.X.Data[i] * v.Data[i]
			}
			check("images", analytic, (lossAt(plus, lr)-lossAt(minus, lr))/(2*eps))
		}
		check("step size", g.LR, (lossAt(x, lr+eps)-lossAt(x, lr-eps))/(2*eps))
		if soft {
			v := tensor.New[float64](task.SoftY.Shape...)
			tensor.FillNormal(tensor.NewRNG(6, 0), v, 0, 1)
			orig := task.SoftY
			plus, minus := orig.Clone(), orig.Clone()
			var analytic float64
			for i := range v.Data {
				plus.Data[i] += eps * v.Data[i]
				minus.Data[i] -= eps * v.Data[i]
				analytic += g.SoftY.Data[i] * v.Data[i]
			}
			task.SoftY = plus
			lp := lossAt(x, lr)
			task.SoftY = minus
			lm := lossAt(x, lr)
			task.SoftY = orig
			check("soft labels", analytic, (lp-lm)/(2*eps))
		}
	}
}

// TESLA's recomputed adjoint pass gives MTT's unrolled gradient: same
// loss, same image, step-size and label gradients, to float64 rounding.
// The published first-order variant (fixed adjoint) does not.
func TestAdjointMatchGradEqualsUnrolled(t *testing.T) {
	for _, soft := range []bool{false, true} {
		task, x := tinyTask(t, soft)
		const lr = 0.3
		u, err := UnrolledMatchGrad(task, x, lr)
		if err != nil {
			t.Fatal(err)
		}
		a, err := AdjointMatchGrad(task, x, lr, false)
		if err != nil {
			t.Fatal(err)
		}
		close := func(what string, p, q float64, scale float64) {
			t.Helper()
			if math.Abs(p-q) > 1e-11*math.Max(scale, 1e-12) {
				t.Errorf("soft %v %s: unrolled %.15g, adjoint %.15g", soft, what, p, q)
			}
		}
		close("loss", u.Loss, a.Loss, u.Loss)
		close("step size", u.LR, a.LR, math.Abs(u.LR))
		maxAbs := func(v []float64) float64 {
			m := 0.0
			for _, f := range v {
				m = math.Max(m, math.Abs(f))
			}
			return m
		}
		sx := maxAbs(u.X.Data)
		for i := range u.X.Data {
			close("image gradient", u.X.Data[i], a.X.Data[i], sx)
		}
		if soft {
			sy := maxAbs(u.SoftY.Data)
			for i := range u.SoftY.Data {
				close("label gradient", u.SoftY.Data[i], a.SoftY.Data[i], sy)
			}
		}
		f, err := AdjointMatchGrad(task, x, lr, true)
		if err != nil {
			t.Fatal(err)
		}
		var diff float64
		for i := range f.X.Data {
			diff = math.Max(diff, math.Abs(f.X.Data[i]-u.X.Data[i]))
		}
		if !(diff > 1e-6*sx) {
			t.Errorf("soft %v: the fixed-adjoint gradient equals the exact one (max difference %g)", soft, diff)
		}
		t.Logf("soft %v: loss %.6g, step-size gradient %.6g, fixed-adjoint image gradient off by %.3g of %.3g", soft, u.Loss, u.LR, diff, sx)
	}
}

// tinyBuffer trains 2 width-8 experts for 4 epochs on 2-class MNIST.
func tinyBuffer(t *testing.T, real *data.Dataset) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "buffer")
	if _, err := TrainExperts(real, nil, BufferConfig{Model: "convnet-w8", Experts: 2, Epochs: 4, BatchSize: 32, Seed: 3}, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestBufferRoundTripAndCorruption(t *testing.T) {
	train, _ := loadMNIST(t)
	real := twoClass(train, 30)
	dir := tinyBuffer(t, real)
	b, err := OpenBuffer(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b.Experts() != 2 || b.Epochs() != 4 || b.Index.Model != "convnet-w8" || b.Index.DSAStrategy != data.DSAStrategyDigits {
		t.Fatalf("index %+v", b.Index)
	}
	if err := b.CheckModel("convnet-w8", real.ImageShape(), 2, real.Mean, real.Std); err != nil {
		t.Fatal(err)
	}
	// Epoch 0 is the initialisation from the expert's seed stream; the
	// trajectory moves.
	m, _ := nn.New[float32]("convnet-w8", real.ImageShape(), 2, tensor.NewRNG(3, 2))
	p0, err := b.Params(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range m.Params() {
		if !slices.Equal(p.Data, p0[i].Data) {
			t.Fatalf("expert 1 epoch 0 parameter %d is not its initialisation", i)
		}
	}
	p4, _ := b.Params(1, 4)
	if d := ParamDistance(p0, p4); !(d > 0) {
		t.Fatalf("the expert did not move: %v", d)
	}
	// Continuing with the same settings keeps the experts; other settings
	// are refused.
	if b2, err := TrainExperts(real, nil, BufferConfig{Model: "convnet-w8", Experts: 2, Epochs: 4, BatchSize: 32, Seed: 3}, dir); err != nil || b2.Experts() != 2 {
		t.Fatalf("continue: %v", err)
	}
	if _, err := TrainExperts(real, nil, BufferConfig{Model: "convnet-w8", Experts: 2, Epochs: 5, BatchSize: 32, Seed: 3}, dir); err == nil || !strings.Contains(err.Error(), "other settings") {
		t.Errorf("other settings: %v", err)
	}
	// Wrong architecture or data.
	if err := b.CheckModel("convnet-w16", real.ImageShape(), 2, real.Mean, real.Std); err == nil || !strings.Contains(err.Error(), "convnet-w16") {
		t.Errorf("other model: %v", err)
	}
	if err := b.CheckModel("convnet-w8", real.ImageShape(), 10, real.Mean, real.Std); err == nil || !strings.Contains(err.Error(), "classes") {
		t.Errorf("other classes: %v", err)
	}
	if _, err := b.Params(2, 0); err == nil {
		t.Error("expert 2 of 2 was read")
	}
	// A flipped byte inside a chunk is caught.
	f := filepath.Join(dir, b.Index.Experts[0].File)
	raw, _ := os.ReadFile(f)
	c := b.Index.Experts[0].Chunks[2]
	bad := slices.Clone(raw)
	bad[c.Offset+c.Length/2] ^= 0x5a
	os.WriteFile(f, bad, 0o644)
	if _, err := b.Params(0, 2); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("flipped byte: %v", err)
	}
	if _, err := b.Params(0, 1); err != nil {
		t.Errorf("an intact chunk of a damaged file: %v", err)
	}
	// A truncated file is refused when the buffer is opened.
	os.WriteFile(f, raw[:len(raw)-10], 0o644)
	if _, err := OpenBuffer(dir); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("truncated: %v", err)
	}
	os.WriteFile(f, raw, 0o644)
	// A damaged index.
	ib, _ := os.ReadFile(filepath.Join(dir, "index.json"))
	var ix map[string]any
	json.Unmarshal(ib, &ix)
	ix["num_params"] = 12
	nb, _ := json.Marshal(ix)
	os.WriteFile(filepath.Join(dir, "index.json"), nb, 0o644)
	if _, err := OpenBuffer(dir); err == nil || !strings.Contains(err.Error(), "num_params") {
		t.Errorf("bad index: %v", err)
	}
	if _, err := OpenBuffer(t.TempDir()); err == nil || !strings.Contains(err.Error(), "fedsim distill buffer") {
		t.Errorf("missing buffer: %v", err)
	}
}

// tmConfig is a fast trajectory-matching configuration on a tiny buffer.
func tmConfig(method, buffer string) Config {
	return Config{Method: method, IPC: 2, Seed: 4, Model: "convnet-w8", LRImg: 100,
		TM: TMConfig{Buffer: buffer, SynSteps: 6, ExpertEpochs: 2, MaxStartEpoch: 2, LRLR: 1e-5}}
}

func TestMTTReducesMatchingLoss(t *testing.T) {
	train, _ := loadMNIST(t)
	real := twoClass(train, 30)
	buffer := tinyBuffer(t, real)
	d, err := New(tmConfig(MethodMTT, buffer), "mnist")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Init(context.Background(), real); err != nil {
		t.Fatal(err)
	}
	// The matching loss of fixed draws (iterations 0…3's expert, start and
	// batches) before and after training.
	fixed := func() float64 {
		var s float64
		for it := range 4 {
			c := d.(*tm).Checkpoint(0)
			l, err := d.Step(context.Background(), it)
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Restore(c); err != nil {
				t.Fatal(err)
			}
			s += l
		}
		return s / 4
	}
	before := fixed()
	for it := range 25 {
		if _, err := d.Step(context.Background(), 100+it); err != nil {
			t.Fatal(err)
		}
	}
	after := fixed()
	t.Logf("matching loss %.4f → %.4f, step size %.5f", before, after, d.(*tm).StepSize())
	if !(after < 0.95*before) {
		t.Fatalf("MTT did not reduce the matching loss: %.4f → %.4f", before, after)
	}
}

// Stopping after a checkpoint and resuming gives exactly the run without
// the stop, for mtt, ftd and tesla (soft labels, step size and momenta
// included); tesla's first steps equal mtt's.
func TestTrajectoryResumeIsDeterministic(t *testing.T) {
	train, _ := loadMNIST(t)
	real := twoClass(train, 30)
	buffer := tinyBuffer(t, real)
	for _, method := range []string{MethodMTT, MethodFTD, MethodTESLA} {
		cfg := tmConfig(method, buffer)
		cfg.TM.SynSteps = 3
		full, err := New(cfg, "mnist")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Run(context.Background(), full, real, RunConfig{Iterations: 4}); err != nil {
			t.Fatal(err)
		}
		ck := filepath.Join(t.TempDir(), "checkpoint.npz")
		first, _ := New(cfg, "mnist")
		if _, err := Run(context.Background(), first, real, RunConfig{Iterations: 2, CheckpointPath: ck, CheckpointEvery: 1}); err != nil {
			t.Fatal(err)
		}
		second, _ := New(cfg, "mnist")
		if at, err := Run(context.Background(), second, real, RunConfig{Iterations: 4, CheckpointPath: ck, Resume: true}); err != nil || at != 2 {
			t.Fatalf("%s: resumed at %d: %v", method, at, err)
		}
		fs, ss := full.Synthetic(), second.Synthetic()
		if !slices.Equal(fs.X.Data, ss.X.Data) || full.(*tm).lr != second.(*tm).lr {
			t.Fatalf("%s: the resumed run differs from the uninterrupted one", method)
		}
		if method == MethodTESLA {
			if fs.YSoft == nil || !slices.Equal(fs.YSoft.Data, ss.YSoft.Data) {
				t.Fatalf("tesla: soft labels missing or different after resume")
			}
			if s, err := ReadSynthetic(ck, 2); err != nil || s.YSoft == nil {
				t.Fatalf("tesla checkpoint as a synthetic set: %v", err)
			}
		}
		if slices.Equal(fs.X.Data, first.Synthetic().X.Data) || full.(*tm).lr == first.(*tm).lr {
			t.Fatalf("%s: iterations 3 and 4 changed nothing", method)
		}
		other := cfg
		other.TM.SynSteps++
		d, _ := New(other, "mnist")
		if _, err := Run(context.Background(), d, real, RunConfig{Iterations: 5, CheckpointPath: ck, Resume: true}); err == nil || !strings.Contains(err.Error(), "different configuration") {
			t.Errorf("%s: resume with other steps: %v", method, err)
		}
	}
}

func TestTrajectoryConfigErrors(t *testing.T) {
	if _, err := New(Config{Method: MethodTESLA, IPC: 1, TM: TMConfig{Buffer: "x", Labels: "fuzzy"}}, "mnist"); err == nil || !strings.Contains(err.Error(), "fuzzy") {
		t.Errorf("bad labels: %v", err)
	}
	d, err := New(Config{Method: MethodTESLA, IPC: 10, TM: TMConfig{Buffer: "x"}}, "mnist")
	if err != nil {
		t.Fatal(err)
	}
	c := d.Config()
	if c.TM.SynSteps != 30 || c.TM.ExpertEpochs != 2 || c.TM.MaxStartEpoch != 20 || c.TM.Labels != LabelsSoft || c.LRImg != 1000 || c.DSAStrategy != data.DSAStrategyDigits {
		t.Errorf("tesla defaults: %+v", c)
	}
	train, _ := loadMNIST(t)
	real := twoClass(train, 30)
	buffer := tinyBuffer(t, real)
	d, _ = New(Config{Method: MethodMTT, IPC: 1}, "mnist")
	if err := d.Init(context.Background(), real); err == nil || !strings.Contains(err.Error(), "buffer") {
		t.Errorf("no buffer: %v", err)
	}
	cfg := tmConfig(MethodMTT, buffer)
	cfg.TM.MaxStartEpoch = 4
	d, _ = New(cfg, "mnist")
	if err := d.Init(context.Background(), real); err == nil || !strings.Contains(err.Error(), "has 4") {
		t.Errorf("trajectories too short: %v", err)
	}
	cfg = tmConfig(MethodMTT, buffer)
	cfg.Model = "convnet-w4"
	d, _ = New(cfg, "mnist")
	if err := d.Init(context.Background(), real); err == nil || !strings.Contains(err.Error(), "convnet-w4") {
		t.Errorf("other model: %v", err)
	}
}
