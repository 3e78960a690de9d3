package distill

import (
	"context"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/distill/kernel"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// fixedBatch returns the same class-balanced batch of real images for
// every call (the draw of iteration 10⁶ of the distiller's seed).
func fixedBatch(d *krrDistiller) (*tensor.Tensor[float32], []int, *tensor.Tensor[float32]) {
	return d.targets(iterRNG(d.cfg.Seed, 1_000_000))
}

// fixedKRRLoss evaluates a kernel method's objective with fixed draws:
// kip's kernel on a fixed target batch; rfad's with fixed random networks;
// frepo's with the freshly initialised network 0 of a new pool.
func fixedKRRLoss(t *testing.T, d *krrDistiller) float64 {
	t.Helper()
	xt, lt, yt := fixedBatch(d)
	var res kernel.Result[float32]
	var err error
	switch d.cfg.Method {
	case MethodKIP:
		res, err = kernel.LossGrad(kernel.Problem[float32]{Kernel: kernel.ArchFunc[float32](d.arch()), Reg: d.cfg.KRR.Reg, Xs: d.x, Ys: d.lab, Xt: xt, Yt: yt, Chunk: d.cfg.KRR.Chunk})
	case MethodRFAD:
		res, err = rfadLossGrad(d.cfg, d.real.Classes, tensor.NewRNG(5, 5), d.x, d.lab, xt, lt, d.logTau.Data[0])
	case MethodFRePo:
		var p *frepoPool
		if p, err = newFRePoPool(d.cfg, d.real); err == nil {
			res, err = p.lossGrad(0, d.x, d.lab, xt, yt)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return res.Loss
}

// newInitialized builds the distiller of cfg for MNIST and initialises
// it on real.
func newInitialized(t *testing.T, cfg Config, real *data.Dataset) Distiller {
	t.Helper()
	d, err := New(cfg, "mnist")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Init(context.Background(), real); err != nil {
		t.Fatal(err)
	}
	return d
}

// initKRR is newInitialized for the kernel methods.
func initKRR(t *testing.T, cfg Config, real *data.Dataset) *krrDistiller {
	t.Helper()
	return newInitialized(t, cfg, real).(*krrDistiller)
}

func TestKRRMethodsReduceLoss(t *testing.T) {
	train, _ := loadMNIST(t)
	real := twoClass(train, 100)
	for _, cfg := range []Config{
		{Method: MethodKIP},
		{Method: MethodKIP, KRR: KRRConfig{Kernel: KernelConv, Depth: 1, LearnLabels: true}, BatchReal: 8},
		{Method: MethodRFAD, LRImg: 0.05, KRR: KRRConfig{Models: 2, Width: 16}},
		{Method: MethodFRePo, Model: "convnet-w16", KRR: KRRConfig{Models: 2, MaxAge: 5}},
	} {
		cfg.IPC, cfg.Seed = 2, 7
		k := initKRR(t, cfg, real)
		d := Distiller(k)
		before := fixedKRRLoss(t, k)
		for it := range 15 {
			if _, err := d.Step(context.Background(), it); err != nil {
				t.Fatalf("%s iteration %d: %v", cfg.Method, it, err)
			}
		}
		after := fixedKRRLoss(t, k)
		t.Logf("%s %+v: loss on fixed draws %.4f → %.4f", cfg.Method, d.Config().KRR, before, after)
		if !(after < 0.9*before) {
			t.Errorf("%s did not reduce its loss: %.4f → %.4f", cfg.Method, before, after)
		}
		syn := d.Synthetic()
		if err := syn.Validate(); err != nil {
			t.Fatal(err)
		}
		if (syn.YSoft != nil) != cfg.KRR.LearnLabels {
			t.Errorf("%s: soft labels %v with label learning %v", cfg.Method, syn.YSoft != nil, cfg.KRR.LearnLabels)
		}
	}
}

// TestKRRCosineDecay: with KRR.CosineIters = T the Adam rates of images
// and labels follow 0.5·(1 + cos(π·it/T)) and reach zero at iteration T,
// after which the set no longer moves; without it the rates stay put.
func TestKRRCosineDecay(t *testing.T) {
	for _, c := range []struct {
		it, total int
		want      float64
	}{
		{0, 4, 1}, {1, 4, 0.5 * (1 + math.Sqrt2/2)}, {2, 4, 0.5}, {4, 4, 0}, {9, 4, 0}, {3, 0, 1},
	} {
		if got := cosineFactor(c.it, c.total); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("cosineFactor(%d, %d) = %v, want %v", c.it, c.total, got, c.want)
		}
	}
	train, _ := loadMNIST(t)
	real := twoClass(train, 30)
	for _, total := range []int{0, 2} {
		k := initKRR(t, Config{Method: MethodKIP, IPC: 1, Seed: 4, KRR: KRRConfig{LearnLabels: true, CosineIters: total}}, real)
		d := Distiller(k)
		var x, lab []float32
		for it := range 4 {
			x, lab = slices.Clone(k.x.Data), slices.Clone(k.lab.Data)
			if _, err := d.Step(context.Background(), it); err != nil {
				t.Fatal(err)
			}
			wantLR := d.Config().LRImg * cosineFactor(it, total)
			if got := k.optX.LearningRate(); math.Abs(got-wantLR) > 1e-15 {
				t.Errorf("CosineIters %d, iteration %d: image rate %g, want %g", total, it, got, wantLR)
			}
			if got, want := k.optY.LearningRate(), d.Config().KRR.LRLabel*cosineFactor(it, total); math.Abs(got-want) > 1e-15 {
				t.Errorf("CosineIters %d, iteration %d: label rate %g, want %g", total, it, got, want)
			}
		}
		moved := !slices.Equal(x, k.x.Data) || !slices.Equal(lab, k.lab.Data)
		if moved != (total == 0) {
			t.Errorf("CosineIters %d: the last step moved the set: %v", total, moved)
		}
	}
	if _, err := New(Config{Method: MethodKIP, IPC: 1, KRR: KRRConfig{CosineIters: -1}}, "mnist"); err == nil || !strings.Contains(err.Error(), "cosine decay length -1") {
		t.Errorf("negative CosineIters: error %v", err)
	}
}

// TestKRRCheckpointRoundTrip: a checkpoint restores the images and the
// learned labels exactly, through the file.
func TestKRRCheckpointRoundTrip(t *testing.T) {
	train, _ := loadMNIST(t)
	real := twoClass(train, 30)
	cfg := Config{Method: MethodKIP, IPC: 1, Seed: 2, KRR: KRRConfig{LearnLabels: true}}
	d, _ := New(cfg, "mnist")
	if err := d.Init(context.Background(), real); err != nil {
		t.Fatal(err)
	}
	for it := range 3 {
		if _, err := d.Step(context.Background(), it); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "ck.npz")
	if err := d.Checkpoint(3).Save(path); err != nil {
		t.Fatal(err)
	}
	c, err := LoadCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := New(cfg, "mnist")
	if err := e.Init(context.Background(), real); err != nil {
		t.Fatal(err)
	}
	if err := e.Restore(c); err != nil {
		t.Fatal(err)
	}
	a, b := d.(*krrDistiller), e.(*krrDistiller)
	for i := range a.x.Data {
		if a.x.Data[i] != b.x.Data[i] {
			t.Fatalf("image value %d: %v, restored %v", i, a.x.Data[i], b.x.Data[i])
		}
	}
	for i := range a.lab.Data {
		if math.Abs(float64(a.lab.Data[i]-b.lab.Data[i])) > 1e-6 {
			t.Fatalf("label %d: %v, restored %v", i, a.lab.Data[i], b.lab.Data[i])
		}
	}
	other := cfg
	other.KRR.Depth = 2
	f, _ := New(other, "mnist")
	if err := f.Init(context.Background(), real); err != nil {
		t.Fatal(err)
	}
	if err := f.Restore(c); err == nil {
		t.Error("restoring a checkpoint of another kernel depth: no error")
	}
}

// TestDDMetaGradFiniteDifference checks the BPTT meta-gradient (through
// 3 unrolled SGD steps with momentum 0.5 (eq. 12–13) of a small ConvNet
// with instance norm, so through
// second derivatives of conv, norm and pooling) against central
// differences of the meta-loss in float64, for the images, the label
// logits and log η.
func TestDDMetaGradFiniteDifference(t *testing.T) {
	rng := tensor.NewRNG(1, 1)
	m, err := nn.New[float64]("convnet-w4-d1", []int{1, 6, 6}, 3, rng)
	if err != nil {
		t.Fatal(err)
	}
	x := tensor.New[float64](3, 1, 6, 6)
	tensor.FillNormal(rng, x, 0, 1)
	logits := tensor.New[float64](3, 3)
	tensor.FillNormal(rng, logits, 0, 1)
	xr := tensor.New[float64](5, 1, 6, 6)
	tensor.FillNormal(rng, xr, 0, 1)
	task := MetaTask[float64]{Model: m, Start: m.Params(), X: x, Y: []int{0, 1, 2}, Logits: logits, Steps: 3, Momentum: 0.5,
		RealX: xr, RealY: []int{0, 1, 2, 1, 0}, WantX: true, WantLogits: true}
	const logLR = -1.0 // η ≈ 0.37: large enough that the unroll matters
	g, err := DDMetaGrad(task, logLR)
	if err != nil {
		t.Fatal(err)
	}
	loss := func(lr float64) float64 {
		r, err := DDMetaGrad(task, lr)
		if err != nil {
			t.Fatal(err)
		}
		return r.Loss
	}
	const eps = 1e-6
	check := func(name string, ana float64, set func(float64), orig float64) {
		set(orig + eps)
		fp := loss(logLR)
		set(orig - eps)
		fm := loss(logLR)
		set(orig)
		num := (fp - fm) / (2 * eps)
		if math.Abs(ana-num) > 1e-6+1e-4*math.Abs(num) {
			t.Errorf("%s: meta-gradient %.10g, finite difference %.10g", name, ana, num)
		}
	}
	for _, j := range []int{0, 7, 40, 75, 100} {
		check("∂L/∂x["+itoa(j)+"]", g.X.Data[j], func(v float64) { x.Data[j] = v }, x.Data[j])
	}
	for _, j := range []int{0, 4, 8} {
		check("∂L/∂logits["+itoa(j)+"]", g.Logits.Data[j], func(v float64) { logits.Data[j] = v }, logits.Data[j])
	}
	num := (loss(logLR+eps) - loss(logLR-eps)) / (2 * eps)
	if math.Abs(g.LogLR-num) > 1e-6+1e-4*math.Abs(num) {
		t.Errorf("∂L/∂log η: meta-gradient %.10g, finite difference %.10g", g.LogLR, num)
	}
	if g.LogLR == 0 || g.X.Data[0] == 0 {
		t.Error("zero meta-gradient: the check would be vacuous")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// fixedMetaLoss is the meta-loss with a fixed network and real batch.
func fixedMetaLoss(t *testing.T, d *metaDistiller) float64 {
	t.Helper()
	m, err := nn.New[float32](d.cfg.Model, d.real.ImageShape(), d.real.Classes, tensor.NewRNG(9, 9))
	if err != nil {
		t.Fatal(err)
	}
	var pick []int
	for _, idx := range d.byClass {
		pick = append(pick, idx[:8]...)
	}
	xr, yr := d.real.Batch(pick)
	g, err := DDMetaGrad(MetaTask[float32]{Model: m, Start: m.Params(), X: d.x, Y: d.y, Logits: d.logits, Steps: d.cfg.Meta.Steps, RealX: xr, RealY: yr}, math.Log(d.StepSize()))
	if err != nil {
		t.Fatal(err)
	}
	return g.Loss
}

func TestMetaMethods(t *testing.T) {
	train, _ := loadMNIST(t)
	real := twoClass(train, 100)
	for _, method := range []string{MethodDD, MethodSLDD, MethodLD} {
		cfg := Config{Method: method, IPC: 1, Seed: 4, Model: "convnet-w8-d2", BatchReal: 16, Meta: MetaConfig{Steps: 3}}
		d, err := New(cfg, "mnist")
		if err != nil {
			t.Fatal(err)
		}
		md := d.(*metaDistiller)
		if err := d.Init(context.Background(), real); err != nil {
			t.Fatal(err)
		}
		x0 := md.x.Clone()
		before := fixedMetaLoss(t, md)
		for it := range 15 {
			if _, err := d.Step(context.Background(), it); err != nil {
				t.Fatalf("%s iteration %d: %v", method, it, err)
			}
		}
		after := fixedMetaLoss(t, md)
		t.Logf("%s: meta-loss on a fixed network %.4f → %.4f, step size %.4g", method, before, after, md.StepSize())
		if !(after < before) {
			t.Errorf("%s did not reduce the meta-loss: %.4f → %.4f", method, before, after)
		}
		if md.StepSize() == cfg.Meta.LRInit || md.StepSize() == 0.01 {
			t.Errorf("%s: the step size was not learned (%v)", method, md.StepSize())
		}
		syn := d.Synthetic()
		if err := syn.Validate(); err != nil {
			t.Fatal(err)
		}
		if (syn.YSoft != nil) != (method != MethodDD) {
			t.Errorf("%s: soft labels present = %v", method, syn.YSoft != nil)
		}
		moved := false
		for i, v := range md.x.Data {
			moved = moved || v != x0.Data[i]
		}
		if moved != (method != MethodLD) {
			t.Errorf("%s: images changed = %v", method, moved)
		}
		// Checkpoint → Restore keeps the step size.
		e, _ := New(cfg, "mnist")
		if err := e.Init(context.Background(), real); err != nil {
			t.Fatal(err)
		}
		if err := e.Restore(d.Checkpoint(15)); err != nil {
			t.Fatal(err)
		}
		if r := e.(*metaDistiller).StepSize(); math.Abs(r-md.StepSize()) > 1e-6*md.StepSize() {
			t.Errorf("%s: restored step size %v, want %v", method, r, md.StepSize())
		}
	}
}

func TestPart2ConfigErrors(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Method: MethodKIP, IPC: 1, KRR: KRRConfig{Kernel: "rbf"}}, `kernel "rbf"`},
		{Config{Method: MethodKIP, IPC: 1, KRR: KRRConfig{Reg: -1}}, "regularisation -1"},
		{Config{Method: MethodRFAD, IPC: 1, KRR: KRRConfig{Models: -2}}, "got -2"},
		{Config{Method: MethodDD, IPC: 1, Meta: MetaConfig{Steps: -3}}, "unrolled steps -3"},
		{Config{Method: MethodSLDD, IPC: 1, Meta: MetaConfig{LRInit: math.Inf(1)}}, "inner step size +Inf"},
	} {
		_, err := New(c.cfg, "mnist")
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "distill: ") {
			t.Errorf("%+v: error %v, want one naming %q", c.cfg, err, c.want)
		}
	}
	for _, m := range part2Methods() {
		d, err := New(Config{Method: m, IPC: 1}, "mnist")
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		if !d.Iterative() {
			t.Errorf("%s is not iterative", m)
		}
		if err := d.Init(context.Background(), &data.Dataset{}); err == nil {
			t.Errorf("%s: Init on an empty data set: no error", m)
		}
	}
}

// TestSegmentedMetaGrad: back-propagating segment by segment with
// recomputation gives the one-tape meta-gradient, with and without
// momentum, for segments that divide the unroll and one that does not.
func TestSegmentedMetaGrad(t *testing.T) {
	rng := tensor.NewRNG(2, 2)
	m, err := nn.New[float64]("convnet-w4-d1", []int{1, 6, 6}, 3, rng)
	if err != nil {
		t.Fatal(err)
	}
	x := tensor.New[float64](3, 1, 6, 6)
	tensor.FillNormal(rng, x, 0, 1)
	logits := tensor.New[float64](3, 3)
	tensor.FillNormal(rng, logits, 0, 1)
	xr := tensor.New[float64](4, 1, 6, 6)
	tensor.FillNormal(rng, xr, 0, 1)
	for _, mom := range []float64{0, 0.9} {
		task := MetaTask[float64]{Model: m, Start: m.Params(), X: x, Y: []int{0, 1, 2}, Logits: logits, Steps: 5, Momentum: mom,
			RealX: xr, RealY: []int{0, 1, 2, 1}, WantX: true, WantLogits: true}
		want, err := DDMetaGrad(task, -1.5)
		if err != nil {
			t.Fatal(err)
		}
		for _, seg := range []int{1, 2, 3} {
			task.Segment = seg
			got, err := DDMetaGrad(task, -1.5)
			if err != nil {
				t.Fatal(err)
			}
			close := func(a, b float64) bool { return math.Abs(a-b) <= 1e-10*(1+math.Abs(b)) }
			if !close(got.Loss, want.Loss) || !close(got.LogLR, want.LogLR) {
				t.Errorf("momentum %g segment %d: loss %v, ∂/∂log η %v; one tape %v, %v", mom, seg, got.Loss, got.LogLR, want.Loss, want.LogLR)
			}
			for i := range want.X.Data {
				if !close(got.X.Data[i], want.X.Data[i]) {
					t.Fatalf("momentum %g segment %d: ∂L/∂x[%d] = %v, one tape %v", mom, seg, i, got.X.Data[i], want.X.Data[i])
				}
			}
			for i := range want.Logits.Data {
				if !close(got.Logits.Data[i], want.Logits.Data[i]) {
					t.Fatalf("momentum %g segment %d: ∂L/∂logits[%d] = %v, one tape %v", mom, seg, i, got.Logits.Data[i], want.Logits.Data[i])
				}
			}
		}
	}
}

// TestKernelAccuracy: KIP raises the accuracy of its own KRR predictor on
// held-out images (the two-class MNIST subset: images 0–99 of each class
// to distill from, the test split to test on).
func TestKernelAccuracy(t *testing.T) {
	train, test := loadMNIST(t)
	real, held := twoClass(train, 100), twoClass(test, 300)
	d, err := New(Config{Method: MethodKIP, IPC: 1, Seed: 3, Init: InitNoise}, "mnist")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Init(context.Background(), real); err != nil {
		t.Fatal(err)
	}
	a := d.(*krrDistiller).arch()
	before, err := KernelAccuracy(d.Synthetic(), held, a, 1e-6)
	if err != nil {
		t.Fatal(err)
	}
	for it := range 30 {
		if _, err := d.Step(context.Background(), it); err != nil {
			t.Fatal(err)
		}
	}
	after, err := KernelAccuracy(d.Synthetic(), held, a, 1e-6)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("KRR test accuracy of kip's set (two classes, from noise): %.3f → %.3f", before, after)
	if !(after > before+0.1 && after > 0.9) {
		t.Errorf("KRR accuracy %.3f → %.3f: want a gain of 0.1 to above 0.9", before, after)
	}
	if _, err := KernelAccuracy(d.Synthetic(), held, a, 0); err == nil {
		t.Error("zero regularisation: no error")
	}
}

// TestLinBa: decode is eq. 35, the factor gradients from the image
// gradient agree with central differences of the meta-loss of the
// decoded set, the budget is enforced, and a run reduces its meta-loss
// and survives a checkpoint round trip through the file.
func TestLinBa(t *testing.T) {
	train, _ := loadMNIST(t)
	real := twoClass(train, 50)
	cfg := Config{Method: MethodLinBa, IPC: 1, Seed: 5, Model: "convnet-w8-d2", BatchReal: 16, Meta: MetaConfig{Steps: 2}}.Defaults("mnist")
	r, k, err := linbaSize(cfg, 2, 784)
	if err != nil || r != 4 || k != 1 { // 2·784 floats: one basis (784 + 4·2·1)
		t.Fatalf("linbaSize: r %d, K %d, %v; want 4, 1", r, k, err)
	}
	over := cfg
	over.Meta.Bases = 3
	if _, _, err := linbaSize(over, 2, 784); err == nil || !strings.Contains(err.Error(), "more than the budget") {
		t.Errorf("3 bases for a budget of 2 images: %v", err)
	}
	cfg.IPC = 3 // budget 3·2·784: K = 4704/(784+24) = 5 bases, r = 12
	d, err := New(cfg, "mnist")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Init(context.Background(), real); err != nil {
		t.Fatal(err)
	}
	md := d.(*metaDistiller)
	l := md.lin
	if l.k != 5 || l.r != 12 || l.floats() > 3*2*784 || md.x.Shape[0] != 24 {
		t.Fatalf("K %d r %d floats %d images %v", l.k, l.r, l.floats(), md.x.Shape)
	}
	// decode: image (c, i) = Σ_k A_i[c,k] b_k.
	x, y := l.decode()
	c, i, p := 1, 7, 300
	var want float64
	for j := range l.k {
		want += float64(l.addr.Data[(i*2+c)*l.k+j]) * float64(l.bases.Data[j*784+p])
	}
	if got := x.Data[(c*l.r+i)*784+p]; math.Abs(float64(got)-want) > 1e-5 || y[c*l.r+i] != c {
		t.Fatalf("decoded value %v (label %d), want %v (label %d)", got, y[c*l.r+i], want, c)
	}
	// Chain rule: ⟨∂L/∂x, dx⟩ for a perturbation of one factor entry
	// equals the factor gradient (L linear test function L = ⟨G, x⟩).
	g := tensor.New[float32](x.Shape...)
	tensor.FillNormal(tensor.NewRNG(1, 1), g, 0, 1)
	gb, ga := l.grads(g)
	lin := func() float64 {
		x, _ := l.decode()
		var s float64
		for q, v := range x.Data {
			s += float64(v) * float64(g.Data[q])
		}
		return s
	}
	for _, e := range []struct {
		name string
		p    *float32
		ana  float32
	}{{"bases[1234]", &l.bases.Data[1234], gb.Data[1234]}, {"addr[17]", &l.addr.Data[17], ga.Data[17]}} {
		orig := *e.p
		*e.p = orig + 1e-2
		fp := lin()
		*e.p = orig - 1e-2
		fm := lin()
		*e.p = orig
		if num := (fp - fm) / 2e-2; math.Abs(num-float64(e.ana)) > 1e-3*(1+math.Abs(num)) {
			t.Errorf("∂/∂%s: %v, finite difference %v", e.name, e.ana, num)
		}
	}
	before := fixedMetaLoss(t, md)
	for it := range 10 {
		if _, err := d.Step(context.Background(), it); err != nil {
			t.Fatal(err)
		}
	}
	after := fixedMetaLoss(t, md)
	t.Logf("linba: meta-loss on a fixed network %.4f → %.4f", before, after)
	if !(after < before) {
		t.Errorf("linba did not reduce the meta-loss: %.4f → %.4f", before, after)
	}
	path := filepath.Join(t.TempDir(), "ck.npz")
	if err := d.Checkpoint(10).Save(path); err != nil {
		t.Fatal(err)
	}
	ck, err := LoadCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := New(cfg, "mnist")
	if err := e.Init(context.Background(), real); err != nil {
		t.Fatal(err)
	}
	if err := e.Restore(ck); err != nil {
		t.Fatal(err)
	}
	for q, v := range e.(*metaDistiller).lin.addr.Data {
		if v != l.addr.Data[q] {
			t.Fatalf("restored addressing %d: %v, want %v", q, v, l.addr.Data[q])
		}
	}
	if err := md.SaveFactors(filepath.Join(t.TempDir(), "factors.npz")); err != nil {
		t.Error(err)
	}
}

// TestEvaluateUnrolledIsTheInnerLoop checks that the unrolled evaluation
// trains each network exactly as MetaTask unrolls it: full-batch SGD at
// the learned step size with the meta-task's momentum, no weight decay,
// augmentation or schedule, and soft labels where the set has them.
func TestEvaluateUnrolledIsTheInnerLoop(t *testing.T) {
	train, testAll := loadMNIST(t)
	real, test := twoClass(train, 100), twoClass(testAll, 100)
	rng := tensor.NewRNG(3, 3)
	syn := randomReal(real, real.ClassIndices(), 3, rng)
	logits := tensor.New[float32](syn.Len(), real.Classes)
	tensor.FillNormal(rng, logits, 0, 1)
	const model, steps, lr, momentum, seed = "convnet-w8-d2", 4, 0.05, 0.5, 7
	u := UnrolledEval{Model: model, Steps: steps, LR: lr, Momentum: momentum}
	for _, soft := range []bool{false, true} {
		set := syn.Clone()
		if soft {
			set.YSoft = logits
		}
		// The meta-task's unroll from the network of run 0.
		m, err := nn.New[float32](model, real.ImageShape(), real.Classes, tensor.NewRNG(seed, 1000))
		if err != nil {
			t.Fatal(err)
		}
		task := MetaTask[float32]{Model: m, Start: m.Params(), X: set.X, Y: set.Y, Steps: steps, Momentum: momentum}
		if soft {
			task.Logits = logits
		}
		tp := ag.NewTape[float32]()
		l := task.leaves(tp, math.Log(lr))
		ps := make([]*ag.Var[float32], len(task.Start))
		for i, p := range task.Start {
			ps[i] = tp.Param(p)
		}
		want, _, err := task.unroll(l, ps, nil, steps, false)
		if err != nil {
			t.Fatal(err)
		}
		got, err := trainEvalModel(context.Background(), set, test, unrolledConfig(context.Background(), set, u, 1, seed, nil), nil, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		moved := false
		for i, p := range got.Params() {
			for j, v := range p.Data {
				w, start := want[i].Value.Data[j], task.Start[i].Data[j]
				moved = moved || w != start
				if d := math.Abs(float64(v - w)); d > 1e-5+1e-4*math.Abs(float64(w)) {
					t.Fatalf("soft %v: parameter %d[%d] after the unrolled evaluation's training %g, meta-task unroll %g", soft, i, j, v, w)
				}
			}
		}
		tp.Release()
		if !moved {
			t.Fatalf("soft %v: the unroll left the network unchanged: the comparison would be vacuous", soft)
		}
		mean, _, accs, err := EvaluateUnrolled(context.Background(), set, test, u, 2, seed, nil)
		if err != nil || len(accs) != 2 || !(mean > 0) {
			t.Fatalf("soft %v: EvaluateUnrolled = %v, %v, %v", soft, mean, accs, err)
		}
	}
	for _, bad := range []UnrolledEval{{Model: model, Steps: 0, LR: lr}, {Model: model, Steps: 2, LR: 0}, {Model: model, Steps: 2, LR: lr, Momentum: 1}} {
		if _, _, _, err := EvaluateUnrolled(context.Background(), syn, test, bad, 1, seed, nil); err == nil {
			t.Errorf("EvaluateUnrolled accepted %+v", bad)
		}
	}
}
