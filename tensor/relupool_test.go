package tensor

import "testing"

// MaskedAvgPool2x2 is the adjoint of ReLUAvgPool2x2Backward in the
// gradient: <B(g), u> = <g, M(u)> for every g and u, with y the mask.
func TestReLUPoolBackwardAdjoint(t *testing.T) {
	rng := NewRNG(7, 7)
	y := New[float64](2, 3, 4, 6)
	FillNormal(rng, y, 0, 1)
	g := New[float64](2, 3, 2, 3)
	FillNormal(rng, g, 0, 1)
	u := New[float64](2, 3, 4, 6)
	FillNormal(rng, u, 0, 1)
	bg := New[float64](2, 3, 4, 6)
	ReLUAvgPool2x2Backward(bg, g, y)
	mu := New[float64](2, 3, 2, 3)
	MaskedAvgPool2x2(mu, u, y)
	if l, r := Dot(bg.Data, u.Data), Dot(g.Data, mu.Data); abs(l-r) > 1e-12*(1+abs(l)) {
		t.Fatalf("<B(g),u> = %v, <g,M(u)> = %v", l, r)
	}
	// The mask matters: with every y positive, M is plain 2×2 pooling.
	for i := range y.Data {
		y.Data[i] = 1
	}
	MaskedAvgPool2x2(mu, u, y)
	if want := (u.Data[0] + u.Data[1] + u.Data[6] + u.Data[7]) / 4; abs(mu.Data[0]-want) > 1e-15 {
		t.Fatalf("unmasked pool %v, want %v", mu.Data[0], want)
	}
}

// The float32 path (SIMD mask and pool) agrees with the float64 one,
// including y = 0 and negative y, on planes with and without a SIMD tail.
func TestMaskedAvgPool2x2Float32(t *testing.T) {
	for _, hw := range [][2]int{{14, 14}, {28, 28}, {4, 6}} {
		h, w := hw[0], hw[1]
		y, u := randT[float64](21, 1, 2, 3, h, w), randT[float64](22, 1, 2, 3, h, w)
		for i := 0; i < len(y.Data); i += 5 {
			y.Data[i] = 0
		}
		want := New[float64](2, 3, h/2, w/2)
		MaskedAvgPool2x2(want, u, y)
		got := New[float32](2, 3, h/2, w/2)
		MaskedAvgPool2x2(got, to32(u), to32(y))
		checkClose(t, "MaskedAvgPool2x2 float32", got, want.Data, 1e-6)
	}
}
