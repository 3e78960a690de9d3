package vec

// The portable Go references of the kernels.

// SumSqShiftGo is the Go reference of SumSqShift.
func SumSqShiftGo(x []float32, k float64) (s1, s2 float64) {
	var a0, a1, b0, b1 float64
	i := 0
	for ; i+2 <= len(x); i += 2 {
		d0, d1 := float64(x[i])-k, float64(x[i+1])-k
		a0 += d0
		a1 += d1
		b0 += d0 * d0
		b1 += d1 * d1
	}
	for ; i < len(x); i++ {
		d := float64(x[i]) - k
		a0 += d
		b0 += d * d
	}
	return a0 + a1, b0 + b1
}

// GradSumsGo is the Go reference of GradSums.
func GradSumsGo(g, x []float32, mu float64) (sg, sgx float64) {
	x = x[:len(g)]
	var a0, a1, b0, b1 float64
	i := 0
	for ; i+2 <= len(g); i += 2 {
		g0, g1 := float64(g[i]), float64(g[i+1])
		a0 += g0
		a1 += g1
		b0 += g0 * (float64(x[i]) - mu)
		b1 += g1 * (float64(x[i+1]) - mu)
	}
	for ; i < len(g); i++ {
		gi := float64(g[i])
		a0 += gi
		b0 += gi * (float64(x[i]) - mu)
	}
	return a0 + a1, b0 + b1
}

// NormRowGo is the Go reference of NormRow.
func NormRowGo(y, x []float32, mu, a, b float32) {
	y = y[:len(x)]
	for i, v := range x {
		y[i] = (v-mu)*a + b
	}
}

// NormBackRowGo is the Go reference of NormBackRow.
func NormBackRowGo(dx, g, x []float32, mu, a, bc, d float32) {
	dx, g = dx[:len(x)], g[:len(x)]
	for i, v := range x {
		dx[i] = a*g[i] + bc*(v-mu) + d
	}
}

// ReLUGo is the Go reference of ReLU.
func ReLUGo(dst, src []float32) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = max(v, 0)
	}
}

// ReLUBackwardGo is the Go reference of ReLUBackward.
func ReLUBackwardGo(dst, g, x []float32) {
	dst, g = dst[:len(x)], g[:len(x)]
	for i, v := range x {
		d := g[i]
		if !(v > 0) {
			d = 0
		}
		dst[i] = d
	}
}

// AxpyGo is the Go reference of Axpy.
func AxpyGo(a float32, x, y []float32) {
	y = y[:len(x)]
	for i, v := range x {
		y[i] += a * v
	}
}

// AffineGo is the Go reference of Affine.
func AffineGo(dst, src []float32, a, b float32) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = a*v + b
	}
}

// FillGo is the Go reference of Fill.
func FillGo(dst []float32, v float32) {
	for i := range dst {
		dst[i] = v
	}
}

// AvgPool2x2Go is the Go reference of AvgPool2x2 (no argument checks).
func AvgPool2x2Go(dst, src []float32, w int, inv float32) {
	hw := w / 2
	for r := 0; r < len(src)/(2*w); r++ {
		r0, r1 := src[2*r*w:(2*r+1)*w], src[(2*r+1)*w:(2*r+2)*w]
		o := dst[r*hw : (r+1)*hw]
		for j := range o {
			o[j] = ((r0[2*j] + r1[2*j]) + (r0[2*j+1] + r1[2*j+1])) * inv
		}
	}
}

// AvgPool2x2BackwardGo is the Go reference of AvgPool2x2Backward (no
// argument checks).
func AvgPool2x2BackwardGo(dst, g []float32, w int, inv float32) {
	hw := w / 2
	for r := 0; r < len(dst)/(2*w); r++ {
		r0, r1 := dst[2*r*w:(2*r+1)*w], dst[(2*r+1)*w:(2*r+2)*w]
		gr := g[r*hw : (r+1)*hw]
		for j, v := range gr {
			v *= inv
			r0[2*j], r0[2*j+1], r1[2*j], r1[2*j+1] = v, v, v, v
		}
	}
}
