//go:build amd64 && !noasm

package gemm

import "golang.org/x/sys/cpu"

// kernelAVX512 is the AVX-512F micro-kernel (mr=12, nr=32). See kernel.
//
//go:noescape
func kernelAVX512(k int, a, b *float32, ldb int, c *float32, ldc int, alpha, beta float32)

// kernelAVX512x8 and kernelAVX512x4 are kernelAVX512 for 8- and 4-row
// edge panels.
//
//go:noescape
func kernelAVX512x8(k int, a, b *float32, ldb int, c *float32, ldc int, alpha, beta float32)

//go:noescape
func kernelAVX512x4(k int, a, b *float32, ldb int, c *float32, ldc int, alpha, beta float32)

// kernelAVX2 is the AVX2+FMA micro-kernel (mr=6, nr=16). See kernel.
//
//go:noescape
func kernelAVX2(k int, a, b *float32, ldb int, c *float32, ldc int, alpha, beta float32)

// kernelAVX2x4 and kernelAVX2x2 are kernelAVX2 for 4- and 2-row edge panels.
//
//go:noescape
func kernelAVX2x4(k int, a, b *float32, ldb int, c *float32, ldc int, alpha, beta float32)

//go:noescape
func kernelAVX2x2(k int, a, b *float32, ldb int, c *float32, ldc int, alpha, beta float32)

// packBNCopy copies kc rows of panels×nr floats (row stride lds) into
// panels consecutive kc×nr micro-panels: dst[q*kc*nr+p*nr+j] =
// src[p*lds+q*nr+j]. nr must be a multiple of 8. Needs AVX.
//
//go:noescape
func packBNCopy(dst, src *float32, lds, kc, panels, nr int)

// transpose8 transposes a (8*blocks)×kc block (row stride lds) into dst
// with row stride ldd: dst[p*ldd+j] = src[j*lds+p] for p < kc&^7 (the tail
// is left to the caller). Needs AVX.
//
//go:noescape
func transpose8(dst, src *float32, lds, kc, ldd, blocks int)

func init() {
	if cpu.X86.HasAVX2 {
		packBNFast = packBNCopy
		transpose8Fast = transpose8
	}
}

// archKernels lists the assembly kernels this CPU supports, best first.
// x/sys/cpu only reports AVX2 and AVX-512 when the OS saves their state.
func archKernels() []*kernel {
	var ks []*kernel
	if cpu.X86.HasAVX512F {
		ks = append(ks, &kernel{name: "avx512", mr: 12, nr: 32, fn: kernelAVX512,
			edges: []edgeKernel{{4, kernelAVX512x4}, {8, kernelAVX512x8}}})
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		ks = append(ks, &kernel{name: "avx2", mr: 6, nr: 16, fn: kernelAVX2,
			edges: []edgeKernel{{2, kernelAVX2x2}, {4, kernelAVX2x4}}})
	}
	return ks
}
