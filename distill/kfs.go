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

// MethodKFS is latent-space knowledge factorization and sharing (Lee, Lee &
// Hwang, NeurIPS 2022; survey §5, code–decoder DD): per-class latent codes
// and a few tiny decoders shared by all classes, every (code, decoder)
// pair decoding to one image, trained with distribution matching.
const MethodKFS = "kfs"

// KFSConfig sizes and trains a kfs set. Zero values select the defaults
// listed per field; kfsDefaults fills them.
type KFSConfig struct {
	// Codes is the number of latent codes per class (0: as many as fit
	// the budget next to the decoders).
	Codes int `json:"codes,omitempty"`
	// Decoders is the number K of decoders shared by all classes
	// (default 8). A class decodes to Codes·Decoders images.
	Decoders int `json:"decoders,omitempty"`
	// CodeChannels is the channel count C' of a code (default the image
	// channels; at least the image channels, which the decoder's skip path
	// reads).
	CodeChannels int `json:"code_channels,omitempty"`
	// Downsample is the factor f (1, 2, 4 or 8) between the image and the
	// code: a code is C'×(H/f)×(W/f) (default 2). A decoder upsamples
	// log2 f times.
	Downsample int `json:"downsample,omitempty"`
	// Width is the hidden channel count of a decoder (default 8).
	Width int `json:"width,omitempty"`
	// LRCode and LRDecoder are the Adam learning rates of the codes and of
	// the decoder weights (defaults 0.01 and 0.001).
	LRCode    float64 `json:"lr_code,omitempty"`
	LRDecoder float64 `json:"lr_decoder,omitempty"`
	// Contrast is the weight λ of the class-prototype contrastive term
	// added to the DM loss (0: none; default 0). Temperature is its τ
	// (default 0.1).
	Contrast    float64 `json:"contrast,omitempty"`
	Temperature float64 `json:"temperature,omitempty"`
	// BatchCodes, if positive, decodes only that many randomly drawn codes
	// of each class per iteration (all decoders each), a stochastic
	// estimate of the DM loss for large sets (0: all codes).
	BatchCodes int `json:"batch_codes,omitempty"`
	// MaxFloats overrides the budget of stored floats (0: a plain set of
	// IPC images per class, classes·IPC·C·H·W).
	MaxFloats int `json:"max_floats,omitempty"`
}

// kfsDefaults fills the zero fields of cfg.KFS (image-independent ones;
// CodeChannels and Codes depend on the data and are resolved in Init).
func (cfg Config) kfsDefaults() Config {
	if cfg.Method != MethodKFS {
		return cfg
	}
	k := &cfg.KFS
	if k.Decoders == 0 {
		k.Decoders = 8
	}
	if k.Downsample == 0 {
		k.Downsample = 2
	}
	if k.Width == 0 {
		k.Width = 8
	}
	if k.LRCode == 0 {
		k.LRCode = 0.01
	}
	if k.LRDecoder == 0 {
		k.LRDecoder = 0.001
	}
	if k.Temperature == 0 {
		k.Temperature = 0.1
	}
	return cfg
}

// kfsValidate checks cfg.KFS (after Defaults) without looking at data.
func (cfg Config) kfsValidate() []error {
	if cfg.Method != MethodKFS {
		return nil
	}
	k := cfg.KFS
	var errs []error
	finitePos := func(v float64) bool { return v > 0 && !math.IsInf(v, 0) }
	if k.Codes < 0 || k.Decoders < 1 || k.CodeChannels < 0 || k.Width < 1 || k.BatchCodes < 0 || k.MaxFloats < 0 {
		errs = append(errs, fmt.Errorf("sizes: codes %d, decoders %d, code channels %d, width %d, batch codes %d and max floats %d: want decoders and width ≥ 1, the others ≥ 0 (0: default)",
			k.Codes, k.Decoders, k.CodeChannels, k.Width, k.BatchCodes, k.MaxFloats))
	}
	if !slices.Contains([]int{1, 2, 4, 8}, k.Downsample) {
		errs = append(errs, fmt.Errorf("downsampling factor %d: want 1, 2, 4 or 8 (--kfs-downsample; default 2)", k.Downsample))
	}
	if !finitePos(k.LRCode) || !finitePos(k.LRDecoder) {
		errs = append(errs, fmt.Errorf("learning rates of codes %g and decoders %g must be positive (--kfs-lr-code, --kfs-lr-decoder)", k.LRCode, k.LRDecoder))
	}
	if !(k.Contrast >= 0) || math.IsInf(k.Contrast, 0) || !finitePos(k.Temperature) {
		errs = append(errs, fmt.Errorf("contrastive weight %g must be ≥ 0 and temperature %g positive (--kfs-contrast, --kfs-temperature)", k.Contrast, k.Temperature))
	}
	if cfg.DP != nil {
		errs = append(errs, errors.New("no private variant: drop the DP settings"))
	}
	return errs
}

// kfsLayout is the resolved shape of a kfs set for one data set.
type kfsLayout struct {
	classes, codes, decoders int
	c, h, w                  int // image shape
	cz, hz, wz               int // code shape
	width, ups               int // decoder hidden channels, upsamplings (log2 f)
}

// codeFloats is the size of one code.
func (l kfsLayout) codeFloats() int { return l.cz * l.hz * l.wz }

// decoderShapes lists the parameter shapes of one decoder: for each
// upsampling stage a 3×3 conv (in → width) and its bias, then the output
// 3×3 conv (→ image channels) and its bias.
func (l kfsLayout) decoderShapes() [][]int {
	var s [][]int
	in := l.cz
	for range l.ups {
		s = append(s, []int{l.width, in, 3, 3}, []int{l.width})
		in = l.width
	}
	return append(s, []int{l.c, in, 3, 3}, []int{l.c})
}

// decoderFloats is the size of one decoder.
func (l kfsLayout) decoderFloats() int {
	n := 0
	for _, s := range l.decoderShapes() {
		n += tensor.Size(s)
	}
	return n
}

// floats is the number of stored floats the set is charged for.
func (l kfsLayout) floats() int {
	return l.classes*l.codes*l.codeFloats() + l.decoders*l.decoderFloats()
}

// perClass is the number of decoded images per class.
func (l kfsLayout) perClass() int { return l.codes * l.decoders }

// kfsResolve sizes a kfs set for images of shape (C, H, W) and classes
// classes, or says which flag to change.
func kfsResolve(cfg Config, classes int, shape []int) (kfsLayout, error) {
	k := cfg.KFS
	l := kfsLayout{classes: classes, decoders: k.Decoders, c: shape[0], h: shape[1], w: shape[2], width: k.Width}
	l.cz = k.CodeChannels
	if l.cz == 0 {
		l.cz = l.c
	}
	if l.cz < l.c {
		return l, fmt.Errorf("distill: kfs: %d code channels are fewer than the %d image channels the decoder's skip path reads: raise --kfs-code-channels", l.cz, l.c)
	}
	f := k.Downsample
	if l.h%f != 0 || l.w%f != 0 {
		return l, fmt.Errorf("distill: kfs: images of %d×%d cannot be downsampled by %d: choose a --kfs-downsample that divides both", l.h, l.w, f)
	}
	l.hz, l.wz = l.h/f, l.w/f
	for f > 1 {
		l.ups++
		f /= 2
	}
	budget := k.MaxFloats
	if budget == 0 {
		budget = classes * cfg.IPC * l.c * l.h * l.w
	}
	dec := l.decoders * l.decoderFloats()
	l.codes = k.Codes
	if l.codes == 0 {
		l.codes = (budget - dec) / (classes * l.codeFloats())
		if l.codes < 1 {
			return l, fmt.Errorf("distill: kfs: %d decoders of %d floats leave %d of the budget of %d floats (%d images per class) for %d classes × codes of %d floats: lower --kfs-decoders, --kfs-width or --kfs-code-channels, raise --kfs-downsample or --ipc, or set --kfs-max-floats",
				l.decoders, l.decoderFloats(), budget-dec, budget, cfg.IPC, classes, l.codeFloats())
		}
	}
	if n := l.floats(); n > budget {
		return l, fmt.Errorf("distill: kfs: %d codes per class of %d floats for %d classes and %d decoders of %d floats store %d floats, more than the budget of %d (%d images per class): lower --kfs-codes or --kfs-decoders, or raise --kfs-max-floats",
			l.codes, l.codeFloats(), classes, l.decoders, l.decoderFloats(), n, budget, cfg.IPC)
	}
	if k.BatchCodes > l.codes {
		return l, fmt.Errorf("distill: kfs: --kfs-batch-codes %d is more than the %d codes per class", k.BatchCodes, l.codes)
	}
	// The checkpoint carries the factors and both Adam moments in its
	// velocity array, which has the decoded images' size.
	if state, room := 3*l.floats(), classes*l.perClass()*l.c*l.h*l.w; state > room {
		return l, fmt.Errorf("distill: kfs: the factors (%d floats) decode to only %d images per class (%d floats), less than 3× the floats stored, too little to be worth factorizing (and the checkpoint could not hold the optimiser state): use more --kfs-decoders or smaller codes (--kfs-code-channels, --kfs-downsample)",
			l.floats(), l.perClass(), room)
	}
	return l, nil
}

// kfsUpsample2 is nearest-neighbour upsampling by 2 of x (N, C, H, W),
// written with differentiable reshapes and a broadcast.
func kfsUpsample2[T tensor.Float](x *ag.Var[T]) *ag.Var[T] {
	s := x.Value.Shape
	n, c, h, w := s[0], s[1], s[2], s[3]
	y := ag.Reshape(x, n*c*h, 1, w, 1)
	y = ag.BroadcastTo(y, []int{n * c * h, 2, w, 2})
	return ag.Reshape(y, n, c, 2*h, 2*w)
}

// kfsDecode maps codes z (N, C', h, w) through one decoder with parameters
// ps (decoderShapes' order) to images (N, C, h·2^ups, w·2^ups): ups stages
// of nearest ×2 upsampling, 3×3 conv and ReLU, an output 3×3 conv, plus a
// skip path that upsamples the code's first C channels. The skip makes a
// code initialised from a downsampled real image decode to (nearly) that
// image, so training starts from real data as DM does.
func kfsDecode[T tensor.Float](z *ag.Var[T], ps []*ag.Var[T], ups, c int) *ag.Var[T] {
	same := tensor.ConvParams{StrideH: 1, StrideW: 1, PadH: 1, PadW: 1}
	a := z
	for i := range ups {
		a = ag.ReLU(ag.Conv2D(kfsUpsample2(a), ps[2*i], ps[2*i+1], same))
	}
	out := ag.Conv2D(a, ps[2*ups], ps[2*ups+1], same)
	skip := z
	if z.Value.Shape[1] != c {
		skip = ag.Slice(z, 1, 0, c)
	}
	for range ups {
		skip = kfsUpsample2(skip)
	}
	return ag.Add(out, skip)
}

// kfsDecodeAll decodes codes (N, C', h, w) with every decoder and returns
// the images decoder-major: image k·N + i is decoder k applied to code i.
func kfsDecodeAll[T tensor.Float](z *ag.Var[T], decs [][]*ag.Var[T], ups, c int) *ag.Var[T] {
	outs := make([]*ag.Var[T], len(decs))
	for k, ps := range decs {
		outs[k] = kfsDecode(z, ps, ups, c)
	}
	if len(outs) == 1 {
		return outs[0]
	}
	return ag.Concat(0, outs...)
}

// kfsLoss is one class's kfs objective for the network m (held constant):
// the DM loss ‖target − mean embed(A(decode(codes)))‖² plus, when
// contrast > 0, contrast times the class-prototype contrastive loss: the
// mean cross entropy, over the class's synthetic images, of
// softmax_c'(cos(embed(s), protos[c'])/τ) against class c. protos
// (classes, E) are the classes' mean real embeddings of the same network.
// codes (n, C', h, w) are this class's codes, decs every decoder's
// parameters. It returns the loss and its gradients with respect to codes
// and to every decoder parameter (decs' layout).
func kfsLoss[T tensor.Float](m nn.Embedder[T], target, protos *tensor.Tensor[T], c int, codes *tensor.Tensor[T], decs [][]*tensor.Tensor[T],
	ups, channels int, aug *data.Augmentation, contrast, tau float64) (float64, *tensor.Tensor[T], [][]*tensor.Tensor[T], error) {
	tp := ag.NewTape[T]()
	defer tp.Release()
	zv := tp.Param(codes)
	wrt := []*ag.Var[T]{zv}
	dv := make([][]*ag.Var[T], len(decs))
	for k, ps := range decs {
		dv[k] = make([]*ag.Var[T], len(ps))
		for j, p := range ps {
			dv[k][j] = tp.Param(p)
			wrt = append(wrt, dv[k][j])
		}
	}
	x := kfsDecodeAll(zv, dv, ups, channels)
	if aug != nil {
		x = data.Apply(aug, x)
	}
	e := m.Embed(x, nn.BindConst(tp, m))
	mean := ag.MeanAxes(e, []int{0}, false)
	loss := ag.Sum(ag.Square(ag.Sub(tp.Const(target), mean)))
	if contrast > 0 && protos != nil {
		norm := ag.Rsqrt(ag.AddScalar(ag.SumAxes(ag.Square(e), []int{1}, true), 1e-12))
		en := ag.Mul(e, norm)
		logits := ag.Scale(ag.MatMul(en, tp.Const(protos), false, true), T(1/tau))
		labels := make([]int, e.Value.Shape[0])
		for i := range labels {
			labels[i] = c
		}
		loss = ag.Add(loss, ag.Scale(ag.CrossEntropy(logits, labels), T(contrast)))
	}
	gs, err := tp.Grad([]*ag.Var[T]{loss}, nil, wrt, false)
	if err != nil {
		return 0, nil, nil, err
	}
	gz := gs[0].Value.Clone()
	gd := make([][]*tensor.Tensor[T], len(decs))
	i := 1
	for k, ps := range decs {
		gd[k] = make([]*tensor.Tensor[T], len(ps))
		for j := range ps {
			gd[k][j] = gs[i].Value.Clone()
			i++
		}
	}
	return float64(loss.Value.Item()), gz, gd, nil
}

// kfsPrototypes returns the rows of means (classes, E) scaled to unit
// length, the contrastive term's class prototypes.
func kfsPrototypes[T tensor.Float](means []*tensor.Tensor[T]) *tensor.Tensor[T] {
	e := means[0].Len()
	p := tensor.New[T](len(means), e)
	for c, m := range means {
		var s float64
		for _, v := range m.Data {
			s += float64(v) * float64(v)
		}
		inv := 1 / math.Sqrt(s+1e-12)
		for j, v := range m.Data {
			p.Data[c*e+j] = T(float64(v) * inv)
		}
	}
	return p
}

// kfs is the distiller: codes (classes·Codes, C', h, w), class-major, and
// Decoders small decoders, trained with Adam on the DM loss (Zhao &
// Bilen's: a fresh random network per iteration, 256 real images per
// class, Siamese DSA) of the decoded images, the gradients flowing through
// the decoders by the engine's autograd.
//
// Simplifications against the paper: the decoder is our own tiny
// upsample–conv stack with a skip path (the paper's exact decoder is not
// reproduced); codes start from average-pooled real images (extra code
// channels from small noise; Config.Init = noise: from noise); the
// paper's additional regulariser is replaced by an optional
// class-prototype contrastive term (KFSConfig.Contrast, off by default).
//
// Checkpoints carry the factors and the Adam moments packed into the
// velocity array (the step count is the checkpoint's iteration count), so
// a resumed run is identical to an uninterrupted one.
type kfs struct {
	cfg     Config
	lay     kfsLayout
	real    *data.Dataset
	byClass [][]int
	shared  *data.DSA
	codes   *tensor.Tensor[float32]
	decs    [][]*tensor.Tensor[float32]
	m, v    []float32 // Adam moments over params() flattened
	t       int       // Adam steps taken
	syn     *SyntheticSet
}

func newKFS(cfg Config) *kfs { return &kfs{cfg: cfg} }

func (d *kfs) Config() Config  { return d.cfg }
func (d *kfs) Iterative() bool { return true }

// Layout reports the resolved sizes (after Init): codes per class,
// decoders, decoded images per class and stored floats.
func (d *kfs) Layout() (codes, decoders, perClass, floats int) {
	return d.lay.codes, d.lay.decoders, d.lay.perClass(), d.lay.floats()
}

// params lists the learned tensors: the codes, then every decoder's
// parameters.
func (d *kfs) params() []*tensor.Tensor[float32] {
	ps := []*tensor.Tensor[float32]{d.codes}
	for _, dec := range d.decs {
		ps = append(ps, dec...)
	}
	return ps
}

func (d *kfs) Init(_ context.Context, real *data.Dataset) error {
	if err := d.cfg.checkData(real); err != nil {
		return err
	}
	lay, err := kfsResolve(d.cfg, real.Classes, real.ImageShape())
	if err != nil {
		return err
	}
	m, err := nn.New[float32](d.cfg.Model, real.ImageShape(), real.Classes, tensor.NewRNG(0, 0))
	if err != nil {
		return fmt.Errorf("distill: %w", err)
	}
	if _, ok := m.(nn.Embedder[float32]); !ok {
		return fmt.Errorf("distill: kfs needs a model that exposes its features; %q does not (use a ConvNet)", d.cfg.Model)
	}
	strategy, err := data.ParseDSAStrategy(d.cfg.DSAStrategy)
	if err != nil {
		return err
	}
	d.shared = nil
	if len(strategy) > 0 {
		p := data.DefaultDSAParams()
		p.Shared = true
		d.shared = &data.DSA{Strategy: strategy, Params: p}
	}
	d.lay, d.real, d.byClass = lay, real, real.ClassIndices()
	rng := tensor.NewRNG(d.cfg.Seed, streamInit)
	d.codes = d.initCodes(rng)
	d.decs = make([][]*tensor.Tensor[float32], lay.decoders)
	for k := range d.decs {
		d.decs[k] = kfsInitDecoder(lay, rng)
	}
	n := lay.floats()
	d.m, d.v, d.t = make([]float32, n), make([]float32, n), 0
	d.decode()
	return nil
}

// initCodes draws Codes real images of every class (cycling if a class
// has fewer) and average-pools them by the downsampling factor into the
// codes' first C channels; extra channels get N(0, 0.1²) noise. With
// Config.Init = noise every code entry is N(0, 1) instead.
func (d *kfs) initCodes(rng *tensor.RNG) *tensor.Tensor[float32] {
	l := d.lay
	if d.cfg.Init == InitNoise {
		z := tensor.New[float32](l.classes*l.codes, l.cz, l.hz, l.wz)
		tensor.FillNormal(rng, z, 0, 1)
		return z
	}
	var pick []int
	for _, idx := range d.byClass {
		perm := rng.Perm(len(idx))
		for i := range l.codes {
			pick = append(pick, idx[perm[i%len(idx)]])
		}
	}
	x, _ := d.real.Batch(pick)
	z := tensor.New[float32](len(pick), l.cz, l.hz, l.wz)
	f := l.h / l.hz
	inv := 1 / float32(f*f)
	for i := range len(pick) {
		for ch := range l.c {
			src := x.Data[(i*l.c+ch)*l.h*l.w:]
			dst := z.Data[(i*l.cz+ch)*l.hz*l.wz:]
			for r := range l.h {
				for q := range l.w {
					dst[(r/f)*l.wz+q/f] += inv * src[r*l.w+q]
				}
			}
		}
		for ch := l.c; ch < l.cz; ch++ {
			dst := z.Data[(i*l.cz+ch)*l.hz*l.wz : (i*l.cz+ch+1)*l.hz*l.wz]
			for j := range dst {
				dst[j] = float32(0.1 * rng.NormFloat64())
			}
		}
	}
	return z
}

// kfsInitDecoder draws one decoder: PyTorch's default conv initialisation
// (uniform in ±1/√fan_in for weights and biases) for the hidden convs, and
// a tenth of that for the output conv's weights with a zero bias, so a
// decoded image starts close to its code's skip path (the upsampled real
// image) while each decoder already differs a little.
func kfsInitDecoder(l kfsLayout, rng *tensor.RNG) []*tensor.Tensor[float32] {
	shapes := l.decoderShapes()
	ps := make([]*tensor.Tensor[float32], len(shapes))
	for j := 0; j < len(shapes); j += 2 {
		w, b := tensor.New[float32](shapes[j]...), tensor.New[float32](shapes[j+1]...)
		fanIn := shapes[j][1] * shapes[j][2] * shapes[j][3]
		bound := 1 / math.Sqrt(float64(fanIn))
		out := j == len(shapes)-2
		if out {
			bound *= 0.1
		}
		for i := range w.Data {
			w.Data[i] = float32(bound * (2*rng.Float64() - 1))
		}
		if !out {
			for i := range b.Data {
				b.Data[i] = float32(bound * (2*rng.Float64() - 1))
			}
		}
		ps[j], ps[j+1] = w, b
	}
	return ps
}

// classCodes returns the codes of class c (a view).
func (d *kfs) classCodes(c int) *tensor.Tensor[float32] {
	n := d.lay.codes * d.lay.codeFloats()
	return &tensor.Tensor[float32]{Shape: []int{d.lay.codes, d.lay.cz, d.lay.hz, d.lay.wz}, Data: d.codes.Data[c*n : (c+1)*n]}
}

// decode refreshes the synthetic set from the factors: class-major, and
// within a class decoder-major (image k·Codes + i is decoder k of code i).
func (d *kfs) decode() {
	l := d.lay
	x := tensor.New[float32](l.classes*l.perClass(), l.c, l.h, l.w)
	y := make([]int, 0, l.classes*l.perClass())
	tp := ag.NewTape[float32]()
	defer tp.Release()
	tp.NoGrad(func() {
		decs := make([][]*ag.Var[float32], len(d.decs))
		for k, ps := range d.decs {
			decs[k] = make([]*ag.Var[float32], len(ps))
			for j, p := range ps {
				decs[k][j] = tp.Const(p)
			}
		}
		per := l.perClass() * l.c * l.h * l.w
		for c := range l.classes {
			out := kfsDecodeAll(tp.Const(d.classCodes(c)), decs, l.ups, l.c)
			copy(x.Data[c*per:(c+1)*per], out.Value.Data)
			for range l.perClass() {
				y = append(y, c)
			}
		}
	})
	d.syn = &SyntheticSet{X: x, Y: y, Mean: slices.Clone(d.real.Mean), Std: slices.Clone(d.real.Std), Classes: d.real.Classes}
}

func (d *kfs) Step(ctx context.Context, it int) (float64, error) {
	if d.codes == nil {
		return 0, errors.New("distill: Step before Init")
	}
	l, k := d.lay, d.cfg.KFS
	rng := iterRNG(d.cfg.Seed, it)
	net, err := nn.New[float32](d.cfg.Model, d.real.ImageShape(), d.real.Classes, rng)
	if err != nil {
		return 0, fmt.Errorf("distill: %w", err)
	}
	emb := net.(nn.Embedder[float32])
	if tm, ok := net.(nn.Trainable); ok {
		tm.SetTraining(true)
	}
	nSyn := l.perClass()
	if k.BatchCodes > 0 {
		nSyn = k.BatchCodes * l.decoders
	}
	// The real side first: every class's batch, augmentation and mean
	// embedding (the DM targets and the contrastive prototypes).
	targets := make([]*tensor.Tensor[float32], l.classes)
	augs := make([]*data.Augmentation, l.classes)
	for c := range l.classes {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("distill: iteration %d: %w", it, err)
		}
		xr, _ := d.realBatch(c, rng)
		if d.shared != nil {
			augs[c] = d.shared.Sample(rng, max(xr.Shape[0], nSyn), l.h, l.w)
		}
		if targets[c], err = embedConst(emb, xr, augs[c], true); err != nil {
			return 0, fmt.Errorf("distill: kfs iteration %d class %d: %w", it, c, err)
		}
	}
	var protos *tensor.Tensor[float32]
	if k.Contrast > 0 {
		protos = kfsPrototypes(targets)
	}
	grads := make([]*tensor.Tensor[float32], 0, 1+len(d.decs)*len(d.decs[0]))
	gCodes := tensor.New[float32](d.codes.Shape...)
	grads = append(grads, gCodes)
	for _, ps := range d.decs {
		for _, p := range ps {
			grads = append(grads, tensor.New[float32](p.Shape...))
		}
	}
	var total float64
	for c := range l.classes {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("distill: iteration %d: %w", it, err)
		}
		codes := d.classCodes(c)
		var pick []int
		if k.BatchCodes > 0 {
			pick = rng.Perm(l.codes)[:k.BatchCodes]
			codes = kfsRows(codes, pick)
		}
		loss, gz, gd, err := kfsLoss(emb, targets[c], protos, c, codes, d.decs, l.ups, l.c, augs[c], k.Contrast, k.Temperature)
		if err != nil {
			return 0, fmt.Errorf("distill: kfs iteration %d class %d: %w", it, c, err)
		}
		total += loss
		row := l.codeFloats()
		dst := gCodes.Data[c*l.codes*row : (c+1)*l.codes*row]
		if pick == nil {
			copy(dst, gz.Data)
		} else {
			for r, i := range pick {
				copy(dst[i*row:(i+1)*row], gz.Data[r*row:(r+1)*row])
			}
		}
		g := 1
		for kk := range gd {
			for _, t := range gd[kk] {
				for q, v := range t.Data {
					grads[g].Data[q] += v
				}
				g++
			}
		}
	}
	total /= float64(l.classes)
	if err := d.adam(it, total, grads); err != nil {
		return total, err
	}
	d.decode()
	return total, nil
}

// kfsRows copies rows idx of x (N, …) into a new tensor.
func kfsRows(x *tensor.Tensor[float32], idx []int) *tensor.Tensor[float32] {
	row := len(x.Data) / x.Shape[0]
	out := tensor.New[float32](append([]int{len(idx)}, x.Shape[1:]...)...)
	for r, i := range idx {
		copy(out.Data[r*row:(r+1)*row], x.Data[i*row:(i+1)*row])
	}
	return out
}

// realBatch draws up to BatchReal real images of class c without
// replacement (as DM does).
func (d *kfs) realBatch(c int, rng *tensor.RNG) (*tensor.Tensor[float32], []int) {
	idx := d.byClass[c]
	perm := rng.Perm(len(idx))
	n := min(d.cfg.BatchReal, len(idx))
	pick := make([]int, n)
	for i := range n {
		pick[i] = idx[perm[i]]
	}
	return d.real.Batch(pick)
}

// adam takes one Adam step (PyTorch's defaults β 0.9, 0.999, ε 1e-8) on
// the codes at LRCode and the decoders at LRDecoder. It checks everything
// first and leaves the factors unchanged when the loss, a gradient or a
// new value would not be finite.
func (d *kfs) adam(it int, loss float64, grads []*tensor.Tensor[float32]) error {
	k := d.cfg.KFS
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return fmt.Errorf("%w: kfs iteration %d: loss is %v (lower --kfs-lr-code or --kfs-lr-decoder, now %g and %g)", ErrDiverged, it, loss, k.LRCode, k.LRDecoder)
	}
	for _, g := range grads {
		if i := tensor.FirstNonFinite(g.Data); i >= 0 {
			return fmt.Errorf("%w: kfs iteration %d: a factor gradient is not finite (%v)", ErrDiverged, it, g.Data[i])
		}
	}
	const b1, b2, eps = 0.9, 0.999, 1e-8
	t := d.t + 1
	bc1 := 1 - math.Pow(b1, float64(t))
	bc2 := math.Sqrt(1 - math.Pow(b2, float64(t)))
	ps := d.params()
	newM, newV := make([]float32, len(d.m)), make([]float32, len(d.v))
	vals := make([][]float32, len(ps))
	off := 0
	for i, p := range ps {
		lr := k.LRDecoder
		if i == 0 {
			lr = k.LRCode
		}
		step := lr / bc1
		vals[i] = make([]float32, len(p.Data))
		for j, g := range grads[i].Data {
			gv := float64(g)
			mj := b1*float64(d.m[off+j]) + (1-b1)*gv
			vj := b2*float64(d.v[off+j]) + (1-b2)*gv*gv
			newM[off+j], newV[off+j] = float32(mj), float32(vj)
			nv := float32(float64(p.Data[j]) - step*mj/(math.Sqrt(vj)/bc2+eps))
			if math.IsNaN(float64(nv)) || math.IsInf(float64(nv), 0) {
				return fmt.Errorf("%w: kfs iteration %d: a factor would become %v", ErrDiverged, it, nv)
			}
			vals[i][j] = nv
		}
		off += len(p.Data)
	}
	for i, p := range ps {
		copy(p.Data, vals[i])
	}
	d.m, d.v, d.t = newM, newV, t
	return nil
}

func (d *kfs) Synthetic() *SyntheticSet { return d.syn }

// Checkpoint packs [factors | Adam m | Adam v] into the velocity array
// (the decoded images' shape, zero-padded; kfsResolve checked that they
// fit); Adam's step count is next.
func (d *kfs) Checkpoint(next int) *Checkpoint {
	v := tensor.New[float32](d.syn.X.Shape...)
	off := 0
	for _, p := range d.params() {
		off += copy(v.Data[off:], p.Data)
	}
	off += copy(v.Data[off:], d.m)
	copy(v.Data[off:], d.v)
	return &Checkpoint{Config: d.cfg, Next: next, Syn: d.syn.Clone(), Velocity: v}
}

func (d *kfs) Restore(c *Checkpoint) error {
	if d.codes == nil {
		return errors.New("distill: Restore before Init")
	}
	if c == nil || c.Syn == nil || c.Syn.X == nil {
		return errors.New("distill: Restore: the checkpoint has no synthetic set")
	}
	if err := c.matches(d.cfg); err != nil {
		return err
	}
	n := d.lay.floats()
	if !equalShape(c.Syn.X.Shape, d.syn.X.Shape) || c.Velocity == nil || len(c.Velocity.Data) < 3*n {
		return fmt.Errorf("distill: kfs: the checkpoint has images %v and %d packed values; this run decodes %v from %d factors (want %d values)",
			c.Syn.X.Shape, lenOf(c.Velocity), d.syn.X.Shape, n, 3*n)
	}
	off := 0
	for _, p := range d.params() {
		off += copy(p.Data, c.Velocity.Data[off:off+len(p.Data)])
	}
	copy(d.m, c.Velocity.Data[n:2*n])
	copy(d.v, c.Velocity.Data[2*n:3*n])
	d.t = c.Next
	d.decode()
	return nil
}

// SaveFactors writes the stored artifact of a kfs run to path
// (atomically) as an .npz file: codes float32 (classes, Codes, C', h, w);
// for each decoder k its convs dec{k}_conv{j}_w (F, C, 3, 3) and
// dec{k}_conv{j}_b (F), j = 0 … log2 f (the last is the output conv);
// floats int64 (1), the number of stored floats the set is charged for,
// and budget int64 (1), the floats of IPC plain images per class (or
// MaxFloats).
func (d *kfs) SaveFactors(path string) error {
	if d.codes == nil {
		return errors.New("distill: kfs: SaveFactors before Init")
	}
	l := d.lay
	budget := d.cfg.KFS.MaxFloats
	if budget == 0 {
		budget = l.classes * d.cfg.IPC * l.c * l.h * l.w
	}
	var arrays []*npz.Array
	add := func(name string, shape []int, v any) error {
		a, err := npz.New(name, shape, v)
		if err != nil {
			return fmt.Errorf("distill: kfs factors: %w", err)
		}
		arrays = append(arrays, a)
		return nil
	}
	if err := add("codes", []int{l.classes, l.codes, l.cz, l.hz, l.wz}, slices.Clone(d.codes.Data)); err != nil {
		return err
	}
	for k, ps := range d.decs {
		for j, p := range ps {
			suffix := "w"
			if j%2 == 1 {
				suffix = "b"
			}
			if err := add(fmt.Sprintf("dec%d_conv%d_%s", k, j/2, suffix), slices.Clone(p.Shape), slices.Clone(p.Data)); err != nil {
				return err
			}
		}
	}
	if err := add("floats", []int{1}, []int64{int64(l.floats())}); err != nil {
		return err
	}
	if err := add("budget", []int{1}, []int64{int64(budget)}); err != nil {
		return err
	}
	if err := npz.Write(path, arrays); err != nil {
		return fmt.Errorf("distill: writing kfs factors: %w", err)
	}
	return nil
}
