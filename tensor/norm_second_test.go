package tensor

import "testing"

// GroupNormGradBackward against central differences of
// L(g, γ, x) = <u, B(g·γ, x)>, with B from GroupNormBackward and the
// statistics recomputed from x, in float64; float32 (SIMD rows and tails:
// 7×7 and 9×9 planes) against the float64 result.
func TestGroupNormGradBackward(t *testing.T) {
	for _, tc := range []struct{ n, c, h, w, groups int }{
		{2, 4, 7, 7, 4}, // instance norm, as in ConvNet
		{2, 4, 9, 9, 2},
		{1, 3, 2, 3, 1},
	} {
		n, c := tc.n, tc.c
		shape := []int{n, c, tc.h, tc.w}
		x := randT[float64](11, 1, shape...)
		Affine(x, x, 1.5, 2)
		g, u := randT[float64](12, 1, shape...), randT[float64](13, 1, shape...)
		gamma := randT[float64](14, 1, c).Data
		const eps = 1e-5
		loss := func(x, g *Tensor[float64], gamma []float64) float64 {
			mean, rstd := make([]float64, n*tc.groups), make([]float64, n*tc.groups)
			GroupNorm(New[float64](shape...), x, tc.groups, gamma, make([]float64, c), eps, mean, rstd)
			b := New[float64](shape...)
			GroupNormBackward(b, nil, nil, g, x, tc.groups, gamma, mean, rstd)
			var l float64
			for i, v := range b.Data {
				l += u.Data[i] * v
			}
			return l
		}
		fd := func(v []float64) []float64 {
			const h = 1e-6
			d := make([]float64, len(v))
			for i := range v {
				v0 := v[i]
				v[i] = v0 + h
				lp := loss(x, g, gamma)
				v[i] = v0 - h
				lm := loss(x, g, gamma)
				v[i] = v0
				d[i] = (lp - lm) / (2 * h)
			}
			return d
		}
		wantG, wantX, wantGamma := fd(g.Data), fd(x.Data), fd(gamma)

		mean, rstd := make([]float64, n*tc.groups), make([]float64, n*tc.groups)
		GroupNorm(New[float64](shape...), x, tc.groups, gamma, nil, eps, mean, rstd)
		gg, gx, ggamma := New[float64](shape...), New[float64](shape...), make([]float64, c)
		GroupNormGradBackward(gg, gx, ggamma, u, g, x, tc.groups, gamma, mean, rstd)
		checkClose(t, "gg", gg, wantG, 1e-6)
		checkClose(t, "gx", gx, wantX, 1e-6)
		checkClose(t, "ggamma", &Tensor[float64]{Data: ggamma}, wantGamma, 1e-6)

		m32, r32 := make([]float32, n*tc.groups), make([]float32, n*tc.groups)
		x32 := to32(x)
		GroupNorm(New[float32](shape...), x32, tc.groups, to32s(gamma), nil, eps, m32, r32)
		gg32, gx32, ggamma32 := New[float32](shape...), New[float32](shape...), make([]float32, c)
		GroupNormGradBackward(gg32, gx32, ggamma32, to32(u), to32(g), x32, tc.groups, to32s(gamma), m32, r32)
		checkClose(t, "gg float32", gg32, gg.Data, 1e-4)
		checkClose(t, "gx float32", gx32, gx.Data, 1e-4)
		checkClose(t, "ggamma float32", &Tensor[float32]{Data: ggamma32}, ggamma, 1e-4)
	}
}
