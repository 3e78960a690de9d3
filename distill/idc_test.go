package distill

import (
	"context"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/internal/npz"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// PyTorch's F.interpolate([[1, 2], [3, 4]], size=4, mode="bilinear",
// align_corners=False) is the 4×4 array below; with factor 2, each of the
// four cells of a 4×4 image is such a 2×2 patch.
func TestIDCDecodeHandComputed(t *testing.T) {
	want := []float64{
		1.0, 1.25, 1.75, 2.0,
		1.5, 1.75, 2.25, 2.5,
		2.5, 2.75, 3.25, 3.5,
		3.0, 3.25, 3.75, 4.0,
	}
	// The top-left cell holds 1 2 / 3 4; the others are constants 5, 6, 7.
	x, _ := tensor.FromSlice([]float64{
		1, 2, 5, 5,
		3, 4, 5, 5,
		6, 6, 7, 7,
		6, 6, 7, 7,
	}, 1, 1, 4, 4)
	form, err := newIDCFormation(2, 1, 4, 4, []float64{0})
	if err != nil {
		t.Fatal(err)
	}
	dec := idcDecode(form, x)
	if !slices.Equal(dec.Shape, []int{4, 1, 4, 4}) {
		t.Fatalf("decoded shape %v", dec.Shape)
	}
	for i, w := range want {
		if math.Abs(dec.Data[i]-w) > 1e-12 {
			t.Fatalf("cell 0 pixel %d: %v, want %v (got %v)", i, dec.Data[i], w, dec.Data[:16])
		}
	}
	for k, v := range []float64{5, 6, 7} {
		for _, got := range dec.Data[(k+1)*16 : (k+2)*16] {
			if math.Abs(got-v) > 1e-12 {
				t.Fatalf("cell %d: %v, want constant %v", k+1, dec.Data[(k+1)*16:(k+2)*16], v)
			}
		}
	}
	// A 3×3 image with factor 2 is padded to 4×4: the bottom-right cell
	// is x[2][2] and three padding pixels (value 9 here).
	y, _ := tensor.FromSlice([]float64{0, 0, 0, 0, 0, 0, 0, 0, 1}, 1, 1, 3, 3)
	form, _ = newIDCFormation(2, 1, 3, 3, []float64{9})
	dec = idcDecode(form, y)
	cell3 := dec.Data[3*9 : 4*9]
	// 2→3 bilinear: rows/cols use taps (0; 1), (0: ½, 1: ½), (1; 1).
	wantCell3 := []float64{1, 5, 9, 5, 7, 9, 9, 9, 9}
	for i, w := range wantCell3 {
		if math.Abs(cell3[i]-w) > 1e-12 {
			t.Fatalf("padded cell: %v, want %v", cell3, wantCell3)
		}
	}
	// Factor 1 is the identity (IDC-I).
	form, _ = newIDCFormation(1, 1, 3, 3, []float64{9})
	if dec := idcDecode(form, y); !slices.Equal(dec.Data, y.Data) {
		t.Errorf("factor 1 changed the image: %v", dec.Data)
	}
}

// The adjoint is the exact gradient of the decoder: a nonlinear loss of
// the decoded images is differentiated through idcAdjoint and compared
// with central finite differences in float64 at every stored pixel, for
// factors that divide the image and factors that need padding.
func TestIDCAdjointFiniteDifference(t *testing.T) {
	for _, f := range []int{1, 2, 3, 4} {
		n, c, h, w := 2, 2, 7, 6
		form, err := newIDCFormation(f, c, h, w, []float64{0.3, -0.2})
		if err != nil {
			t.Fatal(err)
		}
		x := randn64(uint64(f), n, c, h, w)
		wt := randn64(uint64(10+f), form.count(n), c, h, w)
		// L(x) = Σ wt ⊙ decode(x)² and ∂L/∂decode = 2·wt ⊙ decode(x).
		loss := func(x *tensor.Tensor[float64]) float64 {
			var s float64
			for i, v := range idcDecode(form, x).Data {
				s += wt.Data[i] * v * v
			}
			return s
		}
		dec := idcDecode(form, x)
		g := tensor.New[float64](dec.Shape...)
		for i, v := range dec.Data {
			g.Data[i] = 2 * wt.Data[i] * v
		}
		grad := idcAdjoint(form, g, n)
		const eps = 1e-6
		for i := range x.Data {
			old := x.Data[i]
			x.Data[i] = old + eps
			lp := loss(x)
			x.Data[i] = old - eps
			lm := loss(x)
			x.Data[i] = old
			num := (lp - lm) / (2 * eps)
			if math.Abs(num-grad.Data[i]) > 1e-6*math.Max(1, math.Abs(num)) {
				t.Fatalf("factor %d pixel %d: adjoint %.10g, finite difference %.10g", f, i, grad.Data[i], num)
			}
		}
	}
}

// IDC's whole image gradient — decode, second-order gradient matching
// with Siamese augmentation, adjoint — agrees with finite differences of
// the matching loss as a function of the stored images, for every
// distance.
func TestIDCGradMatchFiniteDifference(t *testing.T) {
	m := tinyConvNet64(t, 3)
	real := randn64(1, 5, 1, 8, 8)
	realY := []int{1, 1, 1, 1, 1}
	stored := randn64(2, 2, 1, 8, 8)
	form, err := newIDCFormation(2, 1, 8, 8, []float64{0.5})
	if err != nil {
		t.Fatal(err)
	}
	synY := []int{1, 1, 1, 1, 1, 1, 1, 1}
	aug := newIDCAugment([]string{data.DSAColor, data.DSACrop, data.DSACutout}, true, false)
	rng := tensor.NewRNG(4, 0)
	for _, metric := range []string{IDCMetricL1, IDCMetricMSE, DistanceLayerwise} {
		for _, a := range []*data.Augmentation{nil, aug.sample(rng, 8, 8, 8)} {
			loss := func(xs []*tensor.Tensor[float64]) float64 {
				dec := idcDecode(form, xs[0])
				l, err := IDCGradMatchLoss(m, real, realY, dec, synY, a, metric, false, tensor.New[float64](dec.Shape...))
				if err != nil {
					t.Fatal(err)
				}
				return l
			}
			dec := idcDecode(form, stored)
			g := tensor.New[float64](dec.Shape...)
			if _, err := IDCGradMatchLoss(m, real, realY, dec, synY, a, metric, false, g); err != nil {
				t.Fatal(err)
			}
			grad := idcAdjoint(form, g, 2)
			name := metric
			if a != nil {
				name += "+aug"
			}
			checkDirectional(t, name, []*tensor.Tensor[float64]{stored}, []*tensor.Tensor[float64]{grad}, loss)
		}
	}
}

// The l1 distance is Σ|g_real − g_syn| over the convolution kernels only
// (IDC's matchloss without --bias and --fc); with matchFC the linear
// layer's weight joins.
func TestIDCMatchedParameters(t *testing.T) {
	for _, c := range []struct {
		shape []int
		fc    bool
		want  bool
	}{{[]int{3, 1, 3, 3}, false, true}, {[]int{2, 12}, false, false}, {[]int{2, 12}, true, true}, {[]int{3}, true, false}} {
		if got := idcMatched(c.shape, c.fc); got != c.want {
			t.Errorf("idcMatched(%v, %v) = %v", c.shape, c.fc, got)
		}
	}
}

// IDC's "mix" initialisation tiles f² real images, shrunk by nearest
// neighbour, into one stored image.
func TestIDCMixInit(t *testing.T) {
	imgs := tensor.New[float32](4, 1, 4, 4)
	for k := range 4 {
		for p := range 16 {
			imgs.Data[k*16+p] = float32(10*k + p) // image k, pixel p
		}
	}
	got := idcMixInit(2, 1, imgs).Data
	// Cell (i, j) holds image 2i+j's pixels (0,0), (0,2), (2,0), (2,2).
	want := []float32{
		0, 2, 10, 12,
		8, 10, 18, 20,
		20, 22, 30, 32,
		28, 30, 38, 40,
	}
	if !slices.Equal(got, want) {
		t.Errorf("mix init %v, want %v", got, want)
	}
}

// The matching augmentation follows IDC's DiffAug: color always, one of
// the geometric families, cutout last; per sample or shared.
func TestIDCAugmentOrder(t *testing.T) {
	a := newIDCAugment([]string{data.DSACutout, data.DSAColor, data.DSACrop, data.DSAScale}, true, false)
	rng := tensor.NewRNG(1, 1)
	seen := map[string]bool{}
	for range 20 {
		aug := a.sample(rng, 3, 8, 8)
		if len(aug.Ops) != 3 || aug.Ops[0] != data.DSAColor || aug.Ops[2] != data.DSACutout {
			t.Fatalf("ops %v", aug.Ops)
		}
		seen[aug.Ops[1]] = true
		if aug.Color[0] != aug.Color[2] {
			t.Fatal("shared augmentation differs between samples")
		}
	}
	if !seen[data.DSACrop] || !seen[data.DSAScale] {
		t.Errorf("geometric families drawn: %v", seen)
	}
	if b := newIDCAugment([]string{data.DSAColor, data.DSACutout}, false, true); b == nil || slices.Contains(b.sample(rng, 2, 8, 8).Ops, data.DSACutout) {
		t.Error("cutout not dropped for CutMix network updates")
	}
	if newIDCAugment(nil, true, false) != nil {
		t.Error("empty strategy gave an augmentation")
	}
}

// CutMix pastes one box from the permuted batch and weights the labels by
// area.
func TestIDCCutMix(t *testing.T) {
	n, h, w := 4, 6, 5
	x := tensor.New[float32](n, 1, h, w)
	for i := range n {
		for p := range h * w {
			x.Data[i*h*w+p] = float32(i)
		}
	}
	y := []int{0, 1, 2, 3}
	for seed := range uint64(20) {
		xc := x.Clone()
		ratio, yb := cutMix(xc, y, tensor.NewRNG(seed, 0))
		for i := range n {
			pasted := 0
			for _, v := range xc.Data[i*h*w : (i+1)*h*w] {
				if v != float32(i) {
					if v != float32(yb[i]) {
						t.Fatalf("image %d has a pixel from image %v, its partner is %d", i, v, yb[i])
					}
					pasted++
				}
			}
			if yb[i] != i && math.Abs(1-float64(pasted)/float64(h*w)-ratio) > 1e-12 {
				t.Fatalf("seed %d image %d: %d pasted pixels, ratio %v", seed, i, pasted, ratio)
			}
		}
	}
}

func TestIDCDefaults(t *testing.T) {
	for _, c := range []struct {
		dataset, metric, aug, mixup string
		netData                     int
		lr                          float64
	}{
		// FMNIST: 1e-4 · IPC/10 · (28/32)² / 0.3530²; MNIST: 1e-4 · IPC/10 / 0.3081².
		{"fmnist", IDCMetricL1, "color_crop_cutout", IDCMixupCut, 500, 1e-4 * 0.1 * (28.0 / 32) * (28.0 / 32) / (0.3530 * 0.3530)},
		{"mnist", IDCMetricL1, "color_crop", IDCMixupNone, 500, 1e-4 * 0.1 / (0.3081 * 0.3081)},
		{"cifar10", IDCMetricMSE, "color_crop_cutout", IDCMixupCut, 2000, 0},
	} {
		d, err := New(Config{Method: MethodIDC, IPC: 1}, c.dataset)
		if err != nil {
			t.Fatal(err)
		}
		cfg := d.Config()
		p := cfg.IDC
		if p.Factor != 2 || p.Metric != c.metric || p.Mixup != c.mixup || p.NetData != c.netData || p.MixProb != 0.5 || p.BatchSynMax != 128 ||
			cfg.BatchReal != 64 || cfg.OuterLoop != 100 || cfg.InnerLoop != 1 || cfg.Momentum != 0.5 || cfg.LRNet != 0.01 ||
			cfg.DSAStrategy != c.aug || cfg.Init != InitReal || !cfg.Match.InnerReal {
			t.Errorf("%s defaults: %+v", c.dataset, cfg)
		}
		if c.lr > 0 && math.Abs(cfg.LRImg-c.lr) > 1e-6*c.lr {
			t.Errorf("%s image lr %g, want %g", c.dataset, cfg.LRImg, c.lr)
		}
	}
	// The image learning rate scales with IPC, as IDC's tune_lr_img.
	a, _ := New(Config{Method: MethodIDC, IPC: 1}, "fmnist")
	b, _ := New(Config{Method: MethodIDC, IPC: 10}, "fmnist")
	if r := b.Config().LRImg / a.Config().LRImg; math.Abs(r-10) > 1e-9 {
		t.Errorf("lr ratio IPC 10 / IPC 1 = %v", r)
	}
	// Other methods carry no idc configuration.
	if d, _ := New(Config{Method: MethodDSA, IPC: 1}, "mnist"); d.Config().IDC != (IDCConfig{}) || d.Config().Match.InnerReal {
		t.Errorf("dsa got idc settings: %+v", d.Config())
	}
}

func TestIDCBadConfig(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{IDC: IDCConfig{Factor: -1}}, "--idc-factor"},
		{Config{IDC: IDCConfig{Metric: "cos"}}, `"cos"`},
		{Config{IDC: IDCConfig{MixProb: 2}}, "--idc-mix-prob"},
		{Config{IDC: IDCConfig{Mixup: "mixup"}}, "--idc-mixup"},
		{Config{IDC: IDCConfig{NetData: -5}}, "--idc-net-data"},
		{Config{IDC: IDCConfig{BatchSynMax: -1}}, "--idc-batch-syn-max"},
		{Config{LRImg: math.Inf(1)}, "--lr-img"},
		{Config{Match: MatchConfig{ClassSum: true}}, "--class-sum"},
	} {
		c.cfg.Method, c.cfg.IPC = MethodIDC, 1
		_, err := New(c.cfg, "mnist")
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "distill:") {
			t.Errorf("%+v: error %v, want one naming %s", c.cfg.IDC, err, c.want)
		}
	}
	train, _ := loadMNIST(t)
	real := twoClass(train, 20)
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{IDC: IDCConfig{Factor: 29}}, "--idc-factor between 1 and 28"},
		{Config{Model: "mlp"}, "--idc-match-fc"},
	} {
		c.cfg.Method, c.cfg.IPC = MethodIDC, 1
		d, err := New(c.cfg, "mnist")
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Init(context.Background(), real); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Init with %+v: %v, want an error naming %s", c.cfg, err, c.want)
		}
	}
	// The MLP works with its fully connected weights matched.
	d, err := New(Config{Method: MethodIDC, IPC: 1, Model: "mlp", IDC: IDCConfig{MatchFC: true}}, "mnist")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Init(context.Background(), real); err != nil {
		t.Errorf("mlp with --idc-match-fc: %v", err)
	}
}

// tinyIDC is a fast idc configuration on two MNIST classes.
func tinyIDC(seed uint64) Config {
	return Config{Method: MethodIDC, IPC: 2, Seed: seed, Model: "convnet-w8", BatchReal: 8, OuterLoop: 2, InnerLoop: 1,
		LRImg: 0.01, IDC: IDCConfig{NetData: 16, BatchSynMax: 6}}
}

func runIDC(t *testing.T, cfg Config, real *data.Dataset, from, to int, ck *Checkpoint) Distiller {
	t.Helper()
	d := newInitialized(t, cfg, real)
	if ck != nil {
		if err := d.Restore(ck); err != nil {
			t.Fatal(err)
		}
	}
	for it := from; it < to; it++ {
		if _, err := d.Step(context.Background(), it); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// The budget is exactly that of a plain set; the decoded set has f²·IPC
// images per class, class-major; factors.npz holds the stored images and
// the factor; a run resumed from a saved checkpoint equals an
// uninterrupted one; the same seed gives the same set and another seed
// another.
func TestIDCBudgetResumeAndReproducibility(t *testing.T) {
	train, _ := loadMNIST(t)
	real := twoClass(train, 60)
	cfg := tinyIDC(3)
	full := runIDC(t, cfg, real, 0, 3, nil)
	syn := full.Synthetic()
	if err := syn.Validate(); err != nil {
		t.Fatal(err)
	}
	d := full.(*idc)
	if d.Floats() != 2*2*28*28 {
		t.Errorf("stored floats %d, want classes·IPC·C·H·W = %d", d.Floats(), 2*2*28*28)
	}
	if syn.Len() != 2*4*2 || !slices.Equal(syn.PerClass(), []int{8, 8}) || syn.Y[7] != 0 || syn.Y[8] != 1 {
		t.Errorf("decoded set: %d images, per class %v, labels %v", syn.Len(), syn.PerClass(), syn.Y)
	}
	// Synthetic is the decoding of the stored images.
	if dec := idcDecode(d.form, d.classImages(1)); !slices.Equal(dec.Data, classSlice(syn.X, 1, 8).Data) {
		t.Error("Synthetic() is not the decoding of the stored images")
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "factors.npz")
	if err := d.SaveFactors(path); err != nil {
		t.Fatal(err)
	}
	m, err := npz.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if m["factor"].Data.([]int64)[0] != 2 || m["floats"].Data.([]int64)[0] != int64(d.Floats()) ||
		!slices.Equal(m["images"].Shape, []int{4, 1, 28, 28}) || !slices.Equal(m["images"].Data.([]float32), d.syn.X.Data) {
		t.Errorf("factors.npz: factor %v floats %v images %v", m["factor"].Data, m["floats"].Data, m["images"].Shape)
	}

	// Interrupted after 2 iterations, saved, loaded, resumed.
	part := runIDC(t, cfg, real, 0, 2, nil)
	ckPath := filepath.Join(dir, "checkpoint.npz")
	if err := part.Checkpoint(2).Save(ckPath); err != nil {
		t.Fatal(err)
	}
	ck, err := LoadCheckpoint(ckPath)
	if err != nil {
		t.Fatal(err)
	}
	resumed := runIDC(t, cfg, real, 2, 3, ck)
	if !slices.Equal(resumed.Synthetic().X.Data, syn.X.Data) {
		t.Error("resumed run differs from the uninterrupted one")
	}
	again := runIDC(t, cfg, real, 0, 3, nil)
	if !slices.Equal(again.Synthetic().X.Data, syn.X.Data) {
		t.Error("same seed, different result")
	}
	other := runIDC(t, tinyIDC(4), real, 0, 3, nil)
	if slices.Equal(other.Synthetic().X.Data, syn.X.Data) {
		t.Error("another seed gave the same set")
	}
	// The images moved from their initialisation.
	init := runIDC(t, cfg, real, 0, 0, nil)
	if slices.Equal(init.Synthetic().X.Data, syn.X.Data) {
		t.Error("three iterations left the set unchanged")
	}
	// A checkpoint of another configuration is refused.
	c2 := tinyIDC(3)
	c2.IDC.Factor = 3
	e, _ := New(c2, "mnist")
	if err := e.Init(context.Background(), real); err != nil {
		t.Fatal(err)
	}
	if err := e.Restore(ck); err == nil {
		t.Error("a factor-2 checkpoint restored into a factor-3 run")
	}
}

// A few idc iterations lower the matching loss on a fixed network and
// fixed draws (the stored images learn), with the default l1 distance.
func TestIDCReducesMatchingLoss(t *testing.T) {
	train, _ := loadMNIST(t)
	real := twoClass(train, 60)
	cfg := tinyIDC(5)
	cfg.OuterLoop, cfg.IDC.BatchSynMax = 5, 128
	d := runIDC(t, cfg, real, 0, 0, nil).(*idc)
	fixed := func() float64 {
		rng := tensor.NewRNG(99, 99)
		var total float64
		for range 3 {
			// Step's own draws for a network, at a fixed seed.
			net, err := newIDCProbe(d, rng)
			if err != nil {
				t.Fatal(err)
			}
			for c := range 2 {
				l, err := d.classGrad(net, c, rng)
				if err != nil {
					t.Fatal(err)
				}
				total += l
			}
		}
		return total
	}
	before := fixed()
	for it := range 4 {
		if _, err := d.Step(context.Background(), it); err != nil {
			t.Fatal(err)
		}
	}
	after := fixed()
	t.Logf("matching loss on fixed draws %.4f → %.4f", before, after)
	if !(after < before) {
		t.Errorf("idc did not reduce its matching loss: %.4f → %.4f", before, after)
	}
}

// newIDCProbe returns a freshly initialised matching network in training
// mode, as Step builds one.
func newIDCProbe(d *idc, rng *tensor.RNG) (nn.Model[float32], error) {
	m, err := nn.New[float32](d.cfg.Model, d.real.ImageShape(), d.real.Classes, rng)
	if err != nil {
		return nil, err
	}
	if tm, ok := m.(nn.Trainable); ok {
		tm.SetTraining(true)
	}
	return m, nil
}

// TestIDCEvaluation: IDCEvalConfig is IDC's recipe (batch 64, ×0.2 at 2/3
// and 5/6 of the epochs, CutMix 0.5, no cutout, no flips on MNIST), and
// Evaluate applies its CutMix: the same run with and without it trains
// different weights.
func TestIDCEvaluation(t *testing.T) {
	c := IDCEvalConfig("fmnist", 0)
	if c.Epochs != IDCEvalEpochs || c.BatchSize != 64 || c.LR != 0.01 || c.Momentum != 0.9 || c.WeightDecay != 5e-4 ||
		c.CutMix != 0.5 || c.Model != "convnet" || c.DSAStrategy != "color_crop_flip_scale_rotate" {
		t.Errorf("IDCEvalConfig(fmnist) = %+v", c)
	}
	for _, e := range []struct {
		epoch int
		want  float64
	}{{0, 0.01}, {665, 0.01}, {666, 0.002}, {832, 0.002}, {833, 0.0004}, {999, 0.0004}} {
		if got := c.Schedule.LR(c.LR, e.epoch, c.Epochs); math.Abs(got-e.want) > 1e-12 {
			t.Errorf("epoch %d: rate %g, want %g", e.epoch, got, e.want)
		}
	}
	if m := IDCEvalConfig("mnist", 30); m.DSAStrategy != "color_crop_scale_rotate" || m.Epochs != 30 || m.Schedule.LR(1, 20, 30) != 0.2 {
		t.Errorf("IDCEvalConfig(mnist, 30) = %+v", m)
	}

	train, test := loadMNIST(t)
	real := twoClass(train, 50)
	tst := twoClass(test, 100)
	syn := subsetSet(real, []int{0, 1, 2, 3, 50, 51, 52, 53})
	cfg := IDCEvalConfig("mnist", 3)
	cfg.Model, cfg.Runs, cfg.Seed = "convnet-w8", 1, 5
	mean, _, accs, err := Evaluate(syn, tst, cfg)
	if err != nil || len(accs) != 1 || !(mean >= 0 && mean <= 1) {
		t.Fatalf("Evaluate with IDC's recipe: %v, %v", accs, err)
	}
	strategy, err := data.ParseDSAStrategy(cfg.DSAStrategy)
	if err != nil {
		t.Fatal(err)
	}
	weights := func(p float64) []float32 {
		cfg := cfg
		cfg.CutMix = p
		m, err := trainEvalModel(context.Background(), syn, tst, cfg, strategy, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		return slices.Clone(m.Params()[0].Data)
	}
	if slices.Equal(weights(0), weights(1)) {
		t.Error("CutMix with probability 1 trained the same weights as none")
	}
	cfg.CutMix = 1.5
	if _, _, _, err := Evaluate(syn, tst, cfg); err == nil || !strings.Contains(err.Error(), "CutMix probability 1.5") {
		t.Errorf("CutMix 1.5: %v", err)
	}
}
