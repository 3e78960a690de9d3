package distill

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/tensor"
)

// Generator-based methods (survey §5: decoder-based and code-based
// factorized distillation).
const (
	MethodGTN   = "gtn"   // generative teaching network with a learned curriculum (Such et al., ICML 2020)
	MethodITGAN = "itgan" // GAN latent codes learned by distribution matching (Zhao & Bilen, 2022)
)

// IsGenMethod reports whether method is generator-based (gtn, itgan),
// configured by Config.GTN or Config.ITGAN.
func IsGenMethod(method string) bool { return method == MethodGTN || method == MethodITGAN }

// GTNConfig configures gtn. Zero values select the defaults listed per
// field.
type GTNConfig struct {
	// ZDim is the size of a code (default 32) and Hidden the generator's
	// hidden layer widths (default [64]): with MNIST's 10 classes the
	// generator MLP 32+10 → 64 → 784 stores 54 560 floats and the codes
	// of IPC 10 another 3 200, within IPC 10's budget of 78 400.
	ZDim   int   `json:"zdim,omitempty"`
	Hidden []int `json:"hidden,omitempty"`
	// Steps is the number of unrolled inner SGD steps of the learner on
	// the generated set (default 10); Momentum their heavy-ball momentum
	// (default 0). LRInit is the initial inner step size (default 0.01),
	// learned as log η with Adam at rate LRLR (default 0.01).
	Steps    int     `json:"steps,omitempty"`
	Momentum float64 `json:"momentum,omitempty"`
	LRInit   float64 `json:"lr_init,omitempty"`
	LRLR     float64 `json:"lr_lr,omitempty"`
	// LRGen is the Adam learning rate of the generator's weights (default
	// 1e-3); Config.LRImg that of the codes (default 0.01).
	LRGen float64 `json:"lr_gen,omitempty"`
	// WarmSteps (with Config.Init real, the default) is the number of Adam
	// steps that first fit generator and codes jointly to IPC random real
	// images per class (default 500); with --init noise the generator
	// starts random, as in the paper.
	WarmSteps int `json:"warm_steps,omitempty"`
	// OverBudget allows a generator and codes that store more floats than
	// a plain set of IPC images per class.
	OverBudget bool `json:"over_budget,omitempty"`
	// State is not configuration: it carries the generator, the codes,
	// the step size and the Adam moments inside a Checkpoint (whose file
	// has no slot for them, and holds the configuration as JSON), packed
	// by packState. It is nil in a run's own configuration and ignored
	// when a checkpoint's configuration is compared with the run's.
	State []byte `json:"state,omitempty"`
}

// genDefaults fills the zero fields of gtn and itgan; it runs before the
// generic defaults.
func (cfg Config) genDefaults() Config {
	switch cfg.Method {
	case MethodGTN:
		g := &cfg.GTN
		if g.ZDim == 0 {
			g.ZDim = 32
		}
		if len(g.Hidden) == 0 {
			g.Hidden = []int{64}
		}
		if g.Steps == 0 {
			g.Steps = 10
		}
		if g.LRInit == 0 {
			g.LRInit = 0.01
		}
		if g.LRLR == 0 {
			g.LRLR = 0.01
		}
		if g.LRGen == 0 {
			g.LRGen = 1e-3
		}
		if g.WarmSteps == 0 {
			g.WarmSteps = 500
		}
		if cfg.Model == "" {
			cfg.Model = "convnet-w32"
		}
		if cfg.BatchReal == 0 {
			cfg.BatchReal = 20
		}
		if cfg.LRImg == 0 {
			cfg.LRImg = 0.01
		}
	case MethodITGAN:
		cfg = cfg.itganDefaults()
	}
	return cfg
}

// genValidate checks the fields of gtn and itgan (after Defaults).
func (cfg Config) genValidate() []error {
	var errs []error
	finitePos := func(v float64) bool { return v > 0 && !math.IsInf(v, 0) }
	checkArch := func(flag string, zdim int, hidden []int) {
		if zdim < 1 || zdim > 4096 {
			errs = append(errs, fmt.Errorf("code size %d must be in [1, 4096] (--%s-zdim)", zdim, flag))
		}
		for _, h := range hidden {
			if h < 1 || h > 8192 {
				errs = append(errs, fmt.Errorf("hidden widths %v must be in [1, 8192] (--%s-hidden)", hidden, flag))
				break
			}
		}
	}
	switch cfg.Method {
	case MethodGTN:
		g := cfg.GTN
		checkArch("gen", g.ZDim, g.Hidden)
		if g.Steps < 1 || g.Steps > 1000 {
			errs = append(errs, fmt.Errorf("unrolled steps %d must be in [1, 1000] (--unroll)", g.Steps))
		}
		if !(g.Momentum >= 0 && g.Momentum < 1) {
			errs = append(errs, fmt.Errorf("inner momentum %g must be in [0, 1) (--unroll-momentum)", g.Momentum))
		}
		if !finitePos(g.LRInit) || !finitePos(g.LRLR) || !finitePos(g.LRGen) || !finitePos(cfg.LRImg) {
			errs = append(errs, fmt.Errorf("inner step size %g and the learning rates of step size %g, generator %g and codes %g must be positive (--lr-teacher, --lr-lr, --gen-lr, --lr-img)", g.LRInit, g.LRLR, g.LRGen, cfg.LRImg))
		}
		if g.WarmSteps < 0 {
			errs = append(errs, fmt.Errorf("warm-start steps %d must not be negative (--gtn-warm-steps)", g.WarmSteps))
		}
		if g.State != nil {
			errs = append(errs, errors.New("gtn state is checkpoint data, not configuration"))
		}
	case MethodITGAN:
		errs = append(errs, cfg.itganValidate(checkArch, finitePos)...)
	}
	if (cfg.Method == MethodGTN || cfg.Method == MethodITGAN) && cfg.ZCAReg > 0 {
		// The generator's tanh maps onto the normalized pixel box, which
		// whitened images leave.
		errs = append(errs, fmt.Errorf("%s generates images in the normalized pixel range, not ZCA-whitened ones: drop --zca", cfg.Method))
	}
	return errs
}

// newGen returns the distiller of gtn or itgan, or nil.
func newGen(cfg Config) Distiller {
	switch cfg.Method {
	case MethodGTN:
		return &gtn{cfg: cfg}
	case MethodITGAN:
		return &itgan{cfg: cfg}
	}
	return nil
}

// gtn is a Generative Teaching Network (Such et al., ICML 2020; survey
// §5, decoder-based DD). The stored artifact is a conditional generator G
// (condGen: code z and label → image) and a learned curriculum: a fixed
// set of IPC codes per class, learnable like the generator. Every
// iteration draws a freshly initialised learner (Config.Model), trains it
// for GTN.Steps full-batch SGD steps on the generated images G(codes) with
// the learnable step size η (and GTN.Momentum), evaluates its cross
// entropy on a class-balanced real batch, and back-propagates through the
// unrolled inner loop (DDMetaGrad, with every Hessian-vector product) to
// the images, then through G (condGen.vjp) to the generator weights and
// the codes; Adam updates generator, codes and log η.
//
// Differences from the paper, which meta-trains on MNIST for thousands of
// outer steps with 32 inner steps on fresh minibatches of 128 generated
// images, randomised learner architectures and a weight-normalised
// deconvolutional generator: here the inner loop trains on the whole
// curriculum (IPC images per class) every step, so the learned set is a
// fixed distilled set the standard evaluation can use; the generator is a
// weight-normalised MLP (to fit the float budget); and with Config.Init
// real (the default) the generator and codes first fit IPC random real
// images per class (GTN.WarmSteps Adam steps of squared error), a warm
// start the paper does not use (--init noise starts from a random
// generator as the paper does).
//
// Budget: generator weights (every V, g, b), codes (classes·IPC·ZDim) and
// the step size are charged, and must fit classes·IPC·C·H·W floats unless
// GTN.OverBudget is set.
type gtn struct {
	cfg     Config
	real    *data.Dataset
	byClass [][]int
	gen     *condGen[float32]
	codes   *tensor.Tensor[float32] // (classes·IPC, ZDim), class-major
	y       []int
	logLR   *tensor.Tensor[float32]
	opt     *genAdam                // over gen params…, codes, logLR
	x       *tensor.Tensor[float32] // G(codes), kept current
}

// gtnSize returns the floats gtn stores and the budget, or an error that
// names them if the budget is exceeded and not overridden.
func gtnSize(cfg Config, g *condGen[float32], classes, dim int) (floats, budget int, err error) {
	codes := classes * cfg.IPC * cfg.GTN.ZDim
	floats = g.floats() + codes + 1
	budget = classes * cfg.IPC * dim
	if floats > budget && !cfg.GTN.OverBudget {
		return floats, budget, fmt.Errorf("distill: gtn: the generator (%s, %d floats), the codes (%d×%d = %d floats) and the step size store %d floats, more than the budget of %d images per class (%d floats): lower --gen-hidden or --gen-zdim, raise --ipc, or pass --gtn-over-budget",
			g.describe(), g.floats(), classes*cfg.IPC, cfg.GTN.ZDim, codes, floats, cfg.IPC, budget)
	}
	return floats, budget, nil
}

func (d *gtn) Config() Config  { return d.cfg }
func (d *gtn) Iterative() bool { return true }

// Floats returns the number of stored floats the set is charged for.
func (d *gtn) Floats() int { return d.gen.floats() + len(d.codes.Data) + 1 }

// LearnedStepSize returns the learned inner step size η. (It is not
// named StepSize, so evaluation keeps the standard protocol's learning
// rate rather than the full-batch inner loop's.)
func (d *gtn) LearnedStepSize() float64 { return math.Exp(float64(d.logLR.Data[0])) }

func (d *gtn) Init(ctx context.Context, real *data.Dataset) error {
	if err := d.cfg.checkData(real); err != nil {
		return err
	}
	shape := real.ImageShape()
	rng := tensor.NewRNG(d.cfg.Seed, streamInit)
	gen := newCondGen[float32](d.cfg.GTN.ZDim, real.Classes, d.cfg.GTN.Hidden, shape, real.Mean, real.Std, rng)
	if _, _, err := gtnSize(d.cfg, gen, real.Classes, shape[0]*shape[1]*shape[2]); err != nil {
		return err
	}
	d.real, d.byClass, d.gen = real, real.ClassIndices(), gen
	d.y = classLabels(real.Classes, d.cfg.IPC)
	d.codes = tensor.New[float32](len(d.y), d.cfg.GTN.ZDim)
	tensor.FillNormal(rng, d.codes, 0, 1)
	d.logLR = tensor.Scalar(float32(math.Log(d.cfg.GTN.LRInit)))
	if d.cfg.Init == InitReal && d.cfg.GTN.WarmSteps > 0 {
		target := randomReal(real, d.byClass, d.cfg.IPC, rng)
		if err := fitGenerator(ctx, d.gen, d.codes, d.y, target.X, d.cfg.GTN.WarmSteps, 0.01, true); err != nil {
			return fmt.Errorf("distill: gtn warm start: %w", err)
		}
	}
	d.opt = newGenAdam(d.lrs(), 0.9, d.learned())
	return d.decode()
}

// learned lists the learned tensors in the optimiser's order.
func (d *gtn) learned() []*tensor.Tensor[float32] {
	return append(slices.Clone(d.gen.params()), d.codes, d.logLR)
}

func (d *gtn) lrs() []float64 {
	lrs := make([]float64, 0, len(d.gen.params())+2)
	for range d.gen.params() {
		lrs = append(lrs, d.cfg.GTN.LRGen)
	}
	return append(lrs, d.cfg.LRImg, d.cfg.GTN.LRLR)
}

func (d *gtn) decode() error {
	x, err := d.gen.generate(d.codes, d.y)
	if err != nil {
		return err
	}
	d.x = x
	return nil
}

// fitGenerator fits G(codes) to target by steps Adam steps (learning rate
// lr) on the mean squared error, updating the codes and, if trainGen, the
// generator weights: gtn's warm start and itgan's GAN inversion.
func fitGenerator(ctx context.Context, g *condGen[float32], codes *tensor.Tensor[float32], labels []int, target *tensor.Tensor[float32], steps int, lr float64, trainGen bool) error {
	params := []*tensor.Tensor[float32]{codes}
	if trainGen {
		params = append(params, g.params()...)
	}
	lrs := make([]float64, len(params))
	for i := range lrs {
		lrs[i] = lr
	}
	opt := newGenAdam(lrs, 0.9, params)
	scale := float32(2 / float64(len(target.Data)))
	for s := range steps {
		if s%50 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		x, err := g.generate(codes, labels)
		if err != nil {
			return err
		}
		for i, t := range target.Data {
			x.Data[i] = scale * (x.Data[i] - t) // ∂MSE/∂x
		}
		gz, gp, err := g.vjp(codes, labels, x, trainGen)
		if err != nil {
			return err
		}
		if err := opt.step(params, append([]*tensor.Tensor[float32]{gz}, gp...)); err != nil {
			return err
		}
	}
	return nil
}

// metaBatch returns the real batch of iteration rng: BatchReal images per
// class (fewer if a class has fewer), drawn without replacement.
func metaBatch(real *data.Dataset, byClass [][]int, per int, rng *tensor.RNG) (*tensor.Tensor[float32], []int) {
	var pick []int
	for _, idx := range byClass {
		perm := rng.Perm(len(idx))
		for i := range min(per, len(idx)) {
			pick = append(pick, idx[perm[i]])
		}
	}
	return real.Batch(pick)
}

func (d *gtn) Step(ctx context.Context, it int) (float64, error) {
	if d.x == nil {
		return 0, errors.New("distill: Step before Init")
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("distill: iteration %d: %w", it, err)
	}
	m, rng, err := iterNet(d.cfg, d.real, it)
	if err != nil {
		return 0, err
	}
	xr, yr := metaBatch(d.real, d.byClass, d.cfg.BatchReal, rng)
	task := MetaTask[float32]{Model: m, Start: m.Params(), X: d.x, Y: d.y, Steps: d.cfg.GTN.Steps, Momentum: d.cfg.GTN.Momentum,
		RealX: xr, RealY: yr, WantX: true}
	g, err := DDMetaGrad(task, float64(d.logLR.Data[0]))
	if err != nil {
		return 0, fmt.Errorf("distill: gtn iteration %d: %w", it, err)
	}
	if math.IsNaN(g.Loss) || math.IsInf(g.Loss, 0) || math.IsNaN(g.LogLR) || math.IsInf(g.LogLR, 0) {
		return g.Loss, fmt.Errorf("%w: gtn iteration %d: loss %v, step-size gradient %v (lower --gen-lr, --lr-img or the initial step size)", ErrDiverged, it, g.Loss, g.LogLR)
	}
	gz, gp, err := d.gen.vjp(d.codes, d.y, g.X, true)
	if err != nil {
		return g.Loss, err
	}
	grads := append(gp, gz, tensor.Scalar(float32(g.LogLR)))
	if err := d.opt.step(d.learned(), grads); err != nil {
		return g.Loss, fmt.Errorf("gtn iteration %d: %w", it, err)
	}
	return g.Loss, d.decode()
}

func (d *gtn) Synthetic() *SyntheticSet {
	if d.x == nil {
		return nil
	}
	return &SyntheticSet{X: d.x.Clone(), Y: slices.Clone(d.y), Mean: slices.Clone(d.real.Mean), Std: slices.Clone(d.real.Std), Classes: d.real.Classes}
}

// stateTensors lists what a checkpoint carries: the learned tensors, then
// the Adam moments.
func (d *gtn) stateTensors() []*tensor.Tensor[float32] {
	return append(d.learned(), d.opt.tensors()...)
}

func (d *gtn) Checkpoint(next int) *Checkpoint {
	c := &Checkpoint{Config: d.cfg, Next: next, Syn: d.Synthetic()}
	c.Config.GTN.State = packState(d.opt.t, d.stateTensors())
	return c
}

func (d *gtn) Restore(c *Checkpoint) error {
	if d.x == nil {
		return errors.New("distill: Restore before Init")
	}
	if c == nil || c.Syn == nil {
		return errors.New("distill: Restore: the checkpoint has no synthetic set")
	}
	st := c.Config.GTN.State
	if st == nil {
		return errors.New("distill: the checkpoint has no gtn state (generator, codes, optimiser); it was not written by gtn")
	}
	plain := *c
	plain.Config.GTN.State = nil
	if err := plain.matches(d.cfg); err != nil {
		return err
	}
	ts := d.stateTensors()
	saved := make([]*tensor.Tensor[float32], len(ts))
	for i, t := range ts {
		saved[i] = t.Clone()
	}
	t, err := unpackState(st, ts)
	if err == nil {
		d.opt.t = t
		err = d.decode()
	}
	if err != nil {
		for i, t := range ts {
			t.CopyFrom(saved[i])
		}
		return err
	}
	return nil
}

// SaveFactors writes the stored artifact to path (atomically) as an .npz
// file: codes float32 (classes·IPC, ZDim), class-major with IPC codes per
// class (code i has label i / IPC), the generator's layers gen_l<i>_v (in, out), gen_l<i>_g (1, out)
// and gen_l<i>_b (1, out) (W = g·V/‖V‖ per column; the input is the code
// followed by the one-hot label; leaky ReLU 0.2 between layers; the output
// is mid + half·tanh(·) per pixel, mid and half from the normalisation),
// step_size float32 (1), and floats int64 (1), the number of stored floats
// the set is charged for.
func (d *gtn) SaveFactors(path string) error {
	if d.gen == nil {
		return errors.New("distill: gtn: SaveFactors before Init")
	}
	ts := append([]namedTensor{{"codes", d.codes.Shape, d.codes.Data}}, genArrays(d.gen)...)
	ts = append(ts, namedTensor{"step_size", []int{1}, []float32{float32(d.LearnedStepSize())}})
	return writeArrays(path, "gtn factors", ts, map[string]int64{"floats": int64(d.Floats())})
}
