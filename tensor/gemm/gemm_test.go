package gemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fedsim/fedsim/internal/parallel"
)

// problem is one Sgemm call with its operands laid out with padded leading
// dimensions. Padding of A and B holds NaN (it must never be read); padding
// of C holds a sentinel (it must never be written).
type problem struct {
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	a, b, c        []float32
	lda, ldb, ldc  int
}

const sentinel = float32(-12345.5)

func newProblem(rng *rand.Rand, transA, transB bool, m, n, k, pad int, alpha, beta float32, nanC bool) *problem {
	p := &problem{transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, beta: beta}
	rowsA, colsA := m, k
	if transA {
		rowsA, colsA = k, m
	}
	rowsB, colsB := k, n
	if transB {
		rowsB, colsB = n, k
	}
	p.lda, p.ldb, p.ldc = max(colsA, 1)+pad, max(colsB, 1)+pad, max(n, 1)+pad
	fill := func(rows, cols, ld int, padVal float32, val func() float32) []float32 {
		s := make([]float32, rows*ld)
		for i := range rows {
			for j := range ld {
				if j < cols {
					s[i*ld+j] = val()
				} else {
					s[i*ld+j] = padVal
				}
			}
		}
		return s
	}
	nan := float32(math.NaN())
	uni := func() float32 { return float32(rng.Float64()*2 - 1) }
	p.a = fill(rowsA, colsA, p.lda, nan, uni)
	p.b = fill(rowsB, colsB, p.ldb, nan, uni)
	cval := uni
	if nanC {
		cval = func() float32 { return nan }
	}
	p.c = fill(m, n, p.ldc, sentinel, cval)
	return p
}

// reference returns alpha*op(A)*op(B) + beta*C in float64 and, per element,
// the magnitude bound sum|alpha*a*b| + |beta*c| used for the tolerance.
func (p *problem) reference() (want, bound []float64) {
	want = make([]float64, p.m*p.n)
	bound = make([]float64, p.m*p.n)
	for i := range p.m {
		for j := range p.n {
			var s, sb float64
			for q := range p.k {
				if p.alpha == 0 {
					break // BLAS semantics: A and B are not read.
				}
				var av, bv float64
				if p.transA {
					av = float64(p.a[q*p.lda+i])
				} else {
					av = float64(p.a[i*p.lda+q])
				}
				if p.transB {
					bv = float64(p.b[j*p.ldb+q])
				} else {
					bv = float64(p.b[q*p.ldb+j])
				}
				s += av * bv
				sb += math.Abs(av * bv)
			}
			alpha := float64(p.alpha)
			s *= alpha
			sb *= math.Abs(alpha)
			if p.beta != 0 {
				cv := float64(p.c[i*p.ldc+j])
				s += float64(p.beta) * cv
				sb += math.Abs(float64(p.beta) * cv)
			}
			want[i*p.n+j], bound[i*p.n+j] = s, sb
		}
	}
	return want, bound
}

// check runs call on a copy of C and compares with the reference.
func (p *problem) check(t testing.TB, label string, call func(p *problem, c []float32)) {
	t.Helper()
	want, bound := p.reference()
	c := append([]float32(nil), p.c...)
	call(p, c)
	bad := 0
	for i := range p.m {
		for j := range p.ldc {
			got := c[i*p.ldc+j]
			if j >= p.n {
				if got != sentinel {
					t.Fatalf("%s: C[%d][%d] padding overwritten: %v", label, i, j, got)
				}
				continue
			}
			w, bd := want[i*p.n+j], bound[i*p.n+j]
			if diff := math.Abs(float64(got) - w); !(diff <= 1e-4*bd+1e-30) {
				bad++
				if bad <= 3 {
					t.Errorf("%s: C[%d][%d] = %v, want %v (bound %g)", label, i, j, got, w, bd)
				}
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%s: %d wrong elements", label, bad)
	}
}

func callSgemm(p *problem, c []float32) {
	Sgemm(p.transA, p.transB, p.m, p.n, p.k, p.alpha, p.a, p.lda, p.b, p.ldb, p.beta, c, p.ldc)
}

// prepackedWith packs A with PackA under kernel kern and forces the packed
// path of SgemmPackedA, even for tiny sizes.
func prepackedWith(kern *kernel, direct bool) func(p *problem, c []float32) {
	return func(p *problem, c []float32) {
		restore, _ := useKernel(kern.name)
		defer restore()
		pa := PackA(p.transA, p.m, p.k, p.a, p.lda)
		defer pa.Release()
		if p.m == 0 || p.n == 0 || p.k == 0 || p.alpha == 0 {
			SgemmPackedA(pa, p.transB, p.n, p.alpha, p.b, p.ldb, p.beta, c, p.ldc)
			return
		}
		sgemmBlocked(kern, pa, direct && !p.transB, p.transA, p.transB, p.m, p.n, p.k, p.alpha, nil, p.lda, p.b, p.ldb, p.beta, c, p.ldc)
	}
}

func callSgemmPackedA(p *problem, c []float32) {
	pa := PackA(p.transA, p.m, p.k, p.a, p.lda)
	defer pa.Release()
	SgemmPackedA(pa, p.transB, p.n, p.alpha, p.b, p.ldb, p.beta, c, p.ldc)
}

// blockedWith forces the packed path with kernel kern, even for tiny sizes.
func blockedWith(kern *kernel, direct bool) func(p *problem, c []float32) {
	return func(p *problem, c []float32) {
		if p.m == 0 || p.n == 0 || p.k == 0 || p.alpha == 0 {
			callSgemm(p, c)
			return
		}
		sgemmBlocked(kern, nil, direct && !p.transB, p.transA, p.transB, p.m, p.n, p.k, p.alpha, p.a, p.lda, p.b, p.ldb, p.beta, c, p.ldc)
	}
}

var testShapes = [][3]int{
	{1, 1, 1}, {1, 5, 3}, {4, 1, 9}, {2, 3, 1},
	{7, 13, 29}, {12, 32, 8}, {6, 16, 16}, {13, 33, 17},
	{17, 33, 65}, {31, 47, 53}, {64, 64, 64}, {25, 97, 400},
	{5, 300, 100}, {100, 3, 200}, {20, 800, 40}, {129, 65, 130},
}

func TestSgemmKernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, kern := range kernels {
		t.Run(kern.name, func(t *testing.T) {
			restore, ok := useKernel(kern.name)
			if !ok {
				t.Fatalf("kernel %s not selectable", kern.name)
			}
			defer restore()
			if KernelName() != kern.name {
				t.Fatalf("KernelName() = %q, want %q", KernelName(), kern.name)
			}
			for _, sh := range testShapes {
				for tr := range 4 {
					transA, transB := tr&1 != 0, tr&2 != 0
					pads, abs := []int{0, 3}, [][2]float32{{1, 0}, {1, 1}, {-0.75, 0.5}, {1.5, 0}}
					if raceEnabled || testing.Short() {
						pads, abs = pads[1:], [][2]float32{abs[0], abs[2]}
					}
					for _, pad := range pads {
						for _, ab := range abs {
							nanC := ab[1] == 0 && pad == 3
							p := newProblem(rng, transA, transB, sh[0], sh[1], sh[2], pad, ab[0], ab[1], nanC)
							label := fmt.Sprintf("%s m=%d n=%d k=%d tA=%v tB=%v pad=%d alpha=%v beta=%v",
								kern.name, sh[0], sh[1], sh[2], transA, transB, pad, ab[0], ab[1])
							p.check(t, label+" Sgemm", callSgemm)
							p.check(t, label+" packed", blockedWith(kern, false))
							p.check(t, label+" direct", blockedWith(kern, true))
							p.check(t, label+" SgemmPackedA", callSgemmPackedA)
							p.check(t, label+" prepacked", prepackedWith(kern, false))
							p.check(t, label+" prepacked direct", prepackedWith(kern, true))
						}
					}
				}
			}
		})
	}
}

func TestSgemmLarge(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, kern := range kernels {
		restore, _ := useKernel(kern.name)
		for tr := range 4 {
			transA, transB := tr&1 != 0, tr&2 != 0
			beta := []float32{0, 1, 0.5, 0}[tr]
			p := newProblem(rng, transA, transB, 300, 257, 513, tr, 0.5, beta, beta == 0)
			p.check(t, fmt.Sprintf("%s 300x257x513 tA=%v tB=%v beta=%v", kern.name, transA, transB, beta), callSgemm)
			p.check(t, fmt.Sprintf("%s 300x257x513 tA=%v tB=%v beta=%v SgemmPackedA", kern.name, transA, transB, beta), callSgemmPackedA)
			if testing.Short() || raceEnabled {
				break
			}
		}
		restore()
	}
}

func TestSgemmDegenerate(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	nan := float32(math.NaN())
	// alpha == 0 and k == 0 scale C by beta and never read A or B.
	for _, beta := range []float32{0, 1, 0.5} {
		p := newProblem(rng, false, false, 5, 7, 3, 2, 0, beta, beta == 0)
		for i := range p.a {
			p.a[i] = nan
		}
		p.check(t, fmt.Sprintf("alpha=0 beta=%v", beta), callSgemm)
		p = newProblem(rng, false, true, 5, 7, 0, 2, 1, beta, beta == 0)
		p.check(t, fmt.Sprintf("k=0 beta=%v", beta), callSgemm)
	}
	// Empty C: nothing to do, short slices are fine.
	Sgemm(false, false, 0, 5, 5, 1, nil, 5, nil, 5, 0, nil, 5)
	Sgemm(false, false, 5, 0, 5, 1, nil, 5, nil, 1, 0, nil, 1)
}

func TestSgemmPanics(t *testing.T) {
	a := make([]float32, 12)
	b := make([]float32, 12)
	c := make([]float32, 9)
	cases := []struct {
		name string
		f    func()
	}{
		{"negative m", func() { Sgemm(false, false, -1, 3, 4, 1, a, 4, b, 3, 0, c, 3) }},
		{"bad lda", func() { Sgemm(false, false, 3, 3, 4, 1, a, 3, b, 3, 0, c, 3) }},
		{"bad lda trans", func() { Sgemm(true, false, 3, 3, 4, 1, a, 2, b, 3, 0, c, 3) }},
		{"bad ldb", func() { Sgemm(false, false, 3, 3, 4, 1, a, 4, b, 2, 0, c, 3) }},
		{"bad ldb trans", func() { Sgemm(false, true, 3, 3, 4, 1, a, 4, b, 3, 0, c, 3) }},
		{"bad ldc", func() { Sgemm(false, false, 3, 3, 4, 1, a, 4, b, 3, 0, c, 2) }},
		{"short A", func() { Sgemm(false, false, 3, 3, 4, 1, a[:11], 4, b, 3, 0, c, 3) }},
		{"short B", func() { Sgemm(false, false, 3, 3, 4, 1, a, 4, b[:11], 3, 0, c, 3) }},
		{"short C", func() { Sgemm(false, false, 3, 3, 4, 1, a, 4, b, 3, 0, c[:8], 3) }},
		{"PackA negative k", func() { PackA(false, 3, -1, a, 4) }},
		{"PackA bad lda", func() { PackA(false, 3, 4, a, 3) }},
		{"PackA short A", func() { PackA(true, 3, 4, a[:11], 3) }},
		{"SgemmPackedA negative n", func() { SgemmPackedA(PackA(false, 3, 4, a, 4), false, -1, 1, b, 3, 0, c, 3) }},
		{"SgemmPackedA bad ldb", func() { SgemmPackedA(PackA(false, 3, 4, a, 4), true, 3, 1, b, 3, 0, c, 3) }},
		{"SgemmPackedA short B", func() { SgemmPackedA(PackA(false, 3, 4, a, 4), false, 3, 1, b[:11], 3, 0, c, 3) }},
		{"SgemmPackedA short C", func() { SgemmPackedA(PackA(false, 3, 4, a, 4), false, 3, 1, b, 3, 0, c[:8], 3) }},
	}
	for _, tc := range cases {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", tc.name)
				}
			}()
			tc.f()
		}()
	}
	// The valid call itself must not panic.
	Sgemm(false, false, 3, 3, 4, 1, a, 4, b, 3, 0, c, 3)
}

// TestSgemmNested calls Sgemm concurrently from inside parallel.For.
func TestSgemmNested(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	ps := make([]*problem, 6)
	for i := range ps {
		ps[i] = newProblem(rng, i&1 != 0, i&2 != 0, 40+i, 90, 70, 1, 1, 0.5, false)
	}
	results := make([][]float32, len(ps))
	parallel.For(len(ps), 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			c := append([]float32(nil), ps[i].c...)
			callSgemm(ps[i], c)
			results[i] = c
		}
	})
	for i, p := range ps {
		p.check(t, fmt.Sprintf("nested %d", i), func(_ *problem, c []float32) { copy(c, results[i]) })
	}
}

func FuzzSgemm(f *testing.F) {
	f.Add(uint8(7), uint8(13), uint8(29), uint8(0), uint64(1))
	f.Add(uint8(1), uint8(1), uint8(1), uint8(0xff), uint64(2))
	f.Add(uint8(33), uint8(65), uint8(17), uint8(0x5a), uint64(3))
	f.Fuzz(func(t *testing.T, m, n, k, flags uint8, seed uint64) {
		rng := rand.New(rand.NewPCG(seed, 99))
		M, N, K := int(m%70), int(n%70), int(k%70)
		transA, transB := flags&1 != 0, flags&2 != 0
		beta := []float32{0, 1, 0.5, -2}[(flags>>2)&3]
		alpha := []float32{1, -0.5, 2, 0}[(flags>>4)&3]
		pad := int(flags>>6) & 1 * 2
		kern := kernels[int((seed>>1)%uint64(len(kernels)))]
		p := newProblem(rng, transA, transB, M, N, K, pad, alpha, beta, beta == 0 && seed&1 == 0)
		label := fmt.Sprintf("m=%d n=%d k=%d flags=%#x", M, N, K, flags)
		p.check(t, label, callSgemm)
		p.check(t, label+" "+kern.name, blockedWith(kern, flags&0x40 != 0))
	})
}

// TestPackB compares the assembly packing routines (if any) with the Go
// loops, including partial panels and k tails.
func TestPackB(t *testing.T) {
	if packBNFast == nil && transpose8Fast == nil {
		t.Skip("no assembly packing")
	}
	rng := rand.New(rand.NewPCG(11, 12))
	// packA uses transpose8Fast for its first 8 rows.
	for _, mr := range []int{6, 12} {
		for _, trans := range []bool{false, true} {
			for _, sh := range [][4]int{{12, 7, 0, 0}, {9, 40, 3, 5}, {8, 64, 0, 2}, {12, 384, 1, 8}, {3, 20, 2, 0}} {
				rows, kc, i0, pc := min(sh[0], mr), sh[1], sh[2], sh[3]
				ar, ac := i0+rows, pc+kc
				if trans {
					ar, ac = ac, ar
				}
				lda := ac + 2
				a := make([]float32, ar*lda)
				for i := range a {
					a[i] = float32(rng.IntN(1000))
				}
				got := make([]float32, kc*mr)
				want := make([]float32, kc*mr)
				packA(got, a, lda, trans, i0, rows, pc, kc, mr)
				ft := transpose8Fast
				transpose8Fast = nil
				packA(want, a, lda, trans, i0, rows, pc, kc, mr)
				transpose8Fast = ft
				for i := range got {
					if got[i] != want[i] {
						t.Fatalf("packA mr=%d trans=%v shape=%v: dst[%d] = %v, want %v", mr, trans, sh, i, got[i], want[i])
					}
				}
			}
		}
	}
	for _, nr := range []int{16, 32} {
		for _, trans := range []bool{false, true} {
			for _, sh := range [][4]int{{1, 1, 0, 0}, {7, 40, 3, 5}, {64, 96, 0, 0}, {29, 70, 5, 9}, {384, 768, 8, 32}} {
				kc, nc, pc, jc := sh[0], sh[1], sh[2], sh[3]
				rows, cols := pc+kc, jc+nc
				if trans {
					rows, cols = cols, rows
				}
				ld := cols + 3
				b := make([]float32, rows*ld)
				for i := range b {
					b[i] = float32(rng.IntN(1000))
				}
				np := (nc + nr - 1) / nr
				got := make([]float32, np*kc*nr)
				want := make([]float32, np*kc*nr)
				for i := range got {
					got[i], want[i] = -1, -1
				}
				packB(got, b, ld, trans, pc, kc, jc, nc, nr, 0, np)
				fn, ft := packBNFast, transpose8Fast
				packBNFast, transpose8Fast = nil, nil
				packB(want, b, ld, trans, pc, kc, jc, nc, nr, 0, np)
				packBNFast, transpose8Fast = fn, ft
				for i := range got {
					if got[i] != want[i] {
						t.Fatalf("nr=%d trans=%v shape=%v: dst[%d] = %v, want %v", nr, trans, sh, i, got[i], want[i])
					}
				}
			}
		}
	}
}

// TestSgemmSteadyStateAllocs checks that packing buffers are reused: only
// parallel.For's own bookkeeping may allocate.
func TestSgemmSteadyStateAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	s := benchShape{"alloc", false, true, 200, 300, 400}
	a, lda, b, ldb, c, ldc := s.operands()
	allocs := testing.AllocsPerRun(10, func() {
		Sgemm(s.transA, s.transB, s.m, s.n, s.k, 1, a, lda, b, ldb, 0, c, ldc)
	})
	if allocs > 8 {
		t.Errorf("Sgemm allocates %v times per call in steady state", allocs)
	}
	t.Logf("%v allocations per call", allocs)
}
