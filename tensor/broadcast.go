package tensor

import (
	"fmt"

	"github.com/fedsim/fedsim/internal/parallel"
	"github.com/fedsim/fedsim/tensor/internal/vec"
)

// BroadcastShape returns the NumPy broadcast of shapes a and b.
func BroadcastShape(a, b []int) ([]int, error) {
	n := max(len(a), len(b))
	out := make([]int, n)
	for i := 0; i < n; i++ {
		da, db := 1, 1
		if j := len(a) - n + i; j >= 0 {
			da = a[j]
		}
		if j := len(b) - n + i; j >= 0 {
			db = b[j]
		}
		switch {
		case da == db, db == 1:
			out[i] = da
		case da == 1:
			out[i] = db
		default:
			return nil, fmt.Errorf("tensor: shapes %v and %v do not broadcast (dimension %d: %d vs %d)", a, b, i, da, db)
		}
	}
	return out, nil
}

// broadcastStrides returns the element strides of a tensor of shape `in`
// read as the broadcast shape `out` (0 along broadcast dimensions).
func broadcastStrides(in, out []int) []int {
	st := make([]int, len(out))
	s := 1
	for i := len(out) - 1; i >= 0; i-- {
		j := len(in) - len(out) + i
		if j >= 0 && in[j] != 1 {
			st[i] = s
		}
		if j >= 0 {
			s *= in[j]
		}
	}
	return st
}

// collapse merges adjacent dimensions of out whose strides in every operand
// continue each other, so inner loops run as long as possible. It returns the
// merged shape and the operands' merged strides.
func collapse(out []int, strides ...[]int) ([]int, [][]int) {
	shape := []int{}
	st := make([][]int, len(strides))
	for i, d := range out {
		if d == 1 {
			continue
		}
		k := len(shape) - 1
		merge := k >= 0
		for s := range strides {
			if merge && st[s][k] != strides[s][i]*d {
				merge = false
			}
		}
		if merge {
			shape[k] *= d
			for s := range strides {
				st[s][k] = strides[s][i]
			}
			continue
		}
		shape = append(shape, d)
		for s := range strides {
			st[s] = append(st[s], strides[s][i])
		}
	}
	if len(shape) == 0 {
		shape = []int{1}
		for s := range st {
			st[s] = []int{0}
		}
	}
	return shape, st
}

// BinaryOp names an element-wise binary operation.
type BinaryOp int

// The element-wise binary operations.
const (
	OpAdd BinaryOp = iota
	OpSub
	OpMul
	OpDiv
)

// Binary computes dst = a op b with NumPy broadcasting. dst must have the
// broadcast shape of a and b. It panics if the shapes do not broadcast or dst
// has the wrong shape.
func Binary[T Float](op BinaryOp, dst, a, b *Tensor[T]) {
	bs, err := BroadcastShape(a.Shape, b.Shape)
	if err != nil {
		panic(err)
	}
	if !SameShape(bs, dst.Shape) {
		panic(fmt.Sprintf("tensor: Binary destination shape %v, want %v", dst.Shape, bs))
	}
	n := len(dst.Data)
	if n == 0 {
		return
	}
	shape, st := collapse(bs, broadcastStrides(a.Shape, bs), broadcastStrides(b.Shape, bs))
	last := len(shape) - 1
	inner := shape[last]
	sa, sb := st[0][last], st[1][last]
	rows := n / inner
	// Work items are pieces of rows, so a tensor that collapses to a few long
	// rows (same-shape operands collapse to one) still uses every core.
	piece := min(inner, 16384)
	perRow := (inner + piece - 1) / piece
	parallel.For(rows*perRow, max(1, 32768/piece), func(lo, hi int) {
		for item := lo; item < hi; item++ {
			r, c0 := item/perRow, (item%perRow)*piece
			c1 := min(c0+piece, inner)
			// Decompose the row number into outer indices.
			rem, offA, offB := r, 0, 0
			for d := last - 1; d >= 0; d-- {
				i := rem % shape[d]
				rem /= shape[d]
				offA += i * st[0][d]
				offB += i * st[1][d]
			}
			binaryRow(op, dst.Data[r*inner+c0:r*inner+c1], a.Data[offA+c0*sa:], sa, b.Data[offB+c0*sb:], sb)
		}
	})
}

func binaryRow[T Float](op BinaryOp, out, a []T, sa int, b []T, sb int) {
	n := len(out)
	switch {
	case sa == 1 && sb == 1:
		a, b := a[:n], b[:n]
		switch op {
		case OpAdd:
			for i := range out {
				out[i] = a[i] + b[i]
			}
		case OpSub:
			for i := range out {
				out[i] = a[i] - b[i]
			}
		case OpMul:
			for i := range out {
				out[i] = a[i] * b[i]
			}
		case OpDiv:
			for i := range out {
				out[i] = a[i] / b[i]
			}
		}
	case sa == 1 && sb == 0:
		a, y := a[:n], b[0]
		switch op {
		case OpAdd:
			for i := range out {
				out[i] = a[i] + y
			}
		case OpSub:
			for i := range out {
				out[i] = a[i] - y
			}
		case OpMul:
			for i := range out {
				out[i] = a[i] * y
			}
		case OpDiv:
			for i := range out {
				out[i] = a[i] / y
			}
		}
	default:
		for i := range out {
			x, y := a[i*sa], b[i*sb]
			switch op {
			case OpAdd:
				out[i] = x + y
			case OpSub:
				out[i] = x - y
			case OpMul:
				out[i] = x * y
			case OpDiv:
				out[i] = x / y
			}
		}
	}
}

// SumTo reduces src into dst by summing over the dimensions in which dst's
// shape broadcasts to src's (the adjoint of broadcasting). dst is
// overwritten. It panics if dst's shape does not broadcast to src's.
func SumTo[T Float](dst, src *Tensor[T]) {
	bs, err := BroadcastShape(dst.Shape, src.Shape)
	if err != nil || !SameShape(bs, src.Shape) {
		panic(fmt.Sprintf("tensor: SumTo cannot reduce %v to %v", src.Shape, dst.Shape))
	}
	clear(dst.Data)
	if len(src.Data) == 0 {
		return
	}
	if len(dst.Data) == len(src.Data) {
		copy(dst.Data, src.Data)
		return
	}
	shape, st := collapse(src.Shape, broadcastStrides(dst.Shape, src.Shape))
	last := len(shape) - 1
	inner := shape[last]
	sd := st[0][last]
	rows := len(src.Data) / inner
	sumRows := func(out []T, lo, hi int) {
		for r := lo; r < hi; r++ {
			rem, off := r, 0
			for d := last - 1; d >= 0; d-- {
				off += (rem % shape[d]) * st[0][d]
				rem /= shape[d]
			}
			row := src.Data[r*inner : (r+1)*inner]
			if sd == 0 {
				out[off] += sumRow(row)
			} else {
				addRun(out[off:off+inner], row)
			}
		}
	}
	// Rows of src overlap in dst, so each chunk sums into its own partial
	// result; the partials are added in chunk order, which keeps the result
	// independent of scheduling. Small reductions stay serial.
	chunks := min(parallel.Workers(), rows)
	if chunks < 2 || len(src.Data) < 65536 || len(dst.Data)*chunks > len(src.Data)/4 {
		sumRows(dst.Data, 0, rows)
		return
	}
	partial := make([][]T, chunks)
	step := (rows + chunks - 1) / chunks
	parallel.For(chunks, 1, func(lo, hi int) {
		for c := lo; c < hi; c++ {
			partial[c] = make([]T, len(dst.Data))
			sumRows(partial[c], c*step, min((c+1)*step, rows))
		}
	})
	for _, p := range partial {
		for i, v := range p {
			dst.Data[i] += v
		}
	}
}

// BroadcastTo writes src broadcast to dst's shape into dst. It panics if
// src's shape does not broadcast to dst's.
func BroadcastTo[T Float](dst, src *Tensor[T]) {
	bs, err := BroadcastShape(dst.Shape, src.Shape)
	if err != nil || !SameShape(bs, dst.Shape) {
		panic(fmt.Sprintf("tensor: BroadcastTo cannot broadcast %v to %v", src.Shape, dst.Shape))
	}
	if len(dst.Data) == 0 {
		return
	}
	shape, st := collapse(dst.Shape, broadcastStrides(src.Shape, dst.Shape))
	last := len(shape) - 1
	inner, ss := shape[last], st[0][last]
	parallel.For(len(dst.Data)/inner, max(1, 32768/inner), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			rem, off := r, 0
			for d := last - 1; d >= 0; d-- {
				off += (rem % shape[d]) * st[0][d]
				rem /= shape[d]
			}
			out := dst.Data[r*inner : (r+1)*inner]
			if ss == 0 {
				v := src.Data[off]
				for i := range out {
					out[i] = v
				}
			} else {
				copy(out, src.Data[off:off+inner])
			}
		}
	})
}

// sumRow returns the sum of row: for float32 in SIMD with a float64
// accumulator (vec.SumSqShift), since a serial float32 loop is bound by
// the latency of its one dependent add (a conv bias gradient sums every
// output pixel this way).
func sumRow[T Float](row []T) T {
	if r, ok := any(row).([]float32); ok {
		s, _ := vec.SumSqShift(r, 0)
		return T(s)
	}
	var s T
	for _, v := range row {
		s += v
	}
	return s
}
