// Package vec holds the SIMD kernels behind package tensor's hot float32
// loops: normalisation statistics and rows, ReLU forward and backward,
// axpy-style updates, fills, weighted row sums, 2×2 average pooling and
// the Winograd input transform.
//
// Every kernel but WeightedRows and the Winograd input transform has a
// portable Go reference (the *Go functions, which the tests compare
// against). On amd64 the bulk of each slice runs in assembly, AVX-512 when
// the CPU has AVX-512F and AVX2+FMA otherwise (chosen once at start-up);
// the few trailing elements that do not fill a vector run in Go. The noasm
// build tag and other architectures use Go only. Two kernels have
// AVX-512 assembly only: WeightedRows falls back to one Affine or Axpy
// pass per row (its test checks it bit for bit against that sum), and for
// the Winograd input transform callers ask WinogradInputOK and otherwise
// run their own Go loop (package tensor's).
//
// Sums are accumulated in float64 (the float32 values are widened with
// VCVTPS2PD), so they agree with the Go references up to the order of
// summation. Element-wise kernels may fuse a multiply and an add into one
// FMA, so they agree with the references to within an ulp or two.
package vec

// SumSqShift returns Σ(x−k) and Σ(x−k)², accumulated in float64.
func SumSqShift(x []float32, k float64) (s1, s2 float64) {
	n, s1, s2 := sumSqShiftAsm(x, k)
	t1, t2 := SumSqShiftGo(x[n:], k)
	return s1 + t1, s2 + t2
}

// GradSums returns Σg and Σg·(x−mu) over the first len(g) values,
// accumulated in float64. It panics if x is shorter than g.
func GradSums(g, x []float32, mu float64) (sg, sgx float64) {
	x = x[:len(g)]
	n, sg, sgx := gradSumsAsm(g, x, mu)
	t1, t2 := GradSumsGo(g[n:], x[n:], mu)
	return sg + t1, sgx + t2
}

// NormRow writes y = (x−mu)·a + b. It panics if y is shorter than x.
func NormRow(y, x []float32, mu, a, b float32) {
	y = y[:len(x)]
	n := normRowAsm(y, x, mu, a, b)
	NormRowGo(y[n:], x[n:], mu, a, b)
}

// NormBackRow writes dx = a·g + bc·(x−mu) + d. It panics if dx or g is
// shorter than x.
func NormBackRow(dx, g, x []float32, mu, a, bc, d float32) {
	dx, g = dx[:len(x)], g[:len(x)]
	n := normBackRowAsm(dx, g, x, mu, a, bc, d)
	NormBackRowGo(dx[n:], g[n:], x[n:], mu, a, bc, d)
}

// ReLU writes dst = max(src, 0) with PyTorch's special values: NaN stays
// NaN, −0 becomes +0. dst may be src. It panics if dst is shorter than src.
func ReLU(dst, src []float32) {
	dst = dst[:len(src)]
	n := reluAsm(dst, src)
	ReLUGo(dst[n:], src[n:])
}

// ReLUBackward writes dst = g where x > 0 and +0 elsewhere (also where x
// is NaN). dst may be g. It panics if dst or g is shorter than x.
func ReLUBackward(dst, g, x []float32) {
	dst, g = dst[:len(x)], g[:len(x)]
	n := reluBackAsm(dst, g, x)
	ReLUBackwardGo(dst[n:], g[n:], x[n:])
}

// Axpy computes y += a·x. It panics if y is shorter than x.
func Axpy(a float32, x, y []float32) {
	y = y[:len(x)]
	n := axpyAsm(a, x, y)
	AxpyGo(a, x[n:], y[n:])
}

// Affine writes dst = a·src + b. dst may be src. It panics if dst is
// shorter than src.
func Affine(dst, src []float32, a, b float32) {
	dst = dst[:len(src)]
	n := affineAsm(dst, src, a, b)
	AffineGo(dst[n:], src[n:], a, b)
}

// WeightedRows writes dst = Σ_j w[j]·rows[j·ld : j·ld+len(dst)], plus b
// when bias is set: a weighted sum of len(w) rows of a row-major matrix
// with row stride ld. With AVX-512 each output vector is built in
// registers over all rows and stored once; otherwise (and for the tail
// past a multiple of 16) it is one Affine or Axpy pass per row. Either
// way the sum is formed as a GEMM kernel forms it:
// the first term a product, the others fused multiply-adds in row order,
// then the bias added. It panics if w is empty or rows is too short.
func WeightedRows(dst, rows []float32, ld int, w []float32, b float32, bias bool) {
	if len(w) == 0 {
		panic("vec: WeightedRows needs at least one row")
	}
	if len(dst) == 0 {
		return
	}
	_ = rows[(len(w)-1)*ld+len(dst)-1]
	n := weightedRowsAsm(dst, rows, ld, w, b, bias)
	if n == len(dst) {
		return
	}
	d := dst[n:]
	Affine(d, rows[n:len(dst)], w[0], 0)
	for j := 1; j < len(w); j++ {
		Axpy(w[j], rows[j*ld+n:j*ld+len(dst)], d)
	}
	if bias {
		Affine(d, d, 1, b)
	}
}

// Fill sets every element of dst to v.
func Fill(dst []float32, v float32) {
	n := fillAsm(dst, v)
	FillGo(dst[n:], v)
}

// AvgPool2x2 writes the 2×2, stride 2 average pooling of src, read as rows
// of w values, into dst: dst[r·w/2+j] = (src[2r·w+2j] + src[2r·w+2j+1] +
// src[(2r+1)·w+2j] + src[(2r+1)·w+2j+1])·inv. w must be even and positive
// and len(src) a multiple of 2w; dst needs len(src)/4 values. It panics
// otherwise.
func AvgPool2x2(dst, src []float32, w int, inv float32) {
	rows := poolCheck(len(dst), len(src), w)
	if !avgPool2x2Asm(dst, src, w, rows, inv) {
		AvgPool2x2Go(dst, src, w, inv)
	}
}

// AvgPool2x2Backward is the adjoint of AvgPool2x2: every value of g, times
// inv, is written to the four positions of its window in dst (rows of w
// values, len(g)·4 of them). It panics as AvgPool2x2 does.
func AvgPool2x2Backward(dst, g []float32, w int, inv float32) {
	rows := poolCheck(len(g), len(dst), w)
	if !avgPool2x2BackAsm(dst, g, w, rows, inv) {
		AvgPool2x2BackwardGo(dst, g, w, inv)
	}
}

func poolCheck(small, big, w int) (rows int) {
	if w <= 0 || w%2 != 0 || big%(2*w) != 0 || small != big/4 {
		panic("vec: bad 2×2 pooling geometry")
	}
	return big / (2 * w)
}

// WinogradInputOK reports whether WinogradInput handles planes w wide:
// with AVX-512, up to 16 (one row per register).
func WinogradInputOK(w int) bool { return winogradInputOK(w) }

// WinogradInput writes the F(2×2, 3×3) input transform V = Bᵀ d B of every
// 4×4 tile d of the h×w plane x (padding 1, zero outside; tile (ty, tx)
// reads rows 2ty−1 … 2ty+2 and columns 2tx−1 … 2tx+2), Bᵀ = [1 0 −1 0;
// 0 1 1 0; 0 −1 1 0; 0 1 0 −1]: entry ξ of tile (ty, tx) goes to
// v[ξ·stride + ty·⌈w/2⌉ + tx]. Bᵀ is applied first, to whole rows, so the
// result is bit for bit that of package tensor's Go transform. It panics
// if WinogradInputOK(w) is false or a slice is too short. (The portable
// version is that Go transform; this kernel has no Go twin here.)
func WinogradInput(v []float32, stride int, x []float32, h, w int) {
	if !winogradInputOK(w) || h < 1 {
		panic("vec: WinogradInput needs AVX-512 and 1 ≤ w ≤ 16, h ≥ 1")
	}
	tH, tW := (h+1)/2, (w+1)/2
	_, _ = x[h*w-1], v[15*stride+tH*tW-1]
	winogradInputAsm(v, stride, x, h, w)
}
