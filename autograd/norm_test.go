package autograd_test

import (
	"math"
	"strings"
	"testing"

	"github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/autograd/gradcheck"
	"github.com/fedsim/fedsim/tensor"
)

func anAffineParams(seed uint64, c int) (*tensor.Tensor[float64], *tensor.Tensor[float64]) {
	g := gradcheck.Random(seed, c)
	for i := range g.Data {
		g.Data[i] = 1 + 0.3*g.Data[i]
	}
	return g, gradcheck.Random(seed+1, c)
}

func TestGroupNormGradients(t *testing.T) {
	for _, tc := range []struct {
		name   string
		shape  []int
		groups int
	}{
		{"instance", []int{2, 3, 2, 2}, 3},
		{"groups=2", []int{2, 4, 1, 3}, 2},
		{"groups=1", []int{2, 2, 2, 2}, 1},
		{"rank 3", []int{2, 2, 3}, 2},
	} {
		c := tc.shape[1]
		x := gradcheck.Random(10, tc.shape...)
		gamma, beta := anAffineParams(11, c)
		affine := func(tp *anTp, xs []*anV) *anV { return autograd.GroupNorm(xs[0], tc.groups, xs[1], xs[2], 1e-5) }
		anCheckBoth(t, "GroupNorm "+tc.name, affine, x, gamma, beta)
		plain := func(tp *anTp, xs []*anV) *anV { return autograd.GroupNorm(xs[0], tc.groups, nil, nil, 1e-5) }
		anCheckBoth(t, "GroupNorm no affine "+tc.name, plain, x)
		gammaOnly := func(tp *anTp, xs []*anV) *anV { return autograd.GroupNorm(xs[0], tc.groups, xs[1], nil, 1e-5) }
		anCheckBoth(t, "GroupNorm gamma only "+tc.name, gammaOnly, x, gamma)
		// Followed by ReLU and a smooth loss: the ConvNet block.
		block := func(tp *anTp, xs []*anV) *anV {
			return autograd.Tanh(autograd.ReLU(autograd.GroupNorm(xs[0], tc.groups, xs[1], xs[2], 1e-5)))
		}
		anCheckBoth(t, "GroupNorm+ReLU "+tc.name, block, x, gamma, beta)
		anFusedVsComposite(t, "GroupNorm "+tc.name, affine, x, gamma, beta)
		anFusedVsComposite(t, "GroupNorm no affine "+tc.name, plain, x)
	}
}

// TestGroupNormGradientMatching checks the derivative that gradient
// matching uses: of a function of ∂L/∂γ (built with createGraph) with
// respect to the input, which runs both backward forms and the auxiliary
// operations.
func TestGroupNormGradientMatching(t *testing.T) {
	x := gradcheck.Random(20, 2, 3, 2, 2)
	gamma, beta := anAffineParams(21, 3)
	f := func(tp *anTp, xs []*anV) *anV {
		// Parameters stay on the path when gradcheck passes them in, and
		// become parameters when it evaluates with constants.
		g, b := xs[1], xs[2]
		if !g.RequiresGrad() {
			g, b = tp.Param(g.Value), tp.Param(b.Value)
		}
		y := autograd.GroupNorm(xs[0], 3, g, b, 1e-5)
		loss := autograd.Sum(autograd.Square(autograd.Tanh(y)))
		gs, err := tp.Grad([]*anV{loss}, nil, []*anV{g, b}, true)
		if err != nil {
			tp.Fail(err)
			return loss
		}
		return autograd.Add(autograd.Sum(autograd.Square(gs[0])), autograd.Sum(autograd.Mul(gs[1], gs[0])))
	}
	anCheckBoth(t, "GroupNorm gradient matching", f, x, gamma, beta)
}

func TestGroupNormThirdOrder(t *testing.T) {
	x := gradcheck.Random(22, 1, 2, 2, 2)
	gamma, beta := anAffineParams(23, 2)
	f := anSecondOrder(func(tp *anTp, xs []*anV) *anV { return autograd.GroupNorm(xs[0], 2, xs[1], xs[2], 1e-5) })
	if err := gradcheck.CheckSecond(f, []*tensor.Tensor[float64]{x, gamma, beta}, gradcheck.Options{}); err != nil {
		t.Errorf("GroupNorm third order: %v", err)
	}
}

func TestInstanceNormFormulas(t *testing.T) {
	// groups = C against the instance-norm formulas written with ops.
	x := gradcheck.Random(30, 2, 3, 2, 3)
	gamma, beta := anAffineParams(31, 3)
	tp := autograd.NewTape[float64]()
	defer tp.Release()
	xv, gv, bv := tp.Param(x), tp.Param(gamma), tp.Param(beta)
	y := autograd.InstanceNorm(xv, gv, bv, 1e-5)
	mu := autograd.MeanAxes(xv, []int{2, 3}, true)
	xc := autograd.Sub(xv, mu)
	v := autograd.MeanAxes(autograd.Square(xc), []int{2, 3}, true)
	ref := autograd.Add(autograd.Mul(autograd.Mul(xc, autograd.Rsqrt(autograd.AddScalar(v, 1e-5))), autograd.Reshape(gv, 1, 3, 1, 1)), autograd.Reshape(bv, 1, 3, 1, 1))
	if tp.Err() != nil {
		t.Fatal(tp.Err())
	}
	for i := range y.Value.Data {
		if math.Abs(y.Value.Data[i]-ref.Value.Data[i]) > 1e-12 {
			t.Fatalf("element %d: %g vs %g", i, y.Value.Data[i], ref.Value.Data[i])
		}
	}
	w := tp.Alloc(y.Shape()...)
	tensor.FillNormal(tensor.NewRNG(1, 1), w, 0, 1)
	ga, err := tp.Grad([]*anV{y}, []*anV{tp.Const(w)}, []*anV{xv, gv, bv}, false)
	if err != nil {
		t.Fatal(err)
	}
	gb, err := tp.Grad([]*anV{ref}, []*anV{tp.Const(w)}, []*anV{xv, gv, bv}, false)
	if err != nil {
		t.Fatal(err)
	}
	for k := range ga {
		for i := range ga[k].Value.Data {
			if a, b := ga[k].Value.Data[i], gb[k].Value.Data[i]; math.Abs(a-b) > 1e-10*(1+math.Abs(b)) {
				t.Fatalf("gradient %d element %d: %g vs %g", k, i, a, b)
			}
		}
	}
}

func TestLayerNormGradients(t *testing.T) {
	x := gradcheck.Random(40, 3, 2, 3)
	gamma, beta := gradcheck.Random(41, 2, 3), gradcheck.Random(42, 2, 3)
	f := func(tp *anTp, xs []*anV) *anV { return autograd.LayerNorm(xs[0], []int{2, 3}, xs[1], xs[2], 1e-5) }
	anCheckBoth(t, "LayerNorm", f, x, gamma, beta)
	anFusedVsComposite(t, "LayerNorm", f, x, gamma, beta)
	g1 := func(tp *anTp, xs []*anV) *anV { return autograd.LayerNorm(xs[0], []int{3}, nil, nil, 1e-5) }
	anCheckBoth(t, "LayerNorm last dim", g1, x)

	// Against torch.nn.LayerNorm's formula.
	tp := autograd.NewTape[float64]()
	defer tp.Release()
	y := autograd.LayerNorm(tp.Const(x), []int{3}, nil, nil, 0)
	for r := 0; r < 6; r++ {
		row := x.Data[r*3 : r*3+3]
		m := (row[0] + row[1] + row[2]) / 3
		v := ((row[0]-m)*(row[0]-m) + (row[1]-m)*(row[1]-m) + (row[2]-m)*(row[2]-m)) / 3
		for i := range row {
			if want := (row[i] - m) / math.Sqrt(v); math.Abs(y.Value.Data[r*3+i]-want) > 1e-12 {
				t.Fatalf("row %d: %g, want %g", r, y.Value.Data[r*3+i], want)
			}
		}
	}
}

func TestBatchNormGradients(t *testing.T) {
	x := gradcheck.Random(50, 3, 2, 2, 2)
	gamma, beta := anAffineParams(51, 2)
	f := func(tp *anTp, xs []*anV) *anV {
		y, _, _ := autograd.BatchNorm2D(xs[0], xs[1], xs[2], 1e-5)
		return y
	}
	anCheckBoth(t, "BatchNorm2D", f, x, gamma, beta)
	anFusedVsComposite(t, "BatchNorm2D", f, x, gamma, beta)
	anCheckBoth(t, "BatchNorm2D (N, C)", func(tp *anTp, xs []*anV) *anV {
		y, _, _ := autograd.BatchNorm2D(xs[0], nil, nil, 1e-5)
		return y
	}, gradcheck.Random(52, 4, 3))

	rm, rv := gradcheck.Random(53, 2), gradcheck.Random(54, 2)
	for i := range rv.Data {
		rv.Data[i] = 0.5 + rv.Data[i]*rv.Data[i]
	}
	eval := func(tp *anTp, xs []*anV) *anV { return autograd.BatchNorm2DEval(xs[0], xs[1], xs[2], rm, rv, 1e-5) }
	anCheckBoth(t, "BatchNorm2DEval", eval, x, gamma, beta)

	// Statistics for running averages.
	tp := autograd.NewTape[float64]()
	defer tp.Release()
	_, mean, vu := autograd.BatchNorm2D(tp.Const(x), nil, nil, 1e-5)
	for c := 0; c < 2; c++ {
		var vals []float64
		for n := 0; n < 3; n++ {
			vals = append(vals, x.Data[(n*2+c)*4:(n*2+c+1)*4]...)
		}
		var m, v float64
		for _, u := range vals {
			m += u / float64(len(vals))
		}
		for _, u := range vals {
			v += (u - m) * (u - m) / float64(len(vals)-1)
		}
		if math.Abs(mean.Data[c]-m) > 1e-12 || math.Abs(vu.Data[c]-v) > 1e-9 {
			t.Fatalf("channel %d: mean %g var %g, want %g %g", c, mean.Data[c], vu.Data[c], m, v)
		}
	}
	// Eval mode with the batch statistics matches training mode.
	bv := tensor.New[float64](2)
	for c := range bv.Data {
		bv.Data[c] = vu.Data[c] * 11 / 12 // biased
	}
	ytr, _, _ := autograd.BatchNorm2D(tp.Const(x), tp.Const(gamma), tp.Const(beta), 1e-5)
	yev := autograd.BatchNorm2DEval(tp.Const(x), tp.Const(gamma), tp.Const(beta), mean, bv, 1e-5)
	for i := range ytr.Value.Data {
		if math.Abs(ytr.Value.Data[i]-yev.Value.Data[i]) > 1e-10 {
			t.Fatalf("eval vs train element %d: %g vs %g", i, yev.Value.Data[i], ytr.Value.Data[i])
		}
	}
}

func TestNormFloat32(t *testing.T) {
	x64 := gradcheck.Random(60, 2, 4, 3, 3)
	x32 := tensor.New[float32](x64.Shape...)
	for i, v := range x64.Data {
		x32.Data[i] = float32(v) + 2
		x64.Data[i] = float64(x32.Data[i])
	}
	for _, groups := range []int{4, 2, 1} {
		y32, g32 := anValueAndGrad(func(a *autograd.Var[float32]) *autograd.Var[float32] {
			return autograd.GroupNorm(a, groups, nil, nil, 1e-5)
		}, x32)
		y64, g64 := anValueAndGrad(func(a *anV) *anV { return autograd.GroupNorm(a, groups, nil, nil, 1e-5) }, x64)
		for i := range y64 {
			if math.Abs(float64(y32[i])-y64[i]) > 1e-5 || math.Abs(float64(g32[i])-g64[i]) > 1e-4*(1+math.Abs(g64[i])) {
				t.Fatalf("groups %d element %d: float32 (%g, %g), float64 (%g, %g)", groups, i, y32[i], g32[i], y64[i], g64[i])
			}
		}
	}
}

func TestNormDegenerateInputs(t *testing.T) {
	tp := autograd.NewTape[float32]()
	defer tp.Release()
	// A constant input: zero variance, eps keeps everything finite, for
	// first and second order.
	x := tensor.New[float32](2, 3, 2, 2)
	x.Fill(3)
	xv := tp.Param(x)
	gv := tp.Param(tensor.New[float32](3))
	gv.Value.Fill(1)
	y := autograd.GroupNorm(xv, 3, gv, nil, 1e-5)
	loss := autograd.Sum(autograd.Square(autograd.AddScalar(y, 1)))
	gs, err := tp.Grad([]*autograd.Var[float32]{loss}, nil, []*autograd.Var[float32]{xv, gv}, true)
	if err != nil {
		t.Fatal(err)
	}
	gg, err := tp.Grad([]*autograd.Var[float32]{autograd.Sum(autograd.Square(gs[0]))}, nil, []*autograd.Var[float32]{xv}, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []*autograd.Var[float32]{y, gs[0], gs[1], gg[0]} {
		if tensor.HasNaNOrInf(v.Value.Data) {
			t.Fatalf("non-finite values for constant input: %v", v.Value)
		}
	}
	// Empty batch, for every norm, forward and backward.
	e := tp.Param(tensor.New[float32](0, 3, 2, 2))
	outs := []*autograd.Var[float32]{
		autograd.GroupNorm(e, 3, gv, nil, 1e-5),
		autograd.LayerNorm(e, []int{2, 2}, nil, nil, 1e-5),
	}
	yb, _, _ := autograd.BatchNorm2D(e, gv, nil, 1e-5)
	outs = append(outs, yb)
	for _, o := range outs {
		if _, err := tp.Grad([]*autograd.Var[float32]{autograd.Sum(o)}, nil, []*autograd.Var[float32]{e, gv}, true); err != nil {
			t.Fatal(err)
		}
	}
	if tp.Err() != nil {
		t.Fatal(tp.Err())
	}
}

func TestNormErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(tp *anTp)
		want string
	}{
		{"groups", func(tp *anTp) { autograd.GroupNorm(tp.Param(tensor.New[float64](1, 6, 2)), 4, nil, nil, 1e-5) }, "4 groups"},
		{"rank", func(tp *anTp) { autograd.GroupNorm(tp.Param(tensor.New[float64](6)), 1, nil, nil, 1e-5) }, "[6]"},
		{"gamma", func(tp *anTp) {
			autograd.GroupNorm(tp.Param(tensor.New[float64](1, 6, 2)), 3, tp.Param(tensor.New[float64](5)), nil, 1e-5)
		}, "gamma has shape [5]"},
		{"layernorm", func(tp *anTp) { autograd.LayerNorm(tp.Param(tensor.New[float64](2, 3)), []int{2}, nil, nil, 1e-5) }, "[2]"},
		{"batch beta", func(tp *anTp) {
			autograd.BatchNorm2D(tp.Param(tensor.New[float64](2, 3, 2, 2)), nil, tp.Param(tensor.New[float64](2)), 1e-5)
		}, "beta"},
		{"eval stats", func(tp *anTp) {
			autograd.BatchNorm2DEval(tp.Param(tensor.New[float64](2, 3, 2, 2)), nil, nil, tensor.New[float64](2), tensor.New[float64](3), 1e-5)
		}, "running"},
	} {
		tp := autograd.NewTape[float64]()
		tc.run(tp)
		if err := tp.Err(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to mention %q", tc.name, err, tc.want)
		}
		tp.Release()
	}
}

func BenchmarkGroupNormForwardBackward(b *testing.B) {
	const n, c, h, w = 256, 128, 32, 32
	x := tensor.New[float32](n, c, h, w)
	tensor.FillNormal(tensor.NewRNG(42, 1), x, 0, 1)
	g := tensor.New[float32](n, c, h, w)
	tensor.FillNormal(tensor.NewRNG(42, 2), g, 0, 1)
	gamma, beta := tensor.New[float32](c), tensor.New[float32](c)
	gamma.Fill(1)
	tp := autograd.NewTape[float32]()
	step := func() {
		xv, gv, bv := tp.Param(x), tp.Param(gamma), tp.Param(beta)
		y := autograd.GroupNorm(xv, c, gv, bv, 1e-5)
		if _, err := tp.Grad([]*autograd.Var[float32]{y}, []*autograd.Var[float32]{tp.Const(g)}, []*autograd.Var[float32]{xv, gv, bv}, false); err != nil {
			b.Fatal(err)
		}
		tp.Release()
	}
	step() // fill the buffer pool, fault pages in
	b.ResetTimer()
	for b.Loop() {
		step()
	}
	b.ReportMetric(b.Elapsed().Seconds()*1e3/float64(b.N), "ms/op")
	b.ReportMetric(float64(4*5*len(x.Data))*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
}
