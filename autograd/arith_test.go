package autograd_test

import (
	"math"
	"strings"
	"testing"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/autograd/gradcheck"
	"github.com/fedsim/fedsim/tensor"
)

type V = ag.Var[float64]
type Tp = ag.Tape[float64]

func positive(seed uint64, shape ...int) *tensor.Tensor[float64] {
	t := gradcheck.Random(seed, shape...)
	for i, v := range t.Data {
		t.Data[i] = 0.5 + math.Abs(v)
	}
	return t
}

// gradCase is a function and a point at which its first and second
// derivatives are checked.
type gradCase struct {
	name   string
	f      gradcheck.Func
	inputs []*tensor.Tensor[float64]
}

func checkCases(t *testing.T, cases []gradCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := gradcheck.Check(c.f, c.inputs, gradcheck.Options{}); err != nil {
				t.Fatal(err)
			}
			if err := gradcheck.CheckSecond(c.f, c.inputs, gradcheck.Options{}); err != nil {
				t.Fatalf("second order: %v", err)
			}
		})
	}
}

func TestElementwiseGradients(t *testing.T) {
	cases := []gradCase{
		{"add-broadcast", func(tp *Tp, x []*V) *V { return ag.Add(x[0], x[1]) }, []*tensor.Tensor[float64]{gradcheck.Random(1, 2, 3, 4), gradcheck.Random(2, 3, 1)}},
		{"sub-broadcast", func(tp *Tp, x []*V) *V { return ag.Sub(x[0], x[1]) }, []*tensor.Tensor[float64]{gradcheck.Random(1, 1, 4), gradcheck.Random(2, 3, 1)}},
		{"mul-broadcast", func(tp *Tp, x []*V) *V { return ag.Mul(x[0], x[1]) }, []*tensor.Tensor[float64]{gradcheck.Random(1, 2, 3, 4), gradcheck.Random(2, 1, 3, 1)}},
		{"div", func(tp *Tp, x []*V) *V { return ag.Div(x[0], x[1]) }, []*tensor.Tensor[float64]{gradcheck.Random(1, 2, 3), positive(2, 2, 3)}},
		{"div-scalar", func(tp *Tp, x []*V) *V { return ag.Div(x[0], x[1]) }, []*tensor.Tensor[float64]{gradcheck.Random(1, 2, 3), positive(2)}},
		{"exp-log", func(tp *Tp, x []*V) *V { return ag.Log(ag.AddScalar(ag.Exp(x[0]), 1)) }, []*tensor.Tensor[float64]{gradcheck.Random(3, 5)}},
		{"sqrt", func(tp *Tp, x []*V) *V { return ag.Sqrt(x[0]) }, []*tensor.Tensor[float64]{positive(4, 6)}},
		{"rsqrt", func(tp *Tp, x []*V) *V { return ag.Rsqrt(x[0]) }, []*tensor.Tensor[float64]{positive(5, 6)}},
		{"square-scale", func(tp *Tp, x []*V) *V { return ag.Scale(ag.Square(x[0]), -3) }, []*tensor.Tensor[float64]{gradcheck.Random(6, 4)}},
		{"tanh", func(tp *Tp, x []*V) *V { return ag.Tanh(x[0]) }, []*tensor.Tensor[float64]{gradcheck.Random(7, 4)}},
		{"sigmoid", func(tp *Tp, x []*V) *V { return ag.Sigmoid(x[0]) }, []*tensor.Tensor[float64]{gradcheck.Random(8, 4)}},
		{"abs", func(tp *Tp, x []*V) *V { return ag.Mul(ag.Abs(x[0]), x[0]) }, []*tensor.Tensor[float64]{positive(9, 4)}},
		{"sum-axes", func(tp *Tp, x []*V) *V { return ag.Square(ag.SumAxes(x[0], []int{0, 2}, false)) }, []*tensor.Tensor[float64]{gradcheck.Random(10, 2, 3, 4)}},
		{"mean-axes-keep", func(tp *Tp, x []*V) *V { return ag.Mul(ag.MeanAxes(x[0], []int{-1}, true), x[0]) }, []*tensor.Tensor[float64]{gradcheck.Random(11, 2, 3)}},
		{"mean", func(tp *Tp, x []*V) *V { return ag.Square(ag.Mean(x[0])) }, []*tensor.Tensor[float64]{gradcheck.Random(12, 3, 3)}},
		{"broadcast-to", func(tp *Tp, x []*V) *V { return ag.Square(ag.BroadcastTo(x[0], []int{2, 3, 4})) }, []*tensor.Tensor[float64]{gradcheck.Random(13, 3, 1)}},
	}
	checkCases(t, cases)
}

func TestMatMulGradients(t *testing.T) {
	for _, ta := range []bool{false, true} {
		for _, tb := range []bool{false, true} {
			as, bs := []int{3, 4}, []int{4, 5}
			if ta {
				as = []int{4, 3}
			}
			if tb {
				bs = []int{5, 4}
			}
			f := func(tp *Tp, x []*V) *V { return ag.Tanh(ag.MatMul(x[0], x[1], ta, tb)) }
			in := []*tensor.Tensor[float64]{gradcheck.Random(1, as...), gradcheck.Random(2, bs...)}
			if err := gradcheck.Check(f, in, gradcheck.Options{}); err != nil {
				t.Fatalf("transA=%v transB=%v: %v", ta, tb, err)
			}
			if err := gradcheck.CheckSecond(f, in, gradcheck.Options{}); err != nil {
				t.Fatalf("transA=%v transB=%v second order: %v", ta, tb, err)
			}
		}
	}
}

func TestShapeOpGradients(t *testing.T) {
	cases := []gradCase{
		{"permute", func(tp *Tp, x []*V) *V { return ag.Square(ag.Permute(x[0], 2, 0, 1)) }, []*tensor.Tensor[float64]{gradcheck.Random(1, 2, 3, 4)}},
		{"slice", func(tp *Tp, x []*V) *V { return ag.Square(ag.Slice(x[0], 1, 1, 3)) }, []*tensor.Tensor[float64]{gradcheck.Random(2, 2, 4, 2)}},
		{"concat", func(tp *Tp, x []*V) *V { return ag.Square(ag.Concat(1, x[0], x[1], x[0])) }, []*tensor.Tensor[float64]{gradcheck.Random(3, 2, 1, 3), gradcheck.Random(4, 2, 2, 3)}},
		{"index-rows", func(tp *Tp, x []*V) *V { return ag.Square(ag.IndexRows(x[0], []int{2, 0, 2, 1})) }, []*tensor.Tensor[float64]{gradcheck.Random(5, 3, 2)}},
		{"reshape-flatten", func(tp *Tp, x []*V) *V { return ag.Square(ag.Flatten(ag.Reshape(x[0], 3, -1))) }, []*tensor.Tensor[float64]{gradcheck.Random(6, 2, 3, 2)}},
	}
	checkCases(t, cases)
}

// The gradcheck helper must itself be able to fail: a deliberately wrong
// backward rule is caught.
func TestGradcheckCatchesWrongRule(t *testing.T) {
	wrong := func(tp *Tp, x []*V) *V {
		out := tp.AllocUninit(x[0].Shape()...)
		tensor.Unary(tensor.OpSquare, out, x[0].Value)
		return tp.Record(out, []*V{x[0]}, func(g *V, _ []bool) []*V {
			return []*V{ag.Mul(g, x[0])} // should be 2x
		})
	}
	if err := gradcheck.Check(wrong, []*tensor.Tensor[float64]{gradcheck.Random(1, 3)}, gradcheck.Options{}); err == nil {
		t.Fatal("gradcheck accepted a wrong derivative")
	}
}

func TestStickyShapeError(t *testing.T) {
	tp := ag.NewTape[float32]()
	defer tp.Release()
	a := tp.Param(tensor.New[float32](2, 3))
	b := tp.Const(tensor.New[float32](4, 5))
	c := ag.Add(a, b)
	d := ag.Mul(c, a) // no-op on a failed tape
	_ = d
	err := tp.Err()
	if err == nil || !strings.Contains(err.Error(), "[2 3]") || !strings.Contains(err.Error(), "[4 5]") {
		t.Fatalf("want an error naming both shapes, got %v", err)
	}
	if _, gerr := tp.Grad([]*ag.Var[float32]{d}, nil, []*ag.Var[float32]{a}, false); gerr == nil {
		t.Fatal("Grad on a failed tape returned no error")
	}
	tp2 := ag.NewTape[float32]()
	e := ag.MatMul(tp2.Const(tensor.New[float32](2, 3)), tp2.Const(tensor.New[float32](2, 3)), false, false)
	if tp2.Err() == nil || e.Value.Len() != 0 {
		t.Fatalf("MatMul of 2×3 by 2×3 did not fail: %v", tp2.Err())
	}
}

func TestGradOfUnusedAndAccumulation(t *testing.T) {
	tp := ag.NewTape[float64]()
	defer tp.Release()
	x := tp.Param(tensor.Scalar(3.0))
	unused := tp.Param(tensor.New[float64](2))
	y := ag.Add(ag.Mul(x, x), x) // x² + x
	g, err := tp.Grad([]*V{y}, nil, []*V{x, unused}, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := g[0].Value.Item(); got != 7 {
		t.Fatalf("d(x²+x)/dx at 3 = %v, want 7", got)
	}
	if g[1].Value.Len() != 2 || g[1].Value.Data[0] != 0 {
		t.Fatalf("unused variable's gradient = %v, want zeros", g[1].Value)
	}
	gg, err := tp.Grad([]*V{g[0]}, nil, []*V{x}, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := gg[0].Value.Item(); got != 2 {
		t.Fatalf("second derivative = %v, want 2", got)
	}
}

func TestNoGradRecordsNothing(t *testing.T) {
	tp := ag.NewTape[float32]()
	defer tp.Release()
	x := tp.Param(tensor.New[float32](4))
	tp.NoGrad(func() {
		y := ag.Exp(ag.Mul(x, x))
		if y.RequiresGrad() {
			t.Fatal("result under NoGrad requires a gradient")
		}
	})
	if tp.Len() != 0 {
		t.Fatalf("NoGrad recorded %d operations", tp.Len())
	}
}

// A released tape hands its buffers back: the next step with the same
// shapes gets the same memory.
func TestReleaseReusesBuffers(t *testing.T) {
	tensor.DrainPool()
	step := func() *float32 {
		tp := ag.NewTape[float32]()
		defer tp.Release()
		x := tp.Param(tensor.New[float32](1000))
		y := ag.Sum(ag.Square(x))
		if _, err := tp.Grad([]*ag.Var[float32]{y}, nil, []*ag.Var[float32]{x}, false); err != nil {
			t.Fatal(err)
		}
		z := ag.Square(x)
		return &z.Value.Data[0]
	}
	step()
	seen := map[*float32]bool{}
	for i := 0; i < 5; i++ {
		seen[step()] = true
	}
	if len(seen) > 2 {
		t.Fatalf("buffers are not reused across released tapes: %d distinct", len(seen))
	}
}

func TestReductionGradients(t *testing.T) {
	cases := []gradCase{
		{"max-axis1", func(tp *Tp, x []*V) *V { return ag.Square(ag.MaxAxis(x[0], 1, false)) }, []*tensor.Tensor[float64]{gradcheck.Random(1, 2, 5, 3)}},
		{"max-last-keep", func(tp *Tp, x []*V) *V { return ag.Mul(ag.MaxAxis(x[0], -1, true), x[0]) }, []*tensor.Tensor[float64]{gradcheck.Random(2, 3, 4)}},
		{"variance", func(tp *Tp, x []*V) *V { return ag.Variance(x[0], []int{0, 2}, false, true) }, []*tensor.Tensor[float64]{gradcheck.Random(3, 3, 2, 4)}},
	}
	checkCases(t, cases)
	// The value of Variance against a direct computation.
	tp := ag.NewTape[float64]()
	x := tensor.New[float64](4)
	copy(x.Data, []float64{1, 2, 3, 6})
	if v := ag.Variance(tp.Const(x), []int{0}, false, true).Value.Item(); math.Abs(v-14.0/3) > 1e-12 {
		t.Fatalf("unbiased variance of 1,2,3,6 = %v, want 14/3", v)
	}
}
