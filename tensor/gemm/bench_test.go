package gemm

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchShape is one benchmarked Sgemm call.
type benchShape struct {
	name           string
	transA, transB bool
	m, n, k        int
}

var (
	shape1024 = benchShape{"1024", false, false, 1024, 1024, 1024}
	// convShapes are the im2col GEMMs of the engine's ConvNet.
	convShapes = []benchShape{
		{"fwd_128x1024x1152", false, false, 128, 1024, 1152},
		{"fwd_128x256x1152", false, false, 128, 256, 1152},
		{"dinput_tA_1152x1024x128", true, false, 1152, 1024, 128},
		{"dweight_tB_128x1152x1024", false, true, 128, 1152, 1024},
		{"img_128x64x1152", false, false, 128, 64, 1152},
	}
)

// operands returns seeded random operands for s with minimal leading
// dimensions.
func (s benchShape) operands() (a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	rng := rand.New(rand.NewPCG(42, uint64(s.m*s.n*s.k)))
	a = make([]float32, s.m*s.k)
	b = make([]float32, s.k*s.n)
	c = make([]float32, s.m*s.n)
	for i := range a {
		a[i] = float32(rng.NormFloat64())
	}
	for i := range b {
		b[i] = float32(rng.NormFloat64())
	}
	lda, ldb, ldc = s.k, s.n, s.n
	if s.transA {
		lda = s.m
	}
	if s.transB {
		ldb = s.k
	}
	return a, lda, b, ldb, c, ldc
}

type sgemmFunc func(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)

func benchSgemm(b *testing.B, s benchShape, f sgemmFunc) {
	a, lda, bm, ldb, c, ldc := s.operands()
	f(s.transA, s.transB, s.m, s.n, s.k, 1, a, lda, bm, ldb, 0, c, ldc) // warm pools and caches
	cpu0 := cpuSeconds()
	b.ResetTimer()
	for b.Loop() {
		f(s.transA, s.transB, s.m, s.n, s.k, 1, a, lda, bm, ldb, 0, c, ldc)
	}
	flops := 2 * float64(s.m) * float64(s.n) * float64(s.k) * float64(b.N)
	b.ReportMetric(flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	// GFLOP per CPU-second: per-core efficiency, robust to other load on a
	// shared machine (OpenBLAS threads spin while waiting, inflating it).
	if cpu := cpuSeconds() - cpu0; cpu > 0 {
		b.ReportMetric(flops/cpu/1e9, "GFLOP/cpu-s")
	}
}

// BenchmarkSgemm1024 measures the default kernel (see KernelName) at 1024³.
func BenchmarkSgemm1024(b *testing.B) {
	b.Logf("kernel %s", KernelName())
	benchSgemm(b, shape1024, Sgemm)
}

// BenchmarkSgemmConv measures the default kernel at the ConvNet shapes.
func BenchmarkSgemmConv(b *testing.B) {
	for _, s := range convShapes {
		b.Run(s.name, func(b *testing.B) { benchSgemm(b, s, Sgemm) })
	}
}

// BenchmarkSgemmKernels measures every available kernel at every shape.
func BenchmarkSgemmKernels(b *testing.B) {
	for _, kern := range kernels {
		for _, s := range append([]benchShape{shape1024}, convShapes...) {
			b.Run(fmt.Sprintf("%s/%s", kern.name, s.name), func(b *testing.B) {
				restore, _ := useKernel(kern.name)
				defer restore()
				benchSgemm(b, s, Sgemm)
			})
		}
	}
}

// BenchmarkSgemmSplit compares splitting C by rows and by columns.
func BenchmarkSgemmSplit(b *testing.B) {
	for _, s := range append([]benchShape{shape1024}, convShapes...) {
		for pol, name := range []string{"auto", "rows", "cols"} {
			b.Run(fmt.Sprintf("%s/%s", s.name, name), func(b *testing.B) {
				defer func(old int) { splitPolicy = old }(splitPolicy)
				splitPolicy = pol
				benchSgemm(b, s, Sgemm)
			})
		}
	}
}

// BenchmarkSgemmDirect compares packing B with reading it in place
// (directMaxM) at every shape.
func BenchmarkSgemmDirect(b *testing.B) {
	for _, kern := range kernels {
		if kern.name == "generic" {
			continue
		}
		for _, s := range append([]benchShape{shape1024}, convShapes...) {
			for _, d := range []struct {
				name string
				maxM int
			}{{"packed", -1}, {"direct", 1 << 30}} {
				b.Run(fmt.Sprintf("%s/%s/%s", kern.name, s.name, d.name), func(b *testing.B) {
					restore, _ := useKernel(kern.name)
					defer restore()
					defer func(old int) { directMaxM = old }(directMaxM)
					directMaxM = d.maxM
					benchSgemm(b, s, Sgemm)
				})
			}
		}
	}
}

// BenchmarkMicroKernel measures each kernel alone (single core) on one
// packed A micro-panel against 24 packed B micro-panels (kc = 384, B in L2):
// the ceiling for the full Sgemm.
func BenchmarkMicroKernel(b *testing.B) {
	const kc, panels = 384, 24
	for _, kern := range kernels {
		b.Run(kern.name, func(b *testing.B) {
			ap := make([]float32, kern.mr*kc)
			bp := make([]float32, kern.nr*kc*panels)
			c := make([]float32, kern.mr*kern.nr)
			for b.Loop() {
				for j := range panels {
					kern.fn(kc, &ap[0], &bp[j*kc*kern.nr], kern.nr, &c[0], kern.nr, 1, 1)
				}
			}
			flops := float64(2*kern.mr*kern.nr*kc*panels) * float64(b.N)
			b.ReportMetric(flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
