//go:build openblas && cgo

package gemm

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/fedsim/fedsim/tensor/gemm/internal/openblas"
)

// Run with: go test -tags openblas -bench . ./tensor/gemm/

func BenchmarkOpenBLASSgemm1024(b *testing.B) {
	b.Logf("%s", openblas.Config())
	benchSgemm(b, shape1024, openblas.Sgemm)
}

func BenchmarkOpenBLASSgemmConv(b *testing.B) {
	for _, s := range convShapes {
		b.Run(s.name, func(b *testing.B) { benchSgemm(b, s, openblas.Sgemm) })
	}
}

// TestOpenBLASAgrees cross-checks Sgemm against OpenBLAS.
func TestOpenBLASAgrees(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for tr := range 4 {
		p := newProblem(rng, tr&1 != 0, tr&2 != 0, 97, 130, 260, 1, 0.5, 0.25, false)
		want := append([]float32(nil), p.c...)
		openblas.Sgemm(p.transA, p.transB, p.m, p.n, p.k, p.alpha, p.a, p.lda, p.b, p.ldb, p.beta, want, p.ldc)
		p.check(t, fmt.Sprintf("openblas tr=%d", tr), func(_ *problem, c []float32) {
			callSgemm(p, c)
			for i := range p.m {
				for j := range p.n {
					g, w := c[i*p.ldc+j], want[i*p.ldc+j]
					if d := g - w; d > 1e-3 || d < -1e-3 {
						t.Fatalf("C[%d][%d]: gemm %v, openblas %v", i, j, g, w)
					}
				}
			}
		})
	}
}
