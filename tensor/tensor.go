// Package tensor holds fedsim's dense float32 tensors and the CPU kernels
// that compute on them.
//
// A Tensor is a shape and a contiguous row-major slice of float32 (the
// engine's working precision) or float64 (for gradient checks and golden
// tests: the same code runs in both, so the float64 run checks the float32
// code path's algebra to 1e-6); there are no
// strided views, so every kernel can run over flat slices. Kernels are plain
// functions that write into a destination the caller provides. They panic on
// programmer errors (mismatched sizes, wrong ranks): the documentation of each
// says when. Validation of user input, with errors that name both shapes,
// happens one layer up, in package autograd.
//
// Parallel kernels split their work through internal/parallel, the process's
// single compute pool, so concurrent callers never oversubscribe the cores.
package tensor

import (
	"fmt"

	"github.com/fedsim/fedsim/tensor/internal/vec"
	"slices"
	"strings"
)

// Float is the element type of a tensor.
type Float interface{ ~float32 | ~float64 }

// Tensor is a dense row-major array. Data has exactly Size(Shape)
// elements. A scalar has an empty Shape and one element.
type Tensor[T Float] struct {
	Shape []int
	Data  []T
}

// New returns a zero-filled tensor of the given shape.
// It panics if a dimension is negative.
func New[T Float](shape ...int) *Tensor[T] {
	return &Tensor[T]{Shape: slices.Clone(shape), Data: make([]T, Size(shape))}
}

// Scalar returns a rank-0 tensor holding v.
func Scalar[T Float](v T) *Tensor[T] { return &Tensor[T]{Shape: []int{}, Data: []T{v}} }

// FromSlice wraps data (without copying) as a tensor of the given shape.
func FromSlice[T Float](data []T, shape ...int) (*Tensor[T], error) {
	for _, d := range shape {
		if d < 0 {
			return nil, fmt.Errorf("tensor: negative dimension in shape %v", shape)
		}
	}
	if n := Size(shape); n != len(data) {
		return nil, fmt.Errorf("tensor: shape %v needs %d values, got %d", shape, n, len(data))
	}
	return &Tensor[T]{Shape: slices.Clone(shape), Data: data}, nil
}

// Size returns the number of elements of a tensor of the given shape.
// It panics if a dimension is negative.
func Size(shape []int) int {
	n := 1
	for _, d := range shape {
		if d < 0 {
			panic(fmt.Sprintf("tensor: negative dimension in shape %v", shape))
		}
		n *= d
	}
	return n
}

// Len returns the number of elements.
func (t *Tensor[T]) Len() int { return len(t.Data) }

// Rank returns the number of dimensions.
func (t *Tensor[T]) Rank() int { return len(t.Shape) }

// Clone returns a deep copy.
func (t *Tensor[T]) Clone() *Tensor[T] {
	return &Tensor[T]{Shape: slices.Clone(t.Shape), Data: slices.Clone(t.Data)}
}

// Item returns the single value of a one-element tensor.
// It panics if the tensor does not have exactly one element.
func (t *Tensor[T]) Item() T {
	if len(t.Data) != 1 {
		panic(fmt.Sprintf("tensor: Item of a tensor of shape %v", t.Shape))
	}
	return t.Data[0]
}

// View returns a tensor sharing t's data with another shape of the same size.
func (t *Tensor[T]) View(shape ...int) (*Tensor[T], error) {
	if Size(shape) != len(t.Data) {
		return nil, fmt.Errorf("tensor: cannot view shape %v (%d values) as %v", t.Shape, len(t.Data), shape)
	}
	return &Tensor[T]{Shape: slices.Clone(shape), Data: t.Data}, nil
}

// String prints the shape and the first values; it is meant for debugging.
func (t *Tensor[T]) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Tensor%v[", t.Shape)
	for i, v := range t.Data {
		if i == 8 {
			b.WriteString(" …")
			break
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.4g", float64(v))
	}
	b.WriteByte(']')
	return b.String()
}

// SameShape reports whether a and b have equal shapes.
func SameShape(a, b []int) bool { return slices.Equal(a, b) }

// Fill sets every element to v.
func (t *Tensor[T]) Fill(v T) { fillSlice(t.Data, v) }

// fillSlice sets every element of s to v (vector stores for float32).
func fillSlice[T Float](s []T, v T) {
	if f, ok := any(s).([]float32); ok {
		vec.Fill(f, float32(v))
		return
	}
	for i := range s {
		s[i] = v
	}
}

// CopyFrom copies src's values into t. It panics if the sizes differ.
func (t *Tensor[T]) CopyFrom(src *Tensor[T]) {
	if len(src.Data) != len(t.Data) {
		panic(fmt.Sprintf("tensor: CopyFrom shape %v into %v", src.Shape, t.Shape))
	}
	copy(t.Data, src.Data)
}
