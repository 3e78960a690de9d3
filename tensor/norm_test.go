package tensor

import (
	"math"
	"testing"
)

// groupNormRef is a straightforward float64 GroupNorm forward and backward
// over x (n, c, s): two-pass statistics, then the textbook gradient.
func groupNormRef(x, g, gamma, beta []float64, n, c, s, groups int, eps float64) (y, dx, dgamma, dbeta, mean, rstd []float64) {
	y, dx = make([]float64, len(x)), make([]float64, len(x))
	dgamma, dbeta = make([]float64, c), make([]float64, c)
	cpg := c / groups
	m := float64(cpg * s)
	for i := 0; i < n; i++ {
		for gr := 0; gr < groups; gr++ {
			idx := func(yield func(int, int) bool) {
				for ch := gr * cpg; ch < (gr+1)*cpg; ch++ {
					for p := 0; p < s; p++ {
						if !yield((i*c+ch)*s+p, ch) {
							return
						}
					}
				}
			}
			var mu, v float64
			for j := range idx {
				mu += x[j]
			}
			mu /= m
			for j := range idx {
				v += (x[j] - mu) * (x[j] - mu)
			}
			v /= m
			rs := 1 / math.Sqrt(v+eps)
			mean, rstd = append(mean, mu), append(rstd, rs)
			var mg, mgx float64
			for j, ch := range idx {
				xh := (x[j] - mu) * rs
				y[j] = xh*gamma[ch] + beta[ch]
				gh := g[j] * gamma[ch]
				mg += gh / m
				mgx += gh * xh / m
				dgamma[ch] += g[j] * xh
				dbeta[ch] += g[j]
			}
			for j, ch := range idx {
				xh := (x[j] - mu) * rs
				dx[j] = rs * (g[j]*gamma[ch] - mg - xh*mgx)
			}
		}
	}
	return
}

func ones(n int) []float64 {
	o := make([]float64, n)
	for i := range o {
		o[i] = 1
	}
	return o
}

func TestGroupNormKernels(t *testing.T) {
	for _, tc := range []struct {
		n, c, h, w, groups int
		affine             bool
	}{
		{2, 6, 3, 5, 3, true},
		{3, 4, 2, 2, 4, true}, // instance norm
		{2, 4, 3, 3, 1, false},
		{1, 3, 1, 1, 3, true}, // one value per group
		{5, 8, 4, 4, 2, true},
		{16, 16, 32, 32, 16, true}, // large enough to split over workers
		{8, 8, 32, 32, 1, true},
	} {
		n, c, s := tc.n, tc.c, tc.h*tc.w
		x := randT[float64](1, 2, n, c, tc.h, tc.w)
		Affine(x, x, 1, 3) // a mean far from 0
		g := randT[float64](2, 1, n, c, tc.h, tc.w)
		gamma, beta := ones(c), make([]float64, c)
		var gk, bk []float64
		if tc.affine {
			gamma = randT[float64](3, 1, c).Data
			beta = randT[float64](4, 1, c).Data
			gk, bk = gamma, beta
		}
		const eps = 1e-5
		y0, dx0, dg0, db0, mean0, rstd0 := groupNormRef(x.Data, g.Data, gamma, beta, n, c, s, tc.groups, eps)

		y := New[float64](x.Shape...)
		mean, rstd := make([]float64, n*tc.groups), make([]float64, n*tc.groups)
		GroupNorm(y, x, tc.groups, gk, bk, eps, mean, rstd)
		checkClose(t, "GroupNorm y", y, y0, 1e-10)
		checkClose(t, "GroupNorm mean", &Tensor[float64]{Data: mean}, mean0, 1e-12)
		checkClose(t, "GroupNorm rstd", &Tensor[float64]{Data: rstd}, rstd0, 1e-10)

		ya := New[float64](x.Shape...)
		GroupNormApply(ya, x, tc.groups, gk, bk, mean, rstd)
		checkClose(t, "GroupNormApply", ya, y0, 1e-10)

		dx := New[float64](x.Shape...)
		dg, db := make([]float64, c), make([]float64, c)
		GroupNormBackward(dx, dg, db, g, x, tc.groups, gk, mean, rstd)
		checkClose(t, "GroupNormBackward dx", dx, dx0, 1e-9)
		checkClose(t, "GroupNormBackward dgamma", &Tensor[float64]{Data: dg}, dg0, 1e-10)
		checkClose(t, "GroupNormBackward dbeta", &Tensor[float64]{Data: db}, db0, 1e-10)

		// Partial outputs and dx = g in place.
		gc := g.Clone()
		GroupNormBackward(gc, nil, nil, gc, x, tc.groups, gk, mean, rstd)
		checkClose(t, "GroupNormBackward in place", gc, dx0, 1e-9)

		// float32 agrees with the float64 reference.
		x32, g32 := to32(x), to32(g)
		y32, dx32 := New[float32](x.Shape...), New[float32](x.Shape...)
		m32, r32 := make([]float32, n*tc.groups), make([]float32, n*tc.groups)
		GroupNorm(y32, x32, tc.groups, to32s(gk), to32s(bk), eps, m32, r32)
		GroupNormBackward(dx32, nil, nil, g32, x32, tc.groups, to32s(gk), m32, r32)
		checkClose(t, "GroupNorm float32", y32, y0, 2e-5)
		checkClose(t, "GroupNormBackward float32", dx32, dx0, 1e-4)
	}
}

func to32(t *Tensor[float64]) *Tensor[float32] {
	return &Tensor[float32]{Shape: t.Shape, Data: to32s(t.Data)}
}

func to32s(v []float64) []float32 {
	if v == nil {
		return nil
	}
	o := make([]float32, len(v))
	for i, x := range v {
		o[i] = float32(x)
	}
	return o
}

func TestInstanceNormFormula(t *testing.T) {
	// groups = C: every (n, c) plane gets zero mean and unit variance.
	x := randT[float64](7, 3, 2, 3, 4, 5)
	y := New[float64](x.Shape...)
	GroupNorm(y, x, 3, nil, nil, 0, nil, nil)
	for p := 0; p < 6; p++ {
		plane := y.Data[p*20 : (p+1)*20]
		var m, v float64
		for _, u := range plane {
			m += u / 20
		}
		for _, u := range plane {
			v += (u - m) * (u - m) / 20
		}
		if math.Abs(m) > 1e-12 || math.Abs(v-1) > 1e-10 {
			t.Fatalf("plane %d: mean %g, var %g", p, m, v)
		}
	}
}

func TestLayerNormKernel(t *testing.T) {
	x := randT[float64](8, 2, 3, 2, 5)
	g := randT[float64](9, 1, 3, 2, 5)
	gamma, beta := randT[float64](10, 1, 10).Data, randT[float64](11, 1, 10).Data
	// LayerNorm over the last 10 values = GroupNorm with one group, C = 10.
	y0, dx0, dg0, db0, _, _ := groupNormRef(x.Data, g.Data, gamma, beta, 3, 10, 1, 1, 1e-5)
	y := New[float64](x.Shape...)
	mean, rstd := make([]float64, 3), make([]float64, 3)
	LayerNorm(y, x, 10, gamma, beta, 1e-5, mean, rstd)
	checkClose(t, "LayerNorm", y, y0, 1e-10)
	dx := New[float64](x.Shape...)
	dg, db := make([]float64, 10), make([]float64, 10)
	LayerNormBackward(dx, dg, db, g, x, 10, gamma, mean, rstd)
	checkClose(t, "LayerNormBackward dx", dx, dx0, 1e-9)
	checkClose(t, "LayerNormBackward dgamma", &Tensor[float64]{Data: dg}, dg0, 1e-10)
	checkClose(t, "LayerNormBackward dbeta", &Tensor[float64]{Data: db}, db0, 1e-10)
}

// batchNormRef transposes x (n, c, s) to (1, c, n·s) and uses groupNormRef.
func batchNormRef(x, g, gamma, beta []float64, n, c, s int, eps float64) (y, dx, dgamma, dbeta, mean, rstd []float64) {
	tr := func(v []float64) []float64 {
		o := make([]float64, len(v))
		for i := 0; i < n; i++ {
			for ch := 0; ch < c; ch++ {
				copy(o[(ch*n+i)*s:(ch*n+i+1)*s], v[(i*c+ch)*s:(i*c+ch+1)*s])
			}
		}
		return o
	}
	back := func(v []float64) []float64 {
		o := make([]float64, len(v))
		for i := 0; i < n; i++ {
			for ch := 0; ch < c; ch++ {
				copy(o[(i*c+ch)*s:(i*c+ch+1)*s], v[(ch*n+i)*s:(ch*n+i+1)*s])
			}
		}
		return o
	}
	y, dx, dgamma, dbeta, mean, rstd = groupNormRef(tr(x), tr(g), gamma, beta, 1, c, n*s, c, eps)
	return back(y), back(dx), dgamma, dbeta, mean, rstd
}

func TestBatchNormKernels(t *testing.T) {
	for _, dims := range [][4]int{{4, 3, 2, 3}, {16, 16, 32, 32}} {
		testBatchNorm(t, dims[0], dims[1], dims[2], dims[3])
	}
}

func testBatchNorm(t *testing.T, n, c, h, w int) {
	s := h * w
	x := randT[float64](12, 2, n, c, h, w)
	Affine(x, x, 1, -5)
	g := randT[float64](13, 1, n, c, h, w)
	gamma, beta := randT[float64](14, 1, c).Data, randT[float64](15, 1, c).Data
	y0, dx0, dg0, db0, mean0, rstd0 := batchNormRef(x.Data, g.Data, gamma, beta, n, c, s, 1e-5)
	y := New[float64](x.Shape...)
	mean, rstd, vu := make([]float64, c), make([]float64, c), make([]float64, c)
	BatchNorm(y, x, gamma, beta, 1e-5, mean, rstd, vu)
	checkClose(t, "BatchNorm", y, y0, 1e-10)
	checkClose(t, "BatchNorm mean", &Tensor[float64]{Data: mean}, mean0, 1e-12)
	checkClose(t, "BatchNorm rstd", &Tensor[float64]{Data: rstd}, rstd0, 1e-10)
	for ch := 0; ch < c; ch++ {
		v := 1/(rstd0[ch]*rstd0[ch]) - 1e-5
		if want := v * float64(n*s) / float64(n*s-1); !near(vu[ch], want, 1e-8) {
			t.Fatalf("unbiased var %d = %g, want %g", ch, vu[ch], want)
		}
	}
	dx := New[float64](x.Shape...)
	dg, db := make([]float64, c), make([]float64, c)
	BatchNormBackward(dx, dg, db, g, x, gamma, mean, rstd)
	checkClose(t, "BatchNormBackward dx", dx, dx0, 1e-9)
	checkClose(t, "BatchNormBackward dgamma", &Tensor[float64]{Data: dg}, dg0, 1e-10)
	checkClose(t, "BatchNormBackward dbeta", &Tensor[float64]{Data: db}, db0, 1e-10)

	// Eval mode with running statistics equal to the batch statistics
	// reproduces training mode.
	rv := make([]float64, c)
	for ch := range rv {
		rv[ch] = 1/(rstd[ch]*rstd[ch]) - 1e-5
	}
	ye := New[float64](x.Shape...)
	BatchNormEval(ye, x, gamma, beta, mean, rv, 1e-5)
	checkClose(t, "BatchNormEval", ye, y0, 1e-9)
}

func TestNormDegenerate(t *testing.T) {
	// Constant input: zero variance gives finite output (β) and gradients.
	x := New[float32](2, 4, 3, 3)
	x.Fill(7)
	g := New[float32](x.Shape...)
	g.Fill(1)
	y := New[float32](x.Shape...)
	mean, rstd := make([]float32, 8), make([]float32, 8)
	beta := []float32{1, 2, 3, 4}
	GroupNorm(y, x, 4, nil, beta, 1e-5, mean, rstd)
	dx := New[float32](x.Shape...)
	GroupNormBackward(dx, nil, nil, g, x, 4, nil, mean, rstd)
	bm, br := make([]float32, 4), make([]float32, 4)
	yb, dxb := New[float32](x.Shape...), New[float32](x.Shape...)
	BatchNorm(yb, x, nil, beta, 1e-5, bm, br, nil)
	BatchNormBackward(dxb, nil, nil, g, x, nil, bm, br)
	for _, tt := range []*Tensor[float32]{y, dx, yb, dxb} {
		if HasNaNOrInf(tt.Data) {
			t.Fatalf("NaN/Inf for constant input: %v", tt)
		}
	}
	if y.Data[9] != 2 || yb.Data[9] != 2 {
		t.Fatalf("constant input: got %v, %v, want β", y.Data[9], yb.Data[9])
	}
	// Empty batch and empty planes do not crash.
	for _, sh := range [][]int{{0, 4, 3, 3}, {2, 4, 0, 3}} {
		e := New[float32](sh...)
		GroupNorm(e, e, 2, nil, nil, 1e-5, make([]float32, sh[0]*2), make([]float32, sh[0]*2))
		GroupNormBackward(e, make([]float32, 4), make([]float32, 4), e, e, 2, nil, make([]float32, sh[0]*2), make([]float32, sh[0]*2))
		BatchNorm(e, e, nil, nil, 1e-5, make([]float32, 4), make([]float32, 4), make([]float32, 4))
		BatchNormBackward(e, make([]float32, 4), nil, e, e, nil, make([]float32, 4), make([]float32, 4))
	}
}

func TestNormPanics(t *testing.T) {
	for name, f := range map[string]func(){
		"groups": func() { GroupNorm(New[float32](1, 6, 2), New[float32](1, 6, 2), 4, nil, nil, 1e-5, nil, nil) },
		"rank":   func() { GroupNorm(New[float32](6), New[float32](6), 1, nil, nil, 1e-5, nil, nil) },
		"gamma": func() {
			BatchNorm(New[float32](1, 6, 2), New[float32](1, 6, 2), make([]float32, 5), nil, 1e-5, nil, nil, nil)
		},
		"stats":    func() { GroupNormApply(New[float32](2, 6, 2), New[float32](2, 6, 2), 3, nil, nil, nil, nil) },
		"dst":      func() { BatchNorm(New[float32](1, 6, 3), New[float32](1, 6, 2), nil, nil, 1e-5, nil, nil, nil) },
		"layernrm": func() { LayerNorm(New[float32](7), New[float32](7), 3, nil, nil, 1e-5, nil, nil) },
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

func BenchmarkGroupNorm(b *testing.B) {
	for _, groups := range []int{benchC, 1} {
		name := "instance"
		if groups == 1 {
			name = "groups=1"
		}
		b.Run(name+"/forward", func(b *testing.B) {
			x := benchInput(b)
			y := New[float32](x.Shape...)
			gamma, beta := make([]float32, benchC), make([]float32, benchC)
			for i := range gamma {
				gamma[i] = 1
			}
			mean, rstd := make([]float32, benchN*groups), make([]float32, benchN*groups)
			GroupNorm(y, x, groups, gamma, beta, 1e-5, mean, rstd) // fault pages in
			b.ResetTimer()
			for b.Loop() {
				GroupNorm(y, x, groups, gamma, beta, 1e-5, mean, rstd)
			}
			reportGBs(b, float64(8*len(x.Data)))
		})
		b.Run(name+"/forward+backward", func(b *testing.B) {
			x := benchInput(b)
			g := benchInput(b)
			y, dx := New[float32](x.Shape...), New[float32](x.Shape...)
			gamma, beta := make([]float32, benchC), make([]float32, benchC)
			for i := range gamma {
				gamma[i] = 1
			}
			dg, db := make([]float32, benchC), make([]float32, benchC)
			mean, rstd := make([]float32, benchN*groups), make([]float32, benchN*groups)
			GroupNorm(y, x, groups, gamma, beta, 1e-5, mean, rstd)
			GroupNormBackward(dx, dg, db, g, x, groups, gamma, mean, rstd)
			b.ResetTimer()
			for b.Loop() {
				GroupNorm(y, x, groups, gamma, beta, 1e-5, mean, rstd)
				GroupNormBackward(dx, dg, db, g, x, groups, gamma, mean, rstd)
			}
			// Compulsory traffic: forward reads x and writes y, backward
			// reads g and x and writes dx (each slice's second pass hits
			// the cache).
			reportGBs(b, float64(4*5*len(x.Data)))
		})
	}
}

func BenchmarkBatchNorm(b *testing.B) {
	x := benchInput(b)
	g := benchInput(b)
	y, dx := New[float32](x.Shape...), New[float32](x.Shape...)
	mean, rstd := make([]float32, benchC), make([]float32, benchC)
	BatchNorm(y, x, nil, nil, 1e-5, mean, rstd, nil)
	BatchNormBackward(dx, nil, nil, g, x, nil, mean, rstd)
	b.ResetTimer()
	for b.Loop() {
		BatchNorm(y, x, nil, nil, 1e-5, mean, rstd, nil)
		BatchNormBackward(dx, nil, nil, g, x, nil, mean, rstd)
	}
	// Batch statistics need two passes over memory each way: x twice and y
	// forward, g and x twice and dx backward.
	reportGBs(b, float64(4*8*len(x.Data)))
}
