package tensor

import (
	"math"
	"testing"
)

func randT[T Float](seed uint64, std float64, shape ...int) *Tensor[T] {
	t := New[T](shape...)
	FillNormal(NewRNG(seed, 3), t, 0, std)
	return t
}

func near(a, b, tol float64) bool {
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.IsNaN(a) && math.IsNaN(b)
	}
	if math.IsInf(a, 0) || math.IsInf(b, 0) {
		return a == b
	}
	return math.Abs(a-b) <= tol*(1+math.Abs(b))
}

func checkClose[T Float](t *testing.T, name string, got *Tensor[T], want []float64, tol float64) {
	t.Helper()
	if len(got.Data) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(got.Data), len(want))
	}
	for i, w := range want {
		if g := float64(got.Data[i]); !near(g, w, tol) {
			t.Fatalf("%s: element %d = %.10g, want %.10g", name, i, g, w)
		}
	}
}

func mapRef[T Float](x *Tensor[T], f func(float64) float64) []float64 {
	out := make([]float64, len(x.Data))
	for i, v := range x.Data {
		out[i] = f(float64(v))
	}
	return out
}

func TestElementwiseActivations(t *testing.T) {
	x := randT[float64](1, 3, 7, 9)
	x.Data[0], x.Data[1], x.Data[2], x.Data[3] = 0, 80, -80, 1e-3
	gelu := func(v float64) float64 { return v * 0.5 * (1 + math.Erf(v/math.Sqrt2)) }
	cases := []struct {
		name string
		run  func(dst, src *Tensor[float64])
		ref  func(float64) float64
	}{
		{"ReLU", ReLU[float64], func(v float64) float64 { return math.Max(v, 0) }},
		{"ReLUMask", ReLUMask[float64], func(v float64) float64 { return map[bool]float64{true: 1, false: 0}[v > 0] }},
		{"LeakyReLU", func(d, s *Tensor[float64]) { LeakyReLU(d, s, 0.1) }, func(v float64) float64 {
			if v > 0 {
				return v
			}
			return 0.1 * v
		}},
		{"LeakyReLUMask", func(d, s *Tensor[float64]) { LeakyReLUMask(d, s, 0.1) }, func(v float64) float64 {
			if v > 0 {
				return 1
			}
			return 0.1
		}},
		{"Softplus", Softplus[float64], func(v float64) float64 {
			if v > 30 {
				return v // ln(1+e^v) = v + ln(1+e^-v)
			}
			return math.Log(1 + math.Exp(v))
		}},
		{"GELU", GELU[float64], gelu},
		{"NormCDF", NormCDF[float64], func(v float64) float64 { return 0.5 * (1 + math.Erf(v/math.Sqrt2)) }},
	}
	for _, c := range cases {
		y := New[float64](x.Shape...)
		c.run(y, x)
		checkClose(t, c.name, y, mapRef(x, c.ref), 1e-12)
	}
	// float32 agrees with float64.
	x32 := New[float32](x.Shape...)
	for i, v := range x.Data {
		x32.Data[i] = float32(v)
	}
	for _, f := range []struct {
		name string
		f32  func(d, s *Tensor[float32])
		f64  func(d, s *Tensor[float64])
	}{
		{"GELU", GELU[float32], GELU[float64]},
		{"Softplus", Softplus[float32], Softplus[float64]},
	} {
		y32, y64 := New[float32](x.Shape...), New[float64](x.Shape...)
		f.f32(y32, x32)
		f.f64(y64, x)
		checkClose(t, f.name+" float32", y32, y64.Data, 1e-6)
	}
}

func TestActivationBackwardKernels(t *testing.T) {
	x := randT[float64](2, 2, 5, 11)
	g := randT[float64](3, 1, 5, 11)
	phi := func(v float64) float64 { return math.Exp(-v*v/2) / math.Sqrt(2*math.Pi) }
	Phi := func(v float64) float64 { return 0.5 * (1 + math.Erf(v/math.Sqrt2)) }
	cases := []struct {
		name string
		run  func(d, g, x *Tensor[float64])
		der  func(float64) float64
	}{
		{"ReLUBackward", ReLUBackward[float64], func(v float64) float64 { return map[bool]float64{true: 1, false: 0}[v > 0] }},
		{"LeakyReLUBackward", func(d, g, x *Tensor[float64]) { LeakyReLUBackward(d, g, x, 0.2) }, func(v float64) float64 {
			if v > 0 {
				return 1
			}
			return 0.2
		}},
		{"SoftplusBackward", SoftplusBackward[float64], func(v float64) float64 { return 1 / (1 + math.Exp(-v)) }},
		{"GELUBackward", GELUBackward[float64], func(v float64) float64 { return Phi(v) + v*phi(v) }},
	}
	for _, c := range cases {
		d := New[float64](x.Shape...)
		c.run(d, g, x)
		want := make([]float64, len(x.Data))
		for i, v := range x.Data {
			want[i] = g.Data[i] * c.der(v)
		}
		checkClose(t, c.name, d, want, 1e-12)
		// In place (dst = g).
		gg := g.Clone()
		c.run(gg, gg, x)
		checkClose(t, c.name+" in place", gg, want, 1e-12)
	}
}

func softmaxRef(x []float64, k int) (sm, lsm []float64) {
	sm, lsm = make([]float64, len(x)), make([]float64, len(x))
	for r := 0; r < len(x)/k; r++ {
		row := x[r*k : (r+1)*k]
		m := math.Inf(-1)
		for _, v := range row {
			m = math.Max(m, v)
		}
		var s float64
		for _, v := range row {
			s += math.Exp(v - m)
		}
		for i, v := range row {
			lsm[r*k+i] = v - m - math.Log(s)
			sm[r*k+i] = math.Exp(v-m) / s
		}
	}
	return sm, lsm
}

func TestSoftmaxKernels(t *testing.T) {
	x := randT[float64](4, 5, 3, 4, 7)
	x.Data[0], x.Data[1] = 1000, -1000 // would overflow without the shift
	sm, lsm := softmaxRef(x.Data, 7)
	y := New[float64](x.Shape...)
	Softmax(y, x)
	checkClose(t, "Softmax", y, sm, 1e-12)
	ly := New[float64](x.Shape...)
	LogSoftmax(ly, x)
	checkClose(t, "LogSoftmax", ly, lsm, 1e-12)

	g := randT[float64](5, 1, 3, 4, 7)
	d := New[float64](x.Shape...)
	SoftmaxBackward(d, g, y)
	want := make([]float64, len(x.Data))
	for r := 0; r < 12; r++ {
		var s float64
		for i := 0; i < 7; i++ {
			s += g.Data[r*7+i] * sm[r*7+i]
		}
		for i := 0; i < 7; i++ {
			want[r*7+i] = sm[r*7+i] * (g.Data[r*7+i] - s)
		}
	}
	checkClose(t, "SoftmaxBackward", d, want, 1e-12)
	LogSoftmaxBackward(d, g, ly)
	for r := 0; r < 12; r++ {
		var s float64
		for i := 0; i < 7; i++ {
			s += g.Data[r*7+i]
		}
		for i := 0; i < 7; i++ {
			want[r*7+i] = g.Data[r*7+i] - sm[r*7+i]*s
		}
	}
	checkClose(t, "LogSoftmaxBackward", d, want, 1e-12)

	// Soft cross entropy: loss and gradients.
	tg := randT[float64](6, 1, 3, 4, 7)
	for i := range tg.Data {
		tg.Data[i] = math.Abs(tg.Data[i])
	}
	lp := New[float64](x.Shape...)
	loss := SoftCrossEntropy(lp, x, tg)
	var ref float64
	for i, v := range lsm {
		ref -= tg.Data[i] * v
	}
	if !near(loss, ref, 1e-12) {
		t.Fatalf("SoftCrossEntropy = %g, want %g", loss, ref)
	}
	checkClose(t, "SoftCrossEntropy logp", lp, lsm, 1e-12)
	dl, dt := New[float64](x.Shape...), New[float64](x.Shape...)
	SoftCrossEntropyBackward(dl, dt, lp, tg, 0.5)
	for r := 0; r < 12; r++ {
		var st float64
		for i := 0; i < 7; i++ {
			st += tg.Data[r*7+i]
		}
		for i := 0; i < 7; i++ {
			want[r*7+i] = 0.5 * (sm[r*7+i]*st - tg.Data[r*7+i])
		}
	}
	checkClose(t, "SoftCrossEntropyBackward dlogits", dl, want, 1e-12)
	for i, v := range lsm {
		want[i] = -0.5 * v
	}
	checkClose(t, "SoftCrossEntropyBackward dt", dt, want, 1e-12)

	// float32 agrees, also with huge logits.
	x32 := New[float32](x.Shape...)
	for i, v := range x.Data {
		x32.Data[i] = float32(v)
	}
	ly32 := New[float32](x.Shape...)
	LogSoftmax(ly32, x32)
	checkClose(t, "LogSoftmax float32", ly32, lsm, 1e-5)

	// Empty last axis and empty batch do not crash.
	Softmax(New[float64](2, 0), New[float64](2, 0))
	LogSoftmax(New[float64](0, 3), New[float64](0, 3))
}

func TestActivationPanics(t *testing.T) {
	for name, f := range map[string]func(){
		"ReLU sizes":      func() { ReLU(New[float32](3), New[float32](4)) },
		"Softmax scalar":  func() { Softmax(Scalar[float32](1), Scalar[float32](1)) },
		"GELUBackward":    func() { GELUBackward(New[float32](3), New[float32](3), New[float32](2)) },
		"LogSoftmaxSizes": func() { LogSoftmax(New[float64](2, 3), New[float64](3, 3)) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

const benchN, benchC, benchH, benchW = 256, 128, 32, 32

func benchInput(b *testing.B) *Tensor[float32] {
	b.Helper()
	x := New[float32](benchN, benchC, benchH, benchW)
	r := NewRNG(42, 1)
	for i := range x.Data {
		x.Data[i] = float32(r.NormFloat64())
	}
	return x
}

// reportGBs reports the bytes a kernel moves per op as throughput.
func reportGBs(b *testing.B, bytes float64) {
	b.ReportMetric(bytes*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
	b.ReportMetric(b.Elapsed().Seconds()*1e3/float64(b.N), "ms/op")
}

func BenchmarkReLU(b *testing.B) {
	x := benchInput(b)
	y := New[float32](x.Shape...)
	ReLU(y, x) // fault the destination's pages in before timing
	b.SetBytes(int64(8 * len(x.Data)))
	b.ResetTimer()
	for b.Loop() {
		ReLU(y, x)
	}
	reportGBs(b, float64(8*len(x.Data)))
}

func BenchmarkReLUBackward(b *testing.B) {
	x := benchInput(b)
	g := benchInput(b)
	y := New[float32](x.Shape...)
	ReLUBackward(y, g, x)
	b.SetBytes(int64(12 * len(x.Data)))
	b.ResetTimer()
	for b.Loop() {
		ReLUBackward(y, g, x)
	}
	reportGBs(b, float64(12*len(x.Data)))
}

func TestReLUFamilySpecialValues(t *testing.T) {
	// Large enough to split over workers; special values exercise the
	// branchless bit tests.
	n := 200003
	x32 := randT[float32](20, 1, n)
	g32 := randT[float32](21, 1, n)
	nan := float32(math.NaN())
	special := []float32{0, float32(math.Copysign(0, -1)), nan, -nan, float32(math.Inf(1)), float32(math.Inf(-1)), 1e-45, -1e-45}
	copy(x32.Data, special)
	x64 := New[float64](n)
	g64 := New[float64](n)
	for i := range x32.Data {
		x64.Data[i], g64.Data[i] = float64(x32.Data[i]), float64(g32.Data[i])
	}
	pos := func(v float64) bool { return v > 0 }
	check := func(name string, got func(i int) float64, want func(x, g float64) float64) {
		t.Helper()
		for i := 0; i < n; i++ {
			w := want(x64.Data[i], g64.Data[i])
			if gv := got(i); !(gv == w || math.IsNaN(gv) && math.IsNaN(w)) {
				t.Fatalf("%s: element %d (x=%g): got %g, want %g", name, i, x64.Data[i], gv, w)
			}
		}
	}
	for _, f := range []bool{false, true} { // float32, float64
		var relu, mask, back, lmask, lback, leaky func(i int) float64
		if !f {
			a, b, c, d, e, h := New[float32](n), New[float32](n), New[float32](n), New[float32](n), New[float32](n), New[float32](n)
			ReLU(a, x32)
			ReLUMask(b, x32)
			ReLUBackward(c, g32, x32)
			LeakyReLUMask(d, x32, 0.25)
			LeakyReLUBackward(e, g32, x32, 0.25)
			LeakyReLU(h, x32, 0.25)
			relu, mask, back = func(i int) float64 { return float64(a.Data[i]) }, func(i int) float64 { return float64(b.Data[i]) }, func(i int) float64 { return float64(c.Data[i]) }
			lmask, lback, leaky = func(i int) float64 { return float64(d.Data[i]) }, func(i int) float64 { return float64(e.Data[i]) }, func(i int) float64 { return float64(h.Data[i]) }
		} else {
			a, b, c, d, e, h := New[float64](n), New[float64](n), New[float64](n), New[float64](n), New[float64](n), New[float64](n)
			ReLU(a, x64)
			ReLUMask(b, x64)
			ReLUBackward(c, g64, x64)
			LeakyReLUMask(d, x64, 0.25)
			LeakyReLUBackward(e, g64, x64, 0.25)
			LeakyReLU(h, x64, 0.25)
			relu, mask, back = func(i int) float64 { return a.Data[i] }, func(i int) float64 { return b.Data[i] }, func(i int) float64 { return c.Data[i] }
			lmask, lback, leaky = func(i int) float64 { return d.Data[i] }, func(i int) float64 { return e.Data[i] }, func(i int) float64 { return h.Data[i] }
		}
		check("ReLU", relu, func(x, _ float64) float64 {
			if math.IsNaN(x) {
				return x
			}
			return math.Max(x, 0)
		})
		check("ReLUMask", mask, func(x, _ float64) float64 {
			if pos(x) {
				return 1
			}
			return 0
		})
		check("ReLUBackward", back, func(x, g float64) float64 {
			if pos(x) {
				return g
			}
			return 0
		})
		check("LeakyReLUMask", lmask, func(x, _ float64) float64 {
			if pos(x) {
				return 1
			}
			return 0.25
		})
		check("LeakyReLUBackward", lback, func(x, g float64) float64 {
			if pos(x) {
				return g
			}
			return 0.25 * g
		})
		check("LeakyReLU", leaky, func(x, _ float64) float64 {
			if pos(x) || math.IsNaN(x) || x == 0 {
				return x
			}
			if !f {
				return float64(0.25 * float32(x)) // rounds like the kernel
			}
			return 0.25 * x
		})
	}
}
