package autograd

import (
	"slices"

	"github.com/fedsim/fedsim/tensor"
)

// MaxAxis returns the maximum of a along axis (kept as size 1 with
// keepDims). The gradient flows to the first maximal element of each slice;
// the choice of element is constant, so the rule is exact wherever the
// maximum is unique.
func MaxAxis[T Float](a *Var[T], axis int, keepDims bool) *Var[T] {
	tp, ok := tapeOf("MaxAxis", a)
	if !ok {
		return tp.placeholder()
	}
	r := a.Value.Rank()
	if axis < -r || axis >= r || a.Value.Len() == 0 {
		tp.Failf("MaxAxis: axis %d invalid for shape %v", axis, a.Value.Shape)
		return tp.placeholder()
	}
	axis = (axis + r) % r
	keep := slices.Clone(a.Value.Shape)
	keep[axis] = 1
	out := tp.AllocUninit(keep...)
	arg := make([]int, out.Len())
	tensor.MaxAxis(out, arg, a.Value, axis)
	// One-hot mask of the chosen elements, built once.
	mask := tp.Alloc(a.Value.Shape...)
	outer, inner := 1, 1
	for i, d := range a.Value.Shape {
		if i < axis {
			outer *= d
		} else if i > axis {
			inner *= d
		}
	}
	n := a.Value.Shape[axis]
	for o := 0; o < outer; o++ {
		for i := 0; i < inner; i++ {
			mask.Data[(o*n+arg[o*inner+i])*inner+i] = 1
		}
	}
	res := tp.Record(out, []*Var[T]{a}, func(g *Var[T], needs []bool) []*Var[T] {
		return []*Var[T]{Mul(BroadcastTo(g, a.Value.Shape), tp.Const(mask))}
	})
	if keepDims {
		return res
	}
	shape := slices.Delete(slices.Clone(a.Value.Shape), axis, axis+1)
	return Reshape(res, shape...)
}

// Variance returns the variance of a over axes: the mean of squared
// deviations, divided by n−1 instead of n when unbiased.
func Variance[T Float](a *Var[T], axes []int, keepDims, unbiased bool) *Var[T] {
	mu := MeanAxes(a, axes, true)
	d := Square(Sub(a, mu))
	v := MeanAxes(d, axes, keepDims)
	if !unbiased {
		return v
	}
	n := a.Value.Len() / max(1, mu.Value.Len())
	if n < 2 {
		return v
	}
	return Scale(v, T(n)/T(n-1))
}
