package autograd

import (
	"strings"

	"github.com/fedsim/fedsim/tensor"
)

// The three convolution operations are bilinear and adjoint to each other:
// for y = Conv2D(x, w) and any g of y's shape,
//
//	<Conv2D(x, w), g> = <x, Conv2DTranspose(g, w)> = <w, Conv2DWeightGrad(x, g)>.
//
// Differentiating that one identity gives every backward rule, each written
// with the same three operations, so the set is closed under
// differentiation and gradients of gradients are exact:
//
//	Conv2D(x, w):           dx = Conv2DTranspose(g, w),  dw = Conv2DWeightGrad(x, g)
//	Conv2DTranspose(g, w):  dg = Conv2D(z, w),           dw = Conv2DWeightGrad(z, g)
//	Conv2DWeightGrad(x, g): dx = Conv2DTranspose(g, v),  dg = Conv2D(x, v)
//
// where z and v are the gradients arriving at the output of Conv2DTranspose
// and Conv2DWeightGrad.

// convErr turns a tensor shape error into an operation error message.
func convErr(err error) string { return strings.TrimPrefix(err.Error(), "tensor: ") }

// Conv2D returns the 2-D cross-correlation of x (N,C,H,W) with the filters w
// (F,C,KH,KW), plus the bias b (F) when b is not nil: the (N,F,OH,OW) output
// of PyTorch's conv2d with dilation 1 and one group, where
// OH = (H+2·PadH−KH)/StrideH + 1 and OW likewise.
//
// The backward rule computes only the gradients asked for: dx with
// Conv2DTranspose, dw with Conv2DWeightGrad and db by summing over N, OH and
// OW. Invalid shapes or parameters (channel mismatch, kernel larger than the
// padded input, non-positive stride, negative padding, bias not (F)) fail
// the tape with an error naming the shapes.
func Conv2D[T Float](x, w, b *Var[T], p tensor.ConvParams) *Var[T] {
	inputs := []*Var[T]{x, w}
	if b != nil {
		inputs = append(inputs, b)
	}
	tp, ok := tapeOf("Conv2D", inputs...)
	if !ok {
		return tp.placeholder()
	}
	shape, err := tensor.ConvOutShape(x.Value.Shape, w.Value.Shape, p)
	if err != nil {
		tp.Failf("Conv2D: %s", convErr(err))
		return tp.placeholder()
	}
	var bt *tensor.Tensor[T]
	if b != nil {
		if len(b.Value.Shape) != 1 || b.Value.Shape[0] != shape[1] {
			tp.Failf("Conv2D: bias of shape %v does not match weights %v (want [%d])", b.Value.Shape, w.Value.Shape, shape[1])
			return tp.placeholder()
		}
		bt = b.Value
	}
	out := tp.AllocUninit(shape...)
	tensor.Conv2D(out, x.Value, w.Value, bt, p)
	h, wd := x.Value.Shape[2], x.Value.Shape[3]
	kh, kw := w.Value.Shape[2], w.Value.Shape[3]
	return tp.Record(out, inputs, func(g *Var[T], needs []bool) []*Var[T] {
		grads := make([]*Var[T], len(inputs))
		if needs[0] {
			grads[0] = Conv2DTranspose(g, w, p, h, wd)
		}
		if needs[1] {
			grads[1] = Conv2DWeightGrad(x, g, p, kh, kw)
		}
		if b != nil && needs[2] {
			grads[2] = SumAxes(g, []int{0, 2, 3}, false)
		}
		return grads
	})
}

// Conv2DTranspose returns the adjoint of Conv2D with respect to its input:
// for g (N,F,OH,OW) and w (F,C,KH,KW) it returns the (N,C,h,wd) gradient of
// <Conv2D(x, w), g> with respect to x (a transposed convolution). h and wd
// are the input's spatial size, which the output size determines only when
// the strides are 1. It fails the tape if Conv2D of an (N,C,h,wd) input with
// w would not have g's shape.
func Conv2DTranspose[T Float](g, w *Var[T], p tensor.ConvParams, h, wd int) *Var[T] {
	tp, ok := tapeOf("Conv2DTranspose", g, w)
	if !ok {
		return tp.placeholder()
	}
	gs, ws := g.Value.Shape, w.Value.Shape
	if len(gs) != 4 || len(ws) != 4 {
		tp.Failf("Conv2DTranspose: needs a gradient (N,F,OH,OW) and weights (F,C,KH,KW), got %v and %v", gs, ws)
		return tp.placeholder()
	}
	xs := []int{gs[0], ws[1], h, wd}
	ys, err := tensor.ConvOutShape(xs, ws, p)
	if err != nil {
		tp.Failf("Conv2DTranspose: %s", convErr(err))
		return tp.placeholder()
	}
	if !tensor.SameShape(ys, gs) {
		tp.Failf("Conv2DTranspose: gradient %v does not match weights %v and input size %d×%d (want %v)", gs, ws, h, wd, ys)
		return tp.placeholder()
	}
	out := tp.AllocUninit(xs...)
	tensor.Conv2DTranspose(out, g.Value, w.Value, p)
	kh, kw := ws[2], ws[3]
	return tp.Record(out, []*Var[T]{g, w}, func(z *Var[T], needs []bool) []*Var[T] {
		var dg, dw *Var[T]
		if needs[0] {
			dg = Conv2D(z, w, nil, p)
		}
		if needs[1] {
			dw = Conv2DWeightGrad(z, g, p, kh, kw)
		}
		return []*Var[T]{dg, dw}
	})
}

// Conv2DWeightGrad returns the adjoint of Conv2D with respect to its
// weights: for x (N,C,H,W) and g (N,F,OH,OW) it returns the (F,C,kh,kw)
// gradient of <Conv2D(x, w), g> with respect to w. The kernel size kh×kw is
// explicit because the output size determines it only when the strides are
// 1. It fails the tape if Conv2D of x with (F,C,kh,kw) weights would not
// have g's shape.
func Conv2DWeightGrad[T Float](x, g *Var[T], p tensor.ConvParams, kh, kw int) *Var[T] {
	tp, ok := tapeOf("Conv2DWeightGrad", x, g)
	if !ok {
		return tp.placeholder()
	}
	xs, gs := x.Value.Shape, g.Value.Shape
	if len(gs) != 4 || len(xs) != 4 {
		tp.Failf("Conv2DWeightGrad: needs an input (N,C,H,W) and a gradient (N,F,OH,OW), got %v and %v", xs, gs)
		return tp.placeholder()
	}
	ws := []int{gs[1], xs[1], kh, kw}
	ys, err := tensor.ConvOutShape(xs, ws, p)
	if err != nil {
		tp.Failf("Conv2DWeightGrad: %s", convErr(err))
		return tp.placeholder()
	}
	if !tensor.SameShape(ys, gs) {
		tp.Failf("Conv2DWeightGrad: gradient %v does not match input %v and a %d×%d kernel (want %v)", gs, xs, kh, kw, ys)
		return tp.placeholder()
	}
	out := tp.AllocUninit(ws...)
	tensor.Conv2DWeightGrad(out, x.Value, g.Value, p)
	h, wd := xs[2], xs[3]
	return tp.Record(out, []*Var[T]{x, g}, func(v *Var[T], needs []bool) []*Var[T] {
		var dx, dg *Var[T]
		if needs[0] {
			dx = Conv2DTranspose(g, v, p, h, wd)
		}
		if needs[1] {
			dg = Conv2D(x, v, nil, p)
		}
		return []*Var[T]{dx, dg}
	})
}
