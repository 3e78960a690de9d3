package distill

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/internal/npz"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// TestGTNMetaGradFiniteDifference checks gtn's whole gradient — the
// meta-gradient through 2 unrolled SGD steps (with momentum) of a small
// ConvNet on the generated images, chained through the generator — with
// respect to the codes and the generator's weights, against central
// differences of the meta-loss in float64.
func TestGTNMetaGradFiniteDifference(t *testing.T) {
	rng := tensor.NewRNG(5, 5)
	shape := []int{1, 6, 6}
	gen := newCondGen[float64](4, 3, []int{5}, shape, []float32{0.1}, []float32{0.3}, rng)
	m, err := nn.New[float64]("convnet-w4-d1", shape, 3, rng)
	if err != nil {
		t.Fatal(err)
	}
	codes := tensor.New[float64](3, 4)
	tensor.FillNormal(rng, codes, 0, 1)
	labels := []int{0, 1, 2}
	xr := tensor.New[float64](4, 1, 6, 6)
	tensor.FillNormal(rng, xr, 0, 1)
	const logLR = -0.5
	metaLoss := func() (float64, *tensor.Tensor[float64]) {
		x, err := gen.generate(codes, labels)
		if err != nil {
			t.Fatal(err)
		}
		g, err := DDMetaGrad(MetaTask[float64]{Model: m, Start: m.Params(), X: x, Y: labels, Steps: 2, Momentum: 0.5,
			RealX: xr, RealY: []int{0, 1, 2, 0}, WantX: true}, logLR)
		if err != nil {
			t.Fatal(err)
		}
		return g.Loss, g.X
	}
	_, gx := metaLoss()
	gz, gp, err := gen.vjp(codes, labels, gx, true)
	if err != nil {
		t.Fatal(err)
	}
	const eps = 1e-6
	check := func(name string, data, ana []float64) {
		for _, j := range []int{0, len(data) / 3, len(data) - 1} {
			orig := data[j]
			data[j] = orig + eps
			fp, _ := metaLoss()
			data[j] = orig - eps
			fm, _ := metaLoss()
			data[j] = orig
			num := (fp - fm) / (2 * eps)
			if math.Abs(ana[j]-num) > 1e-7+1e-4*math.Abs(num) {
				t.Errorf("%s[%d]: gradient %.10g, finite difference %.10g", name, j, ana[j], num)
			}
		}
	}
	check("∂L/∂codes", codes.Data, gz.Data)
	for i, p := range gen.params() {
		check("∂L/∂θ"+itoa(i), p.Data, gp[i].Data)
	}
	if gz.Data[0] == 0 || gp[0].Data[0] == 0 {
		t.Error("zero gradient: the check would be vacuous")
	}
}

// TestGTNBudget: the default generator fits MNIST's IPC 10 budget and not
// IPC 1's, whose error names the floats and the flags; --gtn-over-budget
// lifts it.
func TestGTNBudget(t *testing.T) {
	for _, tc := range []struct {
		ipc  int
		over bool
		ok   bool
	}{{10, false, true}, {1, false, false}, {1, true, true}} {
		cfg := Config{Method: MethodGTN, IPC: tc.ipc, GTN: GTNConfig{OverBudget: tc.over}}.Defaults("mnist")
		g := newCondGen[float32](cfg.GTN.ZDim, 10, cfg.GTN.Hidden, []int{1, 28, 28}, []float32{0.1307}, []float32{0.3081}, tensor.NewRNG(1, 1))
		floats, budget, err := gtnSize(cfg, g, 10, 784)
		t.Logf("IPC %d: %d floats, budget %d", tc.ipc, floats, budget)
		if (err == nil) != tc.ok {
			t.Fatalf("IPC %d over-budget %v: error %v", tc.ipc, tc.over, err)
		}
		if tc.ipc == 10 && (floats != 54560+3200+1 || budget != 78400) {
			t.Errorf("IPC 10: %d floats of %d: want 57 761 of 78 400", floats, budget)
		}
		if err != nil {
			for _, want := range []string{"distill: gtn", "54560 floats", "54881 floats", "(7840 floats)", "--gen-hidden", "--gtn-over-budget"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("budget error %q does not mention %q", err, want)
				}
			}
		}
	}
}

// TestGenConfigErrors: bad gtn and itgan settings fail in New with an
// error naming the value and the flag.
func TestGenConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Method: MethodGTN, IPC: 1, GTN: GTNConfig{Steps: -2}}, "--unroll"},
		{Config{Method: MethodGTN, IPC: 1, GTN: GTNConfig{Hidden: []int{0}}}, "--gen-hidden"},
		{Config{Method: MethodGTN, IPC: 1, GTN: GTNConfig{LRGen: -1}}, "--gen-lr"},
		{Config{Method: MethodGTN, IPC: 1, GTN: GTNConfig{Momentum: 1}}, "momentum 1"},
		{Config{Method: MethodITGAN, IPC: 1, Init: InitNoise}, "--init real"},
		{Config{Method: MethodITGAN, IPC: 1, ITGAN: ITGANConfig{GANEpochs: -1}}, "--itgan-epochs"},
		{Config{Method: MethodITGAN, IPC: 1, ITGAN: ITGANConfig{Rec: math.Inf(1)}}, "--itgan-rec"},
		{Config{Method: MethodITGAN, IPC: 1, ITGAN: ITGANConfig{ZDim: -3}}, "--gen-zdim"},
		{Config{Method: MethodITGAN, IPC: 1, ITGAN: ITGANConfig{State: []byte{1}}}, "checkpoint data"},
	} {
		_, err := New(tc.cfg, "mnist")
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "distill:") {
			t.Errorf("%+v: error %v, want one mentioning %q", tc.cfg, err, tc.want)
		}
	}
	d, err := New(Config{Method: MethodGTN, IPC: 1, Model: "convnet-w8-d2"}, "mnist")
	if err != nil {
		t.Fatal(err)
	}
	train, _ := loadMNIST(t)
	if err := d.Init(context.Background(), twoClass(train, 20)); err == nil || !strings.Contains(err.Error(), "--gtn-over-budget") {
		t.Errorf("gtn over budget at IPC 1: Init error %v", err)
	}
}

// smallGTN is a gtn configuration that runs in a fraction of a second per
// iteration on two MNIST classes.
func smallGTN() Config {
	return Config{Method: MethodGTN, IPC: 2, Seed: 11, Model: "convnet-w8-d2", BatchReal: 8,
		GTN: GTNConfig{ZDim: 8, Hidden: []int{16}, Steps: 2, WarmSteps: 30, OverBudget: true, LRGen: 0.01}}
}

// runGen runs iterations [from, to) of d.
func runGen(t *testing.T, d Distiller, from, to int) {
	t.Helper()
	for it := from; it < to; it++ {
		if _, err := d.Step(context.Background(), it); err != nil {
			t.Fatalf("iteration %d: %v", it, err)
		}
	}
}

// checkResume runs cfg for 4 iterations twice (same seed: identical) and
// once interrupted after 2 with the checkpoint saved to a file, restored
// into a fresh distiller and continued: identical again.
func checkResume(t *testing.T, cfg Config, real *data.Dataset) Distiller {
	t.Helper()
	ctx := context.Background()
	fresh := func() Distiller {
		d, err := New(cfg, "mnist")
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Init(ctx, real); err != nil {
			t.Fatal(err)
		}
		return d
	}
	a, b := fresh(), fresh()
	x0 := a.Synthetic().X.Clone()
	runGen(t, a, 0, 4)
	runGen(t, b, 0, 2)
	path := filepath.Join(t.TempDir(), "ck.npz")
	if err := b.Checkpoint(2).Save(path); err != nil {
		t.Fatal(err)
	}
	c, err := LoadCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	r := fresh()
	if err := r.Restore(c); err != nil {
		t.Fatal(err)
	}
	runGen(t, r, 2, 4)
	u := fresh()
	runGen(t, u, 0, 4)
	want := a.Synthetic()
	if err := want.Validate(); err != nil {
		t.Fatal(err)
	}
	var moved bool
	for i, v := range want.X.Data {
		if r.Synthetic().X.Data[i] != v {
			t.Fatalf("%s: resumed run differs at value %d: %v, uninterrupted %v", cfg.Method, i, r.Synthetic().X.Data[i], v)
		}
		if u.Synthetic().X.Data[i] != v {
			t.Fatalf("%s: same seed, different result at value %d", cfg.Method, i)
		}
		moved = moved || v != x0.Data[i]
	}
	if !moved {
		t.Errorf("%s: four iterations left the set unchanged", cfg.Method)
	}
	// A checkpoint of another configuration is refused.
	other := cfg
	other.Seed++
	o, _ := New(other, "mnist")
	if err := o.Init(ctx, real); err != nil {
		t.Fatal(err)
	}
	if err := o.Restore(c); err == nil {
		t.Errorf("%s: restoring a checkpoint of another seed: no error", cfg.Method)
	}
	return a
}

// TestGTNResumeAndSeed: interrupted and resumed gtn equals an
// uninterrupted run bit for bit; same seed → same set; SaveFactors writes
// the codes and the generator.
func TestGTNResumeAndSeed(t *testing.T) {
	train, _ := loadMNIST(t)
	d := checkResume(t, smallGTN(), twoClass(train, 60))
	g := d.(*gtn)
	path := filepath.Join(t.TempDir(), "factors.npz")
	if err := g.SaveFactors(path); err != nil {
		t.Fatal(err)
	}
	m, err := npz.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	var stored int64
	for name, a := range m {
		if a.DType == "float32" && name != "step_size" {
			stored += int64(a.Size())
		}
	}
	if f := m["floats"].Data.([]int64)[0]; f != int64(g.Floats()) || stored+1 != f {
		t.Errorf("factors.npz: floats %d, arrays hold %d (+1 step size), Floats() %d", f, stored, g.Floats())
	}
	if !(g.LearnedStepSize() > 0) || g.LearnedStepSize() == 0.01 {
		t.Errorf("step size not learned: %v", g.LearnedStepSize())
	}
}

// TestGTNReducesMetaLoss: a few outer steps lower the meta-loss of a
// fixed learner initialisation and real batch.
func TestGTNReducesMetaLoss(t *testing.T) {
	train, _ := loadMNIST(t)
	cfg := smallGTN()
	cfg.Init = InitNoise // the paper's random generator: far from optimal
	d, err := New(cfg, "mnist")
	if err != nil {
		t.Fatal(err)
	}
	real := twoClass(train, 60)
	if err := d.Init(context.Background(), real); err != nil {
		t.Fatal(err)
	}
	g := d.(*gtn)
	fixed := func() float64 {
		m, _ := nn.New[float32](g.cfg.Model, real.ImageShape(), 2, tensor.NewRNG(9, 9))
		xr, yr := metaBatch(real, g.byClass, 16, tensor.NewRNG(8, 8))
		r, err := DDMetaGrad(MetaTask[float32]{Model: m, Start: m.Params(), X: g.x, Y: g.y, Steps: g.cfg.GTN.Steps, RealX: xr, RealY: yr}, float64(g.logLR.Data[0]))
		if err != nil {
			t.Fatal(err)
		}
		return r.Loss
	}
	before := fixed()
	runGen(t, d, 0, 12)
	after := fixed()
	t.Logf("meta-loss on a fixed learner %.4f → %.4f", before, after)
	if !(after < before) {
		t.Errorf("gtn did not reduce the meta-loss: %.4f → %.4f", before, after)
	}
}
