package autograd_test

import (
	"math"
	"strings"
	"testing"

	"github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/autograd/gradcheck"
	"github.com/fedsim/fedsim/tensor"
)

func TestCrossEntropyValue(t *testing.T) {
	logits := gradcheck.Random(1, 4, 5)
	logits.Data[0] = 500 // stable with large logits
	labels := []int{0, 3, 4, 1}
	tp := autograd.NewTape[float64]()
	defer tp.Release()
	l := autograd.CrossEntropy(tp.Const(logits), labels)
	var want float64
	for n, lab := range labels {
		row := logits.Data[n*5 : (n+1)*5]
		m := math.Inf(-1)
		for _, v := range row {
			m = math.Max(m, v)
		}
		var s float64
		for _, v := range row {
			s += math.Exp(v - m)
		}
		want += (m + math.Log(s) - row[lab]) / 4
	}
	if got := l.Value.Item(); math.Abs(got-want) > 1e-12*math.Abs(want) {
		t.Fatalf("CrossEntropy = %.15g, want %.15g", got, want)
	}
}

func TestCrossEntropyGradients(t *testing.T) {
	labels := []int{2, 0, 1}
	ce := func(tp *anTp, xs []*anV) *anV { return autograd.CrossEntropy(xs[0], labels) }
	anCheckBoth(t, "CrossEntropy", ce, gradcheck.Random(2, 3, 4))
	anFusedVsComposite(t, "CrossEntropy", ce, gradcheck.Random(2, 3, 4))

	// Soft labels, differentiable in both arguments (learned soft labels);
	// the targets need not be normalised.
	soft := func(tp *anTp, xs []*anV) *anV { return autograd.CrossEntropySoft(xs[0], autograd.Softmax(xs[1])) }
	raw := func(tp *anTp, xs []*anV) *anV { return autograd.CrossEntropySoft(xs[0], xs[1]) }
	lg, tg := gradcheck.Random(3, 3, 4), gradcheck.Random(4, 3, 4)
	anCheckBoth(t, "CrossEntropySoft", soft, lg, tg)
	anCheckBoth(t, "CrossEntropySoft raw", raw, lg, tg)
	anFusedVsComposite(t, "CrossEntropySoft", raw, lg, tg)

	// One-hot soft targets reproduce hard labels.
	tp := autograd.NewTape[float64]()
	defer tp.Release()
	oh := tp.Alloc(3, 4)
	for n, l := range labels {
		oh.Data[n*4+l] = 1
	}
	a := autograd.CrossEntropy(tp.Const(lg), labels).Value.Item()
	b := autograd.CrossEntropySoft(tp.Const(lg), tp.Const(oh)).Value.Item()
	if math.Abs(a-b) > 1e-14 {
		t.Fatalf("hard %g vs one-hot soft %g", a, b)
	}
}

func TestCrossEntropyErrors(t *testing.T) {
	for _, tc := range []struct {
		shape  []int
		labels []int
		want   string
	}{
		{[]int{2, 3}, []int{0, 3}, "label 3 at row 1"},
		{[]int{2, 3}, []int{-1, 0}, "label -1 at row 0"},
		{[]int{2, 3}, []int{0}, "1 labels"},
		{[]int{2, 3, 1}, []int{0, 0}, "(N, K)"},
	} {
		tp := autograd.NewTape[float64]()
		autograd.CrossEntropy(tp.Param(tensor.New[float64](tc.shape...)), tc.labels)
		if err := tp.Err(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("shape %v labels %v: error %v, want it to mention %q", tc.shape, tc.labels, err, tc.want)
		}
		tp.Release()
	}
	tp := autograd.NewTape[float64]()
	defer tp.Release()
	autograd.CrossEntropySoft(tp.Param(tensor.New[float64](2, 3)), tp.Param(tensor.New[float64](2, 4)))
	if tp.Err() == nil {
		t.Error("CrossEntropySoft with mismatched shapes: no error")
	}
}

func TestCrossEntropyEmptyBatch(t *testing.T) {
	tp := autograd.NewTape[float32]()
	defer tp.Release()
	x := tp.Param(tensor.New[float32](0, 10))
	l := autograd.CrossEntropy(x, nil)
	if tp.Err() != nil || l.Value.Item() != 0 {
		t.Fatalf("empty batch: %v, %v", l.Value, tp.Err())
	}
	if _, err := tp.Grad([]*autograd.Var[float32]{l}, nil, []*autograd.Var[float32]{x}, false); err != nil {
		t.Fatal(err)
	}
}

func TestMSE(t *testing.T) {
	a, b := gradcheck.Random(5, 2, 3), gradcheck.Random(6, 2, 3)
	anCheckBoth(t, "MSE", func(tp *anTp, xs []*anV) *anV { return autograd.MSE(xs[0], xs[1]) }, a, b)
	tp := autograd.NewTape[float64]()
	defer tp.Release()
	var want float64
	for i := range a.Data {
		want += (a.Data[i] - b.Data[i]) * (a.Data[i] - b.Data[i]) / 6
	}
	if got := autograd.MSE(tp.Const(a), tp.Const(b)).Value.Item(); math.Abs(got-want) > 1e-14 {
		t.Fatalf("MSE = %g, want %g", got, want)
	}
	autograd.MSE(tp.Const(a), tp.Const(gradcheck.Random(1, 3, 2)))
	if err := tp.Err(); err == nil || !strings.Contains(err.Error(), "[2 3]") {
		t.Fatalf("MSE shape mismatch: %v", err)
	}
}
