package tensor

import (
	"fmt"
	"math"

	"github.com/fedsim/fedsim/internal/parallel"
	"github.com/fedsim/fedsim/tensor/internal/vec"
)

// UnaryOp names an element-wise unary operation.
type UnaryOp int

// The element-wise unary operations. Activations with a kink (ReLU) live in
// their own kernels, with their masks.
const (
	OpNeg UnaryOp = iota
	OpExp
	OpLog
	OpSqrt
	OpRsqrt
	OpSquare
	OpRecip
	OpTanh
	OpSigmoid
	OpAbs
	OpSign
)

// Unary computes dst = op(src) element-wise. It panics if the sizes differ.
func Unary[T Float](op UnaryOp, dst, src *Tensor[T]) {
	if len(dst.Data) != len(src.Data) {
		panic(fmt.Sprintf("tensor: Unary destination %v, source %v", dst.Shape, src.Shape))
	}
	parallel.For(len(src.Data), 16384, func(lo, hi int) {
		out, in := dst.Data[lo:hi], src.Data[lo:hi]
		switch op {
		case OpNeg:
			for i, v := range in {
				out[i] = -v
			}
		case OpExp:
			for i, v := range in {
				out[i] = T(math.Exp(float64(v)))
			}
		case OpLog:
			for i, v := range in {
				out[i] = T(math.Log(float64(v)))
			}
		case OpSqrt:
			for i, v := range in {
				out[i] = T(math.Sqrt(float64(v)))
			}
		case OpRsqrt:
			for i, v := range in {
				out[i] = T(1 / math.Sqrt(float64(v)))
			}
		case OpSquare:
			for i, v := range in {
				out[i] = v * v
			}
		case OpRecip:
			for i, v := range in {
				out[i] = 1 / v
			}
		case OpTanh:
			for i, v := range in {
				out[i] = T(math.Tanh(float64(v)))
			}
		case OpSigmoid:
			for i, v := range in {
				out[i] = T(sigmoid(float64(v)))
			}
		case OpAbs:
			for i, v := range in {
				out[i] = T(math.Abs(float64(v)))
			}
		case OpSign:
			for i, v := range in {
				switch {
				case v > 0:
					out[i] = 1
				case v < 0:
					out[i] = -1
				default:
					out[i] = 0
				}
			}
		}
	})
}

func sigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}

// Affine computes dst = a*src + b element-wise (for float32 with one FMA).
// dst may be src. It panics if the sizes differ.
func Affine[T Float](dst, src *Tensor[T], a, b T) {
	if len(dst.Data) != len(src.Data) {
		panic(fmt.Sprintf("tensor: Affine destination %v, source %v", dst.Shape, src.Shape))
	}
	parallel.For(len(src.Data), 32768, func(lo, hi int) {
		out, in := dst.Data[lo:hi], src.Data[lo:hi]
		if o, ok := any(out).([]float32); ok {
			vec.Affine(o, any(in).([]float32), float32(a), float32(b))
			return
		}
		for i, v := range in {
			out[i] = a*v + b
		}
	})
}

// Axpy computes y += a*x (for float32 with one FMA). It panics if the sizes
// differ.
func Axpy[T Float](a T, x, y []T) {
	if len(x) != len(y) {
		panic(fmt.Sprintf("tensor: Axpy lengths %d and %d", len(x), len(y)))
	}
	parallel.For(len(x), 32768, func(lo, hi int) { axpyRow(a, x[lo:hi], y[lo:hi]) })
}

// axpyRow computes y += a·x over len(x) values in the calling goroutine
// (for float32 with one FMA per value). It panics if y is shorter than x.
func axpyRow[T Float](a T, x, y []T) {
	if ys, ok := any(y).([]float32); ok {
		vec.Axpy(float32(a), any(x).([]float32), ys)
		return
	}
	y = y[:len(x)]
	for i, v := range x {
		y[i] += a * v
	}
}

// Dot returns Σ x[i]*y[i], accumulated in float64.
// It panics if the lengths differ.
func Dot[T Float](x, y []T) float64 {
	if len(x) != len(y) {
		panic(fmt.Sprintf("tensor: Dot lengths %d and %d", len(x), len(y)))
	}
	var s float64
	for i, v := range x {
		s += float64(v) * float64(y[i])
	}
	return s
}

// Sum returns Σ x[i], accumulated in float64.
func Sum[T Float](x []T) float64 {
	var s float64
	for _, v := range x {
		s += float64(v)
	}
	return s
}

// FirstNonFinite returns the index of the first NaN or ±Inf in x, or −1.
func FirstNonFinite[T Float](x []T) int {
	for i, v := range x {
		f := float64(v)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return i
		}
	}
	return -1
}

// HasNaNOrInf reports whether any element is NaN or ±Inf.
func HasNaNOrInf[T Float](x []T) bool { return FirstNonFinite(x) >= 0 }
