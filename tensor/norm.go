package tensor

import (
	"fmt"
	"math"

	"github.com/fedsim/fedsim/internal/parallel"
	"github.com/fedsim/fedsim/tensor/internal/vec"
)

// Normalisation kernels over (N, C, spatial...) tensors (NCHW for images).
//
// GroupNorm splits the C channels of each sample into groups and normalises
// every (sample, group) slice over its channels and spatial positions:
// groups = C is instance norm, groups = 1 normalises each sample as a whole,
// and a rank-2 (rows, D) tensor with groups = 1 is torch.nn.LayerNorm over
// its last dimension. BatchNorm normalises each channel over the batch and
// the spatial positions.
//
// Statistics are accumulated in float64 around a shift (the slice's first
// value), so E[x²]−E[x]² does not cancel catastrophically; the biased
// variance normalises, as in PyTorch. rstd is 1/√(var+eps), so a constant
// slice gives finite zeros rather than NaN. Work is split over (sample,
// group) for GroupNorm and over channels for BatchNorm.

// normDims returns the (N, C, S) reading of shape, S being the product of the
// spatial dimensions. It panics if the rank is below 2.
func normDims(name string, shape []int) (n, c, s int) {
	if len(shape) < 2 {
		panic(fmt.Sprintf("tensor: %s needs a (N, C, ...) tensor, got shape %v", name, shape))
	}
	s = 1
	for _, d := range shape[2:] {
		s *= d
	}
	return shape[0], shape[1], s
}

func checkLen[T Float](name, what string, v []T, want int, optional bool) {
	if v == nil && optional {
		return
	}
	if len(v) != want {
		panic(fmt.Sprintf("tensor: %s: %s has %d values, want %d", name, what, len(v), want))
	}
}

// shiftedSums returns Σ(v−k) and Σ(v−k)² in float64, with four independent
// accumulators so the loop is not bound by add latency. float32 slices take
// the SIMD kernel (also float64 accumulation, widened with VCVTPS2PD).
func shiftedSums[T Float](seg []T, k float64) (s1, s2 float64) {
	if s, ok := any(seg).([]float32); ok {
		return vec.SumSqShift(s, k)
	}
	var a0, a1, a2, a3, b0, b1, b2, b3 float64
	i := 0
	for ; i+4 <= len(seg); i += 4 {
		d0 := float64(seg[i]) - k
		d1 := float64(seg[i+1]) - k
		d2 := float64(seg[i+2]) - k
		d3 := float64(seg[i+3]) - k
		a0 += d0
		a1 += d1
		a2 += d2
		a3 += d3
		b0 += d0 * d0
		b1 += d1 * d1
		b2 += d2 * d2
		b3 += d3 * d3
	}
	for ; i < len(seg); i++ {
		d := float64(seg[i]) - k
		a0 += d
		b0 += d * d
	}
	return (a0 + a1) + (a2 + a3), (b0 + b1) + (b2 + b3)
}

// gradSums returns Σg and Σg·(x−mu) in float64.
func gradSums[T Float](g, x []T, mu float64) (sg, sgx float64) {
	if gs, ok := any(g).([]float32); ok {
		return vec.GradSums(gs, any(x).([]float32), mu)
	}
	x = x[:len(g)]
	var a0, a1, a2, a3, b0, b1, b2, b3 float64
	i := 0
	for ; i+4 <= len(g); i += 4 {
		g0, g1, g2, g3 := float64(g[i]), float64(g[i+1]), float64(g[i+2]), float64(g[i+3])
		a0 += g0
		a1 += g1
		a2 += g2
		a3 += g3
		b0 += g0 * (float64(x[i]) - mu)
		b1 += g1 * (float64(x[i+1]) - mu)
		b2 += g2 * (float64(x[i+2]) - mu)
		b3 += g3 * (float64(x[i+3]) - mu)
	}
	for ; i < len(g); i++ {
		gi := float64(g[i])
		a0 += gi
		b0 += gi * (float64(x[i]) - mu)
	}
	return (a0 + a1) + (a2 + a3), (b0 + b1) + (b2 + b3)
}

// moments turns shifted sums over m values into the mean and the biased
// variance (clamped at 0).
func moments(k, s1, s2 float64, m int) (mean, variance float64) {
	if m == 0 {
		return 0, 0
	}
	mu := s1 / float64(m)
	return k + mu, max(s2/float64(m)-mu*mu, 0)
}

// normRow writes y = (x−mu)·a + b (for float32 with one FMA).
func normRow[T Float](y, x []T, mu, a, b T) {
	if ys, ok := any(y).([]float32); ok {
		vec.NormRow(ys, any(x).([]float32), float32(mu), float32(a), float32(b))
		return
	}
	y = y[:len(x)]
	for i, v := range x {
		y[i] = (v-mu)*a + b
	}
}

// normBackRow writes dx = a·g + bc·(x−mu) + d.
func normBackRow[T Float](dx, g, x []T, mu, a, bc, d T) {
	if ds, ok := any(dx).([]float32); ok {
		vec.NormBackRow(ds, any(g).([]float32), any(x).([]float32), float32(mu), float32(a), float32(bc), float32(d))
		return
	}
	g, dx = g[:len(x)], dx[:len(x)]
	for i, v := range x {
		dx[i] = a*g[i] + bc*(v-mu) + d
	}
}

func affineAt[T Float](gamma, beta []T, c int) (ga, be T) {
	ga = 1
	if gamma != nil {
		ga = gamma[c]
	}
	if beta != nil {
		be = beta[c]
	}
	return ga, be
}

func groupChecks[T Float](name string, y, x *Tensor[T], groups int, gamma, beta []T) (n, c, s int) {
	n, c, s = normDims(name, x.Shape)
	if y != nil && !SameShape(y.Shape, x.Shape) {
		panic(fmt.Sprintf("tensor: %s destination %v, source %v", name, y.Shape, x.Shape))
	}
	if groups <= 0 || c%groups != 0 {
		panic(fmt.Sprintf("tensor: %s: %d groups do not divide %d channels", name, groups, c))
	}
	checkLen(name, "gamma", gamma, c, true)
	checkLen(name, "beta", beta, c, true)
	return n, c, s
}

// GroupNorm computes y = (x − mean)·rstd·gamma + beta for x of shape
// (N, C, spatial...), the statistics taken per sample over each of groups
// consecutive channel groups (biased variance, rstd = 1/√(var+eps)). gamma
// and beta have C values, or are nil for 1 and 0. mean and rstd, if not nil,
// receive the N·groups statistics (sample-major). y may be x. It panics if
// y's shape differs from x's, x has rank < 2, groups does not divide C, or a
// slice has the wrong length.
func GroupNorm[T Float](y, x *Tensor[T], groups int, gamma, beta []T, eps float64, mean, rstd []T) {
	n, c, s := groupChecks("GroupNorm", y, x, groups, gamma, beta)
	checkLen("GroupNorm", "mean", mean, n*groups, true)
	checkLen("GroupNorm", "rstd", rstd, n*groups, true)
	cpg := c / groups
	m := cpg * s
	parallel.For(n*groups, max(1, 32768/max(m, 1)), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			base := (t / groups * c) * s
			c0 := t % groups * cpg
			base += c0 * s
			seg := x.Data[base : base+m]
			var k float64
			if m > 0 {
				k = float64(seg[0])
			}
			s1, s2 := shiftedSums(seg, k)
			mu, v := moments(k, s1, s2, m)
			rs := 1 / math.Sqrt(v+eps)
			if mean != nil {
				mean[t] = T(mu)
			}
			if rstd != nil {
				rstd[t] = T(rs)
			}
			for ci := 0; ci < cpg; ci++ {
				ga, be := affineAt(gamma, beta, c0+ci)
				off := base + ci*s
				normRow(y.Data[off:off+s], x.Data[off:off+s], T(mu), T(rs)*ga, be)
			}
		}
	})
}

// GroupNormApply is GroupNorm with given statistics: y = (x − mean)·rstd·
// gamma + beta, mean and rstd holding N·groups values. y may be x. It panics
// as GroupNorm does, and if mean or rstd is nil.
func GroupNormApply[T Float](y, x *Tensor[T], groups int, gamma, beta, mean, rstd []T) {
	n, c, s := groupChecks("GroupNormApply", y, x, groups, gamma, beta)
	checkLen("GroupNormApply", "mean", mean, n*groups, false)
	checkLen("GroupNormApply", "rstd", rstd, n*groups, false)
	cpg := c / groups
	m := cpg * s
	parallel.For(n*groups, max(1, 32768/max(m, 1)), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			c0 := t % groups * cpg
			base := (t/groups*c + c0) * s
			for ci := 0; ci < cpg; ci++ {
				ga, be := affineAt(gamma, beta, c0+ci)
				off := base + ci*s
				normRow(y.Data[off:off+s], x.Data[off:off+s], mean[t], rstd[t]*ga, be)
			}
		}
	})
}

// GroupNormBackward computes, in one fused pass pair, the gradients of
// GroupNorm given g = ∂L/∂y and the forward statistics:
//
//	dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)),  ĝ = g·gamma, x̂ = (x−mean)·rstd
//	dgamma = Σ_{n,spatial} g·x̂,  dbeta = Σ_{n,spatial} g
//
// with the group means over each (sample, group) slice. gamma may be nil
// (γ = 1). Any of dx, dgamma, dbeta may be nil to skip it. dx may be g. It
// panics if shapes or slice lengths disagree, or groups does not divide C.
func GroupNormBackward[T Float](dx *Tensor[T], dgamma, dbeta []T, g, x *Tensor[T], groups int, gamma, mean, rstd []T) {
	n, c, s := groupChecks("GroupNormBackward", dx, x, groups, gamma, nil)
	if !SameShape(g.Shape, x.Shape) {
		panic(fmt.Sprintf("tensor: GroupNormBackward gradient %v, input %v", g.Shape, x.Shape))
	}
	checkLen("GroupNormBackward", "dgamma", dgamma, c, true)
	checkLen("GroupNormBackward", "dbeta", dbeta, c, true)
	checkLen("GroupNormBackward", "mean", mean, n*groups, false)
	checkLen("GroupNormBackward", "rstd", rstd, n*groups, false)
	cpg := c / groups
	m := cpg * s
	var pg, pb []float64 // per-(sample, channel) partial parameter gradients
	if dgamma != nil || dbeta != nil {
		pg = make([]float64, n*c)
		pb = make([]float64, n*c)
	}
	parallel.For(n*groups, max(1, 16384/max(m, 1)), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			nn := t / groups
			c0 := t % groups * cpg
			base := (nn*c + c0) * s
			mu, rs := float64(mean[t]), float64(rstd[t])
			var s1, s2 float64 // Σ ĝ and Σ ĝ·x̂ over the slice
			for ci := 0; ci < cpg; ci++ {
				off := base + ci*s
				a, b := gradSums(g.Data[off:off+s], x.Data[off:off+s], mu)
				ga, _ := affineAt(gamma, nil, c0+ci)
				s1 += float64(ga) * a
				s2 += float64(ga) * b * rs
				if pg != nil {
					pg[nn*c+c0+ci] = b * rs
					pb[nn*c+c0+ci] = a
				}
			}
			if dx == nil || m == 0 {
				continue
			}
			bc := T(-rs * rs * s2 / float64(m))
			d := T(-rs * s1 / float64(m))
			for ci := 0; ci < cpg; ci++ {
				ga, _ := affineAt(gamma, nil, c0+ci)
				off := base + ci*s
				normBackRow(dx.Data[off:off+s], g.Data[off:off+s], x.Data[off:off+s], T(mu), T(rs)*ga, bc, d)
			}
		}
	})
	if pg != nil {
		reduceRows(dgamma, pg, n, c)
		reduceRows(dbeta, pb, n, c)
	}
}

// reduceRows writes dst[j] = Σ_i p[i·c+j] (dst may be nil).
func reduceRows[T Float](dst []T, p []float64, n, c int) {
	if dst == nil {
		return
	}
	for j := 0; j < c; j++ {
		var s float64
		for i := 0; i < n; i++ {
			s += p[i*c+j]
		}
		dst[j] = T(s)
	}
}

// LayerNorm normalises x over its last d values (torch.nn.LayerNorm with a
// normalised shape of d elements): y = (x − mean)·rstd·gamma + beta per row,
// gamma and beta holding d values or nil. mean and rstd, if not nil, receive
// len(x)/d statistics. y may be x. It panics if d does not divide x's size,
// y's size differs, or a slice has the wrong length.
func LayerNorm[T Float](y, x *Tensor[T], d int, gamma, beta []T, eps float64, mean, rstd []T) {
	xv, yv := rowView("LayerNorm", y, x, d)
	GroupNorm(yv, xv, 1, gamma, beta, eps, mean, rstd)
}

// LayerNormBackward is GroupNormBackward for LayerNorm (see LayerNorm).
// It panics as LayerNorm does.
func LayerNormBackward[T Float](dx *Tensor[T], dgamma, dbeta []T, g, x *Tensor[T], d int, gamma, mean, rstd []T) {
	xv, dxv := rowView("LayerNormBackward", dx, x, d)
	gv, _ := rowView("LayerNormBackward", nil, g, d)
	GroupNormBackward(dxv, dgamma, dbeta, gv, xv, 1, gamma, mean, rstd)
}

func rowView[T Float](name string, y, x *Tensor[T], d int) (xv, yv *Tensor[T]) {
	if d <= 0 || len(x.Data)%d != 0 {
		panic(fmt.Sprintf("tensor: %s: %d values per row do not divide shape %v", name, d, x.Shape))
	}
	xv = &Tensor[T]{Shape: []int{len(x.Data) / d, d}, Data: x.Data}
	if y != nil {
		if len(y.Data) != len(x.Data) {
			panic(fmt.Sprintf("tensor: %s destination %v, source %v", name, y.Shape, x.Shape))
		}
		yv = &Tensor[T]{Shape: xv.Shape, Data: y.Data}
	}
	return xv, yv
}

func batchChecks[T Float](name string, y, x *Tensor[T], gamma, beta []T) (n, c, s int) {
	n, c, s = normDims(name, x.Shape)
	if y != nil && !SameShape(y.Shape, x.Shape) {
		panic(fmt.Sprintf("tensor: %s destination %v, source %v", name, y.Shape, x.Shape))
	}
	checkLen(name, "gamma", gamma, c, true)
	checkLen(name, "beta", beta, c, true)
	return n, c, s
}

// BatchNorm computes training-mode batch normalisation of x (N, C,
// spatial...): per channel, y = (x − mean)·rstd·gamma + beta with the mean and
// biased variance over the batch and spatial positions, rstd = 1/√(var+eps).
// gamma and beta have C values or are nil. mean, rstd and varUnbiased (the
// unbiased variance, for running statistics; the biased one when a channel
// has a single value) receive C values each if not nil. y may be x. It
// panics if shapes or slice lengths disagree or x has rank < 2.
func BatchNorm[T Float](y, x *Tensor[T], gamma, beta []T, eps float64, mean, rstd, varUnbiased []T) {
	n, c, s := batchChecks("BatchNorm", y, x, gamma, beta)
	checkLen("BatchNorm", "mean", mean, c, true)
	checkLen("BatchNorm", "rstd", rstd, c, true)
	checkLen("BatchNorm", "varUnbiased", varUnbiased, c, true)
	m := n * s
	// Pass 1 streams over the (sample, channel) rows in memory order and
	// keeps per-row sums around a per-channel shift; they are combined per
	// channel, then pass 2 normalises row by row.
	shift := make([]float64, c)
	if m > 0 {
		for ch := range shift {
			shift[ch] = float64(x.Data[ch*s])
		}
	}
	p1, p2 := make([]float64, n*c), make([]float64, n*c)
	grain := max(1, 32768/max(s, 1))
	parallel.For(n*c, grain, func(lo, hi int) {
		for t := lo; t < hi; t++ {
			p1[t], p2[t] = shiftedSums(x.Data[t*s:(t+1)*s], shift[t%c])
		}
	})
	mu, rs := make([]T, c), make([]T, c)
	for ch := 0; ch < c; ch++ {
		var s1, s2 float64
		for i := 0; i < n; i++ {
			s1 += p1[i*c+ch]
			s2 += p2[i*c+ch]
		}
		mf, v := moments(shift[ch], s1, s2, m)
		r := 1 / math.Sqrt(v+eps)
		mu[ch], rs[ch] = T(mf), T(r)
		if mean != nil {
			mean[ch] = T(mf)
		}
		if rstd != nil {
			rstd[ch] = T(r)
		}
		if varUnbiased != nil {
			vu := v
			if m > 1 {
				vu = v * float64(m) / float64(m-1)
			}
			varUnbiased[ch] = T(vu)
		}
	}
	BatchNormApply(y, x, gamma, beta, mu, rs)
}

// BatchNormApply computes y = (x − mean)·rstd·gamma + beta per channel with
// given statistics (C values each; gamma and beta may be nil). y may be x.
// It panics if shapes or slice lengths disagree, or mean or rstd is nil.
func BatchNormApply[T Float](y, x *Tensor[T], gamma, beta, mean, rstd []T) {
	n, c, s := batchChecks("BatchNormApply", y, x, gamma, beta)
	checkLen("BatchNormApply", "mean", mean, c, false)
	checkLen("BatchNormApply", "rstd", rstd, c, false)
	parallel.For(n*c, max(1, 32768/max(s, 1)), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			ch := t % c
			ga, be := affineAt(gamma, beta, ch)
			normRow(y.Data[t*s:(t+1)*s], x.Data[t*s:(t+1)*s], mean[ch], rstd[ch]*ga, be)
		}
	})
}

// BatchNormEval computes evaluation-mode batch normalisation with running
// statistics: y = (x − runMean)/√(runVar+eps)·gamma + beta per channel.
// gamma and beta may be nil. y may be x. It panics as BatchNormApply does.
func BatchNormEval[T Float](y, x *Tensor[T], gamma, beta, runMean, runVar []T, eps float64) {
	_, c, _ := batchChecks("BatchNormEval", y, x, gamma, beta)
	checkLen("BatchNormEval", "runVar", runVar, c, false)
	rs := make([]T, c)
	for i, v := range runVar {
		rs[i] = T(1 / math.Sqrt(float64(v)+eps))
	}
	BatchNormApply(y, x, gamma, beta, runMean, rs)
}

// BatchNormBackward computes the gradients of training-mode BatchNorm given
// g = ∂L/∂y and the forward statistics (C values each):
//
//	dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)),  ĝ = g·gamma, x̂ = (x−mean)·rstd
//	dgamma = Σ g·x̂,  dbeta = Σ g
//
// the means and sums running over the batch and spatial positions of each
// channel. gamma may be nil. Any of dx, dgamma, dbeta may be nil. dx may be
// g. It panics if shapes or slice lengths disagree.
func BatchNormBackward[T Float](dx *Tensor[T], dgamma, dbeta []T, g, x *Tensor[T], gamma, mean, rstd []T) {
	n, c, s := batchChecks("BatchNormBackward", dx, x, gamma, nil)
	if !SameShape(g.Shape, x.Shape) {
		panic(fmt.Sprintf("tensor: BatchNormBackward gradient %v, input %v", g.Shape, x.Shape))
	}
	checkLen("BatchNormBackward", "dgamma", dgamma, c, true)
	checkLen("BatchNormBackward", "dbeta", dbeta, c, true)
	checkLen("BatchNormBackward", "mean", mean, c, false)
	checkLen("BatchNormBackward", "rstd", rstd, c, false)
	m := n * s
	pa, pb := make([]float64, n*c), make([]float64, n*c)
	grain := max(1, 16384/max(s, 1))
	parallel.For(n*c, grain, func(lo, hi int) {
		for t := lo; t < hi; t++ {
			pa[t], pb[t] = gradSums(g.Data[t*s:(t+1)*s], x.Data[t*s:(t+1)*s], float64(mean[t%c]))
		}
	})
	a, bc, d := make([]T, c), make([]T, c), make([]T, c)
	for ch := 0; ch < c; ch++ {
		var sg, sgx float64
		for i := 0; i < n; i++ {
			sg += pa[i*c+ch]
			sgx += pb[i*c+ch]
		}
		rs := float64(rstd[ch])
		if dgamma != nil {
			dgamma[ch] = T(sgx * rs)
		}
		if dbeta != nil {
			dbeta[ch] = T(sg)
		}
		ga, _ := affineAt(gamma, nil, ch)
		if m > 0 {
			s1 := float64(ga) * sg
			s2 := float64(ga) * sgx * rs
			a[ch] = T(rs) * ga
			bc[ch] = T(-rs * rs * s2 / float64(m))
			d[ch] = T(-rs * s1 / float64(m))
		}
	}
	if dx == nil {
		return
	}
	parallel.For(n*c, grain, func(lo, hi int) {
		for t := lo; t < hi; t++ {
			ch := t % c
			normBackRow(dx.Data[t*s:(t+1)*s], g.Data[t*s:(t+1)*s], x.Data[t*s:(t+1)*s], mean[ch], a[ch], bc[ch], d[ch])
		}
	})
}
