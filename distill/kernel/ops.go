// Package kernel holds the kernel-ridge-regression machinery of fedsim's
// kernel distillation methods (KIP, RFAD, FRePo; survey §3.2, eq. 14–18):
// the closed-form NNGP and NTK kernels of infinitely wide fully connected
// and convolutional ReLU networks (the arc-cosine recursion of the
// neural-tangents literature), a differentiable symmetric positive-definite
// solve, and the KRR prediction with its MSE and Platt-scaled cross-entropy
// losses.
//
// Everything is built from autograd operations whose backward rules are
// themselves differentiable, so the gradients of a KRR loss with respect to
// support images and labels are exact (and could be differentiated again).
package kernel

import (
	"fmt"
	"math"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/internal/parallel"
	"github.com/fedsim/fedsim/tensor"
)

// Float is the element type (float32 for work, float64 for checks).
type Float = tensor.Float

// clampLimit returns the largest |c| at which J0's derivative
// 1/(π√(1−c²)) is used. Above it the derivative is taken as 0: there c is
// 1 up to rounding, which happens on the diagonal of a Gram matrix, where c
// is identically 1 as a function of the images and so has zero derivative
// (the true value, which the formula at c ≈ 1 would turn into ±∞·0).
func clampLimit[T Float]() float64 {
	var z T
	if _, ok := any(z).(float32); ok {
		return 1 - 1e-5
	}
	return 1 - 1e-10
}

// ArcJ1 returns J1(c) = (√(1−c²) + (π − arccos c)·c)/π element-wise, c
// clamped to [−1, 1] (rounding can push a cosine just outside). J1 is the
// normalised arc-cosine kernel of degree 1: E[relu(u)relu(v)] for unit
// variances and correlation c is J1(c)/2. Its derivative is J0(c), exact
// everywhere, so the backward rule is ArcJ0.
func ArcJ1[T Float](c *ag.Var[T]) *ag.Var[T] {
	tp := c.Tape()
	if tp.Err() != nil {
		return c
	}
	out := mapClamped(tp, c, func(x float64) float64 { return (math.Sqrt(1-x*x) + (math.Pi-math.Acos(x))*x) / math.Pi })
	return tp.Record(out, []*ag.Var[T]{c}, func(g *ag.Var[T], _ []bool) []*ag.Var[T] {
		return []*ag.Var[T]{ag.Mul(g, ArcJ0(c))}
	})
}

// ArcJ0 returns J0(c) = (π − arccos c)/π element-wise (c clamped to
// [−1, 1]): E[relu'(u)relu'(v)] = J0(c)/2 for correlation c. Its
// derivative is 1/(π√(1−c²)) for |c| below a limit just under 1 (1−1e-5 in
// float32, 1−1e-10 in float64) and 0 above it (see clampLimit); the rule
// is written with differentiable operations, so higher derivatives exist.
func ArcJ0[T Float](c *ag.Var[T]) *ag.Var[T] {
	tp := c.Tape()
	if tp.Err() != nil {
		return c
	}
	out := mapClamped(tp, c, func(x float64) float64 { return (math.Pi - math.Acos(x)) / math.Pi })
	return tp.Record(out, []*ag.Var[T]{c}, func(g *ag.Var[T], _ []bool) []*ag.Var[T] {
		lim := clampLimit[T]()
		src := c.Value.Data
		mask := tp.AllocUninit(c.Value.Shape...)
		parallel.For(len(src), 4096, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				mask.Data[i] = 0
				if math.Abs(float64(src[i])) < lim {
					mask.Data[i] = 1
				}
			}
		})
		cc := ag.Mul(c, tp.Const(mask)) // 0 where masked, so √(1−c²) stays finite
		// 1/(π√(1−c²)) on the masked entries, 0 elsewhere.
		d := ag.Scale(ag.Rsqrt(ag.AddScalar(ag.Neg(ag.Square(cc)), 1)), T(1/math.Pi))
		return []*ag.Var[T]{ag.Mul(g, ag.Mul(d, tp.Const(mask)))}
	})
}

// Solve returns X = A⁻¹B for a symmetric positive-definite A (n, n) and B
// (n, k), computed by a float64 Cholesky factorisation whatever T is (KRR's
// solve is where float32 loses too much). Backward: ∂B = A⁻¹G (a Solve
// again) and ∂A = −(A⁻¹G)Xᵀ, both differentiable. If A is not positive
// definite (or not finite) the tape fails with an error that names the
// pivot; A's symmetry is assumed (only its lower triangle is read).
func Solve[T Float](a, b *ag.Var[T]) *ag.Var[T] {
	tp := a.Tape()
	if tp.Err() != nil {
		return a
	}
	if a.Value.Rank() != 2 || a.Value.Shape[0] != a.Value.Shape[1] || b.Value.Rank() != 2 || b.Value.Shape[0] != a.Value.Shape[0] {
		tp.Fail(fmt.Errorf("kernel: Solve needs A (n, n) and B (n, k), got %v and %v", a.Value.Shape, b.Value.Shape))
		return a
	}
	n, k := a.Value.Shape[0], b.Value.Shape[1]
	l, err := cholesky(a.Value.Data, n)
	if err != nil {
		tp.Fail(err)
		return a
	}
	out := tp.AllocUninit(n, k)
	col := make([]float64, n)
	for j := range k {
		for i := range n {
			col[i] = float64(b.Value.Data[i*k+j])
		}
		cholSolve(l, n, col)
		for i := range n {
			out.Data[i*k+j] = T(col[i])
		}
	}
	var x *ag.Var[T]
	x = tp.Record(out, []*ag.Var[T]{a, b}, func(g *ag.Var[T], needs []bool) []*ag.Var[T] {
		gb := Solve(a, g)
		var ga *ag.Var[T]
		if needs[0] {
			ga = ag.Neg(ag.MatMul(gb, x, false, true))
		}
		if !needs[1] {
			gb = nil
		}
		return []*ag.Var[T]{ga, gb}
	})
	return x
}

// cholesky returns the lower factor L (row-major n×n float64) of a = LLᵀ.
func cholesky[T Float](a []T, n int) ([]float64, error) {
	l := make([]float64, n*n)
	for j := range n {
		s := float64(a[j*n+j])
		for p := range j {
			s -= l[j*n+p] * l[j*n+p]
		}
		if !(s > 0) || math.IsInf(s, 0) {
			return nil, fmt.Errorf("kernel: Solve: the matrix is not positive definite (pivot %d is %g); raise the KRR regularisation", j, s)
		}
		d := math.Sqrt(s)
		l[j*n+j] = d
		for i := j + 1; i < n; i++ {
			s := float64(a[i*n+j])
			for p := range j {
				s -= l[i*n+p] * l[j*n+p]
			}
			l[i*n+j] = s / d
		}
	}
	return l, nil
}

// cholSolve overwrites b with (LLᵀ)⁻¹b.
func cholSolve(l []float64, n int, b []float64) {
	for i := range n {
		s := b[i]
		for p := range i {
			s -= l[i*n+p] * b[p]
		}
		b[i] = s / l[i*n+i]
	}
	for i := n - 1; i >= 0; i-- {
		s := b[i]
		for p := i + 1; p < n; p++ {
			s -= l[p*n+i] * b[p]
		}
		b[i] = s / l[i*n+i]
	}
}

// mapClamped returns f(clamp(c, −1, 1)) element-wise in a tape buffer,
// computed in float64 (the arc-cosine kernels' forward values).
func mapClamped[T Float](tp *ag.Tape[T], c *ag.Var[T], f func(float64) float64) *tensor.Tensor[T] {
	out := tp.AllocUninit(c.Value.Shape...)
	src := c.Value.Data
	parallel.For(len(src), 4096, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			out.Data[i] = T(f(math.Max(-1, math.Min(1, float64(src[i])))))
		}
	})
	return out
}
