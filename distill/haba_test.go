package distill

import (
	"context"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/internal/npz"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// tinyHaBa returns a float64 haba problem: 2 classes × 2 bases of 1×6×6,
// 3 hallucinators of width 2 (scale and shift perturbed away from their
// init), a width-4 extractor, a width-4 depth-1 ConvNet student taking 3
// steps with per-sample DSA, and an adversarial pair with augmentation.
func tinyHaBa(t *testing.T, lambda float64) (habaProblem[float64], *tensor.Tensor[float64], [][]*tensor.Tensor[float64], habaNet) {
	t.Helper()
	rng := tensor.NewRNG(31, 0)
	n := habaNet{classes: 2, nb: 2, nh: 3, c: 1, h: 6, w: 6, m: 2, k: 3, e: 4}
	m, err := nn.New[float64]("convnet-w4-d1", []int{1, 6, 6}, 2, rng)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := nn.New[float64]("convnet-w4-d1", []int{1, 6, 6}, 2, rng)
	var start, target []*tensor.Tensor[float64]
	for i, p := range m.Params() {
		start = append(start, p.Clone())
		target = append(target, other.Params()[i].Clone())
	}
	bases := tensor.New[float64](4, 1, 6, 6)
	tensor.FillNormal(rng, bases, 0, 1)
	hal := make([][]*tensor.Tensor[float64], n.nh)
	for h := range hal {
		hal[h] = initHallucinator[float64](n, rng)
		for _, i := range []int{2, 3, 5} {
			for j := range hal[h][i].Data {
				hal[h][i].Data[j] += 0.3 * rng.NormFloat64()
			}
		}
	}
	y := []int{0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1} // decoded: basis j·3 + t, bases 0, 1 of class 0
	dsa := &data.DSA{Strategy: []string{data.DSAColor, data.DSACrop, data.DSAScale, data.DSARotate}, Params: data.DefaultDSAParams()}
	dsa.Params.Mode = data.DSAMultiple
	task := &TrajectoryTask[float64]{Model: m, Start: start, Target: target, Denom: ParamDistance(start, target), Y: y,
		Batches: [][]int{{0, 3, 6, 9}, {2, 11, 5}, {7, 1, 10}}}
	for _, b := range task.Batches {
		task.Augs = append(task.Augs, dsa.Sample(rng, len(b), 6, 6))
	}
	pair := habaPair{Bases: []int{0, 2, 3}, H0: 2, H1: 0, Aug: dsa.Sample(rng, 6, 6, 6)}
	return habaProblem[float64]{Task: task, Pair: pair, Ext: initExtractor[float64](n, rng), Lambda: lambda}, bases, hal, n
}

func cloneHal(hal [][]*tensor.Tensor[float64]) [][]*tensor.Tensor[float64] {
	out := make([][]*tensor.Tensor[float64], len(hal))
	for i, ps := range hal {
		for _, p := range ps {
			out[i] = append(out[i], p.Clone())
		}
	}
	return out
}

// The factor gradients of haba — the trajectory-matching image gradient
// carried through the hallucinators by the chain rule, plus the
// adversarial diversity term — and the step-size gradient agree with
// central finite differences of the loss in float64, in random
// directions over the bases, the hallucinators and both together.
func TestHaBaGradFiniteDifference(t *testing.T) {
	for _, lambda := range []float64{0, 0.7} {
		p, bases, hal, _ := tinyHaBa(t, lambda)
		const lr = 0.2
		g, err := habaLossGrad(p, bases, hal, lr)
		if err != nil {
			t.Fatal(err)
		}
		if lambda > 0 && !(g.Diversity > 0) {
			t.Fatalf("diversity term %v", g.Diversity)
		}
		loss := func(b *tensor.Tensor[float64], h [][]*tensor.Tensor[float64], lr float64) float64 {
			r, err := habaLossGrad(p, b, h, lr)
			if err != nil {
				t.Fatal(err)
			}
			return r.Match + r.Diversity
		}
		rng := tensor.NewRNG(5, uint64(lambda*10))
		for trial, which := range []string{"bases", "hallucinators", "all"} {
			db := tensor.New[float64](bases.Shape...)
			dh := cloneHal(hal)
			for _, ps := range dh {
				for _, q := range ps {
					clear(q.Data)
				}
			}
			if which != "hallucinators" {
				tensor.FillNormal(rng, db, 0, 1)
			}
			if which != "bases" {
				for _, ps := range dh {
					for _, q := range ps {
						tensor.FillNormal(rng, q, 0, 1)
					}
				}
			}
			var analytic float64
			for i, v := range db.Data {
				analytic += v * g.Bases.Data[i]
			}
			for h := range dh {
				for i, q := range dh[h] {
					for j, v := range q.Data {
						analytic += v * g.Hal[h][i].Data[j]
					}
				}
			}
			const eps = 1e-6
			shift := func(s float64) float64 {
				b := bases.Clone()
				for i, v := range db.Data {
					b.Data[i] += s * v
				}
				h := cloneHal(hal)
				for a := range h {
					for i, q := range h[a] {
						for j, v := range dh[a][i].Data {
							q.Data[j] += s * v
						}
					}
				}
				return loss(b, h, lr)
			}
			numeric := (shift(eps) - shift(-eps)) / (2 * eps)
			if math.Abs(analytic-numeric) > 1e-5*math.Max(1, math.Abs(numeric)) {
				t.Errorf("λ %g %s (trial %d): directional derivative %.10g, finite difference %.10g", lambda, which, trial, analytic, numeric)
			}
		}
		const eps = 1e-6
		numeric := (loss(bases, hal, lr+eps) - loss(bases, hal, lr-eps)) / (2 * eps)
		if math.Abs(g.LR-numeric) > 1e-5*math.Max(1, math.Abs(numeric)) {
			t.Errorf("λ %g: step-size gradient %.10g, finite difference %.10g", lambda, g.LR, numeric)
		}
		t.Logf("λ %g: match %.6g, diversity %.6g, step-size gradient %.6g", lambda, g.Match, g.Diversity, g.LR)
	}
}

// The adversary's gradient (classification, likelihood and supervised
// contrastive terms) agrees with central finite differences.
func TestHaBaExtractorGradFiniteDifference(t *testing.T) {
	p, bases, hal, _ := tinyHaBa(t, 0.1)
	h := Config{Method: MethodHaBa}.habaDefaults().HaBa
	y := []int{0, 0, 1, 1}
	l0, g, err := extLossGrad(h, bases, hal, p.Ext, y, p.Pair)
	if err != nil {
		t.Fatal(err)
	}
	if !(l0 > 0) {
		t.Fatalf("extractor loss %v", l0)
	}
	rng := tensor.NewRNG(9, 9)
	dir := make([]*tensor.Tensor[float64], len(p.Ext))
	var analytic float64
	for i, q := range p.Ext {
		dir[i] = tensor.New[float64](q.Shape...)
		tensor.FillNormal(rng, dir[i], 0, 1)
		for j, v := range dir[i].Data {
			analytic += v * g[i].Data[j]
		}
	}
	shift := func(s float64) float64 {
		ext := make([]*tensor.Tensor[float64], len(p.Ext))
		for i, q := range p.Ext {
			ext[i] = q.Clone()
			for j, v := range dir[i].Data {
				ext[i].Data[j] += s * v
			}
		}
		l, _, err := extLossGrad(h, bases, hal, ext, y, p.Pair)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	const eps = 1e-6
	numeric := (shift(eps) - shift(-eps)) / (2 * eps)
	if math.Abs(analytic-numeric) > 1e-5*math.Max(1, math.Abs(numeric)) {
		t.Errorf("extractor: directional derivative %.10g, finite difference %.10g", analytic, numeric)
	}
}

// supCon agrees with the formula evaluated directly.
func TestHaBaSupConValue(t *testing.T) {
	rng := tensor.NewRNG(2, 2)
	f := tensor.New[float64](4, 3)
	tensor.FillNormal(rng, f, 0, 1)
	y := []int{0, 1, 0, 1}
	tp := ag.NewTape[float64]()
	defer tp.Release()
	u := normRows(tp.Const(f))
	got := float64(supCon(tp, u, y, 0.5).Value.Item())
	un := u.Value.Data
	dot := func(i, j int) float64 {
		var s float64
		for k := range 3 {
			s += un[i*3+k] * un[j*3+k]
		}
		return s / 0.5
	}
	var want float64
	for i := range 4 {
		var z float64
		for a := range 4 {
			if a != i {
				z += math.Exp(dot(i, a))
			}
		}
		var s float64
		var cnt int
		for p := range 4 {
			if p != i && y[p] == y[i] {
				s += dot(i, p) - math.Log(z)
				cnt++
			}
		}
		want -= s / float64(cnt) / 4
	}
	if math.Abs(got-want) > 1e-9 {
		t.Fatalf("SupCon %v, want %v", got, want)
	}
}

// The budget: every basis value and hallucinator weight is charged, the
// default bases per class are the most that fit, and sets over the
// budget are refused with the numbers and the flag to change.
func TestHaBaBudget(t *testing.T) {
	shape := []int{1, 28, 28}
	base := Config{Method: MethodHaBa}.habaDefaults()
	at := func(ipc int, h HaBaConfig) (habaNet, error) {
		cfg := base
		cfg.IPC = ipc
		h.Hallucinators, h.Kernel, h.ExtWidth = max(h.Hallucinators, base.HaBa.Hallucinators), base.HaBa.Kernel, base.HaBa.ExtWidth
		cfg.HaBa = h
		return habaSize(cfg, 10, shape)
	}
	// One hallucinator: 9 + 1 + 2·26·26 + 9 + 1 = 1372 floats; plus the
	// learned step size.
	n, err := at(2, HaBaConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if n.halFloats() != 1372 || n.nb != 1 || n.floats() != 7840+5*1372+1 || n.floats() > 2*7840 {
		t.Fatalf("IPC 2: %d bases, %d floats per hallucinator, %d floats", n.nb, n.halFloats(), n.floats())
	}
	if n, err := at(10, HaBaConfig{}); err != nil || n.nb != 9 {
		t.Fatalf("IPC 10: %d bases, %v", n.nb, err)
	}
	if _, err := at(1, HaBaConfig{}); err == nil || !strings.Contains(err.Error(), "--haba-budget-ipc 2") || !strings.HasPrefix(err.Error(), "distill: haba:") {
		t.Fatalf("IPC 1: %v", err)
	}
	if n, err := at(1, HaBaConfig{BudgetIPC: 2}); err != nil || n.nb != 1 {
		t.Fatalf("IPC 1 with a budget of 2: %d bases, %v", n.nb, err)
	}
	if _, err := at(2, HaBaConfig{Bases: 2}); err == nil || !strings.Contains(err.Error(), "--haba-bases") || !strings.Contains(err.Error(), "15680") {
		t.Fatalf("2 bases at IPC 2: %v", err)
	}
	if _, err := at(2, HaBaConfig{Width: 8}); err == nil || !strings.Contains(err.Error(), "--haba-width") {
		t.Fatalf("width 8 at IPC 2: %v", err)
	}
}

func TestHaBaConfigErrors(t *testing.T) {
	for _, c := range []struct {
		h    HaBaConfig
		tm   TMConfig
		want string
	}{
		{HaBaConfig{Hallucinators: 1}, TMConfig{}, "hallucinators 1"},
		{HaBaConfig{Kernel: 2}, TMConfig{}, "kernel 2"},
		{HaBaConfig{Bases: -1}, TMConfig{}, "bases -1"},
		{HaBaConfig{LRHal: math.Inf(1)}, TMConfig{}, "hallucinators +Inf"},
		{HaBaConfig{Temperature: -1}, TMConfig{}, "temperature -1"},
		{HaBaConfig{}, TMConfig{Labels: LabelsSoft}, "hard-label"},
	} {
		_, err := New(Config{Method: MethodHaBa, IPC: 2, HaBa: c.h, TM: c.tm}, "mnist")
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "distill:") {
			t.Errorf("%+v: %v", c.h, err)
		}
	}
	train, _ := loadMNIST(t)
	real := twoClass(train, 10)
	d, err := New(Config{Method: MethodHaBa, IPC: 6, Model: "convnet-w8"}, "mnist")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Init(context.Background(), real); err == nil || !strings.Contains(err.Error(), "--buffer") {
		t.Errorf("no buffer: %v", err)
	}
	d, _ = New(Config{Method: MethodHaBa, IPC: 1, Model: "convnet-w8", TM: TMConfig{Buffer: "x"}}, "mnist")
	if err := d.Init(context.Background(), real); err == nil || !strings.Contains(err.Error(), "--haba-budget-ipc") {
		t.Errorf("IPC 1: %v", err)
	}
}

// habaTestConfig is a fast haba configuration on a tiny buffer; with 2
// classes the hallucinators (1372 floats each) need a larger IPC budget
// than on 10 classes.
func habaTestConfig(buffer string, ipc, nh int) Config {
	return Config{Method: MethodHaBa, IPC: ipc, Seed: 4, Model: "convnet-w8", HaBa: HaBaConfig{Hallucinators: nh},
		TM: TMConfig{Buffer: buffer, SynSteps: 3, ExpertEpochs: 2, MaxStartEpoch: 2, LRLR: 1e-5}}
}

// A run is reproducible from its seed, and stopping after a checkpoint
// and resuming (through the file) gives exactly the uninterrupted run:
// factors, momenta, extractor and step size, also when the state
// overflows the checkpoint's velocity array (2 hallucinators).
func TestHaBaResumeIsDeterministic(t *testing.T) {
	train, _ := loadMNIST(t)
	real := twoClass(train, 30)
	buffer := tinyBuffer(t, real)
	for _, c := range []struct {
		ipc, nh  int
		overflow bool
	}{{10, 4, false}, {6, 2, true}} {
		nh := c.nh
		cfg := habaTestConfig(buffer, c.ipc, nh)
		run := func(iters int, ck string, resume bool) *haba {
			d, err := New(cfg, "mnist")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Run(context.Background(), d, real, RunConfig{Iterations: iters, CheckpointPath: ck, CheckpointEvery: 1, Resume: resume}); err != nil {
				t.Fatal(err)
			}
			return d.(*haba)
		}
		full := run(4, "", false)
		again := run(4, "", false)
		ck := filepath.Join(t.TempDir(), "checkpoint.npz")
		first := run(2, ck, false)
		second := run(4, ck, true)
		if overflow := len(full.state()) > len(full.syn.X.Data); overflow != c.overflow {
			t.Fatalf("%d hallucinators: state of %d values, velocity array %d", nh, len(full.state()), len(full.syn.X.Data))
		}
		for name, o := range map[string]*haba{"same seed": again, "resumed": second} {
			if !slices.Equal(full.syn.X.Data, o.syn.X.Data) || !slices.Equal(full.state(), o.state()) || full.lr != o.lr || full.lrVel != o.lrVel {
				t.Fatalf("%d hallucinators: the %s run differs from the uninterrupted one", nh, name)
			}
		}
		if slices.Equal(full.syn.X.Data, first.syn.X.Data) || slices.Equal(full.ext[0].Data, first.ext[0].Data) {
			t.Fatalf("%d hallucinators: iterations 3 and 4 changed nothing", nh)
		}
		if got, want := full.syn.Len(), 2*full.net.nb*nh; got != want || !slices.Equal(full.syn.PerClass(), []int{want / 2, want / 2}) {
			t.Fatalf("%d hallucinators: %d images (per class %v), want %d", nh, got, full.syn.PerClass(), want)
		}
		if full.Floats() > 2*c.ipc*784 {
			t.Fatalf("%d floats stored, budget %d", full.Floats(), 2*c.ipc*784)
		}
		other := cfg
		other.HaBa.Lambda = 0.2
		d, _ := New(other, "mnist")
		if _, err := Run(context.Background(), d, real, RunConfig{Iterations: 5, CheckpointPath: ck, Resume: true}); err == nil || !strings.Contains(err.Error(), "different configuration") {
			t.Errorf("resume with another λ: %v", err)
		}
	}
}

// Training lowers the matching loss of fixed draws, and SaveFactors
// writes factors that decode to exactly the synthetic set.
func TestHaBaTrainsAndSavesFactors(t *testing.T) {
	train, _ := loadMNIST(t)
	real := twoClass(train, 30)
	buffer := tinyBuffer(t, real)
	cfg := habaTestConfig(buffer, 6, 3)
	cfg.TM.SynSteps = 4
	// The tiny buffer's experts (width 8, 60 images) move far in few
	// steps: the reference's momentum 0.95 overshoots here, so the test
	// takes MTT's 0.5 (as TestMTTReducesMatchingLoss, at the same rate).
	cfg.Momentum = 0.5
	di, err := New(cfg, "mnist")
	if err != nil {
		t.Fatal(err)
	}
	d := di.(*haba)
	if err := d.Init(context.Background(), real); err != nil {
		t.Fatal(err)
	}
	fixed := func() float64 {
		var s float64
		for it := range 5 {
			task, _, _, err := d.studentTask(iterRNG(99, it))
			if err != nil {
				t.Fatal(err)
			}
			g, err := UnrolledMatchGrad(task, d.syn.X, float64(d.lr))
			if err != nil {
				t.Fatal(err)
			}
			s += g.Loss
		}
		return s / 5
	}
	before := fixed()
	for it := range 30 {
		if _, err := d.Step(context.Background(), it); err != nil {
			t.Fatal(err)
		}
	}
	after := fixed()
	t.Logf("matching loss on fixed draws %.4f → %.4f, step size %.5f", before, after, d.StepSize())
	if !(after < 0.95*before) {
		t.Errorf("haba did not reduce the matching loss: %.4f → %.4f", before, after)
	}
	if err := d.Synthetic().Validate(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "factors.npz")
	if err := d.SaveFactors(path); err != nil {
		t.Fatal(err)
	}
	m, err := npz.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := m["floats"].Data.([]int64)[0]; int(got) != d.Floats() {
		t.Fatalf("floats %d, want %d", got, d.Floats())
	}
	var stored int
	for _, name := range []string{"bases", "enc_w", "enc_b", "scale", "shift", "dec_w", "dec_b", "step_size"} {
		stored += m[name].Size()
	}
	if stored != d.Floats() {
		t.Fatalf("the file holds %d factor values, the set is charged %d", stored, d.Floats())
	}
	// Decode the file's factors and compare with the synthetic set.
	bases, _ := tensor.FromSlice(m["bases"].Data.([]float32), m["bases"].Shape...)
	hal := make([][]*tensor.Tensor[float32], d.net.nh)
	for i, name := range []string{"enc_w", "enc_b", "scale", "shift", "dec_w", "dec_b"} {
		a := m[name]
		per := a.Size() / d.net.nh
		for h := range d.net.nh {
			q, _ := tensor.FromSlice(a.Data.([]float32)[h*per:(h+1)*per], a.Shape[1:]...)
			hal[h] = append(hal[h], q)
			_ = i
		}
	}
	tp := ag.NewTape[float32]()
	defer tp.Release()
	hv := make([][]*ag.Var[float32], len(hal))
	for h, ps := range hal {
		for _, q := range ps {
			hv[h] = append(hv[h], tp.Const(q))
		}
	}
	x := decodeAll(tp.Const(bases), hv)
	if !slices.Equal(x.Value.Data, d.syn.X.Data) {
		t.Fatal("the saved factors do not decode to the synthetic set")
	}
}
