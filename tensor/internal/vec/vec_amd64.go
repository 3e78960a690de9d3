//go:build amd64 && !noasm

package vec

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// Kernel sets: the AVX-512 kernels process multiples of 16 values, the
// AVX2 ones multiples of 8; the Go wrappers finish the tails.
var (
	has512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL && cpu.X86.HasAVX512BW
	has256 = cpu.X86.HasAVX2 && cpu.X86.HasFMA
)

// Impl names the kernel set in use: "avx512", "avx2" or "go".
func Impl() string {
	switch {
	case has512:
		return "avx512"
	case has256:
		return "avx2"
	}
	return "go"
}

// block returns the length of the prefix of n values the assembly handles.
func block(n int) int {
	switch {
	case has512:
		return n &^ 15
	case has256:
		return n &^ 7
	}
	return 0
}

func p(s []float32) *float32 { return unsafe.SliceData(s) }

//go:noescape
func sumSqShift512(x *float32, n int, k float64) (s1, s2 float64)

//go:noescape
func sumSqShift256(x *float32, n int, k float64) (s1, s2 float64)

func sumSqShiftAsm(x []float32, k float64) (n int, s1, s2 float64) {
	if n = block(len(x)); n == 0 {
		return 0, 0, 0
	}
	if has512 {
		s1, s2 = sumSqShift512(p(x), n, k)
	} else {
		s1, s2 = sumSqShift256(p(x), n, k)
	}
	return n, s1, s2
}

//go:noescape
func gradSums512(grad, x *float32, n int, mu float64) (sg, sgx float64)

//go:noescape
func gradSums256(grad, x *float32, n int, mu float64) (sg, sgx float64)

func gradSumsAsm(g, x []float32, mu float64) (n int, sg, sgx float64) {
	if n = block(len(g)); n == 0 {
		return 0, 0, 0
	}
	if has512 {
		sg, sgx = gradSums512(p(g), p(x), n, mu)
	} else {
		sg, sgx = gradSums256(p(g), p(x), n, mu)
	}
	return n, sg, sgx
}

//go:noescape
func normRow512(y, x *float32, n int, mu, a, b float32)

//go:noescape
func normRow256(y, x *float32, n int, mu, a, b float32)

func normRowAsm(y, x []float32, mu, a, b float32) int {
	n := block(len(x))
	switch {
	case n == 0:
	case has512:
		normRow512(p(y), p(x), n, mu, a, b)
	default:
		normRow256(p(y), p(x), n, mu, a, b)
	}
	return n
}

//go:noescape
func normBackRow512(dx, grad, x *float32, n int, mu, a, bc, d float32)

//go:noescape
func normBackRow256(dx, grad, x *float32, n int, mu, a, bc, d float32)

func normBackRowAsm(dx, g, x []float32, mu, a, bc, d float32) int {
	n := block(len(x))
	switch {
	case n == 0:
	case has512:
		normBackRow512(p(dx), p(g), p(x), n, mu, a, bc, d)
	default:
		normBackRow256(p(dx), p(g), p(x), n, mu, a, bc, d)
	}
	return n
}

//go:noescape
func relu512(dst, src *float32, n int)

//go:noescape
func relu256(dst, src *float32, n int)

func reluAsm(dst, src []float32) int {
	n := block(len(src))
	switch {
	case n == 0:
	case has512:
		relu512(p(dst), p(src), n)
	default:
		relu256(p(dst), p(src), n)
	}
	return n
}

//go:noescape
func reluBack512(dst, grad, x *float32, n int)

//go:noescape
func reluBack256(dst, grad, x *float32, n int)

func reluBackAsm(dst, g, x []float32) int {
	n := block(len(x))
	switch {
	case n == 0:
	case has512:
		reluBack512(p(dst), p(g), p(x), n)
	default:
		reluBack256(p(dst), p(g), p(x), n)
	}
	return n
}

//go:noescape
func axpy512(a float32, x, y *float32, n int)

//go:noescape
func axpy256(a float32, x, y *float32, n int)

func axpyAsm(a float32, x, y []float32) int {
	n := block(len(x))
	switch {
	case n == 0:
	case has512:
		axpy512(a, p(x), p(y), n)
	default:
		axpy256(a, p(x), p(y), n)
	}
	return n
}

//go:noescape
func affine512(dst, src *float32, n int, a, b float32)

//go:noescape
func affine256(dst, src *float32, n int, a, b float32)

func affineAsm(dst, src []float32, a, b float32) int {
	n := block(len(src))
	switch {
	case n == 0:
	case has512:
		affine512(p(dst), p(src), n, a, b)
	default:
		affine256(p(dst), p(src), n, a, b)
	}
	return n
}

//go:noescape
func fill512(dst *float32, n int, v float32)

//go:noescape
func fill256(dst *float32, n int, v float32)

func fillAsm(dst []float32, v float32) int {
	n := block(len(dst))
	switch {
	case n == 0:
	case has512:
		fill512(p(dst), n, v)
	default:
		fill256(p(dst), n, v)
	}
	return n
}

// avgPool2x2F512 pools rows output rows; w is even and positive.
//
//go:noescape
func avgPool2x2F512(dst, src *float32, w, rows int, inv float32)

//go:noescape
func avgPool2x2B512(dst, grad *float32, w, rows int, inv float32)

func avgPool2x2Asm(dst, src []float32, w, rows int, inv float32) bool {
	if !has512 {
		return false
	}
	if rows > 0 {
		avgPool2x2F512(p(dst), p(src), w, rows, inv)
	}
	return true
}

//go:noescape
func avgPool2x2BNT512(dst, grad *float32, w, rows int, inv float32)

// ntBytes is the output size from which the pooling backward streams its
// stores past the caches (the output is far larger than the caches and is
// read back only by the next kernel).
const ntBytes = 4 << 20

func avgPool2x2BackAsm(dst, g []float32, w, rows int, inv float32) bool {
	if !has512 {
		return false
	}
	switch {
	case rows == 0:
	case w%32 == 0 && uintptr(unsafe.Pointer(p(dst)))%64 == 0 && 4*len(dst) >= ntBytes:
		avgPool2x2BNT512(p(dst), p(g), w, rows, inv)
	default:
		avgPool2x2B512(p(dst), p(g), w, rows, inv)
	}
	return true
}

// levels lists the kernel sets this CPU can run, best first (for tests).
func levels() []string {
	var l []string
	if has512 {
		l = append(l, "avx512")
	}
	if has256 {
		l = append(l, "avx2")
	}
	return append(l, "go")
}

// setLevel selects a kernel set from levels and returns a function that
// restores the previous one. Not safe for concurrent use (tests only).
func setLevel(l string) (restore func()) {
	o512, o256 := has512, has256
	has512 = l == "avx512"
	has256 = l == "avx2"
	return func() { has512, has256 = o512, o256 }
}

//go:noescape
func weightedRows512(dst, rows *float32, ld int, w *float32, k, n int, b float32, bias int)

func weightedRowsAsm(dst, rows []float32, ld int, w []float32, b float32, bias bool) int {
	if !has512 {
		return 0 // the AVX2 Axpy and Affine kernels serve the Go path
	}
	n := len(dst) &^ 15
	if n > 0 {
		var flag int
		if bias {
			flag = 1
		}
		weightedRows512(p(dst), p(rows), ld, p(w), len(w), n, b, flag)
	}
	return n
}

//go:noescape
func winogradInput512(v *float32, stride int, x *float32, h, w, kload, kstore int)

func winogradInputOK(w int) bool { return has512 && w >= 1 && w <= 16 }

func winogradInputAsm(v []float32, stride int, x []float32, h, w int) {
	tW := (w + 1) / 2
	winogradInput512(p(v), stride, p(x), h, w, 1<<w-1, 1<<tW-1)
}
