package autograd

import (
	"math"

	"github.com/fedsim/fedsim/tensor"
)

// Activations and the softmax family. Backward rules are written with this
// package's operations when a graph is being recorded, so derivatives of any
// order are exact; when Grad runs without createGraph they call one fused
// kernel instead, which computes the same values.

// fusedConst returns a tape-owned tensor of the given shape filled by fill,
// wrapped as a constant (the result of a fused first-order backward).
func fusedConst[T Float](tp *Tape[T], shape []int, fill func(dst *tensor.Tensor[T])) *Var[T] {
	t := tp.AllocUninit(shape...)
	fill(t)
	return tp.Const(t)
}

// ReLU returns max(a, 0) element-wise. Its backward is g ⊙ 1[a > 0] with the
// mask a constant: the second derivative is 0 almost everywhere, which is
// exact.
func ReLU[T Float](a *Var[T]) *Var[T] {
	tp, ok := tapeOf("ReLU", a)
	if !ok {
		return tp.placeholder()
	}
	out := tp.AllocUninit(a.Value.Shape...)
	tensor.ReLU(out, a.Value)
	return tp.Record(out, []*Var[T]{a}, func(g *Var[T], needs []bool) []*Var[T] {
		if !tp.Recording() {
			return []*Var[T]{fusedConst(tp, a.Value.Shape, func(d *tensor.Tensor[T]) { tensor.ReLUBackward(d, g.Value, a.Value) })}
		}
		return []*Var[T]{reluGrad(g, a)}
	})
}

// ReLUInPlace is ReLU computed in a's buffer: a's value is overwritten with
// the result, which is returned as a new variable. Use it only where nothing
// reads a's value afterwards — not the caller, and not the backward rule of
// the operation that produced a. The normalisations qualify (their rules
// read their input and statistics, never their output), so a norm → ReLU
// block keeps one activation-sized buffer instead of two, as PyTorch does.
// The backward rule masks with the output (out > 0 exactly where a > 0).
func ReLUInPlace[T Float](a *Var[T]) *Var[T] {
	tp, ok := tapeOf("ReLUInPlace", a)
	if !ok {
		return tp.placeholder()
	}
	out := &tensor.Tensor[T]{Shape: a.Value.Shape, Data: a.Value.Data}
	tensor.ReLU(out, a.Value)
	var res *Var[T]
	res = tp.Record(out, []*Var[T]{a}, func(g *Var[T], needs []bool) []*Var[T] {
		if !tp.Recording() {
			return []*Var[T]{fusedConst(tp, a.Value.Shape, func(d *tensor.Tensor[T]) { tensor.ReLUBackward(d, g.Value, out) })}
		}
		return []*Var[T]{reluGrad(g, res)}
	})
	return res
}

// reluGrad returns g ⊙ 1[x > 0], linear in g with x held constant (its
// derivative in x is 0 almost everywhere). As an operation of its own it
// needs no mask buffer, which matters when gradient matching keeps the
// first backward pass on the tape.
func reluGrad[T Float](g, x *Var[T]) *Var[T] {
	tp := g.tape
	out := tp.AllocUninit(x.Value.Shape...)
	tensor.ReLUBackward(out, g.Value, x.Value)
	return tp.Record(out, []*Var[T]{g}, func(u *Var[T], needs []bool) []*Var[T] {
		return []*Var[T]{reluGrad(u, x)}
	})
}

// LeakyReLU returns a where a > 0 and slope·a elsewhere. Like ReLU, its
// backward multiplies by a constant mask (1 or slope).
func LeakyReLU[T Float](a *Var[T], slope T) *Var[T] {
	tp, ok := tapeOf("LeakyReLU", a)
	if !ok {
		return tp.placeholder()
	}
	out := tp.AllocUninit(a.Value.Shape...)
	tensor.LeakyReLU(out, a.Value, slope)
	return tp.Record(out, []*Var[T]{a}, func(g *Var[T], needs []bool) []*Var[T] {
		if !tp.Recording() {
			return []*Var[T]{fusedConst(tp, a.Value.Shape, func(d *tensor.Tensor[T]) { tensor.LeakyReLUBackward(d, g.Value, a.Value, slope) })}
		}
		mask := tp.AllocUninit(a.Value.Shape...)
		tensor.LeakyReLUMask(mask, a.Value, slope)
		return []*Var[T]{Mul(g, tp.Const(mask))}
	})
}

// Softplus returns ln(1 + eᵃ) element-wise, computed stably. Its derivative is
// sigmoid(a).
func Softplus[T Float](a *Var[T]) *Var[T] {
	tp, ok := tapeOf("Softplus", a)
	if !ok {
		return tp.placeholder()
	}
	out := tp.AllocUninit(a.Value.Shape...)
	tensor.Softplus(out, a.Value)
	return tp.Record(out, []*Var[T]{a}, func(g *Var[T], needs []bool) []*Var[T] {
		if !tp.Recording() {
			return []*Var[T]{fusedConst(tp, a.Value.Shape, func(d *tensor.Tensor[T]) { tensor.SoftplusBackward(d, g.Value, a.Value) })}
		}
		return []*Var[T]{Mul(g, Sigmoid(a))}
	})
}

// GELU returns a·Φ(a) element-wise, Φ the standard normal distribution
// function (the exact erf form; PyTorch's default). Its derivative
// Φ(a) + a·φ(a) is built from differentiable operations, so every order is
// exact.
func GELU[T Float](a *Var[T]) *Var[T] {
	tp, ok := tapeOf("GELU", a)
	if !ok {
		return tp.placeholder()
	}
	out := tp.AllocUninit(a.Value.Shape...)
	tensor.GELU(out, a.Value)
	return tp.Record(out, []*Var[T]{a}, func(g *Var[T], needs []bool) []*Var[T] {
		if !tp.Recording() {
			return []*Var[T]{fusedConst(tp, a.Value.Shape, func(d *tensor.Tensor[T]) { tensor.GELUBackward(d, g.Value, a.Value) })}
		}
		return []*Var[T]{Mul(g, Add(NormCDF(a), Mul(a, normPDF(a))))}
	})
}

// NormCDF returns Φ(a), the standard normal distribution function,
// element-wise. Its derivative is the density φ(a) = e^{−a²/2}/√(2π).
func NormCDF[T Float](a *Var[T]) *Var[T] {
	tp, ok := tapeOf("NormCDF", a)
	if !ok {
		return tp.placeholder()
	}
	out := tp.AllocUninit(a.Value.Shape...)
	tensor.NormCDF(out, a.Value)
	return tp.Record(out, []*Var[T]{a}, func(g *Var[T], needs []bool) []*Var[T] {
		return []*Var[T]{Mul(g, normPDF(a))}
	})
}

// normPDF returns φ(a) built from differentiable operations.
func normPDF[T Float](a *Var[T]) *Var[T] {
	return Scale(Exp(Scale(Square(a), -0.5)), T(1/math.Sqrt(2*math.Pi)))
}

// lastAxisOK records an error and returns false if a is a scalar (the
// softmax family works over the last axis).
func lastAxisOK[T Float](tp *Tape[T], name string, a *Var[T]) bool {
	if len(a.Value.Shape) == 0 {
		tp.Failf("%s: needs an input of rank ≥ 1 (it works over the last axis), got a scalar; reshape it to (1, K)", name)
		return false
	}
	return true
}

// Softmax returns exp(a)/Σexp(a) over the last axis (max-shifted, so large
// logits do not overflow). Backward: y ⊙ (g − Σ g⊙y).
func Softmax[T Float](a *Var[T]) *Var[T] {
	tp, ok := tapeOf("Softmax", a)
	if !ok || !lastAxisOK(tp, "Softmax", a) {
		return tp.placeholder()
	}
	out := tp.AllocUninit(a.Value.Shape...)
	tensor.Softmax(out, a.Value)
	var res *Var[T]
	res = tp.Record(out, []*Var[T]{a}, func(g *Var[T], needs []bool) []*Var[T] {
		if !tp.Recording() {
			return []*Var[T]{fusedConst(tp, a.Value.Shape, func(d *tensor.Tensor[T]) { tensor.SoftmaxBackward(d, g.Value, out) })}
		}
		return []*Var[T]{Mul(res, Sub(g, SumAxes(Mul(g, res), []int{-1}, true)))}
	})
	return res
}

// LogSoftmax returns a − ln Σ exp(a) over the last axis, computed stably by
// one fused kernel. Backward: g − softmax(a)·Σ g, with softmax = exp(output)
// so that it differentiates again.
func LogSoftmax[T Float](a *Var[T]) *Var[T] {
	tp, ok := tapeOf("LogSoftmax", a)
	if !ok || !lastAxisOK(tp, "LogSoftmax", a) {
		return tp.placeholder()
	}
	out := tp.AllocUninit(a.Value.Shape...)
	tensor.LogSoftmax(out, a.Value)
	var res *Var[T]
	res = tp.Record(out, []*Var[T]{a}, func(g *Var[T], needs []bool) []*Var[T] {
		if !tp.Recording() {
			return []*Var[T]{fusedConst(tp, a.Value.Shape, func(d *tensor.Tensor[T]) { tensor.LogSoftmaxBackward(d, g.Value, out) })}
		}
		return []*Var[T]{Sub(g, Mul(Exp(res), SumAxes(g, []int{-1}, true)))}
	})
	return res
}

// ReLUAvgPool2x2InPlace is AvgPool2D(ReLUInPlace(x), 2, 2, 0) as one
// operation for the ConvNet block's tail: the ReLU runs in x's buffer (see
// ReLUInPlace for when that is allowed) and each plane is pooled while in
// cache; without createGraph the backward is one fused pass as well. x must
// be (N,C,H,W) with even H and W.
func ReLUAvgPool2x2InPlace[T Float](x *Var[T]) *Var[T] {
	tp, ok := tapeOf("ReLUAvgPool2x2InPlace", x)
	if !ok {
		return tp.placeholder()
	}
	s := x.Value.Shape
	if len(s) != 4 || s[2]%2 != 0 || s[3]%2 != 0 {
		tp.Failf("ReLUAvgPool2x2InPlace: needs (N, C, H, W) with even H and W, got %v", s)
		return tp.placeholder()
	}
	out := tp.AllocUninit(s[0], s[1], s[2]/2, s[3]/2)
	relu := &tensor.Tensor[T]{Shape: s, Data: x.Value.Data}
	tensor.ReLUAvgPool2x2(out, relu)
	return tp.Record(out, []*Var[T]{x}, func(g *Var[T], needs []bool) []*Var[T] {
		if !tp.Recording() {
			return []*Var[T]{fusedConst(tp, s, func(d *tensor.Tensor[T]) { tensor.ReLUAvgPool2x2Backward(d, g.Value, relu) })}
		}
		return []*Var[T]{reluPoolGrad(g, relu)}
	})
}

// reluPoolGrad is the recorded backward of ReLUAvgPool2x2InPlace: g spread
// over each 2×2 window, /4, where y > 0. One operation instead of a pooling
// backward followed by a ReLU backward keeps one activation-sized buffer
// per block out of a recorded first backward pass. It is linear in g (y is
// a constant mask); its adjoint is maskedPool.
func reluPoolGrad[T Float](g *Var[T], y *tensor.Tensor[T]) *Var[T] {
	tp := g.tape
	out := tp.AllocUninit(y.Shape...)
	tensor.ReLUAvgPool2x2Backward(out, g.Value, y)
	return tp.Record(out, []*Var[T]{g}, func(u *Var[T], needs []bool) []*Var[T] {
		return []*Var[T]{maskedPool(u, y)}
	})
}

// maskedPool returns AvgPool2x2(u ⊙ 1[y > 0]), the adjoint of reluPoolGrad.
func maskedPool[T Float](u *Var[T], y *tensor.Tensor[T]) *Var[T] {
	tp := u.tape
	out := tp.AllocUninit(y.Shape[0], y.Shape[1], y.Shape[2]/2, y.Shape[3]/2)
	tensor.MaskedAvgPool2x2(out, u.Value, y)
	return tp.Record(out, []*Var[T]{u}, func(v *Var[T], needs []bool) []*Var[T] {
		return []*Var[T]{reluPoolGrad(v, y)}
	})
}
