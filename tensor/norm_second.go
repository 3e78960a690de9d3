package tensor

import (
	"fmt"

	"github.com/fedsim/fedsim/internal/parallel"
)

// GroupNormGradBackward is the first-order backward of the group-norm input
// gradient B(d, x) = rstd·(d − mean(d) − x̂·mean(d·x̂)) with d = g·γ (means
// per (sample, group), x̂ = (x − mean)·rstd, γ per channel or nil for 1).
// Given the upstream gradient u of B it writes
//
//	gg = ∂<u,B>/∂g = γ·B(u, x)
//	gγ = ∂<u,B>/∂γ = Σ_{n, spatial} g·B(u, x)      (per channel)
//	gx = ∂<u,B>/∂x = B(G, x) − (L·rstd/m)·x̂,
//	     G = −rstd·(d·P/m + c·u), P = Σu·x̂, c = mean(d·x̂), L = <u, B>,
//
// each skipped when nil (gγ also when γ is nil). This is what a
// gradient-matching step's second backward pass needs for every
// normalisation layer: one kernel, two passes over each group, no
// temporaries. x, g, u, gg and gx have shape (N, C, …); mean and rstd have
// N·groups values; gamma and ggamma C. It panics if shapes or lengths
// disagree.
func GroupNormGradBackward[T Float](gg, gx *Tensor[T], ggamma []T, u, g, x *Tensor[T], groups int, gamma, mean, rstd []T) {
	n, c, s := groupChecks("GroupNormGradBackward", nil, x, groups, gamma, nil)
	for _, t := range []*Tensor[T]{gg, gx, u, g} {
		if t != nil && !SameShape(t.Shape, x.Shape) {
			panic(fmt.Sprintf("tensor: GroupNormGradBackward operand %v, input %v", t.Shape, x.Shape))
		}
	}
	checkLen("GroupNormGradBackward", "mean", mean, n*groups, false)
	checkLen("GroupNormGradBackward", "rstd", rstd, n*groups, false)
	checkLen("GroupNormGradBackward", "ggamma", ggamma, c, true)
	if gamma == nil {
		ggamma = nil
	}
	cpg := c / groups
	m := cpg * s
	if m == 0 {
		return
	}
	var pg []float64 // per-(sample, channel) partial sums for gγ
	if ggamma != nil {
		pg = make([]float64, n*c)
	}
	fm := float64(m)
	parallel.For(n*groups, max(1, 16384/m), func(lo, hi int) {
		sums := make([]float64, 3*cpg) // per channel: Σg, Σg·x̂, Σu·g
		for t := lo; t < hi; t++ {
			nn, c0 := t/groups, t%groups*cpg
			mu, r := float64(mean[t]), float64(rstd[t])
			var sd, sdx, su, sux, sud float64
			for ci := 0; ci < cpg; ci++ {
				ga, _ := affineAt(gamma, nil, c0+ci)
				off := (nn*c + c0 + ci) * s
				xr, ur, gr := x.Data[off:off+s], u.Data[off:off+s], g.Data[off:off+s]
				a, b := gradSums(gr, xr, mu)   // Σg, Σg·(x−mean)
				uc, ux := gradSums(ur, xr, mu) // Σu, Σu·(x−mean)
				_, e := gradSums(ur, gr, 0)    // Σu·g
				b *= r
				sums[3*ci], sums[3*ci+1], sums[3*ci+2] = a, b, e
				su += uc
				sux += ux * r
				sd += float64(ga) * a
				sdx += float64(ga) * b
				sud += float64(ga) * e
			}
			// B(u, x)_i = r·u_i + bu + ku·x̂_i
			bu, ku := -r*su/fm, -r*sux/fm
			cc := sdx / fm
			l := r * (sud - sd/fm*su - cc*sux)
			// G_i = ga·d_i + gb·u_i; its sums follow from the ones above.
			gA, gB := -r*sux/fm, -r*cc
			sg := gA*sd + gB*su
			sgx := gA*sdx + gB*sux
			// gx_i = r·(G_i − SG/m − x̂_i·SGx/m) − (L·r/m)·x̂_i
			kx, bx := -r*sgx/fm-l*r/fm, -r*sg/fm
			for ci := 0; ci < cpg; ci++ {
				ga, _ := affineAt(gamma, nil, c0+ci)
				fga := float64(ga)
				off := (nn*c + c0 + ci) * s
				xr, ur, gr := x.Data[off:off+s], u.Data[off:off+s], g.Data[off:off+s]
				if gg != nil { // γ·(r·u + bu + ku·x̂)
					normBackRow(gg.Data[off:off+s], ur, xr, T(mu), T(fga*r), T(fga*ku*r), T(fga*bu))
				}
				if gx != nil { // r·γ·gA·g + r·gB·u + bx + kx·x̂
					d := gx.Data[off : off+s]
					normBackRow(d, gr, xr, T(mu), T(r*gA*fga), T(kx*r), T(bx))
					axpyRow(T(r*gB), ur, d)
				}
				if pg != nil { // Σg·B(u, x) = r·Σu·g + bu·Σg + ku·Σg·x̂
					a, b, e := sums[3*ci], sums[3*ci+1], sums[3*ci+2]
					pg[nn*c+c0+ci] = r*e + bu*a + ku*b
				}
			}
		}
	})
	if pg != nil {
		reduceRows(ggamma, pg, n, c)
	}
}
