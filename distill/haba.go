package distill

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/internal/npz"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// MethodHaBa is HaBa, dataset factorization into hallucination networks
// and bases (Liu et al., NeurIPS 2022; survey eq. 36), trained with
// trajectory matching as the paper's default baseline (MTT).
const MethodHaBa = "haba"

// HaBaConfig configures haba. Zero values select the defaults listed per
// field; the trajectory-matching settings (buffer, student steps, expert
// epochs, start epochs, step size and its learning rate) come from
// Config.TM, the bases' learning rate from Config.LRImg and the momentum
// of bases, hallucinators and step size from Config.Momentum (haba
// defaults: LRImg 100 and momentum 0.95, the reference's IPC-1 script).
type HaBaConfig struct {
	// Bases is the number of bases per class (default: the most that fit
	// the budget next to the hallucinators); Hallucinators the number of
	// hallucinator networks shared by all classes (default 5, the
	// reference's n_style). A class gets Bases·Hallucinators images.
	Bases         int `json:"bases,omitempty"`
	Hallucinators int `json:"hallucinators,omitempty"`
	// Width is the hallucinators' feature channels (default: the image
	// channels, as the reference) and Kernel their square kernel (default
	// 3): encoder conv k×k without padding, element-wise scale and shift
	// maps over the (H−k+1)×(W−k+1) features, transposed conv k×k back.
	Width  int `json:"width,omitempty"`
	Kernel int `json:"kernel,omitempty"`
	// BudgetIPC, if set, charges the set against BudgetIPC plain images
	// per class instead of Config.IPC (an explicit override: at IPC 1 not
	// even one basis per class leaves room for hallucinators).
	BudgetIPC int `json:"budget_ipc,omitempty"`
	// LRHal is the hallucinators' SGD learning rate (default 100, the
	// reference's lr_style).
	LRHal float64 `json:"lr_hal,omitempty"`
	// Lambda is λ, the weight of the hallucinators' diversity term
	// λ·mean((cos(f(x₀), f(x₁)) + 1)/2) (default 0.1, the reference's
	// lambda_club_content); a negative value turns the adversarial
	// constraint off (λ = 0 and no extractor training).
	Lambda float64 `json:"lambda,omitempty"`
	// The adversary: a small feature extractor f (two conv blocks of
	// ExtWidth channels, default 16, global average pooling, a linear
	// classifier) trained with SGD at LRExt (default 0.001) and momentum
	// ExtMomentum (default 0.9) on WCls·cross-entropy (default 1) +
	// WLikeli·mean((1 − cos)/2) (default 0.1) + WContrast·SupCon
	// (default 0.1) at temperature Temperature (default 0.07).
	ExtWidth    int     `json:"ext_width,omitempty"`
	LRExt       float64 `json:"lr_ext,omitempty"`
	ExtMomentum float64 `json:"ext_momentum,omitempty"`
	WCls        float64 `json:"w_cls,omitempty"`
	WLikeli     float64 `json:"w_likeli,omitempty"`
	WContrast   float64 `json:"w_contrast,omitempty"`
	Temperature float64 `json:"temperature,omitempty"`
}

// habaDefaults fills haba's zero fields. It runs before the generic
// defaults and tmDefaults, so its image learning rate and momentum win.
func (cfg Config) habaDefaults() Config {
	h := &cfg.HaBa
	if h.Hallucinators == 0 {
		h.Hallucinators = 5
	}
	if h.Kernel == 0 {
		h.Kernel = 3
	}
	if h.LRHal == 0 {
		h.LRHal = 100
	}
	if h.Lambda == 0 {
		h.Lambda = 0.1
	}
	if h.ExtWidth == 0 {
		h.ExtWidth = 16
	}
	if h.LRExt == 0 {
		h.LRExt = 0.001
	}
	if h.ExtMomentum == 0 {
		h.ExtMomentum = 0.9
	}
	if h.WCls == 0 {
		h.WCls = 1
	}
	if h.WLikeli == 0 {
		h.WLikeli = 0.1
	}
	if h.WContrast == 0 {
		h.WContrast = 0.1
	}
	if h.Temperature == 0 {
		h.Temperature = 0.07
	}
	if cfg.LRImg == 0 {
		cfg.LRImg = 100
	}
	if cfg.Momentum == 0 {
		cfg.Momentum = 0.95
	}
	return cfg
}

// habaValidate checks haba's fields (after Defaults).
func (cfg Config) habaValidate() []error {
	var errs []error
	h := cfg.HaBa
	fin := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	if h.Bases < 0 || h.Width < 0 || h.BudgetIPC < 0 {
		errs = append(errs, fmt.Errorf("haba bases %d, width %d and budget IPC %d must not be negative (0: the default)", h.Bases, h.Width, h.BudgetIPC))
	}
	if h.Hallucinators < 2 {
		errs = append(errs, fmt.Errorf("haba hallucinators %d: want at least 2 (the contrastive constraint compares two hallucinators of one basis; set --haba-hallucinators, default 5)", h.Hallucinators))
	}
	if h.Kernel < 1 || h.Kernel%2 == 0 {
		errs = append(errs, fmt.Errorf("haba kernel %d: want an odd size ≥ 1 (default 3)", h.Kernel))
	}
	if h.ExtWidth < 1 {
		errs = append(errs, fmt.Errorf("haba extractor width %d must be positive (default 16)", h.ExtWidth))
	}
	if !(h.LRHal > 0) || !fin(h.LRHal) || !(h.LRExt > 0) || !fin(h.LRExt) {
		errs = append(errs, fmt.Errorf("haba learning rates of the hallucinators %g and the extractor %g must be positive and finite (defaults 100 and 0.001)", h.LRHal, h.LRExt))
	}
	if !(h.ExtMomentum >= 0 && h.ExtMomentum < 1) {
		errs = append(errs, fmt.Errorf("haba extractor momentum %g must be in [0, 1) (default 0.9)", h.ExtMomentum))
	}
	if !fin(h.Lambda) || !(h.WCls >= 0) || !fin(h.WCls) || !(h.WLikeli >= 0) || !fin(h.WLikeli) || !(h.WContrast >= 0) || !fin(h.WContrast) {
		errs = append(errs, fmt.Errorf("haba weights λ %g, classification %g, likelihood %g and contrast %g must be finite, the last three not negative", h.Lambda, h.WCls, h.WLikeli, h.WContrast))
	}
	if !(h.Temperature > 0) || !fin(h.Temperature) {
		errs = append(errs, fmt.Errorf("haba contrastive temperature %g must be positive (default 0.07)", h.Temperature))
	}
	if cfg.TM.Labels != LabelsHard {
		errs = append(errs, fmt.Errorf("haba learns hard-label sets only: labels %q (drop --labels)", cfg.TM.Labels))
	}
	return errs
}

// habaNet describes the sizes of a haba set: classes, bases per class nb,
// hallucinators nh, image shape (C, H, W), hallucinator width m and
// kernel k, extractor width e.
type habaNet struct {
	classes, nb, nh int
	c, h, w         int
	m, k, e         int
}

// halShapes returns the shapes of one hallucinator's six tensors: encoder
// weights (m, C, k, k) and bias (m), scale and shift (m, H−k+1, W−k+1),
// decoder weights (m, C, k, k) (the transposed convolution's filters) and
// bias (C).
func (n habaNet) halShapes() [][]int {
	fh, fw := n.h-n.k+1, n.w-n.k+1
	return [][]int{{n.m, n.c, n.k, n.k}, {n.m}, {n.m, fh, fw}, {n.m, fh, fw}, {n.m, n.c, n.k, n.k}, {n.c}}
}

// extShapes returns the extractor's tensors: conv (e, C, 3, 3) + bias,
// conv (e, e, 3, 3) + bias, linear (classes, e) + bias.
func (n habaNet) extShapes() [][]int {
	return [][]int{{n.e, n.c, 3, 3}, {n.e}, {n.e, n.e, 3, 3}, {n.e}, {n.classes, n.e}, {n.classes}}
}

func sizeOf(shapes [][]int) int {
	s := 0
	for _, sh := range shapes {
		s += tensor.Size(sh)
	}
	return s
}

// halFloats is the number of stored floats of one hallucinator.
func (n habaNet) halFloats() int { return sizeOf(n.halShapes()) }

// floats is the budget charge of the set: every basis value, every
// hallucinator weight and the learned step size, which evaluation uses
// (the extractor is a training aid and is not stored).
func (n habaNet) floats() int { return n.classes*n.nb*n.c*n.h*n.w + n.nh*n.halFloats() + 1 }

// habaSize resolves the bases per class and the hallucinator width for a
// configuration and data shape, or explains why the factors do not fit
// the budget of classes·IPC plain images.
func habaSize(cfg Config, classes int, shape []int) (habaNet, error) {
	h := cfg.HaBa
	n := habaNet{classes: classes, nh: h.Hallucinators, c: shape[0], h: shape[1], w: shape[2], m: h.Width, k: h.Kernel, e: h.ExtWidth}
	if n.m == 0 {
		n.m = n.c
	}
	if n.k > n.h || n.k > n.w {
		return n, fmt.Errorf("distill: haba: kernel %d is larger than the %d×%d images (lower --haba-kernel)", n.k, n.h, n.w)
	}
	bipc, flag := cfg.IPC, "--ipc"
	if h.BudgetIPC > 0 {
		bipc, flag = h.BudgetIPC, "--haba-budget-ipc"
	}
	dim := n.c * n.h * n.w
	budget := classes * bipc * dim
	hal := n.nh * n.halFloats()
	n.nb = h.Bases
	if n.nb == 0 {
		n.nb = (budget - hal) / (classes * dim)
		if n.nb < 1 {
			return n, fmt.Errorf("distill: haba: %d hallucinators (%d floats each) and one basis per class (%d floats) store %d floats, more than the budget of %d images per class (%d floats); raise the budget with --haba-budget-ipc %d (or %s), or use fewer hallucinators (--haba-hallucinators) or a narrower one (--haba-width)",
				n.nh, n.halFloats(), classes*dim, hal+classes*dim, bipc, budget, (hal+classes*dim+classes*dim-1)/(classes*dim), flag)
		}
	}
	if n.floats() > budget {
		return n, fmt.Errorf("distill: haba: %d bases per class (%d floats) and %d hallucinators (%d floats each) store %d floats, more than the budget of %d images per class (%d floats): lower --haba-bases or --haba-hallucinators, or raise %s",
			n.nb, classes*n.nb*dim, n.nh, n.halFloats(), n.floats(), bipc, budget, flag)
	}
	return n, nil
}

// hallucinate maps bases b (N, C, H, W) through one hallucinator with
// tensors ps (halShapes order), eq. 36: f₁ = enc(b), f₂ = σ ⊙ f₁ + μ,
// s = dec(f₂). enc is a k×k convolution without padding and dec its
// transposed counterpart, so s has b's shape; σ and μ are maps over the
// feature grid (as the reference's StyleTranslator).
func hallucinate[T tensor.Float](b *ag.Var[T], ps []*ag.Var[T]) *ag.Var[T] {
	h, w := b.Value.Shape[2], b.Value.Shape[3]
	f1 := ag.Conv2D(b, ps[0], ps[1], tensor.ConvParams{StrideH: 1, StrideW: 1})
	f2 := ag.Add(ag.Mul(f1, ps[2]), ps[3])
	s := ag.Conv2DTranspose(f2, ps[4], tensor.ConvParams{StrideH: 1, StrideW: 1}, h, w)
	c := ps[5].Value.Shape[0]
	return ag.Add(s, ag.Reshape(ps[5], c, 1, 1))
}

// decodeAll returns every (basis, hallucinator) image, (N·nh, C, H, W):
// image j·nh + t is hallucinator t applied to basis j, so with class-major
// bases the images are class-major too.
func decodeAll[T tensor.Float](bases *ag.Var[T], hal [][]*ag.Var[T]) *ag.Var[T] {
	outs := make([]*ag.Var[T], len(hal))
	for t, ps := range hal {
		outs[t] = hallucinate(bases, ps)
	}
	n := bases.Value.Shape[0]
	sz := bases.Value.Shape[1:]
	// Stack along a new axis 1, then merge it with the bases' axis.
	for t := range outs {
		outs[t] = ag.Reshape(outs[t], append([]int{n, 1}, sz...)...)
	}
	x := ag.Concat(1, outs...)
	return ag.Reshape(x, append([]int{n * len(hal)}, sz...)...)
}

// extForward is the adversary f: two blocks conv 3×3 (pad 1) → ReLU →
// average pool 2×2, then global average pooling (the embedding, (N, e))
// and a linear classifier (the logits, (N, classes)).
func extForward[T tensor.Float](x *ag.Var[T], ps []*ag.Var[T]) (emb, logits *ag.Var[T]) {
	p := tensor.ConvParams{StrideH: 1, StrideW: 1, PadH: 1, PadW: 1}
	y := ag.ReLU(ag.Conv2D(x, ps[0], ps[1], p))
	if y.Value.Rank() == 4 && y.Value.Shape[2] >= 2 && y.Value.Shape[3] >= 2 {
		y = ag.AvgPool2D(y, 2, 2, 0)
	}
	y = ag.ReLU(ag.Conv2D(y, ps[2], ps[3], p))
	if y.Value.Rank() == 4 && y.Value.Shape[2] >= 2 && y.Value.Shape[3] >= 2 {
		y = ag.AvgPool2D(y, 2, 2, 0)
	}
	emb = ag.MeanAxes(y, []int{2, 3}, false)
	logits = ag.Add(ag.MatMul(emb, ps[4], false, true), ps[5])
	return emb, logits
}

// rowCos returns the cosine similarity of matching rows of a and b (N, E).
func rowCos[T tensor.Float](a, b *ag.Var[T]) *ag.Var[T] {
	dot := ag.SumAxes(ag.Mul(a, b), []int{1}, false)
	na := ag.Sqrt(ag.AddScalar(ag.SumAxes(ag.Square(a), []int{1}, false), 1e-12))
	nb := ag.Sqrt(ag.AddScalar(ag.SumAxes(ag.Square(b), []int{1}, false), 1e-12))
	return ag.Div(dot, ag.Mul(na, nb))
}

// normRows scales every row of a (N, E) to unit length.
func normRows[T tensor.Float](a *ag.Var[T]) *ag.Var[T] {
	n := a.Value.Shape[0]
	l := ag.Sqrt(ag.AddScalar(ag.SumAxes(ag.Square(a), []int{1}, false), 1e-12))
	return ag.Div(a, ag.Reshape(l, n, 1))
}

// supCon is the supervised contrastive loss (Khosla et al. 2020) of the
// unit rows f (M, E) with labels y, at temperature tau (the base
// temperature equals tau): the mean over anchors i of
// −mean_{p: y_p = y_i, p ≠ i} log softmax_{a ≠ i}(f_i·f_a / tau)_p.
func supCon[T tensor.Float](tp *ag.Tape[T], f *ag.Var[T], y []int, tau float64) *ag.Var[T] {
	m := len(y)
	self := tensor.New[T](m, m)
	pos := tensor.New[T](m, m)
	for i := range m {
		self.Data[i*m+i] = -1e4 // exp underflows to 0: the anchor is not its own candidate
		var cnt int
		for j := range m {
			if j != i && y[j] == y[i] {
				cnt++
			}
		}
		for j := range m {
			if j != i && y[j] == y[i] {
				pos.Data[i*m+j] = T(1 / float64(cnt*m))
			}
		}
	}
	sim := ag.Add(ag.Scale(ag.MatMul(f, f, false, true), T(1/tau)), tp.Const(self))
	return ag.Neg(ag.Sum(ag.Mul(ag.LogSoftmax(sim), tp.Const(pos))))
}

// habaPair is one adversarial draw: rows Bases of the bases, each made by
// hallucinators H0 and H1 (H0 ≠ H1), both images augmented with Aug
// (over the 2·len(Bases) images, first the H0 ones; nil: none).
type habaPair struct {
	Bases  []int
	H0, H1 int
	Aug    *data.Augmentation
}

// pairFeatures returns the extractor's embeddings of both images of p
// and its logits on all 2·len(p.Bases) of them.
func pairFeatures[T tensor.Float](bases *ag.Var[T], hal [][]*ag.Var[T], ext []*ag.Var[T], p habaPair) (e0, e1, logits *ag.Var[T]) {
	b := ag.IndexRows(bases, p.Bases)
	x := ag.Concat(0, hallucinate(b, hal[p.H0]), hallucinate(b, hal[p.H1]))
	if p.Aug != nil {
		x = data.Apply(p.Aug, x)
	}
	emb, logits := extForward(x, ext)
	n := len(p.Bases)
	return ag.Slice(emb, 0, 0, n), ag.Slice(emb, 0, n, 2*n), logits
}

// habaProblem is the fixed part of one haba meta-step: the trajectory
// task over the decoded images (its Batches index decodeAll's rows, Y
// their labels), the adversarial pair, the extractor's (fixed) weights
// and λ.
type habaProblem[T tensor.Float] struct {
	Task   *TrajectoryTask[T]
	Pair   habaPair
	Ext    []*tensor.Tensor[T]
	Lambda float64
}

// habaGrad is a meta-step's loss and its gradients.
type habaGrad[T tensor.Float] struct {
	Match, Diversity float64 // trajectory loss and λ·diversity term
	Bases            *tensor.Tensor[T]
	Hal              [][]*tensor.Tensor[T]
	LR               float64
}

// habaLossGrad computes the loss L = ‖θ_N − θ*‖²/D + λ·mean((cos(f(x₀),
// f(x₁)) + 1)/2) of the factors and its gradients. The trajectory part
// runs UnrolledMatchGrad on the decoded images for ∂L/∂X; the chain rule
// into the factors is one vector-Jacobian product of decodeAll seeded
// with ∂L/∂X, on the same tape as the diversity term's gradient.
func habaLossGrad[T tensor.Float](p habaProblem[T], bases *tensor.Tensor[T], hal [][]*tensor.Tensor[T], lr float64) (habaGrad[T], error) {
	var out habaGrad[T]
	tp := ag.NewTape[T]()
	defer tp.Release()
	bv := tp.Param(bases)
	hv := make([][]*ag.Var[T], len(hal))
	var wrt []*ag.Var[T]
	wrt = append(wrt, bv)
	for t, ps := range hal {
		for _, q := range ps {
			v := tp.Param(q)
			hv[t] = append(hv[t], v)
			wrt = append(wrt, v)
		}
	}
	var x *tensor.Tensor[T]
	tp.NoGrad(func() {
		if d := decodeAll(bv, hv); tp.Err() == nil {
			x = d.Value.Clone()
		}
	})
	if err := tp.Err(); err != nil {
		return out, fmt.Errorf("distill: haba decoding: %w", err)
	}
	g, err := UnrolledMatchGrad(p.Task, x, lr)
	if err != nil {
		return out, err
	}
	out.Match, out.LR = g.Loss, g.LR
	total := ag.Sum(ag.Mul(decodeAll(bv, hv), tp.Const(g.X)))
	if p.Lambda != 0 {
		ext := make([]*ag.Var[T], len(p.Ext))
		for i, q := range p.Ext {
			ext[i] = tp.Const(q)
		}
		e0, e1, _ := pairFeatures(bv, hv, ext, p.Pair)
		div := ag.Scale(ag.Mean(ag.AddScalar(rowCos(e0, e1), 1)), T(p.Lambda/2))
		if tp.Err() == nil {
			out.Diversity = float64(div.Value.Item())
		}
		total = ag.Add(total, div)
	}
	gs, err := tp.Grad([]*ag.Var[T]{total}, nil, wrt, false)
	if err != nil {
		return out, fmt.Errorf("distill: haba factor gradient: %w", err)
	}
	out.Bases = gs[0].Value.Clone()
	k := 1
	out.Hal = make([][]*tensor.Tensor[T], len(hal))
	for t, ps := range hal {
		for range ps {
			out.Hal[t] = append(out.Hal[t], gs[k].Value.Clone())
			k++
		}
	}
	return out, nil
}

// extLossGrad is the adversary's loss on pair p (images made without a
// graph into the factors) and its gradient: wCls·CE(logits, labels) +
// wLikeli·mean((1 − cos(f(x₀), f(x₁)))/2) + wContrast·SupCon; y holds
// the bases' labels.
func extLossGrad[T tensor.Float](h HaBaConfig, bases *tensor.Tensor[T], hal [][]*tensor.Tensor[T], ext []*tensor.Tensor[T], y []int, p habaPair) (float64, []*tensor.Tensor[T], error) {
	tp := ag.NewTape[T]()
	defer tp.Release()
	hv := make([][]*ag.Var[T], len(hal))
	for t, ps := range hal {
		for _, q := range ps {
			hv[t] = append(hv[t], tp.Const(q))
		}
	}
	ev := make([]*ag.Var[T], len(ext))
	for i, q := range ext {
		ev[i] = tp.Param(q)
	}
	e0, e1, logits := pairFeatures(tp.Const(bases), hv, ev, p)
	lab := make([]int, 0, 2*len(p.Bases))
	for range 2 {
		for _, j := range p.Bases {
			lab = append(lab, y[j])
		}
	}
	loss := ag.Scale(ag.CrossEntropy(logits, lab), T(h.WCls))
	loss = ag.Add(loss, ag.Scale(ag.Mean(ag.Neg(ag.AddScalar(rowCos(e0, e1), -1))), T(h.WLikeli/2)))
	f := normRows(ag.Concat(0, e0, e1))
	loss = ag.Add(loss, ag.Scale(supCon(tp, f, lab, h.Temperature), T(h.WContrast)))
	gs, err := tp.Grad([]*ag.Var[T]{loss}, nil, ev, false)
	if err != nil {
		return 0, nil, fmt.Errorf("distill: haba extractor: %w", err)
	}
	out := make([]*tensor.Tensor[T], len(gs))
	for i, g := range gs {
		out[i] = g.Value.Clone()
	}
	return float64(loss.Value.Item()), out, nil
}

// haba is the HaBa distiller. It stores per-class bases (classes·nb
// images, class-major) and nh hallucinators shared by all classes; image
// j·nh + t of the decoded set is hallucinator t applied to basis j, so a
// class gets nb·nh images. Every iteration, as the reference's
// distill_fac.py:
//
//  1. draws an expert, a start epoch and SynSteps minibatches of bases
//     (as MTT, per-sample DSA), each step with one random hallucinator,
//     and gets ∂L/∂images by differentiating the exact unrolled student
//     (UnrolledMatchGrad on the decoded images);
//  2. draws a batch of bases and two distinct hallucinators and adds the
//     adversarial diversity term λ·mean((cos(f(x₀), f(x₁)) + 1)/2) of the
//     extractor's embeddings, which the hallucinators and bases lower;
//     the matching gradient is carried into the bases and hallucinators by
//     the chain rule through decodeAll, together with the diversity one;
//  3. updates bases (SGD, LRImg), hallucinators (SGD, HaBa.LRHal) and the
//     student step size α (SGD, TM.LRLR), all with momentum
//     Config.Momentum;
//  4. draws another batch and pair and trains the extractor f to classify
//     the images and to pull the two images of a basis together
//     (likelihood term and supervised contrastive loss): the adversary the
//     hallucinators work against.
//
// Simplifications, against the reference: hallucinators start near the
// identity (encoder and decoder centre taps 1 plus small noise, σ = 1,
// μ = 0) instead of PyTorch's random init, so that the initial images
// are the real bases with small variations; the extractor is fedsim's
// own small ConvNet (ExtWidth channels, two blocks); α is not clipped at
// 0.001 and shares the images' momentum; evaluation trains on every
// (basis, hallucinator) image instead of one random hallucinator per
// basis per epoch.
type haba struct {
	cfg   Config
	net   habaNet
	real  *data.Dataset
	buf   *Buffer
	model nn.Model[float32]
	each  *data.DSA

	bases, basesVel *tensor.Tensor[float32]
	hal, halVel     [][]*tensor.Tensor[float32]
	ext, extVel     []*tensor.Tensor[float32]
	y               []int // label of every basis
	lr, lrVel       float32
	syn             *SyntheticSet
}

func newHaBa(cfg Config) *haba { return &haba{cfg: cfg} }

func (d *haba) Config() Config  { return d.cfg }
func (d *haba) Iterative() bool { return true }

// StepSize returns the learned student step size α (the evaluation's
// learning rate, as for mtt).
func (d *haba) StepSize() float64 { return float64(d.lr) }

// Synthetic returns the decoded images, class-major, hard labels.
func (d *haba) Synthetic() *SyntheticSet { return d.syn }

// Floats returns the number of stored floats the set is charged for.
func (d *haba) Floats() int { return d.net.floats() }

func (d *haba) Init(_ context.Context, real *data.Dataset) error {
	if err := d.cfg.checkData(real); err != nil {
		return err
	}
	n, err := habaSize(d.cfg, real.Classes, real.ImageShape())
	if err != nil {
		return err
	}
	for c, cnt := range real.Histogram() {
		if cnt < n.nb {
			return fmt.Errorf("distill: haba: class %d of %s has %d images, fewer than the %d bases per class", c, real.Name, cnt, n.nb)
		}
	}
	tc := d.cfg.TM
	if tc.Buffer == "" {
		return errors.New("distill: haba needs a trajectory buffer: train one with `fedsim distill buffer`, then pass --buffer DIR (Config.TM.Buffer)")
	}
	buf, err := OpenBuffer(tc.Buffer)
	if err != nil {
		return err
	}
	if buf.Experts() == 0 {
		return fmt.Errorf("distill: trajectory buffer %s has no finished expert yet", tc.Buffer)
	}
	if err := buf.CheckModel(d.cfg.Model, real.ImageShape(), real.Classes, real.Mean, real.Std); err != nil {
		return err
	}
	if need := tc.MaxStartEpoch - 1 + tc.ExpertEpochs; need > buf.Epochs() {
		return fmt.Errorf("distill: haba: start epochs up to %d plus %d expert epochs need trajectories of %d epochs; the buffer %s has %d (train a longer buffer or lower --max-start-epoch / --expert-epochs)",
			tc.MaxStartEpoch-1, tc.ExpertEpochs, need, tc.Buffer, buf.Epochs())
	}
	if d.model, err = nn.New[float32](d.cfg.Model, real.ImageShape(), real.Classes, tensor.NewRNG(0, 0)); err != nil {
		return fmt.Errorf("distill: %w", err)
	}
	if m, ok := d.model.(nn.Trainable); ok {
		m.SetTraining(true)
	}
	strategy, err := data.ParseDSAStrategy(d.cfg.DSAStrategy)
	if err != nil {
		return err
	}
	if len(strategy) > 0 {
		d.each = &data.DSA{Strategy: strategy, Params: data.DefaultDSAParams()}
	}
	d.net, d.real, d.buf = n, real, buf
	rng := tensor.NewRNG(d.cfg.Seed, streamInit)
	var init *SyntheticSet
	if d.cfg.Init == InitReal {
		init = randomReal(real, real.ClassIndices(), n.nb, rng)
	} else {
		init = noiseSet(real, n.nb, rng)
	}
	d.bases, d.y = init.X, init.Y
	d.basesVel = tensor.New[float32](d.bases.Shape...)
	d.hal, d.halVel = make([][]*tensor.Tensor[float32], n.nh), make([][]*tensor.Tensor[float32], n.nh)
	for t := range n.nh {
		d.hal[t] = initHallucinator[float32](n, rng)
		for _, q := range d.hal[t] {
			d.halVel[t] = append(d.halVel[t], tensor.New[float32](q.Shape...))
		}
	}
	d.ext = initExtractor[float32](n, tensor.NewRNG(d.cfg.Seed, streamFeature))
	for _, q := range d.ext {
		d.extVel = append(d.extVel, tensor.New[float32](q.Shape...))
	}
	d.lr, d.lrVel = float32(tc.LRInit), 0
	return d.decode()
}

// initHallucinator returns a hallucinator near the identity: centre taps
// of matching channels (feature m ↔ image channel m mod C) 1, plus
// uniform noise of ±0.3/√fan-in on every tap; σ = 1, μ = 0, biases 0.
func initHallucinator[T tensor.Float](n habaNet, rng *tensor.RNG) []*tensor.Tensor[T] {
	ps := make([]*tensor.Tensor[T], 6)
	for i, s := range n.halShapes() {
		ps[i] = tensor.New[T](s...)
	}
	a := 0.3 / math.Sqrt(float64(n.c*n.k*n.k))
	tensor.FillUniform(rng, ps[0], -a, a)
	a = 0.3 / math.Sqrt(float64(n.m*n.k*n.k))
	tensor.FillUniform(rng, ps[4], -a, a)
	centre := (n.k/2)*n.k + n.k/2
	per := make([]int, n.c) // features per image channel
	for m := range n.m {
		per[m%n.c]++
	}
	for m := range n.m {
		c := m % n.c
		ps[0].Data[(m*n.c+c)*n.k*n.k+centre] += 1
		ps[4].Data[(m*n.c+c)*n.k*n.k+centre] += T(1 / float64(per[c]))
	}
	for i := range ps[2].Data {
		ps[2].Data[i] = 1
	}
	return ps
}

// initExtractor returns the extractor's tensors, PyTorch's default
// uniform init (±1/√fan-in for weights and biases).
func initExtractor[T tensor.Float](n habaNet, rng *tensor.RNG) []*tensor.Tensor[T] {
	shapes := n.extShapes()
	fans := []int{n.c * 9, n.c * 9, n.e * 9, n.e * 9, n.e, n.e}
	ps := make([]*tensor.Tensor[T], len(shapes))
	for i, s := range shapes {
		ps[i] = tensor.New[T](s...)
		a := 1 / math.Sqrt(float64(fans[i]))
		tensor.FillUniform(rng, ps[i], -a, a)
	}
	return ps
}

// decode rebuilds the synthetic set from the factors.
func (d *haba) decode() error {
	tp := ag.NewTape[float32]()
	defer tp.Release()
	hv := make([][]*ag.Var[float32], len(d.hal))
	for t, ps := range d.hal {
		for _, q := range ps {
			hv[t] = append(hv[t], tp.Const(q))
		}
	}
	var x *tensor.Tensor[float32]
	tp.NoGrad(func() {
		if v := decodeAll(tp.Const(d.bases), hv); tp.Err() == nil {
			x = v.Value.Clone()
		}
	})
	if err := tp.Err(); err != nil {
		return fmt.Errorf("distill: haba decoding: %w", err)
	}
	y := make([]int, 0, len(d.y)*d.net.nh)
	for _, l := range d.y {
		for range d.net.nh {
			y = append(y, l)
		}
	}
	d.syn = &SyntheticSet{X: x, Y: y, Mean: slices.Clone(d.real.Mean), Std: slices.Clone(d.real.Std), Classes: d.real.Classes}
	return nil
}

// drawPair draws a batch of bases (BatchSyn of them, all if 0) and two
// distinct hallucinators, with an augmentation of the 2·batch images.
func (d *haba) drawPair(rng *tensor.RNG) habaPair {
	nb := len(d.y)
	perm := rng.Perm(nb)
	bs := d.cfg.TM.BatchSyn
	if bs <= 0 || bs > nb {
		bs = nb
	}
	p := habaPair{Bases: perm[:bs], H0: rng.IntN(d.net.nh)}
	p.H1 = (p.H0 + 1 + rng.IntN(d.net.nh-1)) % d.net.nh
	if d.each != nil {
		p.Aug = d.each.Sample(rng, 2*bs, d.net.h, d.net.w)
	}
	return p
}

// studentTask draws iteration rng's expert, start epoch, base batches,
// hallucinators and augmentations and returns the trajectory task over
// the decoded images.
func (d *haba) studentTask(rng *tensor.RNG) (*TrajectoryTask[float32], int, int, error) {
	tc := d.cfg.TM
	e := rng.IntN(d.buf.Experts())
	start := rng.IntN(tc.MaxStartEpoch)
	theta0, err := d.buf.Params(e, start)
	if err != nil {
		return nil, e, start, err
	}
	target, err := d.buf.Params(e, start+tc.ExpertEpochs)
	if err != nil {
		return nil, e, start, err
	}
	task := &TrajectoryTask[float32]{Model: d.model, Target: target, Denom: ParamDistance(theta0, target), Y: d.syn.Y}
	perturb(theta0, tc.StartNoise, rng)
	task.Start = theta0
	baseBatches, augs := StudentBatches(rng, d.bases.Shape, tc.BatchSyn, tc.SynSteps, d.each)
	for _, bb := range baseBatches {
		t := rng.IntN(d.net.nh)
		idx := make([]int, len(bb))
		for i, j := range bb {
			idx[i] = j*d.net.nh + t
		}
		task.Batches = append(task.Batches, idx)
	}
	task.Augs = augs
	return task, e, start, nil
}

func (d *haba) Step(ctx context.Context, it int) (float64, error) {
	if d.syn == nil {
		return 0, errors.New("distill: Step before Init")
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("distill: iteration %d: %w", it, err)
	}
	h := d.cfg.HaBa
	rng := iterRNG(d.cfg.Seed, it)
	task, e, start, err := d.studentTask(rng)
	if err != nil {
		return 0, err
	}
	lambda := max(h.Lambda, 0)
	pair := d.drawPair(rng)
	g, err := habaLossGrad(habaProblem[float32]{Task: task, Pair: pair, Ext: d.ext, Lambda: lambda}, d.bases, d.hal, float64(d.lr))
	if err != nil {
		return 0, fmt.Errorf("distill: haba iteration %d (expert %d, start epoch %d): %w", it, e, start, err)
	}
	loss := g.Match + g.Diversity
	if math.IsNaN(loss) || math.IsInf(loss, 0) || math.IsNaN(g.LR) || math.IsInf(g.LR, 0) {
		return loss, fmt.Errorf("%w: haba iteration %d: loss %v, step-size gradient %v (lower --lr-img or --haba-lr-hal)", ErrDiverged, it, loss, g.LR)
	}
	var extG []*tensor.Tensor[float32]
	if lambda > 0 {
		if _, extG, err = extLossGrad(h, d.bases, d.hal, d.ext, d.y, d.drawPair(rng)); err != nil {
			return loss, err
		}
	}
	// Check every update before applying any, so a failed step leaves the
	// state unchanged.
	mu := float32(d.cfg.Momentum)
	type upd struct {
		p, v, g *tensor.Tensor[float32]
		lr, mu  float32
	}
	ups := []upd{{d.bases, d.basesVel, g.Bases, float32(d.cfg.LRImg), mu}}
	for t := range d.hal {
		for i := range d.hal[t] {
			ups = append(ups, upd{d.hal[t][i], d.halVel[t][i], g.Hal[t][i], float32(h.LRHal), mu})
		}
	}
	for i := range extG {
		ups = append(ups, upd{d.ext[i], d.extVel[i], extG[i], float32(h.LRExt), float32(h.ExtMomentum)})
	}
	for _, u := range ups {
		for j, gv := range u.g.Data {
			if nx := u.p.Data[j] - u.lr*(u.mu*u.v.Data[j]+gv); math.IsNaN(float64(nx)) || math.IsInf(float64(nx), 0) {
				return loss, fmt.Errorf("%w: haba iteration %d: a factor would become %v", ErrDiverged, it, nx)
			}
		}
	}
	for _, u := range ups {
		for j, gv := range u.g.Data {
			u.v.Data[j] = u.mu*u.v.Data[j] + gv
			u.p.Data[j] -= u.lr * u.v.Data[j]
		}
	}
	d.lrVel = mu*d.lrVel + float32(g.LR)
	d.lr -= float32(d.cfg.TM.LRLR) * d.lrVel
	if err := d.decode(); err != nil {
		return loss, err
	}
	return loss, nil
}

// state flattens everything a resumed run needs besides the configuration
// and the step size: bases, hallucinators, extractor and their momenta.
func (d *haba) state() []float32 {
	var s []float32
	add := func(ts ...*tensor.Tensor[float32]) {
		for _, t := range ts {
			s = append(s, t.Data...)
		}
	}
	add(d.bases, d.basesVel)
	for t := range d.hal {
		add(d.hal[t]...)
		add(d.halVel[t]...)
	}
	add(d.ext...)
	add(d.extVel...)
	return s
}

func (d *haba) setState(s []float32) error {
	if want := len(d.state()); len(s) != want {
		return fmt.Errorf("distill: haba: the checkpoint holds %d factor values, this run needs %d", len(s), want)
	}
	take := func(ts ...*tensor.Tensor[float32]) {
		for _, t := range ts {
			copy(t.Data, s[:len(t.Data)])
			s = s[len(t.Data):]
		}
	}
	take(d.bases, d.basesVel)
	for t := range d.hal {
		take(d.hal[t]...)
		take(d.halVel[t]...)
	}
	take(d.ext...)
	take(d.extVel...)
	return nil
}

// Checkpoint stores the decoded set as the checkpoint's set (so the file
// is also a synthetic.npz), the step size and its momentum in
// Config.TMState, and the factors with all optimiser state flattened into
// the velocity array (the decoded images' shape, zero-padded). Checkpoint
// has no other slot, so values that do not fit there (a narrow set with
// few hallucinators) continue in TMState.LabelVelocity, which haba does
// not otherwise use.
func (d *haba) Checkpoint(next int) *Checkpoint {
	s := d.state()
	v := tensor.New[float32](d.syn.X.Shape...)
	n := copy(v.Data, s)
	st := &TMState{LR: d.lr, LRVelocity: d.lrVel}
	if n < len(s) {
		st.LabelVelocity = slices.Clone(s[n:])
	}
	c := &Checkpoint{Config: d.cfg, Next: next, Syn: d.syn.Clone(), Velocity: v}
	c.Config.TMState = st
	return c
}

func (d *haba) Restore(c *Checkpoint) error {
	if d.syn == nil {
		return errors.New("distill: Restore before Init")
	}
	if c == nil || c.Syn == nil || c.Syn.X == nil {
		return errors.New("distill: Restore: the checkpoint has no synthetic set")
	}
	st := c.Config.TMState
	if st == nil {
		return errors.New("distill: the checkpoint has no step size; it was not written by haba")
	}
	plain := *c
	plain.Config.TMState = nil
	if err := plain.matches(d.cfg); err != nil {
		return err
	}
	if math.IsNaN(float64(st.LR)) || math.IsInf(float64(st.LR), 0) || math.IsNaN(float64(st.LRVelocity)) || math.IsInf(float64(st.LRVelocity), 0) {
		return errors.New("distill: the checkpoint's step size is not finite")
	}
	if c.Velocity == nil || !equalShape(c.Velocity.Shape, d.syn.X.Shape) {
		return fmt.Errorf("distill: haba: the checkpoint has no factors of this run's shape (images %v)", d.syn.X.Shape)
	}
	want := len(d.state())
	s := slices.Clone(c.Velocity.Data[:min(want, len(c.Velocity.Data))])
	s = append(s, st.LabelVelocity...)
	if err := d.setState(s); err != nil {
		return err
	}
	d.lr, d.lrVel = st.LR, st.LRVelocity
	return d.decode()
}

// SaveFactors writes the stored factors to path (atomically) as an .npz
// file: bases float32 (classes·nb, C, H, W) with bases_y int64, the
// hallucinators stacked over their first axis: enc_w (nh, m, C, k, k),
// enc_b (nh, m), scale and shift (nh, m, H−k+1, W−k+1), dec_w (nh, m, C,
// k, k) (transposed-convolution filters) and dec_b (nh, C); step_size
// float32 (1), the learned learning rate evaluation uses; and floats
// int64 (1), the number of stored floats the set is charged for. Image
// j·nh + t of synthetic.npz is hallucinator t applied to basis j.
func (d *haba) SaveFactors(path string) error {
	if d.bases == nil {
		return errors.New("distill: haba: SaveFactors before Init")
	}
	y := make([]int64, len(d.y))
	for i, l := range d.y {
		y[i] = int64(l)
	}
	arrays := []struct {
		name  string
		shape []int
		data  any
	}{
		{"bases", slices.Clone(d.bases.Shape), slices.Clone(d.bases.Data)},
		{"bases_y", []int{len(y)}, y},
	}
	for i, name := range []string{"enc_w", "enc_b", "scale", "shift", "dec_w", "dec_b"} {
		var all []float32
		for t := range d.hal {
			all = append(all, d.hal[t][i].Data...)
		}
		arrays = append(arrays, struct {
			name  string
			shape []int
			data  any
		}{name, append([]int{d.net.nh}, d.hal[0][i].Shape...), all})
	}
	arrays = append(arrays, struct {
		name  string
		shape []int
		data  any
	}{"step_size", []int{1}, []float32{d.lr}}, struct {
		name  string
		shape []int
		data  any
	}{"floats", []int{1}, []int64{int64(d.net.floats())}})
	var out []*npz.Array
	for _, a := range arrays {
		arr, err := npz.New(a.name, a.shape, a.data)
		if err != nil {
			return fmt.Errorf("distill: haba factors: %w", err)
		}
		out = append(out, arr)
	}
	if err := npz.Write(path, out); err != nil {
		return fmt.Errorf("distill: writing haba factors: %w", err)
	}
	return nil
}
