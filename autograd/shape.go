package autograd

import (
	"slices"

	"github.com/fedsim/fedsim/tensor"
)

// Permute reorders a's axes: axis i of the result is axis perm[i] of a.
func Permute[T Float](a *Var[T], perm ...int) *Var[T] {
	tp, ok := tapeOf("Permute", a)
	if !ok {
		return tp.placeholder()
	}
	r := a.Value.Rank()
	inv := make([]int, r)
	shape := make([]int, r)
	seen := make([]bool, r)
	if len(perm) != r {
		tp.Failf("Permute: %v is not a permutation of the %d axes of shape %v", perm, r, a.Value.Shape)
		return tp.placeholder()
	}
	for i, p := range perm {
		if p < 0 || p >= r || seen[p] {
			tp.Failf("Permute: %v is not a permutation of the %d axes of shape %v", perm, r, a.Value.Shape)
			return tp.placeholder()
		}
		seen[p] = true
		inv[p] = i
		shape[i] = a.Value.Shape[p]
	}
	out := tp.AllocUninit(shape...)
	tensor.Permute(out, a.Value, perm)
	return tp.Record(out, []*Var[T]{a}, func(g *Var[T], needs []bool) []*Var[T] {
		return []*Var[T]{Permute(g, inv...)}
	})
}

// Transpose swaps the two axes of a rank-2 variable.
func Transpose[T Float](a *Var[T]) *Var[T] {
	if a.Value.Rank() != 2 {
		a.tape.Failf("Transpose: needs a rank-2 variable, got shape %v", a.Value.Shape)
		return a.tape.placeholder()
	}
	return Permute(a, 1, 0)
}

// Slice returns a[..., lo:hi, ...] along axis.
func Slice[T Float](a *Var[T], axis, lo, hi int) *Var[T] {
	tp, ok := tapeOf("Slice", a)
	if !ok {
		return tp.placeholder()
	}
	if axis < 0 || axis >= a.Value.Rank() || lo < 0 || hi < lo || hi > a.Value.Shape[axis] {
		tp.Failf("Slice: range [%d:%d] on axis %d is outside shape %v", lo, hi, axis, a.Value.Shape)
		return tp.placeholder()
	}
	if lo == 0 && hi == a.Value.Shape[axis] {
		return a
	}
	shape := slices.Clone(a.Value.Shape)
	shape[axis] = hi - lo
	out := tp.AllocUninit(shape...)
	tensor.SliceAxis(out, a.Value, axis, lo)
	return tp.Record(out, []*Var[T]{a}, func(g *Var[T], needs []bool) []*Var[T] {
		return []*Var[T]{PadAxis(g, axis, lo, a.Value.Shape[axis])}
	})
}

// PadAxis places a at offset lo of a zero tensor whose axis has size n (the
// adjoint of Slice).
func PadAxis[T Float](a *Var[T], axis, lo, n int) *Var[T] {
	tp, ok := tapeOf("PadAxis", a)
	if !ok {
		return tp.placeholder()
	}
	if axis < 0 || axis >= a.Value.Rank() || lo < 0 || lo+a.Value.Shape[axis] > n {
		tp.Failf("PadAxis: cannot place shape %v at %d of an axis %d of size %d", a.Value.Shape, lo, axis, n)
		return tp.placeholder()
	}
	shape := slices.Clone(a.Value.Shape)
	shape[axis] = n
	out := tp.Alloc(shape...)
	tensor.PlaceAxis(out, a.Value, axis, lo)
	return tp.Record(out, []*Var[T]{a}, func(g *Var[T], needs []bool) []*Var[T] {
		return []*Var[T]{Slice(g, axis, lo, lo+a.Value.Shape[axis])}
	})
}

// Concat joins vs along axis; all other dimensions must agree.
func Concat[T Float](axis int, vs ...*Var[T]) *Var[T] {
	if len(vs) == 0 {
		panic("autograd: Concat of nothing")
	}
	tp, ok := tapeOf("Concat", vs...)
	if !ok {
		return tp.placeholder()
	}
	first := vs[0].Value.Shape
	if axis < 0 || axis >= len(first) {
		tp.Failf("Concat: axis %d out of range for shape %v", axis, first)
		return tp.placeholder()
	}
	shape := slices.Clone(first)
	shape[axis] = 0
	for _, v := range vs {
		s := v.Value.Shape
		if len(s) != len(first) {
			tp.Failf("Concat: shapes %v and %v have different ranks", first, s)
			return tp.placeholder()
		}
		for i := range s {
			if i != axis && s[i] != first[i] {
				tp.Failf("Concat: shapes %v and %v differ outside axis %d", first, s, axis)
				return tp.placeholder()
			}
		}
		shape[axis] += s[axis]
	}
	out := tp.AllocUninit(shape...)
	offsets := make([]int, len(vs))
	off := 0
	for i, v := range vs {
		offsets[i] = off
		tensor.PlaceAxis(out, v.Value, axis, off)
		off += v.Value.Shape[axis]
	}
	return tp.Record(out, slices.Clone(vs), func(g *Var[T], needs []bool) []*Var[T] {
		gs := make([]*Var[T], len(vs))
		for i, v := range vs {
			if needs[i] {
				gs[i] = Slice(g, axis, offsets[i], offsets[i]+v.Value.Shape[axis])
			}
		}
		return gs
	})
}

// IndexRows gathers rows of a along the first axis: row i of the result is
// row idx[i] of a (per-class batches, minibatches).
func IndexRows[T Float](a *Var[T], idx []int) *Var[T] {
	tp, ok := tapeOf("IndexRows", a)
	if !ok {
		return tp.placeholder()
	}
	if a.Value.Rank() == 0 {
		tp.Failf("IndexRows: needs at least one axis, got a scalar")
		return tp.placeholder()
	}
	for _, j := range idx {
		if j < 0 || j >= a.Value.Shape[0] {
			tp.Failf("IndexRows: index %d out of range for shape %v", j, a.Value.Shape)
			return tp.placeholder()
		}
	}
	idx = slices.Clone(idx)
	shape := slices.Clone(a.Value.Shape)
	shape[0] = len(idx)
	out := tp.AllocUninit(shape...)
	tensor.IndexRows(out, a.Value, idx)
	return tp.Record(out, []*Var[T]{a}, func(g *Var[T], needs []bool) []*Var[T] {
		return []*Var[T]{ScatterRows(g, idx, a.Value.Shape[0])}
	})
}

// ScatterRows returns a zero tensor with n rows to which row i of a is added
// at row idx[i] (the adjoint of IndexRows).
func ScatterRows[T Float](a *Var[T], idx []int, n int) *Var[T] {
	tp, ok := tapeOf("ScatterRows", a)
	if !ok {
		return tp.placeholder()
	}
	if a.Value.Rank() == 0 || a.Value.Shape[0] != len(idx) {
		tp.Failf("ScatterRows: %d indices for shape %v", len(idx), a.Value.Shape)
		return tp.placeholder()
	}
	for _, j := range idx {
		if j < 0 || j >= n {
			tp.Failf("ScatterRows: index %d out of range [0,%d)", j, n)
			return tp.placeholder()
		}
	}
	shape := slices.Clone(a.Value.Shape)
	shape[0] = n
	out := tp.Alloc(shape...)
	tensor.AddRows(out, a.Value, idx)
	return tp.Record(out, []*Var[T]{a}, func(g *Var[T], needs []bool) []*Var[T] {
		return []*Var[T]{IndexRows(g, idx)}
	})
}
