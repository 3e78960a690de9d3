package distill

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"slices"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// ITGANConfig configures itgan. Zero values select the defaults listed
// per field.
type ITGANConfig struct {
	// ZDim is the GAN's latent size (default 64); Hidden the generator's
	// hidden widths (default [256, 512]) and DiscHidden the
	// discriminator's (default [512, 256]).
	ZDim       int   `json:"zdim,omitempty"`
	Hidden     []int `json:"hidden,omitempty"`
	DiscHidden []int `json:"disc_hidden,omitempty"`
	// GANEpochs is how many passes over the real data train the GAN in
	// Init (default 4), in batches of GANBatch (default 128), with Adam at
	// GANLR (default 5e-4) and β₁ 0.5.
	GANEpochs int     `json:"gan_epochs,omitempty"`
	GANBatch  int     `json:"gan_batch,omitempty"`
	GANLR     float64 `json:"gan_lr,omitempty"`
	// InvertSteps Adam steps at InvertLR (defaults 500 and 0.05) invert
	// IPC real images per class: their codes minimise ‖G(z) − x‖².
	InvertSteps int     `json:"invert_steps,omitempty"`
	InvertLR    float64 `json:"invert_lr,omitempty"`
	// Rec (λ) weighs the regulariser λ·mean_i ‖G(z_i) − x_i‖² that keeps
	// each generated image near the real image it was inverted from
	// (default 0.01; a negative value turns it off).
	Rec float64 `json:"rec,omitempty"`
	// OverBudget allows codes and generator together to store more floats
	// than the budget of IPC plain images per class. The generator is a
	// decoder every image needs, so it is charged; a GAN generator is far
	// larger than a small-IPC budget, so itgan runs only with this set
	// unless the generator is made small (--gen-hidden, --gen-zdim).
	OverBudget bool `json:"over_budget,omitempty"`
	// State is not configuration: it carries the codes, their Adam
	// moments and a hash of the generator inside a Checkpoint (see
	// GTNConfig.State). It is nil in a run's own configuration.
	State []byte `json:"state,omitempty"`
}

func (cfg Config) itganDefaults() Config {
	g := &cfg.ITGAN
	if g.ZDim == 0 {
		g.ZDim = 64
	}
	if len(g.Hidden) == 0 {
		g.Hidden = []int{256, 512}
	}
	if len(g.DiscHidden) == 0 {
		g.DiscHidden = []int{512, 256}
	}
	if g.GANEpochs == 0 {
		g.GANEpochs = 4
	}
	if g.GANBatch == 0 {
		g.GANBatch = 128
	}
	if g.GANLR == 0 {
		g.GANLR = 5e-4
	}
	if g.InvertSteps == 0 {
		g.InvertSteps = 500
	}
	if g.InvertLR == 0 {
		g.InvertLR = 0.05
	}
	if g.Rec == 0 {
		g.Rec = 0.01
	}
	if cfg.LRImg == 0 {
		cfg.LRImg = 0.01
	}
	return cfg
}

func (cfg Config) itganValidate(checkArch func(string, int, []int), finitePos func(float64) bool) []error {
	var errs []error
	g := cfg.ITGAN
	checkArch("gen", g.ZDim, g.Hidden)
	checkArch("itgan-disc", 1, g.DiscHidden)
	if g.GANEpochs < 1 || g.GANBatch < 1 || g.InvertSteps < 0 {
		errs = append(errs, fmt.Errorf("GAN epochs %d and batch %d must be positive and inversion steps %d not negative (--itgan-epochs, --itgan-batch, --itgan-invert-steps)", g.GANEpochs, g.GANBatch, g.InvertSteps))
	}
	if !finitePos(g.GANLR) || !finitePos(g.InvertLR) || !finitePos(cfg.LRImg) {
		errs = append(errs, fmt.Errorf("learning rates of the GAN %g, the inversion %g and the codes %g must be positive (--itgan-lr, --itgan-invert-lr, --lr-img)", g.GANLR, g.InvertLR, cfg.LRImg))
	}
	if math.IsNaN(g.Rec) || math.IsInf(g.Rec, 0) {
		errs = append(errs, fmt.Errorf("regulariser weight %g must be finite (--itgan-rec; negative: off)", g.Rec))
	}
	if cfg.Init != InitReal {
		errs = append(errs, fmt.Errorf("initialisation %q: itgan starts from inverted real images; use --init %s", cfg.Init, InitReal))
	}
	if g.State != nil {
		errs = append(errs, errors.New("itgan state is checkpoint data, not configuration"))
	}
	return errs
}

// itgan is IT-GAN (Zhao & Bilen, "Synthesizing Informative Training
// Samples with GAN", 2022; survey §5, code-based DD). Init trains a
// conditional GAN on the whole real training set, inverts IPC random real
// images per class into its latent space (codes minimising ‖G(z) − x‖²),
// and Step then learns the codes with distribution matching through the
// frozen generator: every iteration a freshly initialised Config.Model
// network, per class DMLoss between a real batch and G(codes of the
// class) under the same DSA augmentation, plus λ·mean_i ‖G(z_i) − x_i‖²
// keeping every image near its real image; the image gradient goes back
// through G (condGen.vjp) to the codes, which Adam updates.
//
// The GAN is a small MLP GAN (not the paper's BigGAN): generator
// condGen z(64)+label → 256 → 512 → C·H·W (tanh onto the pixel range),
// discriminator wnMLP C·H·W+label → 512 → 256 → 1, both weight-normalised
// with leaky ReLU, non-saturating loss, Adam β₁ 0.5, ITGAN.GANEpochs
// passes. The paper's regulariser is a feature-space distance and it adds
// a classification loss; here the regulariser is the pixel distance to
// the inverted image and there is no classification term.
//
// Budget: the stored set is the codes (classes·IPC·ZDim floats) and the
// generator that decodes them (about 555 000 floats for MNIST with the
// defaults), both charged against the plain budget classes·IPC·C·H·W. The
// paper counts only the codes, since its generator is trained once on the
// whole data set and shared; here that view needs ITGAN.OverBudget
// (--itgan-over-budget), and factors.npz reports both counts (gen_floats).
type itgan struct {
	cfg     Config
	real    *data.Dataset
	byClass [][]int
	gen     *condGen[float32]
	genHash uint64
	codes   *tensor.Tensor[float32] // (classes·IPC, ZDim), class-major
	target  *tensor.Tensor[float32] // the real images the codes were inverted from
	y       []int
	opt     *genAdam
	x       *tensor.Tensor[float32] // G(codes)
	shared  *data.DSA
}

func (d *itgan) Config() Config  { return d.cfg }
func (d *itgan) Iterative() bool { return true }

// Floats returns the stored floats charged to the budget (codes and
// generator).
func (d *itgan) Floats() int { return len(d.codes.Data) + d.gen.floats() }

// GeneratorFloats returns the generator's share of Floats.
func (d *itgan) GeneratorFloats() int { return d.gen.floats() }

// Stream of the GAN's random draws (weights, batches, noise).
const streamGAN = 3

func (d *itgan) Init(ctx context.Context, real *data.Dataset) error {
	if err := d.cfg.checkData(real); err != nil {
		return err
	}
	shape := real.ImageShape()
	dim := shape[0] * shape[1] * shape[2]
	codes := real.Classes * d.cfg.IPC * d.cfg.ITGAN.ZDim
	// The generator's size depends only on the configuration: count it on
	// an untrained one before the GAN's minutes of training.
	gen := newCondGen[float32](d.cfg.ITGAN.ZDim, real.Classes, d.cfg.ITGAN.Hidden, shape, real.Mean, real.Std, tensor.NewRNG(0, 0))
	if budget := real.Classes * d.cfg.IPC * dim; codes+gen.floats() > budget && !d.cfg.ITGAN.OverBudget {
		return fmt.Errorf("distill: itgan: %d codes of %d floats (%d) and the generator (%s, %d floats) store %d floats, more than the budget of %d images per class (%d floats): lower --gen-hidden or --gen-zdim, raise --ipc, or pass --itgan-over-budget to count the shared generator apart as the paper does",
			real.Classes*d.cfg.IPC, d.cfg.ITGAN.ZDim, codes, gen.describe(), gen.floats(), codes+gen.floats(), d.cfg.IPC, budget)
	}
	m, err := nn.New[float32](d.cfg.Model, shape, real.Classes, tensor.NewRNG(0, 0))
	if err != nil {
		return fmt.Errorf("distill: %w", err)
	}
	if _, ok := m.(nn.Embedder[float32]); !ok {
		return fmt.Errorf("distill: itgan needs a model that exposes its features; %q does not (use a ConvNet)", d.cfg.Model)
	}
	strategy, err := data.ParseDSAStrategy(d.cfg.DSAStrategy)
	if err != nil {
		return err
	}
	if len(strategy) > 0 {
		p := data.DefaultDSAParams()
		p.Shared = true
		d.shared = &data.DSA{Strategy: strategy, Params: p}
	}
	d.real, d.byClass = real, real.ClassIndices()
	gen, err = trainGAN(ctx, d.cfg, real)
	if err != nil {
		return err
	}
	d.gen, d.genHash = gen, hashTensors(gen.params())
	rng := tensor.NewRNG(d.cfg.Seed, streamInit)
	target := randomReal(real, d.byClass, d.cfg.IPC, rng)
	d.target, d.y = target.X, target.Y
	d.codes = tensor.New[float32](len(d.y), d.cfg.ITGAN.ZDim)
	tensor.FillNormal(rng, d.codes, 0, 1)
	if err := fitGenerator(ctx, d.gen, d.codes, d.y, d.target, d.cfg.ITGAN.InvertSteps, d.cfg.ITGAN.InvertLR, false); err != nil {
		return fmt.Errorf("distill: itgan inversion: %w", err)
	}
	d.opt = newGenAdam([]float64{d.cfg.LRImg}, 0.9, []*tensor.Tensor[float32]{d.codes})
	return d.decode()
}

func (d *itgan) decode() error {
	x, err := d.gen.generate(d.codes, d.y)
	if err != nil {
		return err
	}
	d.x = x
	return nil
}

// trainGAN trains the conditional MLP GAN of itgan on real (see itgan)
// and returns its generator. Every draw comes from the seed's GAN stream,
// so the generator is the same on every run with the same seed and data.
func trainGAN(ctx context.Context, cfg Config, real *data.Dataset) (*condGen[float32], error) {
	g := cfg.ITGAN
	shape := real.ImageShape()
	dim := shape[0] * shape[1] * shape[2]
	rng := tensor.NewRNG(cfg.Seed, streamGAN)
	gen := newCondGen[float32](g.ZDim, real.Classes, g.Hidden, shape, real.Mean, real.Std, rng)
	disc := newWNMLP[float32](dim, real.Classes, g.DiscHidden, 1, 1, rng)
	lrs := func(n int) []float64 {
		l := make([]float64, n)
		for i := range l {
			l[i] = g.GANLR
		}
		return l
	}
	optG := newGenAdam(lrs(len(gen.params())), 0.5, gen.params())
	optD := newGenAdam(lrs(len(disc.params)), 0.5, disc.params)
	n := real.Len()
	bs := min(g.GANBatch, n)
	z := tensor.New[float32](bs, g.ZDim)
	for epoch := range g.GANEpochs {
		perm := rng.Perm(n)
		for b := 0; b+bs <= n; b += bs {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("distill: itgan GAN training, epoch %d: %w", epoch, err)
			}
			xr, yr := real.Batch(perm[b : b+bs])
			tensor.FillNormal(rng, z, 0, 1)
			lossD, lossG, err := ganStep(gen, disc, optG, optD, xr, yr, z)
			if err != nil {
				return nil, fmt.Errorf("distill: itgan GAN training, epoch %d batch %d: %w", epoch, b/bs, err)
			}
			if math.IsNaN(lossD+lossG) || math.IsInf(lossD+lossG, 0) {
				return nil, fmt.Errorf("%w: itgan GAN training, epoch %d: losses D %v, G %v (lower --itgan-lr)", ErrDiverged, epoch, lossD, lossG)
			}
		}
	}
	return gen, nil
}

// ganStep takes one discriminator step (softplus(−D(x)) + softplus(D(G(z)))
// on a real batch and as many fakes of the same labels) and one
// non-saturating generator step (softplus(−D(G(z)))), and returns both
// losses.
func ganStep(gen *condGen[float32], disc *wnMLP[float32], optG, optD *genAdam, xr *tensor.Tensor[float32], yr []int, z *tensor.Tensor[float32]) (float64, float64, error) {
	bs := xr.Shape[0]
	flat := func(v *ag.Var[float32]) *ag.Var[float32] { return ag.Reshape(v, bs, len(v.Value.Data)/bs) }
	bind := func(tp *ag.Tape[float32], ts []*tensor.Tensor[float32], param bool) []*ag.Var[float32] {
		vs := make([]*ag.Var[float32], len(ts))
		for i, t := range ts {
			if param {
				vs[i] = tp.Param(t)
			} else {
				vs[i] = tp.Const(t)
			}
		}
		return vs
	}
	// Discriminator.
	fake, err := gen.generate(z, yr)
	if err != nil {
		return 0, 0, err
	}
	tp := ag.NewTape[float32]()
	dps := bind(tp, disc.params, true)
	dr := disc.forward(flat(tp.Const(xr)), yr, dps)
	df := disc.forward(flat(tp.Const(fake)), yr, dps)
	lossD := ag.Add(ag.Mean(ag.Softplus(ag.Neg(dr))), ag.Mean(ag.Softplus(df)))
	gs, err := tp.Grad([]*ag.Var[float32]{lossD}, nil, dps, false)
	if err != nil {
		tp.Release()
		return 0, 0, err
	}
	ld := float64(lossD.Value.Item())
	gd := make([]*tensor.Tensor[float32], len(gs))
	for i, v := range gs {
		gd[i] = v.Value.Clone()
	}
	tp.Release()
	if err := optD.step(disc.params, gd); err != nil {
		return ld, 0, err
	}
	// Generator.
	tp = ag.NewTape[float32]()
	defer tp.Release()
	gps := bind(tp, gen.params(), true)
	xf := gen.forward(tp.Const(z), yr, gps)
	lossG := ag.Mean(ag.Softplus(ag.Neg(disc.forward(flat(xf), yr, bind(tp, disc.params, false)))))
	gs, err = tp.Grad([]*ag.Var[float32]{lossG}, nil, gps, false)
	if err != nil {
		return ld, 0, err
	}
	gg := make([]*tensor.Tensor[float32], len(gs))
	for i, v := range gs {
		gg[i] = v.Value.Clone()
	}
	lg := float64(lossG.Value.Item())
	return ld, lg, optG.step(gen.params(), gg)
}

// hashTensors returns an FNV-1a hash of the tensors' bits: a checkpoint
// records the generator's, so it is never resumed with another GAN.
func hashTensors(ts []*tensor.Tensor[float32]) uint64 {
	h := fnv.New64a()
	var b [4]byte
	for _, t := range ts {
		for _, v := range t.Data {
			u := math.Float32bits(v)
			b[0], b[1], b[2], b[3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
			h.Write(b[:])
		}
	}
	return h.Sum64()
}

// objective returns the loss of one iteration — the mean over classes of
// DMLoss for the network m (one augmentation per class from rng when
// augmenting) plus λ·mean_i ‖x_i − target_i‖² — and its gradient with
// respect to the images x (class-major, IPC per class).
func (d *itgan) objective(m nn.Embedder[float32], x *tensor.Tensor[float32], rng *tensor.RNG) (float64, *tensor.Tensor[float32], error) {
	ipc := d.cfg.IPC
	reals := make([]*tensor.Tensor[float32], d.real.Classes)
	augs := make([]*data.Augmentation, d.real.Classes)
	for c := range d.real.Classes {
		idx := d.byClass[c]
		perm := rng.Perm(len(idx))
		pick := make([]int, min(d.cfg.BatchReal, len(idx)))
		for i := range pick {
			pick[i] = idx[perm[i]]
		}
		reals[c], _ = d.real.Batch(pick)
		if d.shared != nil {
			augs[c] = d.shared.Sample(rng, max(len(pick), ipc), reals[c].Shape[2], reals[c].Shape[3])
		}
	}
	return itganLoss(m, reals, augs, x, d.target, ipc, d.cfg.ITGAN.Rec)
}

// itganLoss is itgan's objective for given draws: the mean over classes c
// of DMLoss(m, reals[c], images of class c, augs[c]) plus, if lam > 0,
// lam·mean_i ‖x_i − target_i‖²; it returns the loss and its gradient with
// respect to x (class-major, ipc per class).
func itganLoss[T tensor.Float](m nn.Embedder[T], reals []*tensor.Tensor[T], augs []*data.Augmentation, x, target *tensor.Tensor[T], ipc int, lam float64) (float64, *tensor.Tensor[T], error) {
	gx := tensor.New[T](x.Shape...)
	var total float64
	for c, xr := range reals {
		loss, err := DMLoss(m, xr, classSlice(x, c, ipc), augs[c], classSlice(gx, c, ipc))
		if err != nil {
			return 0, nil, fmt.Errorf("class %d: %w", c, err)
		}
		total += loss
	}
	total /= float64(len(reals))
	for i := range gx.Data {
		gx.Data[i] /= T(len(reals)) // the loss is the mean over classes
	}
	if lam > 0 {
		n := float64(x.Shape[0])
		var rec float64
		for i, v := range x.Data {
			diff := float64(v) - float64(target.Data[i])
			rec += diff * diff
			gx.Data[i] += T(2 * lam / n * diff)
		}
		total += lam * rec / n
	}
	return total, gx, nil
}

func (d *itgan) Step(ctx context.Context, it int) (float64, error) {
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
	loss, gx, err := d.objective(m.(nn.Embedder[float32]), d.x, rng)
	if err != nil {
		return 0, fmt.Errorf("distill: itgan iteration %d: %w", it, err)
	}
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return loss, fmt.Errorf("%w: itgan iteration %d: loss is %v (lower --lr-img)", ErrDiverged, it, loss)
	}
	gz, _, err := d.gen.vjp(d.codes, d.y, gx, false)
	if err != nil {
		return loss, err
	}
	if err := d.opt.step([]*tensor.Tensor[float32]{d.codes}, []*tensor.Tensor[float32]{gz}); err != nil {
		return loss, fmt.Errorf("itgan iteration %d: %w", it, err)
	}
	return loss, d.decode()
}

func (d *itgan) Synthetic() *SyntheticSet {
	if d.x == nil {
		return nil
	}
	return &SyntheticSet{X: d.x.Clone(), Y: slices.Clone(d.y), Mean: slices.Clone(d.real.Mean), Std: slices.Clone(d.real.Std), Classes: d.real.Classes}
}

func (d *itgan) stateTensors() []*tensor.Tensor[float32] {
	hash := tensor.New[float32](2) // the generator's hash, as two float32 bit patterns
	hash.Data[0], hash.Data[1] = math.Float32frombits(uint32(d.genHash)), math.Float32frombits(uint32(d.genHash>>32))
	return append([]*tensor.Tensor[float32]{hash, d.codes}, d.opt.tensors()...)
}

func (d *itgan) Checkpoint(next int) *Checkpoint {
	c := &Checkpoint{Config: d.cfg, Next: next, Syn: d.Synthetic()}
	c.Config.ITGAN.State = packState(d.opt.t, d.stateTensors())
	return c
}

func (d *itgan) Restore(c *Checkpoint) error {
	if d.x == nil {
		return errors.New("distill: Restore before Init")
	}
	if c == nil || c.Syn == nil {
		return errors.New("distill: Restore: the checkpoint has no synthetic set")
	}
	st := c.Config.ITGAN.State
	if st == nil {
		return errors.New("distill: the checkpoint has no itgan state (codes, optimiser); it was not written by itgan")
	}
	plain := *c
	plain.Config.ITGAN.State = nil
	if err := plain.matches(d.cfg); err != nil {
		return err
	}
	ts := d.stateTensors()
	codes, opt := ts[1].Clone(), d.opt.tensors()
	saved := make([]*tensor.Tensor[float32], len(opt))
	for i, t := range opt {
		saved[i] = t.Clone()
	}
	t, err := unpackState(st, ts)
	if err == nil {
		h := uint64(math.Float32bits(ts[0].Data[0])) | uint64(math.Float32bits(ts[0].Data[1]))<<32
		if h != d.genHash {
			err = fmt.Errorf("distill: the checkpoint's codes belong to another generator (hash %016x, this run's %016x): same seed and data are needed to resume itgan", h, d.genHash)
		}
	}
	if err == nil {
		d.opt.t = t
		err = d.decode()
	}
	if err != nil {
		d.codes.CopyFrom(codes)
		for i, t := range opt {
			t.CopyFrom(saved[i])
		}
		return err
	}
	return nil
}

// SaveFactors writes the stored set to path (atomically) as an .npz file:
// codes float32 (classes·IPC, ZDim), class-major with IPC codes per class,
// the generator's layers gen_l<i>_v/_g/_b (as gtn's SaveFactors describes),
// floats int64 (1), the floats charged to the budget (codes and
// generator), and gen_floats int64 (1), the generator's share of them.
func (d *itgan) SaveFactors(path string) error {
	if d.gen == nil {
		return errors.New("distill: itgan: SaveFactors before Init")
	}
	ts := append([]namedTensor{{"codes", d.codes.Shape, d.codes.Data}}, genArrays(d.gen)...)
	return writeArrays(path, "itgan factors", ts, map[string]int64{"floats": int64(d.Floats()), "gen_floats": int64(d.GeneratorFloats())})
}
