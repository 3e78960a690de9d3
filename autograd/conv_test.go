package autograd_test

import (
	"strings"
	"testing"

	"github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/autograd/gradcheck"
	"github.com/fedsim/fedsim/tensor"
)

type cvars = []*autograd.Var[float64]

// checkFirstSecond runs the first- and second-order gradient checks.
func checkFirstSecond(t *testing.T, name string, f gradcheck.Func, inputs ...*tensor.Tensor[float64]) {
	t.Helper()
	if err := gradcheck.Check(f, inputs, gradcheck.Options{}); err != nil {
		t.Errorf("%s: Check: %v", name, err)
	}
	if err := gradcheck.CheckSecond(f, inputs, gradcheck.Options{}); err != nil {
		t.Errorf("%s: CheckSecond: %v", name, err)
	}
}

var convTestParams = []struct {
	name string
	p    tensor.ConvParams
}{
	{"s1p1", tensor.ConvParams{StrideH: 1, StrideW: 1, PadH: 1, PadW: 1}},
	{"s2p0", tensor.ConvParams{StrideH: 2, StrideW: 2, PadH: 0, PadW: 0}},
	{"s2x1p1x3", tensor.ConvParams{StrideH: 2, StrideW: 1, PadH: 1, PadW: 3}},
}

func TestConv2DGrad(t *testing.T) {
	for _, cp := range convTestParams {
		p := cp.p
		x, w, b := gradcheck.Random(1, 2, 2, 5, 4), gradcheck.Random(2, 3, 2, 3, 2), gradcheck.Random(3, 3)
		checkFirstSecond(t, cp.name+"/bias", func(tp *autograd.Tape[float64], xs cvars) *autograd.Var[float64] {
			return autograd.Conv2D(xs[0], xs[1], xs[2], p)
		}, x, w, b)
		// A nonlinearity after the convolution makes the gradient depend on
		// the output, exercising the backward rules' own derivatives.
		checkFirstSecond(t, cp.name+"/square", func(tp *autograd.Tape[float64], xs cvars) *autograd.Var[float64] {
			return autograd.Square(autograd.Conv2D(xs[0], xs[1], xs[2], p))
		}, x, w, b)
		checkFirstSecond(t, cp.name+"/nobias", func(tp *autograd.Tape[float64], xs cvars) *autograd.Var[float64] {
			return autograd.Tanh(autograd.Conv2D(xs[0], xs[1], nil, p))
		}, x, w)
	}
	// First layer: one input channel.
	p := tensor.ConvParams{StrideH: 1, StrideW: 1, PadH: 3, PadW: 3}
	checkFirstSecond(t, "c1p3", func(tp *autograd.Tape[float64], xs cvars) *autograd.Var[float64] {
		return autograd.Square(autograd.Conv2D(xs[0], xs[1], xs[2], p))
	}, gradcheck.Random(4, 2, 1, 3, 3), gradcheck.Random(5, 3, 1, 3, 3), gradcheck.Random(6, 3))
}

func TestConv2DTransposeGrad(t *testing.T) {
	for _, cp := range convTestParams {
		p := cp.p
		shape, err := tensor.ConvOutShape([]int{2, 2, 5, 4}, []int{3, 2, 3, 2}, p)
		if err != nil {
			t.Fatal(err)
		}
		g, w := gradcheck.Random(7, shape...), gradcheck.Random(8, 3, 2, 3, 2)
		checkFirstSecond(t, cp.name, func(tp *autograd.Tape[float64], xs cvars) *autograd.Var[float64] {
			return autograd.Square(autograd.Conv2DTranspose(xs[0], xs[1], p, 5, 4))
		}, g, w)
	}
}

func TestConv2DWeightGradGrad(t *testing.T) {
	for _, cp := range convTestParams {
		p := cp.p
		shape, err := tensor.ConvOutShape([]int{2, 2, 5, 4}, []int{3, 2, 3, 2}, p)
		if err != nil {
			t.Fatal(err)
		}
		x, g := gradcheck.Random(9, 2, 2, 5, 4), gradcheck.Random(10, shape...)
		checkFirstSecond(t, cp.name, func(tp *autograd.Tape[float64], xs cvars) *autograd.Var[float64] {
			return autograd.Square(autograd.Conv2DWeightGrad(xs[0], xs[1], p, 3, 2))
		}, x, g)
	}
}

// TestConv2DGradientMatching differentiates a weight gradient with respect
// to the input images, as gradient matching does.
func TestConv2DGradientMatching(t *testing.T) {
	p := tensor.ConvParams{StrideH: 1, StrideW: 1, PadH: 1, PadW: 1}
	w0, b0 := gradcheck.Random(11, 3, 2, 3, 3), gradcheck.Random(12, 3)
	f := func(tp *autograd.Tape[float64], xs cvars) *autograd.Var[float64] {
		w, b := tp.Param(w0), tp.Param(b0)
		y := autograd.AvgPool2D(autograd.Tanh(autograd.Conv2D(xs[0], w, b, p)), 2, 2, 0)
		loss := autograd.Sum(autograd.Square(y))
		gs, err := tp.Grad([]*autograd.Var[float64]{loss}, nil, []*autograd.Var[float64]{w, b}, true)
		if err != nil {
			tp.Fail(err)
			return loss
		}
		return autograd.Add(autograd.Sum(autograd.Square(gs[0])), autograd.Sum(autograd.Square(gs[1])))
	}
	if err := gradcheck.Check(f, []*tensor.Tensor[float64]{gradcheck.Random(13, 2, 2, 4, 4)}, gradcheck.Options{}); err != nil {
		t.Error(err)
	}
}

// TestConv2DNeedsOnlyInputGrad checks that asking for dx alone does not
// compute the weight gradient.
func TestConv2DNeedsOnlyInputGrad(t *testing.T) {
	tp := autograd.NewTape[float64]()
	defer tp.Release()
	x := tp.Param(gradcheck.Random(1, 2, 2, 5, 5))
	w := tp.Param(gradcheck.Random(2, 3, 2, 3, 3))
	b := tp.Param(gradcheck.Random(3, 3))
	y := autograd.Conv2D(x, w, b, tensor.ConvParams{StrideH: 1, StrideW: 1, PadH: 1, PadW: 1})
	before := tp.Len()
	gs, err := tp.Grad([]*autograd.Var[float64]{y}, nil, []*autograd.Var[float64]{x}, true)
	if err != nil {
		t.Fatal(err)
	}
	if !tensor.SameShape(gs[0].Shape(), x.Shape()) {
		t.Fatalf("dx shape %v", gs[0].Shape())
	}
	if n := tp.Len() - before; n != 1 {
		t.Errorf("backward recorded %d operations, want 1 (Conv2DTranspose only)", n)
	}
}

func TestConv2DErrors(t *testing.T) {
	p1 := tensor.ConvParams{StrideH: 1, StrideW: 1}
	for _, tc := range []struct {
		name    string
		x, w, b []int
		p       tensor.ConvParams
		want    []string
	}{
		{"channels", []int{1, 3, 8, 8}, []int{4, 2, 3, 3}, nil, p1, []string{"[1 3 8 8]", "[4 2 3 3]", "channels"}},
		{"kernel", []int{1, 3, 2, 8}, []int{4, 3, 5, 3}, nil, p1, []string{"[1 3 2 8]", "[4 3 5 3]", "does not fit"}},
		{"stride", []int{1, 3, 8, 8}, []int{4, 3, 3, 3}, nil, tensor.ConvParams{StrideH: 0, StrideW: 1}, []string{"stride"}},
		{"rank", []int{3, 8, 8}, []int{4, 3, 3, 3}, nil, p1, []string{"[3 8 8]"}},
		{"bias", []int{1, 3, 8, 8}, []int{4, 3, 3, 3}, []int{3}, p1, []string{"bias", "[3]", "[4 3 3 3]"}},
	} {
		tp := autograd.NewTape[float32]()
		x, w := tp.Param(tensor.New[float32](tc.x...)), tp.Param(tensor.New[float32](tc.w...))
		var b *autograd.Var[float32]
		if tc.b != nil {
			b = tp.Param(tensor.New[float32](tc.b...))
		}
		autograd.Conv2D(x, w, b, tc.p)
		err := tp.Err()
		if err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		for _, s := range tc.want {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s: error %q does not mention %q", tc.name, err, s)
			}
		}
		tp.Release()
	}

	tp := autograd.NewTape[float32]()
	g, w := tp.Param(tensor.New[float32](1, 4, 6, 6)), tp.Param(tensor.New[float32](4, 3, 3, 3))
	autograd.Conv2DTranspose(g, w, p1, 9, 8)
	if tp.Err() == nil || !strings.Contains(tp.Err().Error(), "[1 4 6 6]") {
		t.Errorf("Conv2DTranspose size mismatch: %v", tp.Err())
	}
	tp = autograd.NewTape[float32]()
	x, g2 := tp.Param(tensor.New[float32](1, 3, 8, 8)), tp.Param(tensor.New[float32](1, 4, 6, 6))
	autograd.Conv2DWeightGrad(x, g2, p1, 2, 2)
	if tp.Err() == nil || !strings.Contains(tp.Err().Error(), "[1 4 6 6]") {
		t.Errorf("Conv2DWeightGrad size mismatch: %v", tp.Err())
	}
}

// TestConv2DFloat32 checks that float32 values and gradients agree with
// float64 ones.
func TestConv2DFloat32(t *testing.T) {
	p := tensor.ConvParams{StrideH: 2, StrideW: 1, PadH: 1, PadW: 2}
	x64, w64, b64 := gradcheck.Random(1, 3, 4, 9, 8), gradcheck.Random(2, 5, 4, 3, 3), gradcheck.Random(3, 5)
	run64 := func() []*tensor.Tensor[float64] {
		tp := autograd.NewTape[float64]()
		x, w, b := tp.Param(x64), tp.Param(w64), tp.Param(b64)
		y := autograd.Conv2D(x, w, b, p)
		l := autograd.Sum(autograd.Square(y))
		gs, err := tp.Grad([]*autograd.Var[float64]{l}, nil, []*autograd.Var[float64]{x, w, b}, false)
		if err != nil {
			t.Fatal(err)
		}
		return []*tensor.Tensor[float64]{y.Value.Clone(), gs[0].Value.Clone(), gs[1].Value.Clone(), gs[2].Value.Clone()}
	}
	conv := func(t64 *tensor.Tensor[float64]) *tensor.Tensor[float32] {
		t32 := tensor.New[float32](t64.Shape...)
		for i, v := range t64.Data {
			t32.Data[i] = float32(v)
		}
		return t32
	}
	want := run64()
	tp := autograd.NewTape[float32]()
	defer tp.Release()
	x, w, b := tp.Param(conv(x64)), tp.Param(conv(w64)), tp.Param(conv(b64))
	y := autograd.Conv2D(x, w, b, p)
	l := autograd.Sum(autograd.Square(y))
	gs, err := tp.Grad([]*autograd.Var[float32]{l}, nil, []*autograd.Var[float32]{x, w, b}, false)
	if err != nil {
		t.Fatal(err)
	}
	for k, got := range []*tensor.Tensor[float32]{y.Value, gs[0].Value, gs[1].Value, gs[2].Value} {
		var scale, d float64
		for i, v := range want[k].Data {
			scale = max(scale, convAbs(v))
			d = max(d, convAbs(float64(got.Data[i])-v))
		}
		if d > 1e-5*scale {
			t.Errorf("result %d: float32 differs from float64 by %g (scale %g)", k, d, scale)
		}
	}
}

func convAbs(v float64) float64 {
	if v < 0 {
		return -v
	}
	return v
}
