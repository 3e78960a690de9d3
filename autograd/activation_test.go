package autograd_test

import (
	"math"
	"testing"

	"github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/autograd/gradcheck"
	"github.com/fedsim/fedsim/tensor"
)

type anV = autograd.Var[float64]
type anTp = autograd.Tape[float64]

// anCheckBoth runs gradcheck.Check and gradcheck.CheckSecond on f.
func anCheckBoth(t *testing.T, name string, f gradcheck.Func, inputs ...*tensor.Tensor[float64]) {
	t.Helper()
	if err := gradcheck.Check(f, inputs, gradcheck.Options{}); err != nil {
		t.Errorf("%s: first order: %v", name, err)
	}
	if err := gradcheck.CheckSecond(f, inputs, gradcheck.Options{Seed: 3}); err != nil {
		t.Errorf("%s: second order: %v", name, err)
	}
}

// anAwayFromZero moves values within d of 0 out to ±d, so kinks are not
// straddled by finite differences.
func anAwayFromZero(x *tensor.Tensor[float64], d float64) *tensor.Tensor[float64] {
	for i, v := range x.Data {
		if math.Abs(v) < d {
			x.Data[i] = math.Copysign(d+math.Abs(v), v)
		}
	}
	return x
}

func TestActivationGradients(t *testing.T) {
	x := anAwayFromZero(gradcheck.Random(1, 3, 5), 0.1)
	one := func(op func(*anV) *anV) gradcheck.Func {
		return func(tp *anTp, xs []*anV) *anV { return op(xs[0]) }
	}
	// Each activation alone, and inside a product with a smooth function
	// so that second derivatives are not trivially zero.
	ops := map[string]func(*anV) *anV{
		"ReLU":      autograd.ReLU[float64],
		"LeakyReLU": func(a *anV) *anV { return autograd.LeakyReLU(a, 0.1) },
		"Softplus":  autograd.Softplus[float64],
		"GELU":      autograd.GELU[float64],
		"NormCDF":   autograd.NormCDF[float64],
	}
	for name, op := range ops {
		anCheckBoth(t, name, one(op), x)
		anCheckBoth(t, name+"·tanh", one(func(a *anV) *anV { return autograd.Mul(op(a), autograd.Tanh(a)) }), x)
		anCheckBoth(t, name+"²", one(func(a *anV) *anV { return autograd.Square(op(a)) }), x)
	}
	// Softplus far out on both sides.
	big := tensor.New[float64](4)
	copy(big.Data, []float64{-40, -3, 3, 40})
	anCheckBoth(t, "Softplus big", one(autograd.Softplus[float64]), big)
}

func TestSoftmaxGradients(t *testing.T) {
	x := gradcheck.Random(2, 3, 4)
	anCheckBoth(t, "Softmax", func(tp *anTp, xs []*anV) *anV { return autograd.Softmax(xs[0]) }, x)
	anCheckBoth(t, "LogSoftmax", func(tp *anTp, xs []*anV) *anV { return autograd.LogSoftmax(xs[0]) }, x)
	x3 := gradcheck.Random(3, 2, 2, 3)
	anCheckBoth(t, "LogSoftmax rank 3", func(tp *anTp, xs []*anV) *anV { return autograd.LogSoftmax(xs[0]) }, x3)
	anCheckBoth(t, "Softmax rank 1", func(tp *anTp, xs []*anV) *anV { return autograd.Softmax(xs[0]) }, gradcheck.Random(4, 5))
	// Third order through LogSoftmax: the gradient of CheckSecond's scalar
	// is itself checked.
	if err := gradcheck.CheckSecond(anSecondOrder(func(tp *anTp, xs []*anV) *anV { return autograd.LogSoftmax(xs[0]) }), []*tensor.Tensor[float64]{x}, gradcheck.Options{}); err != nil {
		t.Errorf("LogSoftmax third order: %v", err)
	}
}

// anSecondOrder returns xs ↦ Σ u ⊙ ∂<r, f(xs)>/∂xs (a gradient built with
// createGraph), so that CheckSecond on it checks third derivatives of f.
func anSecondOrder(f gradcheck.Func) gradcheck.Func {
	return func(tp *anTp, xs []*anV) *anV {
		ps := make([]*anV, len(xs))
		for i, x := range xs {
			ps[i] = x
			if !x.RequiresGrad() {
				ps[i] = tp.Param(x.Value)
			}
		}
		y := f(tp, ps)
		r := tp.Alloc(y.Shape()...)
		tensor.FillNormal(tensor.NewRNG(11, 1), r, 0, 1)
		s := autograd.Sum(autograd.Mul(y, tp.Const(r)))
		gs, err := tp.Grad([]*anV{s}, nil, ps, true)
		if err != nil {
			tp.Fail(err)
			return s
		}
		var tot *anV
		for i, g := range gs {
			u := tp.Alloc(g.Shape()...)
			tensor.FillNormal(tensor.NewRNG(12, uint64(i)), u, 0, 1)
			term := autograd.Sum(autograd.Mul(g, tp.Const(u)))
			if tot == nil {
				tot = term
			} else {
				tot = autograd.Add(tot, term)
			}
		}
		return tot
	}
}

func TestGELUThirdOrder(t *testing.T) {
	x := gradcheck.Random(5, 6)
	if err := gradcheck.CheckSecond(anSecondOrder(func(tp *anTp, xs []*anV) *anV { return autograd.GELU(xs[0]) }), []*tensor.Tensor[float64]{x}, gradcheck.Options{}); err != nil {
		t.Errorf("GELU third order: %v", err)
	}
}

// anFusedVsComposite computes the gradients of <r, f(xs)> twice, without and
// with createGraph (the fused and the composite backward rules), and
// requires them to agree.
func anFusedVsComposite(t *testing.T, name string, f gradcheck.Func, inputs ...*tensor.Tensor[float64]) {
	t.Helper()
	grads := func(create bool) [][]float64 {
		tp := autograd.NewTape[float64]()
		defer tp.Release()
		xs := make([]*anV, len(inputs))
		for i, in := range inputs {
			xs[i] = tp.Param(in)
		}
		y := f(tp, xs)
		r := tp.Alloc(y.Shape()...)
		tensor.FillNormal(tensor.NewRNG(9, 9), r, 0, 1)
		gs, err := tp.Grad([]*anV{y}, []*anV{tp.Const(r)}, xs, create)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out := make([][]float64, len(gs))
		for i, g := range gs {
			out[i] = append([]float64(nil), g.Value.Data...)
		}
		return out
	}
	a, b := grads(false), grads(true)
	for i := range a {
		for j := range a[i] {
			if math.Abs(a[i][j]-b[i][j]) > 1e-12*(1+math.Abs(b[i][j])) {
				t.Fatalf("%s: input %d element %d: fused %.17g, composite %.17g", name, i, j, a[i][j], b[i][j])
			}
		}
	}
}

func TestActivationFusedMatchesComposite(t *testing.T) {
	x := gradcheck.Random(6, 4, 7)
	x.Data[0] = 0 // the kink: both paths use the mask 1[x > 0]
	for name, op := range map[string]func(*anV) *anV{
		"ReLU":       autograd.ReLU[float64],
		"LeakyReLU":  func(a *anV) *anV { return autograd.LeakyReLU(a, 0.01) },
		"Softplus":   autograd.Softplus[float64],
		"GELU":       autograd.GELU[float64],
		"Softmax":    autograd.Softmax[float64],
		"LogSoftmax": autograd.LogSoftmax[float64],
	} {
		anFusedVsComposite(t, name, func(tp *anTp, xs []*anV) *anV { return op(xs[0]) }, x)
	}
}

func TestActivationFloat32(t *testing.T) {
	x64 := gradcheck.Random(7, 3, 6)
	x32 := tensor.New[float32](3, 6)
	for i, v := range x64.Data {
		x32.Data[i] = float32(v)
	}
	for name, pair := range map[string]struct {
		f32 func(*autograd.Var[float32]) *autograd.Var[float32]
		f64 func(*anV) *anV
	}{
		"ReLU":       {autograd.ReLU[float32], autograd.ReLU[float64]},
		"GELU":       {autograd.GELU[float32], autograd.GELU[float64]},
		"Softplus":   {autograd.Softplus[float32], autograd.Softplus[float64]},
		"LogSoftmax": {autograd.LogSoftmax[float32], autograd.LogSoftmax[float64]},
		"Softmax":    {autograd.Softmax[float32], autograd.Softmax[float64]},
	} {
		y32, g32 := anValueAndGrad(pair.f32, x32)
		y64, g64 := anValueAndGrad(pair.f64, x64)
		for i := range y64 {
			if math.Abs(float64(y32[i])-y64[i]) > 1e-5*(1+math.Abs(y64[i])) ||
				math.Abs(float64(g32[i])-g64[i]) > 1e-5*(1+math.Abs(g64[i])) {
				t.Fatalf("%s element %d: float32 (%g, %g), float64 (%g, %g)", name, i, y32[i], g32[i], y64[i], g64[i])
			}
		}
	}
}

// anValueAndGrad returns f(x) and the gradient of Σ f(x)·w for fixed weights w.
func anValueAndGrad[T autograd.Float](f func(*autograd.Var[T]) *autograd.Var[T], x *tensor.Tensor[T]) ([]T, []T) {
	tp := autograd.NewTape[T]()
	defer tp.Release()
	xv := tp.Param(x)
	y := f(xv)
	w := tp.Alloc(y.Shape()...)
	for i := range w.Data {
		w.Data[i] = T(math.Sin(float64(i)))
	}
	gs, err := tp.Grad([]*autograd.Var[T]{autograd.Sum(autograd.Mul(y, tp.Const(w)))}, nil, []*autograd.Var[T]{xv}, false)
	if err != nil {
		panic(err)
	}
	return append([]T(nil), y.Value.Data...), append([]T(nil), gs[0].Value.Data...)
}

func TestSoftmaxScalarError(t *testing.T) {
	tp := autograd.NewTape[float64]()
	defer tp.Release()
	autograd.Softmax(tp.Param(tensor.Scalar(1.0)))
	if tp.Err() == nil {
		t.Fatal("Softmax of a scalar: no error")
	}
}

func BenchmarkReLUForwardBackward(b *testing.B) {
	x := tensor.New[float32](256, 128, 32, 32)
	tensor.FillNormal(tensor.NewRNG(42, 1), x, 0, 1)
	tp := autograd.NewTape[float32]()
	step := func() {
		xv := tp.Param(x)
		y := autograd.ReLU(xv)
		if _, err := tp.Grad([]*autograd.Var[float32]{y}, []*autograd.Var[float32]{tp.Const(x)}, []*autograd.Var[float32]{xv}, false); err != nil {
			b.Fatal(err)
		}
		tp.Release()
	}
	step()
	b.ResetTimer()
	for b.Loop() {
		step()
	}
	b.ReportMetric(b.Elapsed().Seconds()*1e3/float64(b.N), "ms/op")
}
