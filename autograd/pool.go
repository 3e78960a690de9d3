package autograd

import (
	"slices"
	"unsafe"

	"github.com/fedsim/fedsim/tensor"
)

// poolOut validates a pooling of x and returns its output shape, failing
// the tape (and returning nil) on error.
func poolOut[T Float](tp *Tape[T], op string, x *Var[T], k, stride, pad int) []int {
	shape, err := tensor.PoolOutShape(x.Value.Shape, k, stride, pad)
	if err != nil {
		tp.Failf("%s: %s", op, convErr(err))
		return nil
	}
	return shape
}

// AvgPool2D returns the k×k average pooling of x (N,C,H,W) with the given
// stride and zero padding, as PyTorch's avg_pool2d with
// count_include_pad=True: every window sum is divided by k². The output is
// (N,C,OH,OW) with OH = (H+2·pad−k)/stride + 1. The operation is linear; its
// backward rule is AvgPool2DBackward. Invalid parameters (k or stride < 1,
// pad outside [0, k/2], window larger than the padded input) fail the tape.
func AvgPool2D[T Float](x *Var[T], k, stride, pad int) *Var[T] {
	tp, ok := tapeOf("AvgPool2D", x)
	if !ok {
		return tp.placeholder()
	}
	shape := poolOut(tp, "AvgPool2D", x, k, stride, pad)
	if shape == nil {
		return tp.placeholder()
	}
	out := tp.AllocUninit(shape...)
	tensor.AvgPool2D(out, x.Value, k, stride, pad)
	h, w := x.Value.Shape[2], x.Value.Shape[3]
	return tp.Record(out, []*Var[T]{x}, func(g *Var[T], needs []bool) []*Var[T] {
		return []*Var[T]{AvgPool2DBackward(g, k, stride, pad, h, w)}
	})
}

// AvgPool2DBackward returns the adjoint of AvgPool2D: the (N,C,h,w)
// gradient of <AvgPool2D(x, k, stride, pad), g> with respect to an
// (N,C,h,w) input x, for g (N,C,OH,OW). Its own backward rule is AvgPool2D.
// It fails the tape if pooling an (N,C,h,w) input would not give g's shape.
func AvgPool2DBackward[T Float](g *Var[T], k, stride, pad, h, w int) *Var[T] {
	tp, ok := tapeOf("AvgPool2DBackward", g)
	if !ok {
		return tp.placeholder()
	}
	gs := g.Value.Shape
	if len(gs) != 4 {
		tp.Failf("AvgPool2DBackward: needs a gradient (N,C,OH,OW), got %v", gs)
		return tp.placeholder()
	}
	xs := []int{gs[0], gs[1], h, w}
	want, err := tensor.PoolOutShape(xs, k, stride, pad)
	if err != nil {
		tp.Failf("AvgPool2DBackward: %s", convErr(err))
		return tp.placeholder()
	}
	if !slices.Equal(want, gs) {
		tp.Failf("AvgPool2DBackward: gradient %v does not match input size %d×%d (want %v)", gs, h, w, want)
		return tp.placeholder()
	}
	out := tp.AllocUninit(xs...)
	tensor.AvgPool2DBackward(out, g.Value, k, stride, pad)
	return tp.Record(out, []*Var[T]{g}, func(z *Var[T], needs []bool) []*Var[T] {
		return []*Var[T]{AvgPool2D(z, k, stride, pad)}
	})
}

// MaxPool2D returns the k×k max pooling of x (N,C,H,W) with the given stride
// and padding (PyTorch's max_pool2d, floor mode; padding never wins). The
// argmax positions are recorded in the forward pass and held fixed: the
// gradient scatters g to them, and the derivative of that scatter is the
// gather of the same positions (the derivative with respect to the choice
// of argmax is zero almost everywhere). Invalid parameters fail the tape as
// in AvgPool2D.
func MaxPool2D[T Float](x *Var[T], k, stride, pad int) *Var[T] {
	tp, ok := tapeOf("MaxPool2D", x)
	if !ok {
		return tp.placeholder()
	}
	shape := poolOut(tp, "MaxPool2D", x, k, stride, pad)
	if shape == nil {
		return tp.placeholder()
	}
	out := tp.AllocUninit(shape...)
	idx := allocIndex(tp, len(out.Data))
	tensor.MaxPool2D(out, idx, x.Value, k, stride, pad)
	xs := x.Value.Shape
	return tp.Record(out, []*Var[T]{x}, func(g *Var[T], needs []bool) []*Var[T] {
		return []*Var[T]{maxPoolScatter(g, idx, xs)}
	})
}

// allocIndex returns n int32 values of scratch owned by tp: the memory of a
// tape-owned tensor, so that argmax indices return to the buffer pool with
// the rest of the step on Release instead of being garbage. The slice must
// not be used after the tape is released.
func allocIndex[T Float](tp *Tape[T], n int) []int32 {
	if n == 0 {
		return nil
	}
	var zero T
	per := int(unsafe.Sizeof(zero)) / int(unsafe.Sizeof(int32(0))) // int32s per element
	t := tp.AllocUninit((n + per - 1) / per)
	return unsafe.Slice((*int32)(unsafe.Pointer(&t.Data[0])), n)
}

// maxPoolScatter returns the input-shaped (xs) scatter-add of g at the
// argmax positions idx; its backward rule is maxPoolGather.
func maxPoolScatter[T Float](g *Var[T], idx []int32, xs []int) *Var[T] {
	tp, ok := tapeOf("MaxPool2DBackward", g)
	if !ok {
		return tp.placeholder()
	}
	out := tp.AllocUninit(xs...)
	tensor.MaxPool2DBackward(out, g.Value, idx)
	gs := g.Value.Shape
	return tp.Record(out, []*Var[T]{g}, func(z *Var[T], needs []bool) []*Var[T] {
		return []*Var[T]{maxPoolGather(z, idx, gs)}
	})
}

// maxPoolGather returns the output-shaped (ys) gather of x at the argmax
// positions idx; its backward rule is maxPoolScatter.
func maxPoolGather[T Float](x *Var[T], idx []int32, ys []int) *Var[T] {
	tp, ok := tapeOf("MaxPool2DGather", x)
	if !ok {
		return tp.placeholder()
	}
	out := tp.AllocUninit(ys...)
	tensor.MaxPool2DGather(out, x.Value, idx)
	xs := x.Value.Shape
	return tp.Record(out, []*Var[T]{x}, func(g *Var[T], needs []bool) []*Var[T] {
		return []*Var[T]{maxPoolScatter(g, idx, xs)}
	})
}
