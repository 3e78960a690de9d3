package gemm

import "unsafe"

// kernelGeneric is the portable micro-kernel (mr=4, nr=4) used with the
// noasm build tag, on architectures without an assembly kernel, and on CPUs
// without AVX2/FMA. It has the contract of kernel.fn.
func kernelGeneric(k int, a, b *float32, ldb int, c *float32, ldc int, alpha, beta float32) {
	const mr, nr = 4, 4
	pa := unsafe.Slice(a, k*mr)
	pb := unsafe.Slice(b, (k-1)*ldb+nr)
	var c00, c01, c02, c03 float32
	var c10, c11, c12, c13 float32
	var c20, c21, c22, c23 float32
	var c30, c31, c32, c33 float32
	for p := 0; p < k; p++ {
		av := pa[p*mr : p*mr+mr : p*mr+mr]
		bv := pb[p*ldb : p*ldb+nr : p*ldb+nr]
		b0, b1, b2, b3 := bv[0], bv[1], bv[2], bv[3]
		a0 := av[0]
		c00 += a0 * b0
		c01 += a0 * b1
		c02 += a0 * b2
		c03 += a0 * b3
		a1 := av[1]
		c10 += a1 * b0
		c11 += a1 * b1
		c12 += a1 * b2
		c13 += a1 * b3
		a2 := av[2]
		c20 += a2 * b0
		c21 += a2 * b1
		c22 += a2 * b2
		c23 += a2 * b3
		a3 := av[3]
		c30 += a3 * b0
		c31 += a3 * b1
		c32 += a3 * b2
		c33 += a3 * b3
	}
	cs := unsafe.Slice(c, 3*ldc+nr)
	store := func(row []float32, x0, x1, x2, x3 float32) {
		row = row[:nr:nr]
		if beta == 0 {
			row[0], row[1], row[2], row[3] = alpha*x0, alpha*x1, alpha*x2, alpha*x3
			return
		}
		row[0] = alpha*x0 + beta*row[0]
		row[1] = alpha*x1 + beta*row[1]
		row[2] = alpha*x2 + beta*row[2]
		row[3] = alpha*x3 + beta*row[3]
	}
	store(cs[0:], c00, c01, c02, c03)
	store(cs[ldc:], c10, c11, c12, c13)
	store(cs[2*ldc:], c20, c21, c22, c23)
	store(cs[3*ldc:], c30, c31, c32, c33)
}
