package tensor

import (
	"fmt"

	"github.com/fedsim/fedsim/internal/parallel"
	"github.com/fedsim/fedsim/tensor/gemm"
)

// Gemm computes C = alpha*op(A)*op(B) + beta*C on row-major matrices, as
// BLAS does (see package gemm). float32 runs the tuned assembly kernels;
// float64 (tests, gradient checks) runs a plain blocked loop.
// It panics on inconsistent sizes.
func Gemm[T Float](transA, transB bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	switch a := any(a).(type) {
	case []float32:
		gemm.Sgemm(transA, transB, m, n, k, float32(alpha), a, lda, any(b).([]float32), ldb, float32(beta), any(c).([]float32), ldc)
	default:
		gemmGeneric(transA, transB, m, n, k, alpha, any(a).([]T), lda, b, ldb, beta, c, ldc)
	}
}

// fixedA multiplies one matrix op(A) by many: a convolution's weights by
// every image of a batch. For float32 it packs A once (gemm.PackA) instead
// of once per product; call release when done.
type fixedA[T Float] struct {
	transA bool
	m, k   int
	a      []T
	lda    int
	packed *gemm.PackedA
}

func newFixedA[T Float](transA bool, m, k int, a []T, lda int) *fixedA[T] {
	f := &fixedA[T]{transA: transA, m: m, k: k, a: a, lda: lda}
	if a32, ok := any(a).([]float32); ok {
		f.packed = gemm.PackA(transA, m, k, a32, lda)
	}
	return f
}

// mul computes C = alpha*op(A)*op(B) + beta*C, as Gemm with f's A.
func (f *fixedA[T]) mul(transB bool, n int, alpha T, b []T, ldb int, beta T, c []T, ldc int) {
	if f.packed != nil {
		gemm.SgemmPackedA(f.packed, transB, n, float32(alpha), any(b).([]float32), ldb, float32(beta), any(c).([]float32), ldc)
		return
	}
	Gemm(f.transA, transB, f.m, n, f.k, alpha, f.a, f.lda, b, ldb, beta, c, ldc)
}

func (f *fixedA[T]) release() {
	if f.packed != nil {
		f.packed.Release()
		f.packed = nil
	}
}

func gemmGeneric[T Float](transA, transB bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	at := func(i, p int) T {
		if transA {
			return a[p*lda+i]
		}
		return a[i*lda+p]
	}
	parallel.For(m, max(1, 4096/max(1, n*k)), func(lo, hi int) {
		row := make([]T, n)
		for i := lo; i < hi; i++ {
			clear(row)
			for p := 0; p < k; p++ {
				x := at(i, p)
				if x == 0 {
					continue
				}
				if transB {
					for j := range row {
						row[j] += x * b[j*ldb+p]
					}
				} else {
					bp := b[p*ldb : p*ldb+n]
					for j, v := range bp {
						row[j] += x * v
					}
				}
			}
			ci := c[i*ldc : i*ldc+n]
			for j, v := range row {
				if beta == 0 {
					ci[j] = alpha * v
				} else {
					ci[j] = alpha*v + beta*ci[j]
				}
			}
		}
	})
}

// MatMul computes dst = op(a)·op(b) for rank-2 tensors, where op transposes
// when the flag is set. It panics if the shapes do not agree.
func MatMul[T Float](dst, a, b *Tensor[T], transA, transB bool) {
	if a.Rank() != 2 || b.Rank() != 2 || dst.Rank() != 2 {
		panic(fmt.Sprintf("tensor: MatMul needs rank-2 tensors, got %v·%v into %v", a.Shape, b.Shape, dst.Shape))
	}
	m, k := a.Shape[0], a.Shape[1]
	if transA {
		m, k = k, m
	}
	kb, n := b.Shape[0], b.Shape[1]
	if transB {
		kb, n = n, kb
	}
	if k != kb || dst.Shape[0] != m || dst.Shape[1] != n {
		panic(fmt.Sprintf("tensor: MatMul shapes %v·%v (transA=%v transB=%v) into %v", a.Shape, b.Shape, transA, transB, dst.Shape))
	}
	Gemm(transA, transB, m, n, k, 1, a.Data, a.Shape[1], b.Data, b.Shape[1], 0, dst.Data, n)
}
