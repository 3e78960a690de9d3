package vec

import (
	"math"
	"math/rand/v2"
	"testing"
)

// lengths covers empty, every tail up to 67, block multiples and large.
func lengths() []int {
	var l []int
	for n := 0; n <= 67; n++ {
		l = append(l, n)
	}
	return append(l, 127, 128, 129, 1000, 1024, 4099, 65536+13)
}

func randSlice(r *rand.Rand, n int, mean, std float64) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(mean + std*r.NormFloat64())
	}
	return s
}

// forLevels runs f once per kernel set the CPU supports.
func forLevels(t *testing.T, f func(t *testing.T)) {
	for _, l := range levels() {
		t.Run(l, func(t *testing.T) {
			defer setLevel(l)()
			f(t)
		})
	}
}

func relClose(got, want, scale, tol float64) bool {
	return math.Abs(got-want) <= tol*math.Max(scale, 1e-300)
}

func TestSums(t *testing.T) {
	forLevels(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(1, 2))
		for _, n := range lengths() {
			for _, off := range []int{0, 1, 3} { // unaligned starts
				x := randSlice(r, n+off, 3, 2)[off:]
				g := randSlice(r, n+off, 0, 1)[off:]
				k := 2.5
				s1, s2 := SumSqShift(x, k)
				w1, w2 := SumSqShiftGo(x, k)
				var a1, a2 float64 // Σ|x−k|, Σ(x−k)² bound the rounding
				for _, v := range x {
					a1 += math.Abs(float64(v) - k)
					a2 += (float64(v) - k) * (float64(v) - k)
				}
				if !relClose(s1, w1, a1, 1e-12) || !relClose(s2, w2, a2, 1e-12) {
					t.Fatalf("SumSqShift n=%d off=%d: got %v %v, want %v %v", n, off, s1, s2, w1, w2)
				}
				sg, sgx := GradSums(g, x, k)
				v1, v2 := GradSumsGo(g, x, k)
				var b1, b2 float64
				for i, v := range g {
					b1 += math.Abs(float64(v))
					b2 += math.Abs(float64(v) * (float64(x[i]) - k))
				}
				if !relClose(sg, v1, b1, 1e-12) || !relClose(sgx, v2, b2, 1e-12) {
					t.Fatalf("GradSums n=%d off=%d: got %v %v, want %v %v", n, off, sg, sgx, v1, v2)
				}
			}
		}
	})
}

// TestSumsLargeRow checks the float64 accumulation on a 1M-value row with
// a large offset against an exact-ish (compensated) reference.
func TestSumsLargeRow(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	x := randSlice(r, 1<<20, 1000, 0.01)
	k := float64(x[0])
	var ref1, ref2 float64
	var c1, c2 float64 // Kahan
	for _, v := range x {
		d := float64(v) - k
		y := d - c1
		t1 := ref1 + y
		c1 = (t1 - ref1) - y
		ref1 = t1
		y = d*d - c2
		t2 := ref2 + y
		c2 = (t2 - ref2) - y
		ref2 = t2
	}
	forLevels(t, func(t *testing.T) {
		s1, s2 := SumSqShift(x, k)
		mu := s1 / float64(len(x))
		v := s2/float64(len(x)) - mu*mu
		rmu := ref1 / float64(len(x))
		rv := ref2/float64(len(x)) - rmu*rmu
		if math.Abs(v-rv) > 1e-6*rv || math.Abs(mu-rmu) > 1e-9 {
			t.Fatalf("mean shift %v var %v, want %v %v", mu, v, rmu, rv)
		}
	})
}

func ulpClose(a, b float32, ulps float32) bool {
	if a == b || a != a && b != b {
		return true
	}
	d := a - b
	if d < 0 {
		d = -d
	}
	m := max(float32(math.Abs(float64(a))), float32(math.Abs(float64(b))), 1e-30)
	return d <= ulps*m*(1.0/(1<<23))
}

func TestElementwise(t *testing.T) {
	forLevels(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(5, 6))
		for _, n := range lengths() {
			for _, off := range []int{0, 1, 5} {
				x := randSlice(r, n+off, 0.3, 1)[off:]
				g := randSlice(r, n+off, 0, 1)[off:]
				got, want := make([]float32, n), make([]float32, n)
				check := func(name string, ulps float32, abs float32) {
					t.Helper()
					for i := range want {
						if !ulpClose(got[i], want[i], ulps) && math.Abs(float64(got[i]-want[i])) > float64(abs) {
							t.Fatalf("%s n=%d off=%d [%d]: got %v, want %v", name, n, off, i, got[i], want[i])
						}
					}
				}
				NormRow(got, x, 0.3, 1.7, -0.2)
				NormRowGo(want, x, 0.3, 1.7, -0.2)
				check("NormRow", 4, 2e-6)
				NormBackRow(got, g, x, 0.3, 1.7, -0.4, 0.05)
				NormBackRowGo(want, g, x, 0.3, 1.7, -0.4, 0.05)
				check("NormBackRow", 4, 4e-6)
				ReLU(got, x)
				ReLUGo(want, x)
				check("ReLU", 0, 0)
				ReLUBackward(got, g, x)
				ReLUBackwardGo(want, g, x)
				check("ReLUBackward", 0, 0)
				Affine(got, x, -1.5, 0.25)
				AffineGo(want, x, -1.5, 0.25)
				check("Affine", 2, 2e-6)
				copy(got, g)
				copy(want, g)
				Axpy(0.75, x, got)
				AxpyGo(0.75, x, want)
				check("Axpy", 2, 2e-6)
				Fill(got, 2.5)
				FillGo(want, 2.5)
				check("Fill", 0, 0)
			}
		}
	})
}

func TestReLUSpecial(t *testing.T) {
	nan := float32(math.NaN())
	negz := float32(math.Copysign(0, -1))
	inf := float32(math.Inf(1))
	special := []float32{0, negz, nan, -nan, inf, -inf, 1e-45, -1e-45, 1, -1}
	forLevels(t, func(t *testing.T) {
		for n := 16; n <= 48; n += 16 { // whole vectors, so the asm runs
			x := make([]float32, n)
			g := make([]float32, n)
			for i := range x {
				x[i] = special[i%len(special)]
				g[i] = float32(i) - 7.5
				if i%5 == 0 {
					g[i] = negz
				}
			}
			y := make([]float32, n)
			ReLU(y, x)
			for i, v := range x {
				w := max(v, 0)
				if math.Float32bits(y[i]) != math.Float32bits(w) && !(v != v && y[i] != y[i]) {
					t.Fatalf("ReLU(%v) = %v (bits %x), want %v", v, y[i], math.Float32bits(y[i]), w)
				}
				if v != v && y[i] == y[i] {
					t.Fatalf("ReLU(NaN) = %v", y[i])
				}
			}
			ReLUBackward(y, g, x)
			for i, v := range x {
				w := float32(0)
				if v > 0 {
					w = g[i]
				}
				if math.Float32bits(y[i]) != math.Float32bits(w) {
					t.Fatalf("ReLUBackward(g=%v, x=%v) = %v, want %v", g[i], v, y[i], w)
				}
			}
			// In place.
			copy(y, x)
			ReLU(y, y)
			for i, v := range x {
				if y[i] != max(v, 0) && !(v != v && y[i] != y[i]) {
					t.Fatalf("in-place ReLU(%v) = %v", v, y[i])
				}
			}
		}
	})
}

func TestAvgPool2x2(t *testing.T) {
	forLevels(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(7, 8))
		for _, w := range []int{2, 4, 6, 8, 14, 16, 18, 30, 32, 34, 48, 62, 64, 66, 96, 100} {
			for _, rows := range []int{0, 1, 2, 3, 7} {
				src := randSlice(r, 2*rows*w+1, 0, 1)[1:] // unaligned
				dst, want := make([]float32, rows*w/2+1), make([]float32, rows*w/2+1)
				dst[len(dst)-1], want[len(want)-1] = 42, 42 // guard
				AvgPool2x2(dst[:rows*w/2], src, w, 0.25)
				AvgPool2x2Go(want[:rows*w/2], src, w, 0.25)
				for i := range want {
					if dst[i] != want[i] {
						t.Fatalf("AvgPool2x2 w=%d rows=%d [%d]: got %v, want %v", w, rows, i, dst[i], want[i])
					}
				}
				g := randSlice(r, rows*w/2, 0, 1)
				bd, bw := make([]float32, 2*rows*w+1), make([]float32, 2*rows*w+1)
				bd[len(bd)-1], bw[len(bw)-1] = 42, 42
				AvgPool2x2Backward(bd[:2*rows*w], g, w, 0.25)
				AvgPool2x2BackwardGo(bw[:2*rows*w], g, w, 0.25)
				for i := range bw {
					if bd[i] != bw[i] {
						t.Fatalf("AvgPool2x2Backward w=%d rows=%d [%d]: got %v, want %v", w, rows, i, bd[i], bw[i])
					}
				}
			}
		}
	})
}

// TestAvgPool2x2BackwardStreaming covers the non-temporal path (large,
// aligned output, rows a multiple of 32 wide).
func TestAvgPool2x2BackwardStreaming(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	const w, rows = 32, 1 << 15 // 8 MiB output
	g := randSlice(r, rows*w/2, 0, 1)
	got, want := make([]float32, 2*rows*w), make([]float32, 2*rows*w)
	forLevels(t, func(t *testing.T) {
		AvgPool2x2Backward(got, g, w, 0.25)
		AvgPool2x2BackwardGo(want, g, w, 0.25)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("[%d]: got %v, want %v", i, got[i], want[i])
			}
		}
	})
}

func TestPoolPanics(t *testing.T) {
	for _, f := range []func(){
		func() { AvgPool2x2(make([]float32, 2), make([]float32, 8), 3, 1) },
		func() { AvgPool2x2(make([]float32, 3), make([]float32, 8), 4, 1) },
		func() { AvgPool2x2Backward(make([]float32, 8), make([]float32, 2), 0, 1) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			f()
		}()
	}
}

func fuzzFloats(b []byte) []float32 {
	x := make([]float32, len(b)/4)
	for i := range x {
		x[i] = math.Float32frombits(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24)
	}
	return x
}

func FuzzReLU(f *testing.F) {
	f.Add(make([]byte, 64), make([]byte, 64))
	f.Add([]byte{0, 0, 0xc0, 0x7f, 0, 0, 0, 0x80, 1, 0, 0, 0}, []byte{1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		x, g := fuzzFloats(a), fuzzFloats(b)
		n := min(len(x), len(g))
		x, g = x[:n], g[:n]
		got, want := make([]float32, n), make([]float32, n)
		ReLU(got, x)
		ReLUGo(want, x)
		for i := range x {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) && !(got[i] != got[i] && want[i] != want[i]) {
				t.Fatalf("ReLU(%v) = %v, want %v", x[i], got[i], want[i])
			}
		}
		ReLUBackward(got, g, x)
		ReLUBackwardGo(want, g, x)
		for i := range x {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("ReLUBackward(%v, %v) = %v, want %v", g[i], x[i], got[i], want[i])
			}
		}
	})
}

func FuzzSums(f *testing.F) {
	f.Add(make([]byte, 128), 0.5)
	f.Fuzz(func(t *testing.T, a []byte, k float64) {
		x := fuzzFloats(a)
		for i, v := range x { // keep finite values of moderate size
			if v != v || math.IsInf(float64(v), 0) || math.Abs(float64(v)) > 1e15 {
				x[i] = 1
			}
		}
		if math.IsNaN(k) || math.IsInf(k, 0) || math.Abs(k) > 1e15 {
			k = 0
		}
		s1, s2 := SumSqShift(x, k)
		w1, w2 := SumSqShiftGo(x, k)
		var a1, a2 float64
		for _, v := range x {
			d := float64(v) - k
			a1 += math.Abs(d)
			a2 += d * d
		}
		if !relClose(s1, w1, a1, 1e-12) || !relClose(s2, w2, a2, 1e-12) {
			t.Fatalf("SumSqShift: got %v %v, want %v %v", s1, s2, w1, w2)
		}
		sg, sgx := GradSums(x, x, k)
		v1, v2 := GradSumsGo(x, x, k)
		var b1 float64
		for _, v := range x {
			b1 += math.Abs(float64(v))
		}
		if !relClose(sg, v1, b1, 1e-12) || !relClose(sgx, v2, a1*1e15+a2, 1e-12) {
			t.Fatalf("GradSums: got %v %v, want %v %v", sg, sgx, v1, v2)
		}
	})
}

func FuzzNormRow(f *testing.F) {
	f.Add(make([]byte, 128), float32(0.5), float32(2), float32(-1))
	f.Fuzz(func(t *testing.T, a []byte, mu, s, b float32) {
		x := fuzzFloats(a)
		for i, v := range x {
			if v != v || math.IsInf(float64(v), 0) || math.Abs(float64(v)) > 1e6 {
				x[i] = 0
			}
		}
		for _, p := range []*float32{&mu, &s, &b} {
			if *p != *p || math.Abs(float64(*p)) > 1e6 {
				*p = 1
			}
		}
		got, want := make([]float32, len(x)), make([]float32, len(x))
		NormRow(got, x, mu, s, b)
		NormRowGo(want, x, mu, s, b)
		for i, v := range x {
			// One FMA rounding less: the difference is at most an ulp of
			// the product (x−mu)·s plus one of the result.
			bound := 2 * (math.Abs(float64((v-mu)*s)) + math.Abs(float64(want[i]))) / (1 << 23)
			if math.Abs(float64(got[i]-want[i])) > bound {
				t.Fatalf("NormRow(%v; %v %v %v) = %v, want %v", v, mu, s, b, got[i], want[i])
			}
		}
	})
}

var sink float64

func BenchmarkKernels(b *testing.B) {
	const n = 1 << 16 // 256 KiB per operand: in L2
	r := rand.New(rand.NewPCG(1, 1))
	x, g, y := randSlice(r, n, 0, 1), randSlice(r, n, 0, 1), make([]float32, n)
	run := func(name string, bytes int, f func()) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(bytes))
			for b.Loop() {
				f()
			}
		})
	}
	run("SumSqShift", 4*n, func() { s, _ := SumSqShift(x, 0.1); sink += s })
	run("GradSums", 8*n, func() { s, _ := GradSums(g, x, 0.1); sink += s })
	run("NormRow", 8*n, func() { NormRow(y, x, 0.1, 2, 1) })
	run("NormBackRow", 12*n, func() { NormBackRow(y, g, x, 0.1, 2, 1, 0.5) })
	run("ReLU", 8*n, func() { ReLU(y, x) })
	run("ReLUBackward", 12*n, func() { ReLUBackward(y, g, x) })
	run("Axpy", 12*n, func() { Axpy(0.5, x, y) })
	run("AvgPool2x2/32", 5*n, func() { AvgPool2x2(y[:n/4], x, 32, 0.25) })
	run("AvgPool2x2Backward/32", 5*n, func() { AvgPool2x2Backward(y, x[:n/4], 32, 0.25) })
	run("ReLU/go", 8*n, func() { ReLUGo(y, x) })
	run("SumSqShift/go", 4*n, func() { s, _ := SumSqShiftGo(x, 0.1); sink += s })
}

// TestWeightedRows checks WeightedRows bit for bit against the same sum
// made of Affine and Axpy passes (one product, multiply-adds in row order,
// then the bias), at every kernel level, and against float64 within
// single precision.
func TestWeightedRows(t *testing.T) {
	forLevels(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(9, 10))
		for _, n := range lengths() {
			for _, k := range []int{1, 2, 9, 16} {
				ld := n + 3
				rows := randSlice(r, k*ld, 0, 1)
				w := randSlice(r, k, 0, 0.5)
				for _, bias := range []bool{false, true} {
					got := randSlice(r, n, 0, 1)
					WeightedRows(got, rows, ld, w, 0.125, bias)
					want := make([]float32, n)
					Affine(want, rows[:n], w[0], 0)
					for j := 1; j < k; j++ {
						Axpy(w[j], rows[j*ld:j*ld+n], want)
					}
					if bias {
						Affine(want, want, 1, 0.125)
					}
					for i := range want {
						var ref, scale float64
						for j := range k {
							ref += float64(w[j]) * float64(rows[j*ld+i])
							scale += math.Abs(float64(w[j]) * float64(rows[j*ld+i]))
						}
						if bias {
							ref += 0.125
						}
						if math.Float32bits(got[i]) != math.Float32bits(want[i]) || !relClose(float64(got[i]), ref, scale+0.125, 1e-6) {
							t.Fatalf("n=%d k=%d bias=%v [%d]: got %v, passes give %v, float64 %v", n, k, bias, i, got[i], want[i], ref)
						}
					}
				}
			}
		}
	})
}

// WinogradInput against Bᵀ d B formed tile by tile, for every plane extent
// it takes; bit for bit, since both apply Bᵀ first and use the same sums.
// Lanes past each plane's tiles are left as they were.
func TestWinogradInput(t *testing.T) {
	if !WinogradInputOK(16) {
		t.Skip("no AVX-512: the Go transform of package tensor runs instead")
	}
	rng := rand.New(rand.NewPCG(5, 5))
	bt := [4][4]float32{{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}}
	for h := 1; h <= 16; h++ {
		for w := 1; w <= 16; w++ {
			x := make([]float32, h*w)
			for i := range x {
				x[i] = float32(rng.NormFloat64())
			}
			tH, tW := (h+1)/2, (w+1)/2
			stride := tH*tW + 3
			v := make([]float32, 16*stride)
			const sentinel = 12345
			for i := range v {
				v[i] = sentinel
			}
			WinogradInput(v, stride, x, h, w)
			at := func(r, c int) float32 {
				if r < 0 || r >= h || c < 0 || c >= w {
					return 0
				}
				return x[r*w+c]
			}
			for ty := range tH {
				for tx := range tW {
					var s [4][4]float32 // Bᵀ d
					for i := range 4 {
						for c := range 4 {
							var acc float32
							for k := range 4 {
								if bt[i][k] != 0 {
									acc += bt[i][k] * at(2*ty-1+k, 2*tx-1+c)
								}
							}
							s[i][c] = acc
						}
					}
					for i := range 4 {
						for j := range 4 {
							var want float32 // (Bᵀ d B)[i][j] = Σ_c (Bᵀ d)[i][c]·Bᵀ[j][c]
							for c := range 4 {
								if bt[j][c] != 0 {
									want += bt[j][c] * s[i][c]
								}
							}
							if got := v[(4*i+j)*stride+ty*tW+tx]; got != want {
								t.Fatalf("%d×%d plane, tile (%d, %d), entry %d: %v, want %v", h, w, ty, tx, 4*i+j, got, want)
							}
						}
					}
				}
			}
			for xi := range 16 {
				for k := tH * tW; k < stride; k++ {
					if v[xi*stride+k] != sentinel {
						t.Fatalf("%d×%d plane: wrote past the tiles of plane %d", h, w, xi)
					}
				}
			}
		}
	}
}
