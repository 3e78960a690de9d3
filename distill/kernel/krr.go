package kernel

import (
	"fmt"

	ag "github.com/fedsim/fedsim/autograd"
)

// Predict returns the kernel ridge regression prediction of the targets
// (survey eq. 14–15)
//
//	Ŷ_t = K_ts (K_ss + λ·tr(K_ss)/n · I)⁻¹ Y_s
//
// for the kernel matrices kts (m, n) and kss (n, n) and the support labels
// ys (n, k). The ridge is scaled by the mean diagonal of K_ss, as KIP's
// code does, so reg is scale-free (KIP: 1e-6; FRePo: 1e-6 too, RFAD 1e-6
// with its own normalised features). The trace term is differentiated
// like the rest. Shape errors fail the tape.
func Predict[T Float](kts, kss, ys *ag.Var[T], reg float64) *ag.Var[T] {
	tp := kss.Tape()
	if tp.Err() != nil {
		return kss
	}
	ks, ts, yss := kss.Value.Shape, kts.Value.Shape, ys.Value.Shape
	if len(ks) != 2 || ks[0] != ks[1] || len(ts) != 2 || ts[1] != ks[0] || len(yss) != 2 || yss[0] != ks[0] {
		tp.Fail(fmt.Errorf("kernel: Predict needs K_ts (m, n), K_ss (n, n) and Y_s (n, k), got %v, %v and %v", ts, ks, yss))
		return kss
	}
	n := ks[0]
	eye := tp.Alloc(n, n)
	for i := range n {
		eye.Data[i*n+i] = 1
	}
	id := tp.Const(eye)
	trace := ag.Sum(ag.Mul(kss, id))
	a := ag.Add(kss, ag.Mul(id, ag.Scale(trace, T(reg/float64(n)))))
	return ag.MatMul(kts, Solve(a, ys), false, false)
}

// MSELoss returns KIP's loss ½·mean over entries of (Ŷ − Y)² (eq. 15
// divided by the number of entries, which only rescales the step).
func MSELoss[T Float](pred, target *ag.Var[T]) *ag.Var[T] {
	return ag.Scale(ag.Mean(ag.Square(ag.Sub(pred, target))), 0.5)
}

// PlattLoss returns RFAD's Platt-scaled cross entropy (eq. 16): the mean
// cross entropy of the softmax of Ŷ/τ against the labels, τ = exp(logTau)
// (a scalar variable, learned with the images so τ stays positive).
func PlattLoss[T Float](pred, logTau *ag.Var[T], labels []int) *ag.Var[T] {
	return ag.CrossEntropy(ag.Mul(pred, ag.Exp(ag.Neg(logTau))), labels)
}

// CenteredOneHot returns KIP's regression targets for labels: one-hot rows
// minus 1/k (so every row sums to 0).
func CenteredOneHot[T Float](labels []int, k int) []T {
	out := make([]T, len(labels)*k)
	for i, l := range labels {
		for j := range k {
			out[i*k+j] = T(-1 / float64(k))
		}
		if l >= 0 && l < k {
			out[i*k+l] += 1
		}
	}
	return out
}
