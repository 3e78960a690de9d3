package autograd

import (
	"math"
	"slices"

	"github.com/fedsim/fedsim/tensor"
)

// Normalisation layers: GroupNorm (instance norm with groups = C, the DC
// ConvNet "layer norm" with groups = 1), LayerNorm over trailing dimensions,
// and BatchNorm2D in training and evaluation modes.
//
// Each layer is one fused operation: a kernel computes the statistics and
// the normalised, affine output in one call. Its backward has two forms.
// Without createGraph it is one fused kernel (dx, dγ and dβ together). With
// createGraph it is written with differentiable operations around two
// auxiliary operations, the normalised input x̂(x) and the reciprocal
// standard deviation rstd(x), whose own backward rules are again written
// with x̂ and rstd:
//
//	dx     = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)),  ĝ = g·γ
//	dγ     = Σ g·x̂,  dβ = Σ g
//	∂rstd/∂x = −rstd²·x̂/m
//
// (means over the m values sharing a statistic), so derivatives of every
// order are exact and reuse the forward statistics instead of rebuilding
// them from a chain of reductions.

type normKind int

const (
	groupKind normKind = iota // statistics per (sample, group)
	batchKind                 // statistics per channel
)

// normSpec describes a normalisation of x read as (n, c, s).
type normSpec struct {
	kind        normKind
	n, c, s, gr int // gr: groups (groupKind)
	eps         float64
}

// count is the number of values sharing one statistic.
func (sp normSpec) count() int {
	if sp.kind == batchKind {
		return sp.n * sp.s
	}
	return sp.c / sp.gr * sp.s
}

// view is the shape in which the statistics are reductions over axes().
func (sp normSpec) view() []int {
	if sp.kind == batchKind {
		return []int{sp.n, sp.c, sp.s}
	}
	return []int{sp.n, sp.gr, sp.c / sp.gr * sp.s}
}

func (sp normSpec) axes() []int {
	if sp.kind == batchKind {
		return []int{0, 2}
	}
	return []int{2}
}

// statShape is view() with the reduced axes kept as 1.
func (sp normSpec) statShape() []int {
	if sp.kind == batchKind {
		return []int{1, sp.c, 1}
	}
	return []int{sp.n, sp.gr, 1}
}

func (sp normSpec) chanShape() []int { return []int{1, sp.c, 1} }

func view3[T Float](sp normSpec, t *tensor.Tensor[T]) *tensor.Tensor[T] {
	if t == nil {
		return nil
	}
	return &tensor.Tensor[T]{Shape: []int{sp.n, sp.c, sp.s}, Data: t.Data}
}

func dataOf[T Float](v *Var[T]) []T {
	if v == nil {
		return nil
	}
	return v.Value.Data
}

func normForwardKernel[T Float](sp normSpec, y, x *tensor.Tensor[T], gamma, beta, mean, rstd, varUnb []T) {
	if sp.kind == batchKind {
		tensor.BatchNorm(view3(sp, y), view3(sp, x), gamma, beta, sp.eps, mean, rstd, varUnb)
		return
	}
	tensor.GroupNorm(view3(sp, y), view3(sp, x), sp.gr, gamma, beta, sp.eps, mean, rstd)
}

func normApplyKernel[T Float](sp normSpec, y, x *tensor.Tensor[T], gamma, beta, mean, rstd []T) {
	if sp.kind == batchKind {
		tensor.BatchNormApply(view3(sp, y), view3(sp, x), gamma, beta, mean, rstd)
		return
	}
	tensor.GroupNormApply(view3(sp, y), view3(sp, x), sp.gr, gamma, beta, mean, rstd)
}

func normBackwardKernel[T Float](sp normSpec, dx *tensor.Tensor[T], dgamma, dbeta []T, g, x *tensor.Tensor[T], gamma, mean, rstd []T) {
	var dx3 *tensor.Tensor[T]
	if dx != nil {
		dx3 = view3(sp, dx)
	}
	if sp.kind == batchKind {
		tensor.BatchNormBackward(dx3, dgamma, dbeta, view3(sp, g), view3(sp, x), gamma, mean, rstd)
		return
	}
	tensor.GroupNormBackward(dx3, dgamma, dbeta, view3(sp, g), view3(sp, x), sp.gr, gamma, mean, rstd)
}

// normStats holds a forward pass's statistics (tape-owned, statShape).
type normStats[T Float] struct {
	mean, rstd *tensor.Tensor[T]
}

// normalized returns x̂ = (x − mean)·rstd as a differentiable function of x
// with the saved statistics.
func normalized[T Float](x *Var[T], sp normSpec, st normStats[T]) *Var[T] {
	tp := x.tape
	out := tp.AllocUninit(x.Value.Shape...)
	normApplyKernel(sp, out, x.Value, nil, nil, st.mean.Data, st.rstd.Data)
	var res *Var[T]
	res = tp.Record(out, []*Var[T]{x}, func(g *Var[T], needs []bool) []*Var[T] {
		if !tp.Recording() {
			dx := tp.AllocUninit(x.Value.Shape...)
			normBackwardKernel(sp, dx, nil, nil, g.Value, x.Value, nil, st.mean.Data, st.rstd.Data)
			return []*Var[T]{tp.Const(dx)}
		}
		return []*Var[T]{normGrad(g, x, sp, st)}
	})
	return res
}

// normRstd returns rstd = 1/√(var(x)+eps) (statShape) as a differentiable
// function of x, its value the saved statistic.
func normRstd[T Float](x *Var[T], sp normSpec, st normStats[T]) *Var[T] {
	tp := x.tape
	out := &tensor.Tensor[T]{Shape: sp.statShape(), Data: st.rstd.Data}
	var res *Var[T]
	res = tp.Record(out, []*Var[T]{x}, func(g *Var[T], needs []bool) []*Var[T] {
		// ∂rstd/∂x = −rstd³·(x−μ)/m = −rstd²·x̂/m.
		xh := Reshape(normalized(x, sp, st), sp.view()...)
		coef := Scale(Mul(g, Square(res)), -1/T(max(sp.count(), 1)))
		return []*Var[T]{Reshape(Mul(xh, coef), x.Value.Shape...)}
	})
	return res
}

// normGrad returns the input gradient of the normalisation x ↦ x̂ for an
// upstream gradient d of x's shape,
//
//	B(d, x) = rstd·(d − mean(d) − x̂·mean(d·x̂)),
//
// as a differentiable function of both d and x, computed by the fused
// backward kernel with the saved statistics. B is linear and self-adjoint
// in d, so its d-gradient is B again; its x-gradient goes through x̂(x) and
// rstd(x):
//
//	∂/∂x̂:    −rstd·(u·mean(d·x̂) + d·mean(u·x̂))
//	∂/∂rstd: Σ u·B/rstd
//
// pulled back to x by B itself (the backward of x̂) and by
// ∂rstd/∂x = −rstd²·x̂/m.
func normGrad[T Float](d, x *Var[T], sp normSpec, st normStats[T]) *Var[T] {
	tp := x.tape
	out := tp.AllocUninit(x.Value.Shape...)
	normBackwardKernel(sp, out, nil, nil, d.Value, x.Value, nil, st.mean.Data, st.rstd.Data)
	var res *Var[T]
	res = tp.Record(out, []*Var[T]{d, x}, func(u *Var[T], needs []bool) []*Var[T] {
		gd, gx := normGradVJP(u, d, x, res, sp, st, needs[0], needs[1])
		return []*Var[T]{gd, gx}
	})
	return res
}

// normGradVJP returns the gradients of <u, b> with respect to d and x, where
// b = B(d, x) is the variable normGrad produced.
func normGradVJP[T Float](u, d, x, b *Var[T], sp normSpec, st normStats[T], needD, needX bool) (gd, gx *Var[T]) {
	tp := x.tape
	if !tp.Recording() && sp.kind == groupKind {
		gd, _, gx = fusedNormGradVJP(u, d, nil, x, sp, st, needD, false, needX)
		return gd, gx
	}
	if needD {
		gd = normGrad(u, x, sp, st)
	}
	if needX {
		v, ax, shape := sp.view(), sp.axes(), x.Value.Shape
		xh := Reshape(normalized(x, sp, st), v...)
		rs := normRstd(x, sp, st)
		dv, uv := Reshape(d, v...), Reshape(u, v...)
		mdx := MeanAxes(Mul(dv, xh), ax, true)
		mux := MeanAxes(Mul(uv, xh), ax, true)
		// Broadcast operands go second (Binary's fast path).
		gxh := Mul(Add(Mul(uv, mdx), Mul(dv, mux)), Neg(rs))
		grs := Div(SumAxes(Mul(uv, Reshape(b, v...)), ax, true), rs)
		coef := Scale(Mul(grs, Square(rs)), -1/T(max(sp.count(), 1)))
		gx = Add(normGrad(Reshape(gxh, shape...), x, sp, st), Reshape(Mul(xh, coef), shape...))
	}
	return gd, gx
}

// fusedNormGradVJP runs tensor.GroupNormGradBackward: the first-order
// gradients of <u, B(g·γ, x)> with respect to g, γ (if not nil) and x.
func fusedNormGradVJP[T Float](u, g, gamma, x *Var[T], sp normSpec, st normStats[T], needG, needGamma, needX bool) (gg, ggamma, gx *Var[T]) {
	tp := x.tape
	var ggt, gxt *tensor.Tensor[T]
	var ggam []T
	if needG {
		ggt = tp.AllocUninit(x.Value.Shape...)
		gg = tp.Const(ggt)
	}
	if needGamma && gamma != nil {
		t := tp.AllocUninit(gamma.Value.Shape...)
		ggam = t.Data
		ggamma = tp.Const(t)
	}
	if needX {
		gxt = tp.AllocUninit(x.Value.Shape...)
		gx = tp.Const(gxt)
	}
	tensor.GroupNormGradBackward(view3(sp, ggt), view3(sp, gxt), ggam, view3(sp, u.Value), view3(sp, g.Value), view3(sp, x.Value), sp.gr, dataOf(gamma), st.mean.Data, st.rstd.Data)
	return gg, ggamma, gx
}

// normGradAffine returns B(g·γ, x), the input gradient of an affine
// normalisation, as one operation: the product g·γ is formed only when this
// operation is itself differentiated, so a recorded first backward pass
// keeps one buffer per layer instead of two.
func normGradAffine[T Float](g, gamma, x *Var[T], sp normSpec, st normStats[T]) *Var[T] {
	tp := x.tape
	out := tp.AllocUninit(x.Value.Shape...)
	normBackwardKernel(sp, out, nil, nil, g.Value, x.Value, gamma.Value.Data, st.mean.Data, st.rstd.Data)
	ch := sp.chanShape()
	var res *Var[T]
	res = tp.Record(out, []*Var[T]{g, gamma, x}, func(u *Var[T], needs []bool) []*Var[T] {
		if !tp.Recording() && sp.kind == groupKind {
			gg, ggamma, gx := fusedNormGradVJP(u, g, gamma, x, sp, st, needs[0], needs[1], needs[2])
			return []*Var[T]{gg, ggamma, gx}
		}
		gm := Reshape(gamma, ch...)
		g3 := Reshape(g, sp.n, sp.c, sp.s)
		d := Reshape(Mul(g3, gm), x.Value.Shape...)
		gd, gx := normGradVJP(u, d, x, res, sp, st, needs[0] || needs[1], needs[2])
		var gg, ggamma *Var[T]
		if needs[0] {
			gg = Reshape(Mul(Reshape(gd, sp.n, sp.c, sp.s), gm), x.Value.Shape...)
		}
		if needs[1] {
			ggamma = Reshape(SumTo(Mul(Reshape(gd, sp.n, sp.c, sp.s), g3), ch), gamma.Value.Shape...)
		}
		return []*Var[T]{gg, ggamma, gx}
	})
	return res
}

// normParamGrad returns Σ g·x̂ per channel (shape chanShape), the scale
// parameter's gradient, as one operation with no full-size temporary.
func normParamGrad[T Float](g, x *Var[T], sp normSpec, st normStats[T]) *Var[T] {
	tp := x.tape
	out := tp.AllocUninit(sp.chanShape()...)
	normBackwardKernel(sp, nil, out.Data, nil, g.Value, x.Value, nil, st.mean.Data, st.rstd.Data)
	return tp.Record(out, []*Var[T]{g, x}, func(u *Var[T], needs []bool) []*Var[T] {
		var gg, gx *Var[T]
		if needs[0] {
			xh := Reshape(normalized(x, sp, st), sp.n, sp.c, sp.s)
			gg = Reshape(Mul(xh, u), x.Value.Shape...)
		}
		if needs[1] {
			gx = normGrad(Reshape(Mul(Reshape(g, sp.n, sp.c, sp.s), u), x.Value.Shape...), x, sp, st)
		}
		return []*Var[T]{gg, gx}
	})
}

// normOp is the fused normalisation with optional affine parameters (of C
// values, any shape). It returns the output and the statistics; varUnb, if
// not nil, receives the unbiased batch variance (batchKind only).
func normOp[T Float](tp *Tape[T], x, gamma, beta *Var[T], sp normSpec, varUnb []T) (*Var[T], normStats[T]) {
	st := normStats[T]{mean: tp.AllocUninit(sp.statShape()...), rstd: tp.AllocUninit(sp.statShape()...)}
	out := tp.AllocUninit(x.Value.Shape...)
	normForwardKernel(sp, out, x.Value, dataOf(gamma), dataOf(beta), st.mean.Data, st.rstd.Data, varUnb)
	ins := []*Var[T]{x}
	gi, bi := -1, -1
	if gamma != nil {
		gi = len(ins)
		ins = append(ins, gamma)
	}
	if beta != nil {
		bi = len(ins)
		ins = append(ins, beta)
	}
	y := tp.Record(out, ins, func(g *Var[T], needs []bool) []*Var[T] {
		grads := make([]*Var[T], len(ins))
		needG := gi >= 0 && needs[gi]
		needB := bi >= 0 && needs[bi]
		if !tp.Recording() {
			var dx *tensor.Tensor[T]
			var dg, db []T
			if needs[0] {
				dx = tp.AllocUninit(x.Value.Shape...)
				grads[0] = tp.Const(dx)
			}
			if needG {
				t := tp.AllocUninit(gamma.Value.Shape...)
				dg = t.Data
				grads[gi] = tp.Const(t)
			}
			if needB {
				t := tp.AllocUninit(beta.Value.Shape...)
				db = t.Data
				grads[bi] = tp.Const(t)
			}
			normBackwardKernel(sp, dx, dg, db, g.Value, x.Value, dataOf(gamma), st.mean.Data, st.rstd.Data)
			return grads
		}
		if needG {
			grads[gi] = Reshape(normParamGrad(g, x, sp, st), gamma.Value.Shape...)
		}
		if needB {
			grads[bi] = Reshape(SumTo(Reshape(g, sp.n, sp.c, sp.s), sp.chanShape()), beta.Value.Shape...)
		}
		if needs[0] {
			if gamma != nil {
				grads[0] = normGradAffine(g, gamma, x, sp, st)
			} else {
				grads[0] = normGrad(g, x, sp, st)
			}
		}
		return grads
	})
	return y, st
}

// normTape checks the variables and returns their tape.
func normTape[T Float](name string, x, gamma, beta *Var[T], eps float64) (*Tape[T], bool) {
	vs := []*Var[T]{x}
	for _, v := range []*Var[T]{gamma, beta} {
		if v != nil {
			vs = append(vs, v)
		}
	}
	tp, ok := tapeOf(name, vs...)
	if !ok {
		return tp, false
	}
	if !(eps >= 0) {
		tp.Failf("%s: eps must be ≥ 0, got %g", name, eps)
		return tp, false
	}
	return tp, true
}

// checkAffine records an error unless each non-nil parameter has c values;
// want describes the expected shape.
func checkAffine[T Float](tp *Tape[T], name string, xShape []int, c int, want []int, params ...*Var[T]) bool {
	for i, p := range params {
		if p == nil {
			continue
		}
		if p.Value.Len() != c || !slices.Equal(p.Value.Shape, want) {
			what := "gamma"
			if i == 1 {
				what = "beta"
			}
			tp.Failf("%s: %s has shape %v, want %v for input %v", name, what, p.Value.Shape, want, xShape)
			return false
		}
	}
	return true
}

func nchw(shape []int) (n, c, s int) {
	n, c, s = shape[0], shape[1], 1
	for _, d := range shape[2:] {
		s *= d
	}
	return n, c, s
}

// GroupNorm normalises x of shape (N, C, spatial...) over each sample's
// groups of C/groups consecutive channels (with their spatial positions),
// as torch.nn.GroupNorm: y = (x − μ)/√(σ² + eps)·γ_c + β_c with the biased
// variance. gamma and beta have shape (C), or are nil for no affine
// transform (each independently). groups = C is instance norm (the
// dataset-distillation ConvNet's default, eps 1e-5); groups = 1 is its
// "layernorm" variant. groups must divide C.
func GroupNorm[T Float](x *Var[T], groups int, gamma, beta *Var[T], eps float64) *Var[T] {
	tp, ok := normTape("GroupNorm", x, gamma, beta, eps)
	if !ok {
		return tp.placeholder()
	}
	sh := x.Value.Shape
	if len(sh) < 2 {
		tp.Failf("GroupNorm: input must be (N, C, ...), got shape %v", sh)
		return tp.placeholder()
	}
	n, c, s := nchw(sh)
	if groups <= 0 || c%groups != 0 {
		tp.Failf("GroupNorm: %d groups do not divide the %d channels of input %v; use a divisor of %d", groups, c, sh, c)
		return tp.placeholder()
	}
	if !checkAffine(tp, "GroupNorm", sh, c, []int{c}, gamma, beta) {
		return tp.placeholder()
	}
	y, _ := normOp(tp, x, gamma, beta, normSpec{kind: groupKind, n: n, c: c, s: s, gr: groups, eps: eps}, nil)
	return y
}

// InstanceNorm is GroupNorm with one group per channel
// (nn.GroupNorm(C, C) ≡ nn.InstanceNorm2d(C, affine=True)).
func InstanceNorm[T Float](x *Var[T], gamma, beta *Var[T], eps float64) *Var[T] {
	c := 1
	if len(x.Value.Shape) >= 2 {
		c = x.Value.Shape[1]
	}
	return GroupNorm(x, max(c, 1), gamma, beta, eps)
}

// LayerNorm normalises x over its trailing dimensions normalizedShape, as
// torch.nn.LayerNorm: each slice of prod(normalizedShape) values gets zero
// mean and unit (biased) variance, then y = x̂·γ + β with gamma and beta of
// shape normalizedShape, or nil.
func LayerNorm[T Float](x *Var[T], normalizedShape []int, gamma, beta *Var[T], eps float64) *Var[T] {
	tp, ok := normTape("LayerNorm", x, gamma, beta, eps)
	if !ok {
		return tp.placeholder()
	}
	sh := x.Value.Shape
	k := len(normalizedShape)
	if k == 0 || k > len(sh) || !slices.Equal(sh[len(sh)-k:], normalizedShape) {
		tp.Failf("LayerNorm: normalized shape %v is not a non-empty suffix of input shape %v", normalizedShape, sh)
		return tp.placeholder()
	}
	d := tensor.Size(normalizedShape)
	rows := tensor.Size(sh[:len(sh)-k])
	if !checkAffine(tp, "LayerNorm", sh, d, normalizedShape, gamma, beta) {
		return tp.placeholder()
	}
	y, _ := normOp(tp, x, gamma, beta, normSpec{kind: groupKind, n: rows, c: d, s: 1, gr: 1, eps: eps}, nil)
	return y
}

// BatchNorm2D is training-mode batch normalisation of x (N, C, H, W; any
// rank ≥ 2 with channels second works): per channel, y = (x − μ)/√(σ²+eps)·
// γ + β with the batch mean and biased variance over N and the spatial
// positions. gamma and beta have shape (C) or are nil. It also returns the
// batch mean and the unbiased variance (C values each, owned by the tape:
// copy them out before Release) for updating running statistics, as
// PyTorch does with momentum; the unbiased variance is the biased one when
// a channel has a single value. On error (recorded on the tape) both are
// nil.
func BatchNorm2D[T Float](x, gamma, beta *Var[T], eps float64) (y *Var[T], mean, varUnbiased *tensor.Tensor[T]) {
	tp, ok := normTape("BatchNorm2D", x, gamma, beta, eps)
	if !ok {
		return tp.placeholder(), nil, nil
	}
	sh := x.Value.Shape
	if len(sh) < 2 {
		tp.Failf("BatchNorm2D: input must be (N, C, H, W), got shape %v", sh)
		return tp.placeholder(), nil, nil
	}
	n, c, s := nchw(sh)
	if !checkAffine(tp, "BatchNorm2D", sh, c, []int{c}, gamma, beta) {
		return tp.placeholder(), nil, nil
	}
	vu := tp.AllocUninit(c)
	y, st := normOp(tp, x, gamma, beta, normSpec{kind: batchKind, n: n, c: c, s: s, eps: eps}, vu.Data)
	return y, &tensor.Tensor[T]{Shape: []int{c}, Data: st.mean.Data}, vu
}

// BatchNorm2DEval is evaluation-mode batch normalisation with running
// statistics (C values each, treated as constants): y = (x − runMean)/
// √(runVar+eps)·γ + β per channel. gamma and beta have shape (C) or are nil.
func BatchNorm2DEval[T Float](x, gamma, beta *Var[T], runMean, runVar *tensor.Tensor[T], eps float64) *Var[T] {
	tp, ok := normTape("BatchNorm2DEval", x, gamma, beta, eps)
	if !ok {
		return tp.placeholder()
	}
	sh := x.Value.Shape
	if len(sh) < 2 {
		tp.Failf("BatchNorm2DEval: input must be (N, C, H, W), got shape %v", sh)
		return tp.placeholder()
	}
	n, c, s := nchw(sh)
	if !checkAffine(tp, "BatchNorm2DEval", sh, c, []int{c}, gamma, beta) {
		return tp.placeholder()
	}
	if runMean == nil || runVar == nil || runMean.Len() != c || runVar.Len() != c {
		tp.Failf("BatchNorm2DEval: running mean and variance need %d values each for input %v", c, sh)
		return tp.placeholder()
	}
	ch := []int{1, c, 1}
	rm := tp.AllocUninit(ch...)
	copy(rm.Data, runMean.Data)
	rs := tp.AllocUninit(ch...)
	for i, v := range runVar.Data {
		rs.Data[i] = T(1 / math.Sqrt(float64(v)+eps))
	}
	out := tp.AllocUninit(sh...)
	x3 := &tensor.Tensor[T]{Shape: []int{n, c, s}, Data: x.Value.Data}
	tensor.BatchNormApply(&tensor.Tensor[T]{Shape: x3.Shape, Data: out.Data}, x3, dataOf(gamma), dataOf(beta), rm.Data, rs.Data)
	ins := []*Var[T]{x}
	gi, bi := -1, -1
	if gamma != nil {
		gi = len(ins)
		ins = append(ins, gamma)
	}
	if beta != nil {
		bi = len(ins)
		ins = append(ins, beta)
	}
	return tp.Record(out, ins, func(g *Var[T], needs []bool) []*Var[T] {
		// An affine map of x: the rule is built from operations in both
		// modes (element-wise passes, no statistics).
		grads := make([]*Var[T], len(ins))
		g3 := Reshape(g, n, c, s)
		rsV := tp.Const(rs)
		if needs[0] {
			a := rsV
			if gamma != nil {
				a = Mul(rsV, Reshape(gamma, ch...))
			}
			grads[0] = Reshape(Mul(g3, a), sh...)
		}
		if gi >= 0 && needs[gi] {
			xhat := Mul(Sub(Reshape(x, n, c, s), tp.Const(rm)), rsV)
			grads[gi] = Reshape(SumTo(Mul(g3, xhat), ch), gamma.Value.Shape...)
		}
		if bi >= 0 && needs[bi] {
			grads[bi] = Reshape(SumTo(g3, ch), beta.Value.Shape...)
		}
		return grads
	})
}
