package tensor

import (
	"fmt"
	"math"

	"github.com/fedsim/fedsim/internal/parallel"
	"github.com/fedsim/fedsim/tensor/internal/vec"
)

// Activation kernels, their fused backward kernels, and the row-wise softmax
// family. Element-wise kernels split flat ranges over the compute pool; the
// softmax kernels split rows (the last axis).

// elemGrain is the smallest flat range worth a goroutine for cheap
// element-wise kernels.
const elemGrain = 32768

func sameLen[T Float](name string, dst *Tensor[T], srcs ...*Tensor[T]) {
	for _, s := range srcs {
		if len(s.Data) != len(dst.Data) {
			panic(fmt.Sprintf("tensor: %s destination %v, operand %v", name, dst.Shape, s.Shape))
		}
	}
}

// The ReLU-family kernels are branchless: on real activations the sign of
// x is a coin flip, and a mispredicted branch per element costs more than
// the memory traffic. "x > 0" is tested on the bits (positive, non-zero,
// not NaN) and selected with an integer conditional move.

const (
	inf32Bits = 0x7f800000
	inf64Bits = 0x7ff0000000000000
)

// ReLU computes dst = max(src, 0) element-wise (NaN stays NaN, −0 becomes
// +0). dst may be src. It panics if the sizes differ.
func ReLU[T Float](dst, src *Tensor[T]) {
	sameLen("ReLU", dst, src)
	parallel.For(len(src.Data), elemGrain, func(lo, hi int) {
		out, in := dst.Data[lo:hi], src.Data[lo:hi]
		if o, ok := any(out).([]float32); ok {
			vec.ReLU(o, any(in).([]float32)) // VMAXPS, same special values
			return
		}
		out = out[:len(in)]
		for i, v := range in {
			out[i] = max(v, 0)
		}
	})
}

// ReLUMask writes the ReLU derivative: mask = 1 where src > 0, else 0 (also
// for NaN). It panics if the sizes differ.
func ReLUMask[T Float](mask, src *Tensor[T]) {
	LeakyReLUMask(mask, src, 0)
}

// ReLUBackward computes dst = g where x > 0, else 0 (the fused g ⊙ ReLU'(x),
// equal to g ⊙ ReLUMask(x) for finite g). dst may be g. It panics if the
// sizes differ.
func ReLUBackward[T Float](dst, g, x *Tensor[T]) {
	sameLen("ReLUBackward", dst, g, x)
	parallel.For(len(x.Data), elemGrain, func(lo, hi int) {
		switch out := any(dst.Data[lo:hi]).(type) {
		case []float32:
			// SIMD compare and zero-masked move: +0 where !(x > 0).
			vec.ReLUBackward(out, any(g.Data[lo:hi]).([]float32), any(x.Data[lo:hi]).([]float32))
		case []float64:
			gs, xs := any(g.Data[lo:hi]).([]float64), any(x.Data[lo:hi]).([]float64)
			gs, out = gs[:len(xs)], out[:len(xs)]
			for i, v := range xs {
				gb := math.Float64bits(gs[i])
				if math.Float64bits(v)-1 >= inf64Bits {
					gb = 0
				}
				out[i] = math.Float64frombits(gb)
			}
		default:
			out2, gs, xs := dst.Data[lo:hi], g.Data[lo:hi], x.Data[lo:hi]
			for i, v := range xs {
				d := gs[i]
				if !(v > 0) {
					d = 0
				}
				out2[i] = d
			}
		}
	})
}

// LeakyReLU computes dst = src where src > 0, slope·src otherwise. dst may be
// src. It panics if the sizes differ.
func LeakyReLU[T Float](dst, src *Tensor[T], slope T) {
	sameLen("LeakyReLU", dst, src)
	parallel.For(len(src.Data), elemGrain, func(lo, hi int) {
		out, in := dst.Data[lo:hi], src.Data[lo:hi]
		out = out[:len(in)]
		for i, v := range in {
			// Exact: one of the two terms is ±0.
			out[i] = max(v, 0) + slope*min(v, 0)
		}
	})
}

// LeakyReLUMask writes the LeakyReLU derivative: mask = 1 where src > 0,
// slope otherwise (also for NaN). It panics if the sizes differ.
func LeakyReLUMask[T Float](mask, src *Tensor[T], slope T) {
	sameLen("LeakyReLUMask", mask, src)
	parallel.For(len(src.Data), elemGrain, func(lo, hi int) {
		switch out := any(mask.Data[lo:hi]).(type) {
		case []float32:
			xs := any(src.Data[lo:hi]).([]float32)
			out = out[:len(xs)]
			one, sl := math.Float32bits(1), math.Float32bits(float32(slope))
			for i, v := range xs {
				m := one
				if math.Float32bits(v)-1 >= inf32Bits {
					m = sl
				}
				out[i] = math.Float32frombits(m)
			}
		case []float64:
			xs := any(src.Data[lo:hi]).([]float64)
			out = out[:len(xs)]
			one, sl := math.Float64bits(1), math.Float64bits(float64(slope))
			for i, v := range xs {
				m := one
				if math.Float64bits(v)-1 >= inf64Bits {
					m = sl
				}
				out[i] = math.Float64frombits(m)
			}
		default:
			out2, in := mask.Data[lo:hi], src.Data[lo:hi]
			for i, v := range in {
				m := slope
				if v > 0 {
					m = 1
				}
				out2[i] = m
			}
		}
	})
}

// LeakyReLUBackward computes dst = g where x > 0, slope·g otherwise (equal
// to g ⊙ LeakyReLUMask(x)). dst may be g. It panics if the sizes differ.
func LeakyReLUBackward[T Float](dst, g, x *Tensor[T], slope T) {
	sameLen("LeakyReLUBackward", dst, g, x)
	parallel.For(len(x.Data), elemGrain, func(lo, hi int) {
		switch out := any(dst.Data[lo:hi]).(type) {
		case []float32:
			gs, xs := any(g.Data[lo:hi]).([]float32), any(x.Data[lo:hi]).([]float32)
			gs, out = gs[:len(xs)], out[:len(xs)]
			sl := float32(slope)
			for i, v := range xs {
				a, b := math.Float32bits(gs[i]), math.Float32bits(gs[i]*sl)
				if math.Float32bits(v)-1 >= inf32Bits {
					a = b
				}
				out[i] = math.Float32frombits(a)
			}
		case []float64:
			gs, xs := any(g.Data[lo:hi]).([]float64), any(x.Data[lo:hi]).([]float64)
			gs, out = gs[:len(xs)], out[:len(xs)]
			sl := float64(slope)
			for i, v := range xs {
				a, b := math.Float64bits(gs[i]), math.Float64bits(gs[i]*sl)
				if math.Float64bits(v)-1 >= inf64Bits {
					a = b
				}
				out[i] = math.Float64frombits(a)
			}
		default:
			out2, gs, xs := dst.Data[lo:hi], g.Data[lo:hi], x.Data[lo:hi]
			for i, v := range xs {
				d := gs[i]
				if !(v > 0) {
					d *= slope
				}
				out2[i] = d
			}
		}
	})
}

// softplus returns ln(1+eˣ) without overflow: max(x,0) + ln(1+e^−|x|).
func softplus(x float64) float64 {
	return max(x, 0) + math.Log1p(math.Exp(-math.Abs(x)))
}

// Softplus computes dst = ln(1 + e^src) element-wise, stably for large |src|.
// dst may be src. It panics if the sizes differ.
func Softplus[T Float](dst, src *Tensor[T]) {
	sameLen("Softplus", dst, src)
	parallel.For(len(src.Data), 8192, func(lo, hi int) {
		out, in := dst.Data[lo:hi], src.Data[lo:hi]
		for i, v := range in {
			out[i] = T(softplus(float64(v)))
		}
	})
}

// SoftplusBackward computes dst = g ⊙ sigmoid(x), the fused Softplus
// backward. dst may be g. It panics if the sizes differ.
func SoftplusBackward[T Float](dst, g, x *Tensor[T]) {
	sameLen("SoftplusBackward", dst, g, x)
	parallel.For(len(x.Data), 8192, func(lo, hi int) {
		out, gs, xs := dst.Data[lo:hi], g.Data[lo:hi], x.Data[lo:hi]
		for i, v := range xs {
			out[i] = T(float64(gs[i]) * sigmoid(float64(v)))
		}
	})
}

const (
	invSqrt2   = 0.70710678118654752440084436210484903928483593768847
	invSqrt2Pi = 0.39894228040143267793994605993438186847585863116493
)

// normCDF returns Φ(x), the standard normal distribution function.
func normCDF(x float64) float64 { return 0.5 * math.Erfc(-x*invSqrt2) }

// normPDF returns φ(x), the standard normal density.
func normPDF(x float64) float64 { return invSqrt2Pi * math.Exp(-0.5*x*x) }

// GELU computes dst = src·Φ(src) element-wise (the exact erf form, PyTorch's
// default approximate='none'). dst may be src. It panics if the sizes differ.
func GELU[T Float](dst, src *Tensor[T]) {
	sameLen("GELU", dst, src)
	parallel.For(len(src.Data), 8192, func(lo, hi int) {
		out, in := dst.Data[lo:hi], src.Data[lo:hi]
		for i, v := range in {
			x := float64(v)
			out[i] = T(x * normCDF(x))
		}
	})
}

// GELUBackward computes dst = g ⊙ (Φ(x) + x·φ(x)), the fused GELU backward.
// dst may be g. It panics if the sizes differ.
func GELUBackward[T Float](dst, g, x *Tensor[T]) {
	sameLen("GELUBackward", dst, g, x)
	parallel.For(len(x.Data), 8192, func(lo, hi int) {
		out, gs, xs := dst.Data[lo:hi], g.Data[lo:hi], x.Data[lo:hi]
		for i, v := range xs {
			x := float64(v)
			out[i] = T(float64(gs[i]) * (normCDF(x) + x*normPDF(x)))
		}
	})
}

// NormCDF computes dst = Φ(src), the standard normal distribution function,
// element-wise. dst may be src. It panics if the sizes differ.
func NormCDF[T Float](dst, src *Tensor[T]) {
	sameLen("NormCDF", dst, src)
	parallel.For(len(src.Data), 8192, func(lo, hi int) {
		out, in := dst.Data[lo:hi], src.Data[lo:hi]
		for i, v := range in {
			out[i] = T(normCDF(float64(v)))
		}
	})
}

// lastAxis returns the row count and row length of t read as rows over its
// last axis. It panics on a rank-0 tensor.
func lastAxis[T Float](name string, t *Tensor[T]) (rows, k int) {
	if len(t.Shape) == 0 {
		panic(fmt.Sprintf("tensor: %s needs rank ≥ 1, got a scalar", name))
	}
	k = t.Shape[len(t.Shape)-1]
	if k == 0 {
		return 0, 0
	}
	return len(t.Data) / k, k
}

func rowsFor(rows, k int, fn func(lo, hi int)) {
	parallel.For(rows, max(1, 8192/max(k, 1)), fn)
}

// logSumExpRow returns (max, ln Σ exp(row−max)) with the sum in float64.
func logSumExpRow[T Float](row []T) (float64, float64) {
	m := math.Inf(-1)
	for _, v := range row {
		m = max(m, float64(v))
	}
	if math.IsInf(m, -1) {
		// All −Inf: every probability is undefined; keep NaN out of the
		// shift (−Inf − −Inf) by not shifting.
		m = 0
	}
	var s float64
	for _, v := range row {
		s += math.Exp(float64(v) - m)
	}
	return m, math.Log(s)
}

// Softmax computes dst = exp(src) / Σ exp(src) over the last axis, shifting
// by the row maximum for stability and summing in float64. dst may be src.
// It panics if the sizes differ or src is a scalar.
func Softmax[T Float](dst, src *Tensor[T]) {
	sameLen("Softmax", dst, src)
	rows, k := lastAxis("Softmax", src)
	rowsFor(rows, k, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			in, out := src.Data[r*k:(r+1)*k], dst.Data[r*k:(r+1)*k]
			m, lse := logSumExpRow(in)
			shift := m + lse
			for i, v := range in {
				out[i] = T(math.Exp(float64(v) - shift))
			}
		}
	})
}

// LogSoftmax computes dst = src − ln Σ exp(src) over the last axis, stably
// (max-shifted, float64 sum). dst may be src. It panics if the sizes differ
// or src is a scalar.
func LogSoftmax[T Float](dst, src *Tensor[T]) {
	sameLen("LogSoftmax", dst, src)
	rows, k := lastAxis("LogSoftmax", src)
	rowsFor(rows, k, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			in, out := src.Data[r*k:(r+1)*k], dst.Data[r*k:(r+1)*k]
			m, lse := logSumExpRow(in)
			shift := m + lse
			for i, v := range in {
				out[i] = T(float64(v) - shift)
			}
		}
	})
}

// SoftmaxBackward computes dst = y ⊙ (g − Σ_last g⊙y) for y = Softmax(x)
// (the fused Softmax backward). dst may be g. It panics if the sizes differ
// or y is a scalar.
func SoftmaxBackward[T Float](dst, g, y *Tensor[T]) {
	sameLen("SoftmaxBackward", dst, g, y)
	rows, k := lastAxis("SoftmaxBackward", y)
	rowsFor(rows, k, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			gs, ys, out := g.Data[r*k:(r+1)*k], y.Data[r*k:(r+1)*k], dst.Data[r*k:(r+1)*k]
			s := T(Dot(gs, ys))
			for i, v := range ys {
				out[i] = v * (gs[i] - s)
			}
		}
	})
}

// LogSoftmaxBackward computes dst = g − exp(y)·Σ_last g for y = LogSoftmax(x)
// (the fused LogSoftmax backward). dst may be g. It panics if the sizes
// differ or y is a scalar.
func LogSoftmaxBackward[T Float](dst, g, y *Tensor[T]) {
	sameLen("LogSoftmaxBackward", dst, g, y)
	rows, k := lastAxis("LogSoftmaxBackward", y)
	rowsFor(rows, k, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			gs, ys, out := g.Data[r*k:(r+1)*k], y.Data[r*k:(r+1)*k], dst.Data[r*k:(r+1)*k]
			s := Sum(gs)
			for i, v := range ys {
				out[i] = T(float64(gs[i]) - math.Exp(float64(v))*s)
			}
		}
	})
}

// SoftCrossEntropy returns −Σ_{n,k} t[n,k]·logp[n,k], accumulated in
// float64, where logp = LogSoftmax(logits) over the last axis and t are
// (soft) target weights of the same shape. It also writes logp into
// logpDst, which may be nil. It panics if the sizes differ or logits is a
// scalar.
func SoftCrossEntropy[T Float](logpDst, logits, t *Tensor[T]) float64 {
	sameLen("SoftCrossEntropy", logits, t)
	if logpDst != nil {
		sameLen("SoftCrossEntropy", logits, logpDst)
	}
	rows, k := lastAxis("SoftCrossEntropy", logits)
	partial := make([]float64, rows)
	rowsFor(rows, k, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			in, ts := logits.Data[r*k:(r+1)*k], t.Data[r*k:(r+1)*k]
			m, lse := logSumExpRow(in)
			shift := m + lse
			var s float64
			for i, v := range in {
				lp := float64(v) - shift
				if w := float64(ts[i]); w != 0 {
					s -= w * lp
				}
				if logpDst != nil {
					logpDst.Data[r*k+i] = T(lp)
				}
			}
			partial[r] = s
		}
	})
	var s float64
	for _, v := range partial {
		s += v
	}
	return s
}

// SoftCrossEntropyBackward writes the gradients of scale·SoftCrossEntropy:
// dlogits = scale·(softmax·Σ_last t − t) and dt = −scale·logp, where logp is
// LogSoftmax(logits). Either destination may be nil. It panics if the sizes
// differ or logp is a scalar.
func SoftCrossEntropyBackward[T Float](dlogits, dt, logp, t *Tensor[T], scale T) {
	sameLen("SoftCrossEntropyBackward", logp, t)
	if dlogits != nil {
		sameLen("SoftCrossEntropyBackward", logp, dlogits)
	}
	if dt != nil {
		sameLen("SoftCrossEntropyBackward", logp, dt)
		Affine(dt, logp, -scale, 0)
	}
	if dlogits == nil {
		return
	}
	rows, k := lastAxis("SoftCrossEntropyBackward", logp)
	rowsFor(rows, k, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			lp, ts, out := logp.Data[r*k:(r+1)*k], t.Data[r*k:(r+1)*k], dlogits.Data[r*k:(r+1)*k]
			st := Sum(ts)
			for i, v := range lp {
				out[i] = T(float64(scale) * (math.Exp(float64(v))*st - float64(ts[i])))
			}
		}
	})
}
