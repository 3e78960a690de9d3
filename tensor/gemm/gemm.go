// Package gemm implements single-precision general matrix multiplication,
// the hot spot of the engine (dense layers and im2col convolutions).
//
// # Algorithm
//
// Sgemm follows the Goto/BLIS scheme, tuned for the target CPU (48 KB L1d
// and 2 MB L2 per core):
//
//   - Parallel split. The m×n output is cut into one region per worker
//     (parallel.Workers, at most one per 2^20 flops), either by rows or by
//     columns of C, whichever duplicates less packing work: splitting
//     columns makes every worker pack all of op(A), splitting rows makes
//     every worker pack (or read) all of op(B). Each region is computed by
//     one parallel.For chunk with private buffers and no barriers, so Sgemm
//     may be called from inside other parallel code.
//   - k blocking. k is cut into even blocks of at most kcMax = 384. The
//     first block applies beta, later ones accumulate.
//   - B blocking. A region's columns are cut into blocks of at most
//     ncMax = 768; the kc×nc block of op(B) (≤ 1.2 MB) is packed into
//     nr-wide, k-major, zero-padded micro-panels that stay in L2. When
//     op(B) = B, m ≤ directMaxM and n ≤ 2m (few A panels to amortize a
//     copy over), full micro-panels are read in place from B instead (row
//     stride ldb).
//   - A micro-panels. For every mr rows, an mr×kc micro-panel of op(A)
//     (12×384 floats = 18 KB) is packed so that it stays in L1, and is
//     multiplied by each B micro-panel by the micro-kernel, which keeps the
//     mr×nr tile of C in vector registers, streams B rows from L2 with
//     prefetching and broadcasts A from L1.
//     PackA does this once for the whole of op(A), and SgemmPackedA reads
//     those panels instead, for an A multiplied by many matrices (a
//     convolution's weights by every image of a batch).
//   - Edges. The last row panel uses a narrower kernel variant (8 or 4
//     rows for avx512, 4 or 2 for avx2) when that fits; tiles that are
//     still partial (fewer columns than nr, or rows below the variant) are
//     computed into a scratch tile and merged, so no kernel touches memory
//     outside C.
//
// Packing uses AVX assembly (row copies and 8×8 transposes) where
// available. Buffers come from a sync.Pool, so steady-state calls do not
// allocate. Problems with m·n·k below smallMNK use a plain loop.
//
// # Kernels
//
// The micro-kernel is chosen once at start-up with golang.org/x/sys/cpu,
// which only reports AVX2/AVX-512 when the OS saves their registers:
//
//	avx512   12×32 tile: 24 ZMM accumulators, per k step 2 ZMM loads of B,
//	         12 VBROADCASTSS of A, 24 VFMADD231PS (AVX-512F)
//	avx2     6×16 tile: 12 YMM accumulators (AVX2 + FMA)
//	generic  4×4 tile in portable Go (build tag noasm, other architectures,
//	         CPUs without AVX2/FMA)
//
// KernelName reports the choice. The assembly (kernel_amd64.s) is generated
// by asmgen/gen.py; the noasm build tag excludes it.
package gemm

import (
	"sync"
	"sync/atomic"

	"github.com/fedsim/fedsim/internal/parallel"
)

const (
	// kcMax bounds the k extent of a packed block: an mr×kc micro-panel of A
	// (12×384×4 B = 18 KB) fits L1d with room for the streaming B lines.
	kcMax = 384
	// ncMax bounds the n extent of a packed block: kcMax×ncMax floats
	// (1.2 MB) fit the 2 MB L2. It is a multiple of every kernel's nr.
	ncMax = 768
	// smallMNK: below this m·n·k the unpacked loop is cheaper.
	smallMNK = 4096
	// minTaskFlops is the least work worth a parallel chunk.
	minTaskFlops = 1 << 20
)

// directMaxM: when op(B) = B, m is at most this and n at most 2m, B is not
// packed: each packed element would be reused by few A micro-panels, so the
// copy costs more than the strided reads it saves. (With larger n the
// regions split by columns and packing wins again; measured with
// BenchmarkSgemmDirect.)
var directMaxM = 128

// kernel describes a micro-kernel. fn computes, for the mr×nr tile at c
// (row stride ldc elements),
//
//	C = alpha*Ap*Bp + beta*C
//
// where Ap is a packed mr×k micro-panel (a[p*mr+i] = A(i,p)) and Bp a k×nr
// micro-panel with row stride ldb (b[p*ldb+j] = B(p,j)); ldb is nr for a
// packed panel. k must be at least 1. When beta == 0, C is not read.
type kernel struct {
	name   string
	mr, nr int
	fn     kernelFunc
	// edges are variants for fewer rows (ascending), used for the last
	// row panel so that it does not compute padding rows.
	edges []edgeKernel
}

type kernelFunc func(k int, a, b *float32, ldb int, c *float32, ldc int, alpha, beta float32)

type edgeKernel struct {
	mr int
	fn kernelFunc
}

// forRows returns the narrowest kernel variant covering rows and its mr.
func (kern *kernel) forRows(rows int) (kernelFunc, int) {
	for _, e := range kern.edges {
		if e.mr >= rows {
			return e.fn, e.mr
		}
	}
	return kern.fn, kern.mr
}

// kernels lists the usable kernels, best first: the assembly kernels this
// CPU supports (see archKernels), then the portable one.
var kernels = append(archKernels(), &kernel{name: "generic", mr: 4, nr: 4, fn: kernelGeneric})

// activeKernel is the kernel Sgemm uses (kernels[0], overridable by tests).
var activeKernel atomic.Pointer[kernel]

func init() { activeKernel.Store(kernels[0]) }

// KernelName reports which micro-kernel Sgemm uses: "avx512", "avx2" or
// "generic".
func KernelName() string { return activeKernel.Load().name }

// useKernel makes Sgemm use the named kernel and returns a function that
// restores the previous one. It reports false if the kernel is unavailable.
// It is a test hook and must not race with Sgemm calls.
func useKernel(name string) (restore func(), ok bool) {
	for _, k := range kernels {
		if k.name == name {
			old := activeKernel.Swap(k)
			return func() { activeKernel.Store(old) }, true
		}
	}
	return func() {}, false
}

// Sgemm computes
//
//	C = alpha*op(A)*op(B) + beta*C
//
// where op(A) is m×k, op(B) is k×n and C is m×n, all stored row-major with
// leading dimensions (row strides) lda, ldb and ldc. op(X) is X^T when transX
// is true: A is then stored k×m (lda >= m) and B n×k (ldb >= k). When
// beta == 0, C is overwritten and its previous contents (even NaN) are not
// read. When alpha == 0 or k == 0, A and B are not read.
//
// Sgemm panics if m, n or k is negative, if a leading dimension is smaller
// than the row length of its stored matrix (or 1), or if a, b or c is too
// short to hold its matrix; a and b are not checked when k == 0 or C is empty.
func Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m < 0 || n < 0 || k < 0 {
		panic("gemm: negative dimension")
	}
	checkLD("lda", transA, m, k, lda)
	if !checkBC(transB, m, n, k, alpha, b, ldb, beta, c, ldc) {
		return
	}
	checkLen("A", transA, m, k, a, lda)
	multiply(activeKernel.Load(), nil, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// multiply runs a checked, non-trivial product on the path that suits its
// size: the plain loop for tiny ones, else the packed one (reading op(A)'s
// panels from pa when it is not nil), with B read in place when few A
// panels would reuse a packed copy.
func multiply(kern *kernel, pa *PackedA, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m*n*k < smallMNK {
		sgemmSmall(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	direct := !transB && m <= directMaxM && n <= 2*m
	sgemmBlocked(kern, pa, direct, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// stored returns the stored shape of op(X) (rows×cols): X itself is rows×cols
// when trans is false, and cols×rows otherwise.
func stored(trans bool, rows, cols int) (int, int) {
	if trans {
		return cols, rows
	}
	return rows, cols
}

// checkLD panics unless ld holds a row of the stored form of the rows×cols
// operand op(X).
func checkLD(name string, trans bool, rows, cols, ld int) {
	_, c := stored(trans, rows, cols)
	if ld < max(1, c) {
		panic("gemm: bad " + name)
	}
}

// checkLen panics unless x holds the stored form of the rows×cols operand
// op(X) with row stride ld.
func checkLen(name string, trans bool, rows, cols int, x []float32, ld int) {
	r, c := stored(trans, rows, cols)
	if len(x) < (r-1)*ld+c {
		panic("gemm: short " + name)
	}
}

// checkBC checks op(B) (k×n) and C (m×n) and handles the cases that need no
// product: it returns false when C is empty, or when k == 0 or alpha == 0
// (C is then scaled by beta).
func checkBC(transB bool, m, n, k int, alpha float32, b []float32, ldb int, beta float32, c []float32, ldc int) bool {
	checkLD("ldb", transB, k, n, ldb)
	if ldc < max(1, n) {
		panic("gemm: bad ldc")
	}
	if m == 0 || n == 0 {
		return false
	}
	if len(c) < (m-1)*ldc+n {
		panic("gemm: short C")
	}
	if k == 0 || alpha == 0 {
		scaleC(m, n, beta, c, ldc)
		return false
	}
	checkLen("B", transB, k, n, b, ldb)
	return true
}

// PackedA is op(A) packed once, for many products op(A)·op(B) with the same
// A: a convolution multiplies its weights by every image of a batch, and
// packing A's micro-panels takes a fifth as long as the product itself when
// an image has few output pixels (8×8 at the ConvNet's last layer). It is
// safe for concurrent use by SgemmPackedA; A must not change while it is in
// use, since tiny products read A itself.
type PackedA struct {
	kern   *kernel
	transA bool
	m, k   int
	a      []float32
	lda    int
	// data holds, for the k block starting at row pc of op(B) and the row
	// panel starting at row ir of op(A), the panel packA writes, at
	// pc*mPanels*mr + ir*kc.
	data []float32
}

var packedPool sync.Pool

// PackA packs op(A) (m×k, stored as for Sgemm) for SgemmPackedA, with the
// micro-kernel Sgemm uses. Release returns the buffer for reuse.
//
// PackA panics if m or k is negative, lda is smaller than the stored row
// length (or 1), or a is too short to hold op(A).
func PackA(transA bool, m, k int, a []float32, lda int) *PackedA {
	if m < 0 || k < 0 {
		panic("gemm: negative dimension")
	}
	checkLD("lda", transA, m, k, lda)
	if m > 0 && k > 0 {
		checkLen("A", transA, m, k, a, lda)
	}
	kern := activeKernel.Load()
	mr := kern.mr
	mPanels := (m + mr - 1) / mr
	size := mPanels * mr * k
	pa, _ := packedPool.Get().(*PackedA)
	if pa == nil || cap(pa.data) < size {
		pa = &PackedA{data: make([]float32, size)}
	}
	*pa = PackedA{kern: kern, transA: transA, m: m, k: k, a: a, lda: lda, data: pa.data[:size]}
	// Serial: packing is a copy, small next to the products it is reused by.
	kcStep := kcBlock(k)
	for pc := 0; pc < k; pc += kcStep {
		kc := min(kcStep, k-pc)
		for ir := 0; ir < m; ir += mr {
			rows := min(mr, m-ir)
			pr := mr
			if rows < mr {
				_, pr = kern.forRows(rows)
			}
			off := pc*mPanels*mr + ir*kc
			packA(pa.data[off:off+pr*kc], a, lda, transA, ir, rows, pc, kc, pr)
		}
	}
	return pa
}

// Release returns pa's buffer to a pool; pa must not be used afterwards.
func (pa *PackedA) Release() {
	pa.a = nil
	packedPool.Put(pa)
}

// panel returns the packed panel of op(A) for the k block at pc (kc rows)
// and the row panel at ir.
func (pa *PackedA) panel(pc, kc, ir int) []float32 {
	mr := pa.kern.mr
	mPanels := (pa.m + mr - 1) / mr
	off := pc*mPanels*mr + ir*kc
	return pa.data[off : off+mr*kc]
}

// SgemmPackedA computes C = alpha*op(A)*op(B) + beta*C as Sgemm does, with
// op(A) packed beforehand by PackA; n is the column count of op(B) and C.
//
// SgemmPackedA panics if n is negative, a leading dimension is smaller than
// its stored row length (or 1), or b or c is too short.
func SgemmPackedA(pa *PackedA, transB bool, n int, alpha float32, b []float32, ldb int, beta float32, c []float32, ldc int) {
	m, k := pa.m, pa.k
	if n < 0 {
		panic("gemm: negative dimension")
	}
	if !checkBC(transB, m, n, k, alpha, b, ldb, beta, c, ldc) {
		return
	}
	multiply(pa.kern, pa, pa.transA, transB, m, n, k, alpha, pa.a, pa.lda, b, ldb, beta, c, ldc)
}

// kcBlock returns the k extent of the blocks k is cut into: even blocks no
// larger than kcMax.
func kcBlock(k int) int {
	kBlocks := (k + kcMax - 1) / kcMax
	return (k + kBlocks - 1) / kBlocks
}

// scaleC sets C = beta*C, writing zeros when beta == 0.
func scaleC(m, n int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		switch beta {
		case 0:
			clear(row)
		case 1:
		default:
			for j := range row {
				row[j] *= beta
			}
		}
	}
}

// sgemmSmall is the unpacked path for tiny problems.
func sgemmSmall(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	scaleC(m, n, beta, c, ldc)
	for i := 0; i < m; i++ {
		crow := c[i*ldc : i*ldc+n]
		for p := 0; p < k; p++ {
			var aip float32
			if transA {
				aip = a[p*lda+i]
			} else {
				aip = a[i*lda+p]
			}
			aip *= alpha
			if !transB {
				brow := b[p*ldb : p*ldb+n]
				for j, bv := range brow {
					crow[j] += aip * bv
				}
			} else {
				for j := range crow {
					crow[j] += aip * b[j*ldb+p]
				}
			}
		}
	}
}

// workBuf holds one worker's packing buffers; it is pooled.
type workBuf struct {
	a    []float32 // one mr×kc micro-panel of op(A)
	b    []float32 // one kc×nc block of op(B)
	tile []float32 // mr×nr scratch tile for edges
}

var workPool = sync.Pool{New: func() any {
	return &workBuf{
		a:    make([]float32, maxMR*kcMax),
		b:    make([]float32, kcMax*ncMax),
		tile: make([]float32, maxMR*maxNR),
	}
}}

// maxMR and maxNR bound the tile of every kernel (sizes workBuf).
const maxMR, maxNR = 16, 32

// splitPolicy forces how the work is split across workers (tests and
// benchmarks): 0 automatic, 1 rows of C, 2 columns of C.
var splitPolicy = 0

// sgemmBlocked is the packed, cache-blocked, parallel path. The m×n output
// is cut into a pm×pn grid of regions, one per worker, each computed by
// gemmRegion with private packing buffers (no barriers). If direct (only
// allowed when !transB), full micro-panels of B are read in place instead
// of being packed.
func sgemmBlocked(kern *kernel, pa *PackedA, direct bool, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	mr, nr := kern.mr, kern.nr
	mPanels := (m + mr - 1) / mr
	nPanels := (n + nr - 1) / nr
	chunks := min(parallel.Workers(), max(1, 2*m*n*k/minTaskFlops))
	// Splitting columns makes every worker pack all of A; splitting rows
	// makes every worker pack (or, if direct, read) all of B. Duplicate the
	// cheaper one; a direct read of B costs about half a packing.
	pm, pn := 1, min(chunks, nPanels)
	rowsCheaper := m >= n
	if direct {
		rowsCheaper = 2*m >= n
	}
	if splitPolicy == 1 || (splitPolicy == 0 && (rowsCheaper || nPanels < chunks)) {
		pm, pn = min(chunks, mPanels), 1
	}
	parallel.For(pm*pn, 1, func(lo, hi int) {
		w := workPool.Get().(*workBuf)
		for t := lo; t < hi; t++ {
			tm, tn := t%pm, t/pm
			i0, i1 := tm*mPanels/pm*mr, min((tm+1)*mPanels/pm*mr, m)
			j0, j1 := tn*nPanels/pn*nr, min((tn+1)*nPanels/pn*nr, n)
			gemmRegion(kern, w, pa, direct, transA, transB, i0, i1, j0, j1, k, alpha, a, lda, b, ldb, beta, c, ldc)
		}
		workPool.Put(w)
	})
}

// gemmRegion computes rows [i0, i1) and columns [j0, j1) of C on the calling
// goroutine, blocking k by kcMax and the columns by ncMax.
func gemmRegion(kern *kernel, w *workBuf, pa *PackedA, direct bool, transA, transB bool, i0, i1, j0, j1, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	mr, nr := kern.mr, kern.nr
	// Split k and the columns evenly into blocks no larger than the caps.
	kcStep := kcBlock(k)
	width := j1 - j0
	nBlocks := (width + ncMax - 1) / ncMax
	ncStep := (width + nBlocks - 1) / nBlocks
	ncStep = (ncStep + nr - 1) / nr * nr
	tile := w.tile[:mr*nr]

	for pc := 0; pc < k; pc += kcStep {
		kc := min(kcStep, k-pc)
		betaEff := beta
		if pc > 0 {
			betaEff = 1
		}
		ap := w.a[:mr*kc]
		for jc := j0; jc < j1; jc += ncStep {
			nc := min(ncStep, j1-jc)
			nPanels := (nc + nr - 1) / nr
			// Pack the kc×nc block of op(B) into nr-wide micro-panels. With
			// direct, the kernels read full panels from B itself and only a
			// partial last panel is packed.
			if !direct {
				packB(w.b, b, ldb, transB, pc, kc, jc, nc, nr, 0, nPanels)
			} else if full := nc / nr; full < nPanels {
				packB(w.b, b, ldb, false, pc, kc, jc, nc, nr, full, nPanels)
			}
			for ir := i0; ir < i1; ir += mr {
				rows := min(mr, i1-ir)
				fn, pr := kern.fn, mr
				if rows < mr {
					fn, pr = kern.forRows(rows)
				}
				panel := ap
				if pa != nil {
					panel = pa.panel(pc, kc, ir)
				} else {
					packA(ap[:pr*kc], a, lda, transA, ir, rows, pc, kc, pr)
				}
				for jp := 0; jp < nPanels; jp++ {
					jr := jc + jp*nr
					cols := min(nr, nc-jp*nr)
					bp, bs := &w.b[jp*kc*nr], nr
					if direct && cols == nr {
						bp, bs = &b[pc*ldb+jr], ldb
					}
					if rows == pr && cols == nr {
						fn(kc, &panel[0], bp, bs, &c[ir*ldc+jr], ldc, alpha, betaEff)
						continue
					}
					fn(kc, &panel[0], bp, bs, &tile[0], nr, alpha, 0)
					for i := 0; i < rows; i++ {
						crow := c[(ir+i)*ldc+jr : (ir+i)*ldc+jr+cols]
						trow := tile[i*nr : i*nr+cols]
						if betaEff == 0 {
							copy(crow, trow)
							continue
						}
						for j, v := range trow {
							crow[j] = v + betaEff*crow[j]
						}
					}
				}
			}
		}
	}
}

// packA packs rows [i0, i0+rows) and columns [pc, pc+kc) of op(A) into dst
// as dst[p*mr+i] = op(A)(i0+i, pc+p), zero-padding rows up to mr.
func packA(dst, a []float32, lda int, transA bool, i0, rows, pc, kc, mr int) {
	dst = dst[:kc*mr]
	if transA {
		// op(A)(i,p) = a[p*lda+i]: each p is a contiguous run of rows.
		for p := 0; p < kc; p++ {
			d := dst[p*mr : p*mr+mr]
			n := copy(d, a[(pc+p)*lda+i0:(pc+p)*lda+i0+rows])
			clear(d[n:])
		}
		return
	}
	if rows < mr {
		clear(dst)
	}
	i := 0
	if transpose8Fast != nil && rows >= 8 && kc >= 8 {
		// Rows 0..7 in 8×8 transposed blocks, then their k tail. A full
		// 12-row panel also transposes rows 4..11 (rows 4..7 are written
		// twice with the same values).
		last := 8
		transpose8Fast(&dst[0], &a[i0*lda+pc], lda, kc, mr, 1)
		if rows == 12 {
			transpose8Fast(&dst[4], &a[(i0+4)*lda+pc], lda, kc, mr, 1)
			last = 12
		}
		for p := kc &^ 7; p < kc; p++ {
			for i := range last {
				dst[p*mr+i] = a[(i0+i)*lda+pc+p]
			}
		}
		i = last
	}
	for ; i+4 <= rows; i += 4 {
		r := (i0 + i) * lda
		s0 := a[r+pc : r+pc+kc]
		s1 := a[r+lda+pc : r+lda+pc+kc]
		s2 := a[r+2*lda+pc : r+2*lda+pc+kc]
		s3 := a[r+3*lda+pc : r+3*lda+pc+kc]
		for p := range s0 {
			o := dst[p*mr+i : p*mr+i+4 : p*mr+i+4]
			o[0], o[1], o[2], o[3] = s0[p], s1[p], s2[p], s3[p]
		}
	}
	for ; i < rows; i++ {
		src := a[(i0+i)*lda+pc : (i0+i)*lda+pc+kc]
		for p, v := range src {
			dst[p*mr+i] = v
		}
	}
}

// packB packs micro-panels [jpLo, jpHi) of the block of op(B) with rows
// [pc, pc+kc) and columns [jc, jc+nc): panel jp starts at dst[jp*kc*nr] and
// holds dst[jp*kc*nr+p*nr+j] = op(B)(pc+p, jc+jp*nr+j), zero-padded past nc.
func packB(dst, b []float32, ldb int, transB bool, pc, kc, jc, nc, nr, jpLo, jpHi int) {
	// Panels that are full; a trailing partial one is handled separately.
	full := min(jpHi, nc/nr)
	if !transB {
		if packBNFast != nil && nr%8 == 0 && full > jpLo {
			packBNFast(&dst[jpLo*kc*nr], &b[pc*ldb+jc+jpLo*nr], ldb, kc, full-jpLo, nr)
			jpLo = full
		}
		// Walk B row by row so that reads are sequential.
		for p := 0; p < kc; p++ {
			src := b[(pc+p)*ldb+jc : (pc+p)*ldb+jc+nc]
			off := p * nr
			jp := jpLo
			for ; jp < full; jp++ {
				copy(dst[jp*kc*nr+off:jp*kc*nr+off+nr], src[jp*nr:jp*nr+nr])
			}
			if jp < jpHi { // partial last panel
				d := dst[jp*kc*nr+off : jp*kc*nr+off+nr]
				n := copy(d, src[jp*nr:])
				clear(d[n:])
			}
		}
		return
	}
	// op(B)(p,j) = b[j*ldb+p]: each column j of a panel is a contiguous run.
	for jp := jpLo; jp < jpHi; jp++ {
		d := dst[jp*kc*nr : (jp+1)*kc*nr]
		cols := min(nr, nc-jp*nr)
		p0 := 0
		if cols == nr && transpose8Fast != nil && nr%8 == 0 && kc >= 8 {
			transpose8Fast(&d[0], &b[(jc+jp*nr)*ldb+pc], ldb, kc, nr, nr/8)
			p0 = kc &^ 7
		}
		if cols < nr {
			clear(d)
		}
		j := 0
		for ; j+4 <= cols; j += 4 {
			r := (jc + jp*nr + j) * ldb
			s0 := b[r+pc : r+pc+kc]
			s1 := b[r+ldb+pc : r+ldb+pc+kc]
			s2 := b[r+2*ldb+pc : r+2*ldb+pc+kc]
			s3 := b[r+3*ldb+pc : r+3*ldb+pc+kc]
			for p := p0; p < kc; p++ {
				o := d[p*nr+j : p*nr+j+4 : p*nr+j+4]
				o[0], o[1], o[2], o[3] = s0[p], s1[p], s2[p], s3[p]
			}
		}
		for ; j < cols; j++ {
			r := (jc + jp*nr + j) * ldb
			for p := p0; p < kc; p++ {
				d[p*nr+j] = b[r+pc+p]
			}
		}
	}
}

// Optional assembly packing routines (see kernel_amd64.go); nil means the
// Go loops in packB are used.
var (
	packBNFast     func(dst, src *float32, lds, kc, panels, nr int)
	transpose8Fast func(dst, src *float32, lds, kc, ldd, blocks int)
)
