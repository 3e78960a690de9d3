package kernel

import (
	"fmt"
	"math"

	ag "github.com/fedsim/fedsim/autograd"
)

// Arch describes an infinitely wide ReLU network in the NTK
// parameterisation (neural-tangents' stax with W_std² = WVar, b_std² =
// BVar): every weight is N(0, 1) scaled by √(WVar/fan-in), every bias
// N(0, 1) scaled by √BVar.
//
//   - fully connected (Conv false): Depth × [Dense → ReLU], then a Dense
//     readout;
//   - convolutional (Conv true): Depth × [3×3 convolution, stride 1, zero
//     padding 1 → ReLU], then a Dense readout of the flattened feature map
//     (neural-tangents' Flatten readout). Without pooling, the flatten
//     readout needs only the covariances of equal positions of the two
//     images, so the kernel costs O(n·m·H·W·Depth) after the input's
//     per-position products; a global-average-pooling readout would need
//     all (H·W)² position pairs and is not implemented.
//
// The kernel recursion (Cho & Saul's arc-cosine kernels; Lee et al. 2018,
// Jacot et al. 2018, Arora et al. 2019), for Σ the covariance of the
// pre-activations of x and y at one position, Σx, Σy their variances and
// c = Σ/√(ΣxΣy):
//
//	ReLU:   Σ ← √(ΣxΣy)·J1(c)/2,   Θ ← Θ·J0(c)/2,   Σx ← Σx/2
//	layer:  Σ ← WVar·B(Σ) + BVar,  Θ ← WVar·B(Θ) + Σ
//
// where B is the identity for a dense layer and the 3×3 box average (zero
// padded, divided by 9) for a convolution, and the readout averages over
// positions. The first layer starts from Σ = WVar·B(Σ_c x_c y_c)/C + BVar
// and Θ = Σ. The NNGP kernel is the final Σ, the NTK the final Θ.
type Arch struct {
	Conv       bool
	Depth      int
	WVar, BVar float64
	NTK        bool
}

// DefaultArch returns KIP's fully connected kernel: one hidden layer,
// WVar 2, BVar 0.01, NTK.
func DefaultArch() Arch { return Arch{Depth: 1, WVar: 2, BVar: 0.01, NTK: true} }

// Validate reports a bad architecture.
func (a Arch) Validate() error {
	if a.Depth < 1 || a.Depth > 64 {
		return fmt.Errorf("kernel: depth %d must be in [1, 64]", a.Depth)
	}
	if !(a.WVar > 0) || math.IsInf(a.WVar, 0) || !(a.BVar >= 0) || math.IsInf(a.BVar, 0) {
		return fmt.Errorf("kernel: weight variance %g must be positive and bias variance %g not negative (try 2 and 0.01)", a.WVar, a.BVar)
	}
	return nil
}

// String names the kernel, e.g. "fc3-ntk".
func (a Arch) String() string {
	k, kind := "fc", "nngp"
	if a.Conv {
		k = "conv"
	}
	if a.NTK {
		kind = "ntk"
	}
	return fmt.Sprintf("%s%d-%s", k, a.Depth, kind)
}

// Kernel returns the (n, m) kernel matrix between x (n, …) and y (m, …):
// the NNGP or NTK kernel of the architecture a. For a fully connected
// network the inputs are flattened; for a convolutional one they must be
// (N, C, H, W) with the same (C, H, W). Bad shapes or an invalid a fail
// the tape (Tape.Err names them); the result is then a placeholder.
func Kernel[T Float](a Arch, x, y *ag.Var[T]) *ag.Var[T] {
	tp := x.Tape()
	if tp.Err() != nil {
		return x
	}
	if err := a.Validate(); err != nil {
		tp.Fail(err)
		return x
	}
	xs, ys := x.Value.Shape, y.Value.Shape
	if len(xs) < 2 || len(ys) != len(xs) || sizeFrom(xs, 1) != sizeFrom(ys, 1) || (a.Conv && (len(xs) != 4 || xs[1] != ys[1] || xs[2] != ys[2])) {
		tp.Fail(fmt.Errorf("kernel: %s kernel of inputs %v and %v: want the same shape after the batch axis%s", a, xs, ys, map[bool]string{true: " and (N, C, H, W)", false: ""}[a.Conv]))
		return x
	}
	n, m := xs[0], ys[0]
	wv, bv := T(a.WVar), T(a.BVar)
	var sig, dx, dy *ag.Var[T] // (n, m, P), (n, 1, P), (1, m, P)
	box := func(v *ag.Var[T]) *ag.Var[T] { return v }
	if !a.Conv {
		d := sizeFrom(xs, 1)
		xf, yf := ag.Reshape(x, n, d), ag.Reshape(y, m, d)
		sig = ag.Reshape(ag.Scale(ag.MatMul(xf, yf, false, true), wv/T(d)), n, m, 1)
		dx = ag.Reshape(ag.Scale(ag.SumAxes(ag.Square(xf), []int{1}, false), wv/T(d)), n, 1, 1)
		dy = ag.Reshape(ag.Scale(ag.SumAxes(ag.Square(yf), []int{1}, false), wv/T(d)), 1, m, 1)
	} else {
		c, h, w := xs[1], xs[2], xs[3]
		p := h * w
		box = func(v *ag.Var[T]) *ag.Var[T] {
			s := v.Value.Shape
			return ag.Reshape(ag.AvgPool2D(ag.Reshape(v, s[0]*s[1], 1, h, w), 3, 1, 1), s[0], s[1], p)
		}
		xr, yr := ag.Reshape(x, n, 1, c, p), ag.Reshape(y, 1, m, c, p)
		sig = ag.Scale(box(ag.SumAxes(ag.Mul(xr, yr), []int{2}, false)), wv/T(c))
		dx = ag.Scale(box(ag.SumAxes(ag.Square(xr), []int{2}, false)), wv/T(c))
		dy = ag.Scale(box(ag.SumAxes(ag.Square(yr), []int{2}, false)), wv/T(c))
	}
	sig, dx, dy = ag.AddScalar(sig, bv), ag.AddScalar(dx, bv), ag.AddScalar(dy, bv)
	theta := sig
	for l := 1; l <= a.Depth; l++ {
		norm := ag.Sqrt(ag.Mul(dx, dy))
		cos := ag.Div(sig, norm)
		sig = ag.Mul(ag.Scale(norm, 0.5), ArcJ1(cos))
		if a.NTK {
			theta = ag.Mul(theta, ag.Scale(ArcJ0(cos), 0.5))
		}
		dx, dy = ag.Scale(dx, 0.5), ag.Scale(dy, 0.5)
		if l < a.Depth {
			sig = ag.AddScalar(ag.Scale(box(sig), wv), bv)
			if a.NTK {
				theta = ag.Add(ag.Scale(box(theta), wv), sig)
			}
			dx = ag.AddScalar(ag.Scale(box(dx), wv), bv)
			dy = ag.AddScalar(ag.Scale(box(dy), wv), bv)
			continue
		}
		sig = ag.AddScalar(ag.Scale(ag.MeanAxes(sig, []int{2}, false), wv), bv)
		if a.NTK {
			theta = ag.Add(ag.Scale(ag.MeanAxes(theta, []int{2}, false), wv), sig)
		}
	}
	if a.NTK {
		return theta
	}
	return sig
}

func sizeFrom(shape []int, i int) int {
	s := 1
	for _, v := range shape[i:] {
		s *= v
	}
	return s
}
