package nn_test

import (
	"fmt"
	"math"
	"testing"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/distill"
	"github.com/fedsim/fedsim/internal/npz"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// The golden fixture is written by scripts/torch/make_fixtures.py with
// PyTorch in float64: the DD ConvNet (width 32, instance norm) on MNIST- and
// CIFAR-shaped inputs, its loss and every gradient, and the gradient-matching
// and distribution-matching meta-gradients.
const goldenPath = "../testdata/golden/convnet.npz"

type golden map[string]*npz.Array

func loadGolden(t *testing.T) golden {
	t.Helper()
	g, err := npz.Read(goldenPath)
	if err != nil {
		t.Fatalf("reading the PyTorch fixture (make it with /usr/bin/python3 scripts/torch/make_fixtures.py): %v", err)
	}
	return g
}

func goldenTensor[T tensor.Float](t *testing.T, g golden, key string) *tensor.Tensor[T] {
	t.Helper()
	a, ok := g[key]
	if !ok {
		t.Fatalf("fixture has no %q", key)
	}
	v, err := a.Float64()
	if err != nil {
		t.Fatal(err)
	}
	out := tensor.New[T](a.Shape...)
	for i, x := range v {
		out.Data[i] = T(x)
	}
	return out
}

func goldenLabels(t *testing.T, g golden, key string) []int {
	t.Helper()
	v, err := g[key].Int64()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out
}

// relErr is max|a−b| / max(max|b|, floor): the error relative to the
// array's scale. Parameter gradients pass as floor the scale of the whole
// gradient (all parameters), so arrays that are zero up to rounding (the
// conv biases' gradients: instance norm cancels a per-channel shift) are
// judged against the gradient they belong to, not their own rounding noise.
func relErr[T tensor.Float](got *tensor.Tensor[T], want *tensor.Tensor[T], floor float64) float64 {
	var diff, scale float64
	for i := range want.Data {
		diff = math.Max(diff, math.Abs(float64(got.Data[i])-float64(want.Data[i])))
		scale = math.Max(scale, math.Abs(float64(want.Data[i])))
	}
	return diff / math.Max(scale, floor)
}

func TestConvNetMatchesPyTorch(t *testing.T) {
	g := loadGolden(t)
	for _, cfg := range []string{"mnist", "cifar"} {
		t.Run(cfg+"/float64", func(t *testing.T) { checkGolden[float64](t, g, cfg, 1e-6) })
		t.Run(cfg+"/float32", func(t *testing.T) { checkGolden[float32](t, g, cfg, 1e-3) })
	}
}

func checkGolden[T tensor.Float](t *testing.T, g golden, cfg string, tol float64) {
	x := goldenTensor[T](t, g, cfg+"_x")
	y := goldenLabels(t, g, cfg+"_y")
	m, err := nn.NewConvNet[T](nn.ConvNetConfig{InChannels: x.Shape[1], Height: x.Shape[2], Width: x.Shape[3], Classes: 10, NetWidth: 32}, tensor.NewRNG(1, 1))
	if err != nil {
		t.Fatal(err)
	}
	names := m.ParamNames()
	for i, p := range m.Params() {
		p.CopyFrom(goldenTensor[T](t, g, cfg+"_param_"+names[i]))
	}
	// groupScale is the largest |value| over a family of fixture arrays.
	groupScale := func(prefix string) float64 {
		s := 0.0
		for _, name := range names {
			for _, v := range goldenTensor[float64](t, g, prefix+name).Data {
				s = math.Max(s, math.Abs(v))
			}
		}
		return s
	}
	gradScale, gmScale := groupScale(cfg+"_grad_"), groupScale(cfg+"_gm_grad_")
	checkScaled := func(what string, got *tensor.Tensor[T], key string, floor float64) {
		t.Helper()
		want := goldenTensor[T](t, g, key)
		if !tensor.SameShape(got.Shape, want.Shape) {
			t.Fatalf("%s: shape %v, PyTorch %v", what, got.Shape, want.Shape)
		}
		if e := relErr(got, want, floor); e > tol || math.IsNaN(e) {
			t.Errorf("%s: relative error %.3g > %.0e", what, e, tol)
		}
	}
	check := func(what string, got *tensor.Tensor[T], key string) { t.Helper(); checkScaled(what, got, key, 0) }

	// Forward, loss, and first-order gradients.
	tp := ag.NewTape[T]()
	defer tp.Release()
	ps := nn.Bind(tp, m)
	xv := tp.Param(x)
	check("embedding", m.Embed(xv, ps).Value, cfg+"_embed")
	logits := m.Forward(xv, ps)
	check("logits", logits.Value, cfg+"_logits")
	loss := ag.CrossEntropy(logits, y)
	check("loss", loss.Value, cfg+"_loss")
	grads, err := tp.Grad([]*ag.Var[T]{loss}, nil, append(ps, xv), false)
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range names {
		checkScaled("d loss/d "+name, grads[i].Value, cfg+"_grad_"+name, gradScale)
	}
	check("d loss/d x", grads[len(names)].Value, cfg+"_grad_x")

	// Gradient matching: second order through conv, norm, ReLU and pooling.
	xs := tp.Param(goldenTensor[T](t, g, cfg+"_xsyn"))
	ys := goldenLabels(t, g, cfg+"_ysyn")
	gT := make([]*ag.Var[T], len(names))
	for i := range names {
		gT[i] = grads[i].Detach()
	}
	gS, err := tp.Grad([]*ag.Var[T]{ag.CrossEntropy(m.Forward(xs, ps), ys)}, nil, ps, true)
	if err != nil {
		t.Fatal(err)
	}
	dist := distill.LayerwiseGradDistance(gS, gT)
	check("gradient-matching distance", dist.Value, cfg+"_gm_loss")
	meta, err := tp.Grad([]*ag.Var[T]{dist}, nil, append(ps, xs), false)
	if err != nil {
		t.Fatal(err)
	}
	check("d distance/d x_syn", meta[len(names)].Value, cfg+"_gm_grad_xsyn")
	for i, name := range names {
		checkScaled(fmt.Sprintf("d distance/d %s", name), meta[i].Value, cfg+"_gm_grad_"+name, gmScale)
	}

	// Distribution matching.
	dm := ag.Sum(ag.Square(ag.Sub(
		ag.MeanAxes(m.Embed(tp.Const(x), ps), []int{0}, false),
		ag.MeanAxes(m.Embed(xs, ps), []int{0}, false))))
	check("distribution-matching loss", dm.Value, cfg+"_dm_loss")
	dg, err := tp.Grad([]*ag.Var[T]{dm}, nil, []*ag.Var[T]{xs}, false)
	if err != nil {
		t.Fatal(err)
	}
	check("d dm/d x_syn", dg[0].Value, cfg+"_dm_grad_xsyn")
}
