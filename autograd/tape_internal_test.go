package autograd

import (
	"testing"

	"github.com/fedsim/fedsim/tensor"
)

// Without createGraph, Grad returns gradient buffers to the pool as soon as
// they are consumed: a long chain keeps O(1) gradient buffers, not one per
// operation, and the results stay intact.
func TestGradFreesConsumedBuffers(t *testing.T) {
	tp := NewTape[float64]()
	defer tp.Release()
	x := tp.Param(tensor.New[float64](1000))
	x.Value.Fill(0.5)
	y := x
	for i := 0; i < 50; i++ {
		y = Scale(Add(y, x), 0.5) // stays at 0.5; dy/dx accumulates
	}
	loss := Sum(y)
	before := len(tp.owned)
	g, err := tp.Grad([]*Var[float64]{loss}, nil, []*Var[float64]{x}, false)
	if err != nil {
		t.Fatal(err)
	}
	if grown := len(tp.owned) - before; grown > 4 {
		t.Fatalf("Grad kept %d buffers alive after the sweep, want ≤ 4", grown)
	}
	// d/dx of y_k = (y_{k-1}+x)/2 with y_0 = x: dy_k/dx = (dy_{k-1}/dx + 1)/2 → 1.
	for _, v := range g[0].Value.Data {
		if v < 0.999 || v > 1.0000001 {
			t.Fatalf("gradient %v, want ≈ 1", v)
		}
	}
	// With createGraph nothing may be freed: the gradient is differentiated again.
	g2, err := tp.Grad([]*Var[float64]{loss}, nil, []*Var[float64]{x}, true)
	if err != nil {
		t.Fatal(err)
	}
	gg, err := tp.Grad([]*Var[float64]{Sum(Square(g2[0]))}, nil, []*Var[float64]{x}, false)
	if err != nil {
		t.Fatal(err)
	}
	if gg[0].Value.Data[0] != 0 {
		t.Fatalf("second derivative of a linear map = %v, want 0", gg[0].Value.Data[0])
	}
}

// The fused second backward of group norm (taken when no graph is built)
// equals the composite rules (taken when one is): same inputs, both paths.
func TestNormSecondBackwardFusedMatchesComposite(t *testing.T) {
	rng := tensor.NewRNG(3, 3)
	mk := func(shape ...int) *tensor.Tensor[float64] {
		x := tensor.New[float64](shape...)
		tensor.FillNormal(rng, x, 0, 1)
		return x
	}
	x0, g0, b0, w0 := mk(2, 4, 3, 3), mk(4), mk(4), mk(2, 4, 3, 3)
	for _, groups := range []int{4, 2, 1} {
		run := func(createGraph bool) []*tensor.Tensor[float64] {
			tp := NewTape[float64]()
			x, gm, bt := tp.Param(x0), tp.Param(g0), tp.Param(b0)
			y := Tanh(GroupNorm(Mul(x, x), groups, gm, bt, 1e-5))
			loss := Sum(Mul(y, tp.Const(w0)))
			gs, err := tp.Grad([]*Var[float64]{loss}, nil, []*Var[float64]{x, gm}, true)
			if err != nil {
				t.Fatal(err)
			}
			meta := Add(Sum(Square(gs[0])), Sum(Mul(gs[1], gs[1])))
			out, err := tp.Grad([]*Var[float64]{meta}, nil, []*Var[float64]{x, gm, bt}, createGraph)
			if err != nil {
				t.Fatal(err)
			}
			res := make([]*tensor.Tensor[float64], len(out))
			for i, o := range out {
				res[i] = o.Value.Clone()
			}
			tp.Release()
			return res
		}
		fused, composite := run(false), run(true)
		for i := range fused {
			for j := range fused[i].Data {
				a, b := fused[i].Data[j], composite[i].Data[j]
				if d := a - b; d > 1e-10 || d < -1e-10 {
					t.Fatalf("groups=%d input %d element %d: fused %v, composite %v", groups, i, j, a, b)
				}
			}
		}
	}
}

// ReLUInPlace after a normalisation gives the same values and derivatives
// (first and second order) as ReLU, without a buffer of its own.
func TestReLUInPlaceMatchesReLU(t *testing.T) {
	rng := tensor.NewRNG(4, 4)
	x0 := tensor.New[float64](2, 3, 4, 4)
	tensor.FillNormal(rng, x0, 0, 1)
	w0 := x0.Clone()
	tensor.FillNormal(rng, w0, 0, 1)
	run := func(inPlace bool) ([]float64, []float64) {
		tp := NewTape[float64]()
		defer tp.Release()
		x := tp.Param(x0)
		h := InstanceNorm(Mul(x, x), nil, nil, 1e-5)
		if inPlace {
			h = ReLUInPlace(h)
		} else {
			h = ReLU(h)
		}
		loss := Sum(Mul(Tanh(h), tp.Const(w0)))
		g, err := tp.Grad([]*Var[float64]{loss}, nil, []*Var[float64]{x}, true)
		if err != nil {
			t.Fatal(err)
		}
		gg, err := tp.Grad([]*Var[float64]{Sum(Square(g[0]))}, nil, []*Var[float64]{x}, false)
		if err != nil {
			t.Fatal(err)
		}
		return append([]float64{}, g[0].Value.Data...), append([]float64{}, gg[0].Value.Data...)
	}
	g1, gg1 := run(false)
	g2, gg2 := run(true)
	for i := range g1 {
		if d := g1[i] - g2[i]; d > 1e-12 || d < -1e-12 {
			t.Fatalf("first order differs at %d: %v vs %v", i, g1[i], g2[i])
		}
		if d := gg1[i] - gg2[i]; d > 1e-12 || d < -1e-12 {
			t.Fatalf("second order differs at %d: %v vs %v", i, gg1[i], gg2[i])
		}
	}
}

// The fused ReLU + 2×2 average pool equals the two operations, in value,
// first and second derivatives, in float64 and float32.
func TestReLUAvgPoolFusedMatchesComposite(t *testing.T) {
	rng := tensor.NewRNG(5, 5)
	x0 := tensor.New[float64](2, 3, 4, 6)
	tensor.FillNormal(rng, x0, 0, 1)
	w0 := tensor.New[float64](2, 3, 2, 3)
	tensor.FillNormal(rng, w0, 0, 1)
	run := func(fused bool) (val, g1, g2 []float64) {
		tp := NewTape[float64]()
		defer tp.Release()
		x := tp.Param(x0)
		h := InstanceNorm(Mul(x, x), nil, nil, 1e-5)
		var p *Var[float64]
		if fused {
			p = ReLUAvgPool2x2InPlace(h)
		} else {
			p = AvgPool2D(ReLU(h), 2, 2, 0)
		}
		loss := Sum(Mul(Tanh(p), tp.Const(w0)))
		g, err := tp.Grad([]*Var[float64]{loss}, nil, []*Var[float64]{x}, true)
		if err != nil {
			t.Fatal(err)
		}
		gg, err := tp.Grad([]*Var[float64]{Sum(Square(g[0]))}, nil, []*Var[float64]{x}, false)
		if err != nil {
			t.Fatal(err)
		}
		plain, err := tp.Grad([]*Var[float64]{loss}, nil, []*Var[float64]{x}, false)
		if err != nil {
			t.Fatal(err)
		}
		for i := range g[0].Value.Data {
			if d := g[0].Value.Data[i] - plain[0].Value.Data[i]; d > 1e-12 || d < -1e-12 {
				t.Fatalf("fused=%v: recorded and plain first derivatives differ at %d", fused, i)
			}
		}
		return append([]float64{}, p.Value.Data...), append([]float64{}, g[0].Value.Data...), append([]float64{}, gg[0].Value.Data...)
	}
	v1, a1, b1 := run(false)
	v2, a2, b2 := run(true)
	for _, pair := range [][2][]float64{{v1, v2}, {a1, a2}, {b1, b2}} {
		for i := range pair[0] {
			if d := pair[0][i] - pair[1][i]; d > 1e-12 || d < -1e-12 {
				t.Fatalf("fused and composite differ at %d: %v vs %v", i, pair[0][i], pair[1][i])
			}
		}
	}
	// float32 kernels (vector path) against float64.
	x32 := tensor.New[float32](2, 3, 4, 6)
	for i, v := range x0.Data {
		x32.Data[i] = float32(v)
	}
	out32 := tensor.New[float32](2, 3, 2, 3)
	tensor.ReLUAvgPool2x2(out32, x32)
	x64 := x0.Clone()
	out64 := tensor.New[float64](2, 3, 2, 3)
	tensor.ReLUAvgPool2x2(out64, x64)
	for i := range out64.Data {
		if d := float64(out32.Data[i]) - out64.Data[i]; d > 1e-6 || d < -1e-6 {
			t.Fatalf("float32 pool %v, float64 %v", out32.Data[i], out64.Data[i])
		}
	}
	g32 := tensor.New[float32](2, 3, 2, 3)
	g64 := tensor.New[float64](2, 3, 2, 3)
	for i := range g64.Data {
		g64.Data[i] = float64(i%5) - 2
		g32.Data[i] = float32(g64.Data[i])
	}
	d32, d64 := tensor.New[float32](2, 3, 4, 6), tensor.New[float64](2, 3, 4, 6)
	tensor.ReLUAvgPool2x2Backward(d32, g32, x32)
	tensor.ReLUAvgPool2x2Backward(d64, g64, x64)
	for i := range d64.Data {
		if d := float64(d32.Data[i]) - d64.Data[i]; d > 1e-6 || d < -1e-6 {
			t.Fatalf("float32 backward %v, float64 %v at %d", d32.Data[i], d64.Data[i], i)
		}
	}
}

// Without createGraph, Grad adds a variable's gradient contributions into
// one buffer in place (liveSet.addInPlace). The result must be bit for bit
// the one of the recorded path (createGraph, which builds Add nodes), the
// in-place path must actually run, and a seed the caller passed must come
// back untouched even when it is also a contribution to a sum.
func TestGradAccumulatesInPlaceBitForBit(t *testing.T) {
	rng := tensor.NewRNG(5, 1)
	tp := NewTape[float32]()
	defer tp.Release()
	x, w := tp.Param(normal32(rng, 3, 257)), tp.Const(normal32(rng, 3, 257))
	// x feeds five operations: its gradient is a sum of five buffers.
	h := Add(Mul(x, w), Square(x))
	y := Add(Add(h, Tanh(x)), Scale(ReLU(x), 3))
	out := Add(y, x)
	seed := normal32(rng, 3, 257)
	seedCopy := seed.Clone()
	seeds := []*Var[float32]{tp.Const(seed)}

	ref, err := tp.Grad([]*Var[float32]{out}, seeds, []*Var[float32]{x}, true)
	if err != nil {
		t.Fatal(err)
	}
	before := tp.inPlaceAdds
	got, err := tp.Grad([]*Var[float32]{out}, seeds, []*Var[float32]{x}, false)
	if err != nil {
		t.Fatal(err)
	}
	if tp.inPlaceAdds == before {
		t.Fatal("no contribution was added in place")
	}
	assertSameBits(t, got[0].Value, ref[0].Value)
	for i, v := range seed.Data {
		if v != seedCopy.Data[i] {
			t.Fatalf("the caller's seed changed at element %d: %v, was %v", i, v, seedCopy.Data[i])
		}
	}
}

// Add's backward hands one buffer to both its inputs. When one of them then
// receives another contribution before the other is consumed, the sum must
// not be added into the shared buffer: here A's second contribution (from
// C = A·w) arrives while B still waits for its own backward.
func TestGradInPlaceSparesSharedBuffers(t *testing.T) {
	rng := tensor.NewRNG(6, 1)
	tp := NewTape[float32]()
	defer tp.Release()
	x, w := tp.Param(normal32(rng, 2, 129)), tp.Const(normal32(rng, 2, 129))
	a := Tanh(x)
	b := Tanh(Scale(x, 2))
	c := Mul(a, w)
	out := Sum(Add(Add(b, a), c))
	ref, err := tp.Grad([]*Var[float32]{out}, nil, []*Var[float32]{x}, true)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tp.Grad([]*Var[float32]{out}, nil, []*Var[float32]{x}, false)
	if err != nil {
		t.Fatal(err)
	}
	assertSameBits(t, got[0].Value, ref[0].Value)
}

func normal32(rng *tensor.RNG, shape ...int) *tensor.Tensor[float32] {
	x := tensor.New[float32](shape...)
	tensor.FillNormal(rng, x, 0, 1)
	return x
}

// assertSameBits fails unless got (Grad without a graph) equals ref (Grad
// with one) element for element.
func assertSameBits(t *testing.T, got, ref *tensor.Tensor[float32]) {
	t.Helper()
	for i, v := range got.Data {
		if v != ref.Data[i] {
			t.Fatalf("element %d: without a graph %v, with one %v", i, v, ref.Data[i])
		}
	}
}
