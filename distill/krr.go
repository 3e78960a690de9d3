package distill

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/distill/kernel"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// krrDistiller runs the kernel-ridge-regression methods (kip, rfad,
// frepo). They share everything but the kernel: images (and optionally
// labels, and rfad's temperature) learned with Adam, a class-balanced
// target batch of BatchReal images per class each iteration, and the
// KRR prediction of the targets from the support set (kernel.Predict).
//
// Checkpoints hold the synthetic set (and learned labels as y_soft) but
// not the Adam moments, rfad's temperature or frepo's network pool, so a
// resumed run continues from the same set with fresh optimiser state: it
// is close to, not identical with, an uninterrupted run.
type krrDistiller struct {
	cfg     Config
	real    *data.Dataset
	byClass [][]int
	x       *tensor.Tensor[float32] // support images
	y       []int                   // their classes
	lab     *tensor.Tensor[float32] // regression labels (N, K)
	logTau  *tensor.Tensor[float32] // rfad's log temperature (scalar)
	optX    *nn.Adam[float32]
	optY    *nn.Adam[float32]
	pool    *frepoPool
}

func newKRR(cfg Config) *krrDistiller { return &krrDistiller{cfg: cfg} }

func (d *krrDistiller) Config() Config  { return d.cfg }
func (d *krrDistiller) Iterative() bool { return true }

// labelLogitScale is the factor that turns regression labels into
// y_soft logits: ln(9(K−1)) maps the centred one-hot label (1 − 1/K on
// its class, −1/K elsewhere) to a softmax with 0.9 on its class.
func labelLogitScale(k int) float32 { return float32(math.Log(9 * float64(max(k-1, 1)))) }

func (d *krrDistiller) Init(ctx context.Context, real *data.Dataset) error {
	if err := d.cfg.checkData(real); err != nil {
		return err
	}
	d.real = real
	d.byClass = real.ClassIndices()
	rng := tensor.NewRNG(d.cfg.Seed, streamInit)
	var syn *SyntheticSet
	if d.cfg.Init == InitReal {
		syn = randomReal(real, d.byClass, d.cfg.IPC, rng)
	} else {
		syn = noiseSet(real, d.cfg.IPC, rng)
	}
	d.x, d.y = syn.X, syn.Y
	k := real.Classes
	d.lab = tensor.New[float32](len(d.y), k)
	copy(d.lab.Data, kernel.CenteredOneHot[float32](d.y, k))
	d.logTau = tensor.Scalar(float32(math.Log(0.1)))
	d.optX = nn.NewAdam[float32](d.cfg.LRImg)
	d.optY = nn.NewAdam[float32](d.cfg.KRR.LRLabel)
	if d.cfg.Method == MethodFRePo {
		p, err := newFRePoPool(d.cfg, real)
		if err != nil {
			return err
		}
		d.pool = p
	}
	if d.cfg.Method == MethodRFAD {
		if _, err := rfadNet(d.cfg, real.ImageShape(), real.Classes, tensor.NewRNG(0, 0)); err != nil {
			return err
		}
	}
	return nil
}

// targets draws BatchReal images of every class (without replacement
// within a class) and returns them with their labels and centred one-hot
// regression targets.
func (d *krrDistiller) targets(rng *tensor.RNG) (*tensor.Tensor[float32], []int, *tensor.Tensor[float32]) {
	var pick []int
	for _, idx := range d.byClass {
		perm := rng.Perm(len(idx))
		for i := range min(d.cfg.BatchReal, len(idx)) {
			pick = append(pick, idx[perm[i]])
		}
	}
	x, y := d.real.Batch(pick)
	yt := tensor.New[float32](len(y), d.real.Classes)
	copy(yt.Data, kernel.CenteredOneHot[float32](y, d.real.Classes))
	return x, y, yt
}

func (d *krrDistiller) Step(ctx context.Context, it int) (float64, error) {
	if d.x == nil {
		return 0, errors.New("distill: Step before Init")
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("distill: iteration %d: %w", it, err)
	}
	rng := iterRNG(d.cfg.Seed, it)
	xt, lt, yt := d.targets(rng)
	var res kernel.Result[float32]
	var err error
	switch d.cfg.Method {
	case MethodKIP:
		res, err = kernel.LossGrad(kernel.Problem[float32]{Kernel: kernel.ArchFunc[float32](d.arch()), Reg: d.cfg.KRR.Reg,
			Xs: d.x, Ys: d.lab, Xt: xt, Yt: yt, Chunk: d.cfg.KRR.Chunk})
	case MethodRFAD:
		res, err = rfadLossGrad(d.cfg, d.real.Classes, rng, d.x, d.lab, xt, lt, d.logTau.Data[0])
	case MethodFRePo:
		res, err = d.pool.lossGrad(it, d.x, d.lab, xt, yt)
	}
	if err != nil {
		return 0, fmt.Errorf("distill: %s iteration %d: %w", d.cfg.Method, it, err)
	}
	if math.IsNaN(res.Loss) || math.IsInf(res.Loss, 0) {
		return res.Loss, fmt.Errorf("%w: %s iteration %d: loss is %v (lower --lr-img, now %g)", ErrDiverged, d.cfg.Method, it, res.Loss, d.cfg.LRImg)
	}
	for _, g := range []*tensor.Tensor[float32]{res.GradX, res.GradY} {
		if i := tensor.FirstNonFinite(g.Data); i >= 0 {
			return res.Loss, fmt.Errorf("%w: %s iteration %d: a gradient is not finite (%v)", ErrDiverged, d.cfg.Method, it, g.Data[i])
		}
	}
	f := cosineFactor(it, d.cfg.KRR.CosineIters)
	d.optX.SetLR(d.cfg.LRImg * f)
	d.optY.SetLR(d.cfg.KRR.LRLabel * f)
	params, grads := []*tensor.Tensor[float32]{d.x}, []*tensor.Tensor[float32]{res.GradX}
	if d.cfg.Method == MethodRFAD {
		params = append(params, d.logTau)
		grads = append(grads, tensor.Scalar(float32(res.GradLogTau)))
	}
	if err := d.optX.Step(params, grads); err != nil {
		return res.Loss, fmt.Errorf("distill: %w", err)
	}
	if d.cfg.KRR.LearnLabels {
		if err := d.optY.Step([]*tensor.Tensor[float32]{d.lab}, []*tensor.Tensor[float32]{res.GradY}); err != nil {
			return res.Loss, fmt.Errorf("distill: %w", err)
		}
	}
	if d.pool != nil {
		if err := d.pool.trainStep(it, d.x, d.y, d.softTargets()); err != nil {
			return res.Loss, fmt.Errorf("distill: frepo iteration %d: %w", it, err)
		}
	}
	return res.Loss, nil
}

// arch returns kip's kernel architecture.
func (d *krrDistiller) arch() kernel.Arch {
	k := d.cfg.KRR
	return kernel.Arch{Conv: k.Kernel == KernelConv, Depth: k.Depth, WVar: k.WVar, BVar: k.BVar, NTK: !k.NNGP}
}

// softTargets returns the learned labels as target distributions, or nil
// with fixed labels.
func (d *krrDistiller) softTargets() *tensor.Tensor[float32] {
	if !d.cfg.KRR.LearnLabels {
		return nil
	}
	return SoftTargets(d.logits())
}

func (d *krrDistiller) logits() *tensor.Tensor[float32] {
	l := d.lab.Clone()
	s := labelLogitScale(d.real.Classes)
	for i := range l.Data {
		l.Data[i] *= s
	}
	return l
}

// Synthetic returns a copy of the set, with the learned labels as y_soft
// logits. (With ZCA the caller whitened the real data, as for mtt: the set
// is in that space, and the caller maps it back, ZCA.ExportSet.)
func (d *krrDistiller) Synthetic() *SyntheticSet {
	if d.x == nil {
		return nil
	}
	s := &SyntheticSet{X: d.x.Clone(), Y: slices.Clone(d.y), Mean: slices.Clone(d.real.Mean), Std: slices.Clone(d.real.Std), Classes: d.real.Classes}
	if d.cfg.KRR.LearnLabels {
		s.YSoft = d.logits()
	}
	return s
}

func (d *krrDistiller) Checkpoint(next int) *Checkpoint {
	return &Checkpoint{Config: d.cfg, Next: next, Syn: d.Synthetic()}
}

func (d *krrDistiller) Restore(c *Checkpoint) error {
	if d.x == nil {
		return errors.New("distill: Restore before Init")
	}
	if c == nil || c.Syn == nil || c.Syn.X == nil {
		return errors.New("distill: Restore: the checkpoint has no synthetic set")
	}
	if err := c.matches(d.cfg); err != nil {
		return err
	}
	if !equalShape(c.Syn.X.Shape, d.x.Shape) || !slices.Equal(c.Syn.Y, d.y) {
		return fmt.Errorf("distill: checkpoint set has shape %v and labels %v, this run's %v and %v", c.Syn.X.Shape, c.Syn.Y, d.x.Shape, d.y)
	}
	d.x.CopyFrom(c.Syn.X)
	if d.cfg.KRR.LearnLabels {
		if c.Syn.YSoft == nil || !equalShape(c.Syn.YSoft.Shape, d.lab.Shape) {
			return fmt.Errorf("distill: the checkpoint has no learned labels of shape %v", d.lab.Shape)
		}
		s := labelLogitScale(d.real.Classes)
		for i, v := range c.Syn.YSoft.Data {
			d.lab.Data[i] = v / s
		}
	}
	return nil
}

// rfadNet builds one of rfad's random feature networks: the configured
// ConvNet family at width KRR.Width without normalisation (the NNGP of a
// network with instance norm is not a plain ReLU kernel).
func rfadNet(cfg Config, shape []int, classes int, rng *tensor.RNG) (nn.Embedder[float32], error) {
	m, err := nn.New[float32](fmt.Sprintf("convnet-w%d-nn", cfg.KRR.Width), shape, classes, rng)
	if err != nil {
		return nil, fmt.Errorf("distill: rfad: %w", err)
	}
	return m.(nn.Embedder[float32]), nil
}

// rfadLossGrad is RFAD's loss (eq. 16): the kernel is the empirical NNGP
// of Models freshly drawn random ConvNets (weights N(0, 2/fan-in), biases
// N(0, 0.01): He-initialised ReLU networks, whose infinite-width limit is
// the ConvNet's NNGP), K(x, y) = ⟨φ(x), φ(y)⟩ with φ the concatenated
// features scaled by 1/√(Models·F). The targets' features are computed
// without a graph in chunks; only the support set's are differentiated.
// The loss is the Platt-scaled cross entropy with learned temperature.
func rfadLossGrad(cfg Config, classes int, rng *tensor.RNG, xs, ys, xt *tensor.Tensor[float32], lt []int, logTau float32) (kernel.Result[float32], error) {
	var res kernel.Result[float32]
	shape := xs.Shape[1:]
	nets := make([]nn.Embedder[float32], cfg.KRR.Models)
	for i := range nets {
		m, err := rfadNet(cfg, shape, classes, rng)
		if err != nil {
			return res, err
		}
		for j, p := range m.Params() {
			if j == len(m.Params())-2 {
				break // the classifier is not used
			}
			std := 0.1 // biases: σ_b² = 0.01
			if p.Rank() > 1 {
				std = math.Sqrt(2 / float64(p.Len()/p.Shape[0]))
			}
			tensor.FillNormal(rng, p, 0, std)
		}
		nets[i] = m
	}
	tp := ag.NewTape[float32]()
	defer tp.Release()
	var ft, fs []*ag.Var[float32]
	xsv := tp.Param(xs)
	for _, net := range nets {
		ps := nn.BindConst(tp, net)
		var f *tensor.Tensor[float32]
		tp.NoGrad(func() { f = embedChunks(tp, net, ps, xt, 256) })
		if f == nil {
			break
		}
		ft = append(ft, tp.Const(f))
		fs = append(fs, net.Embed(xsv, ps))
	}
	if err := tp.Err(); err != nil {
		return res, err
	}
	feat := ft[0].Value.Shape[1]
	scale := float32(1 / math.Sqrt(float64(len(nets)*feat)))
	phiT := ag.Scale(ag.Concat(1, ft...), scale)
	phiS := ag.Scale(ag.Concat(1, fs...), scale)
	kss := ag.MatMul(phiS, phiS, false, true)
	kts := ag.MatMul(phiT, phiS, false, true)
	yv := tp.Param(ys)
	tau := tp.Param(tensor.Scalar(logTau))
	loss := kernel.PlattLoss(kernel.Predict(kts, kss, yv, cfg.KRR.Reg), tau, lt)
	gs, err := tp.Grad([]*ag.Var[float32]{loss}, nil, []*ag.Var[float32]{xsv, yv, tau}, false)
	if err != nil {
		return res, err
	}
	res.Loss = float64(loss.Value.Item())
	res.GradX, res.GradY = gs[0].Value.Clone(), gs[1].Value.Clone()
	res.GradLogTau = float64(gs[2].Value.Item())
	return res, nil
}

// KernelAccuracy returns the test accuracy of the kernel ridge regression
// predictor that a synthetic set defines with the closed-form kernel a
// (KIP's own evaluation, before any network is trained): test image t is
// assigned argmax_k of K(t, X_s)(K_ss + λ·tr(K_ss)/n·I)⁻¹ Y_s, with Y_s
// the centred one-hot labels, or the set's learned labels (y_soft divided
// by the logit scale of Synthetic) when it has them. The test set is
// processed in chunks (500 images, fewer for a convolutional kernel). syn must match test (CheckAgainst).
func KernelAccuracy(syn *SyntheticSet, test *data.Dataset, a kernel.Arch, reg float64) (float64, error) {
	if err := syn.Validate(); err != nil {
		return 0, err
	}
	if err := syn.CheckAgainst(test); err != nil {
		return 0, err
	}
	if err := a.Validate(); err != nil {
		return 0, fmt.Errorf("distill: %w", err)
	}
	if !(reg > 0) || math.IsInf(reg, 0) {
		return 0, fmt.Errorf("distill: KRR regularisation %g must be positive (KIP uses 1e-6)", reg)
	}
	k := syn.Classes
	ys := tensor.New[float32](syn.Len(), k)
	if syn.YSoft != nil {
		s := labelLogitScale(k)
		for i, v := range syn.YSoft.Data {
			ys.Data[i] = v / s
		}
	} else {
		copy(ys.Data, kernel.CenteredOneHot[float32](syn.Y, k))
	}
	outer := ag.NewTape[float32]()
	defer outer.Release()
	kss := kernel.Kernel(a, outer.Const(syn.X), outer.Const(syn.X))
	if err := outer.Err(); err != nil {
		return 0, err
	}
	n := test.Len()
	sz := len(test.X.Data) / max(n, 1)
	correct := 0
	// A chunk's convolutional kernel keeps chunk·N_s·H·W values per
	// intermediate: bound it to about 4M (16 MB) each.
	chunk := 500
	if a.Conv {
		chunk = max(1, min(chunk, 4_000_000/(syn.Len()*test.X.Shape[2]*test.X.Shape[3])))
	}
	for lo := 0; lo < n; lo += chunk {
		hi := min(n, lo+chunk)
		tp := ag.NewTape[float32]()
		xt := tp.Const(&tensor.Tensor[float32]{Shape: append([]int{hi - lo}, test.X.Shape[1:]...), Data: test.X.Data[lo*sz : hi*sz]})
		pred := kernel.Predict(kernel.Kernel(a, xt, tp.Const(syn.X)), tp.Const(kss.Value), tp.Const(ys), reg)
		if err := tp.Err(); err != nil {
			tp.Release()
			return 0, err
		}
		correct += nn.CountCorrect(pred.Value, test.Y[lo:hi])
		tp.Release()
	}
	return float64(correct) / float64(max(n, 1)), nil
}
