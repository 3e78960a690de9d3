package tensor

import (
	"math/rand/v2"
	"testing"
)

// naiveBinary evaluates a op b by explicit index arithmetic.
func naiveBinary(op BinaryOp, a, b *Tensor[float64], out []int) []float64 {
	res := make([]float64, Size(out))
	idx := make([]int, len(out))
	at := func(t *Tensor[float64]) float64 {
		off := 0
		for i, d := range t.Shape {
			j := idx[len(out)-len(t.Shape)+i]
			if d == 1 {
				j = 0
			}
			off = off*d + j
		}
		return t.Data[off]
	}
	for k := range res {
		rem := k
		for d := len(out) - 1; d >= 0; d-- {
			idx[d] = rem % out[d]
			rem /= out[d]
		}
		x, y := at(a), at(b)
		switch op {
		case OpAdd:
			res[k] = x + y
		case OpSub:
			res[k] = x - y
		case OpMul:
			res[k] = x * y
		case OpDiv:
			res[k] = x / y
		}
	}
	return res
}

func randomShapes(r *rand.Rand) (a, b []int) {
	rank := 1 + r.IntN(4)
	for i := 0; i < rank; i++ {
		d := 1 + r.IntN(4)
		da, db := d, d
		switch r.IntN(3) {
		case 0:
			da = 1
		case 1:
			db = 1
		}
		a = append(a, da)
		b = append(b, db)
	}
	return a[r.IntN(len(a)):], b
}

func TestBinaryBroadcastMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	rng := NewRNG(3, 4)
	for trial := 0; trial < 300; trial++ {
		as, bs := randomShapes(r)
		if r.IntN(2) == 0 {
			as, bs = bs, as
		}
		a, b := New[float64](as...), New[float64](bs...)
		FillUniform(rng, a, 1, 2)
		FillUniform(rng, b, 1, 2)
		out, err := BroadcastShape(as, bs)
		if err != nil {
			t.Fatal(err)
		}
		for _, op := range []BinaryOp{OpAdd, OpSub, OpMul, OpDiv} {
			dst := New[float64](out...)
			Binary(op, dst, a, b)
			want := naiveBinary(op, a, b, out)
			for i := range want {
				if dst.Data[i] != want[i] {
					t.Fatalf("%v op%d %v: element %d = %v, want %v", as, op, bs, i, dst.Data[i], want[i])
				}
			}
		}
		// SumTo is the adjoint of BroadcastTo: <BroadcastTo(a), c> = <a, SumTo(c)>.
		c := New[float64](out...)
		FillUniform(rng, c, -1, 1)
		ab := New[float64](out...)
		BroadcastTo(ab, a)
		sa := New[float64](as...)
		SumTo(sa, c)
		if l, r := Dot(ab.Data, c.Data), Dot(a.Data, sa.Data); abs(l-r) > 1e-9*(1+abs(l)) {
			t.Fatalf("%v→%v: <Ba,c>=%v, <a,Sc>=%v", as, out, l, r)
		}
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func TestBroadcastShapeErrorNamesShapes(t *testing.T) {
	_, err := BroadcastShape([]int{2, 3}, []int{4, 3})
	if err == nil || err.Error() != "tensor: shapes [2 3] and [4 3] do not broadcast (dimension 0: 2 vs 4)" {
		t.Fatalf("got %v", err)
	}
}

func TestPermuteMatchesIndexing(t *testing.T) {
	src := New[float32](2, 3, 4)
	for i := range src.Data {
		src.Data[i] = float32(i)
	}
	dst := New[float32](4, 2, 3)
	Permute(dst, src, []int{2, 0, 1})
	for i := 0; i < 2; i++ {
		for j := 0; j < 3; j++ {
			for k := 0; k < 4; k++ {
				if got, want := dst.Data[(k*2+i)*3+j], src.Data[(i*3+j)*4+k]; got != want {
					t.Fatalf("dst[%d,%d,%d] = %v, want %v", k, i, j, got, want)
				}
			}
		}
	}
}

// Large tensors take the parallel paths of Binary (row pieces) and SumTo
// (per-chunk partial sums); they must agree with the naive loops.
func TestLargeBroadcastParallelPaths(t *testing.T) {
	rng := NewRNG(5, 6)
	for _, tc := range []struct{ big, small []int }{
		{[]int{64, 32, 40}, []int{1, 32, 1}},
		{[]int{200, 700}, []int{700}},
		{[]int{3, 50000}, []int{3, 1}},
		{[]int{100000}, []int{100000}},
	} {
		a, b := New[float64](tc.big...), New[float64](tc.small...)
		FillUniform(rng, a, -1, 1)
		FillUniform(rng, b, 1, 2)
		dst := New[float64](tc.big...)
		Binary(OpMul, dst, a, b)
		want := naiveBinary(OpMul, a, b, tc.big)
		for i := range want {
			if dst.Data[i] != want[i] {
				t.Fatalf("%v*%v: element %d = %v, want %v", tc.big, tc.small, i, dst.Data[i], want[i])
			}
		}
		s := New[float64](tc.small...)
		SumTo(s, a)
		// Naive reduction: <SumTo(a), e_j> = <a, BroadcastTo(e_j)>.
		for j := range s.Data {
			e := New[float64](tc.small...)
			e.Data[j] = 1
			be := New[float64](tc.big...)
			BroadcastTo(be, e)
			if w := Dot(a.Data, be.Data); abs(s.Data[j]-w) > 1e-9*(1+abs(w)) {
				t.Fatalf("SumTo %v→%v: element %d = %v, want %v", tc.big, tc.small, j, s.Data[j], w)
			}
			if j > 40 {
				break
			}
		}
	}
}
