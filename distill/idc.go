package distill

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/internal/npz"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// MethodIDC is IDC, "Dataset Condensation via Efficient Synthetic-Data
// Parameterization" (Kim et al., ICML 2022; survey §5, code-based
// factorization): every stored image is decoded by the deterministic
// multi-formation function into Factor² images (idcFormation), and the
// stored images are learned end to end by gradient matching with Siamese
// augmentation, the matching network being trained on real data between
// image updates (survey eq. 27).
const MethodIDC = "idc"

// Gradient distances of IDC (IDCConfig.Metric) besides the layer-wise and
// magnitude-aware ones of DC and DCC (DistanceLayerwise,
// DistanceMagnitude), which idc also accepts.
const (
	// IDCMetricL1 is Σ|∇θ_real − ∇θ_syn| over the matched parameters
	// (IDC's "l1", its choice for MNIST and Fashion-MNIST).
	IDCMetricL1 = "l1"
	// IDCMetricMSE is Σ(∇θ_real − ∇θ_syn)² over the matched parameters
	// (IDC's "mse", its choice for CIFAR and SVHN).
	IDCMetricMSE = "mse"
)

// Network-update mixing of IDC (IDCConfig.Mixup).
const (
	IDCMixupCut  = "cut"  // CutMix with probability MixProb (IDC's mixup_net "cut")
	IDCMixupNone = "none" // plain batches (IDC's "vanilla")
)

// idcNetMomentum and idcNetWeightDecay are the SGD settings of the
// matching network's updates on real data (IDC argument.py: --momentum
// 0.9, --weight-decay 5e-4, shared with its evaluation).
const (
	idcNetMomentum    = 0.9
	idcNetWeightDecay = 5e-4
)

// IDCConfig configures idc. Zero values select the defaults of IDC's
// reference settings (misc/reproduce.py, argument.py; docs/hyperparameters.md
// has the sources). idc also reads these fields of Config:
//
//   - OuterLoop: image-update rounds per network (IDC's inner_loop, 100);
//     one Step is one network, IDC's outer iteration;
//   - InnerLoop: epochs of NetData real images the network trains between
//     rounds (IDC's net_epoch, 1; 0 turns the updates off);
//   - BatchReal: real images per class per matching and the network's
//     batch size (IDC's batch_real, 64);
//   - LRImg, Momentum: SGD on the stored images (IDC's lr_img, scaled by
//     IPC and converted to the normalized space, and mom_img 0.5);
//   - LRNet: the network's SGD rate (0.01; momentum 0.9 and weight decay
//     5e-4 are fixed, as IDC's);
//   - DSAStrategy: the Siamese matching augmentation (IDC's aug_type);
//   - Init: "real" is IDC's initialisation (for Factor > 1 its "mix":
//     each stored image is a grid of Factor² real images shrunk by
//     nearest-neighbour resizing), "noise" standard normal noise;
//   - Match.InnerReal: set by the defaults (the network trains on real
//     data, eq. 27); Match.ClassSum is not supported.
type IDCConfig struct {
	// Factor is the multi-formation factor f: each stored image is cut
	// into an f×f grid and every cell upsampled back to full size, so a
	// class has f²·IPC training images (default 2; 1 is IDC-I, no
	// decoding).
	Factor int `json:"factor,omitempty"`
	// Metric is the gradient distance: IDCMetricL1 (default for mnist and
	// fmnist), IDCMetricMSE (default for cifar10), DistanceLayerwise or
	// DistanceMagnitude.
	Metric string `json:"metric,omitempty"`
	// MatchFC also matches the gradients of fully connected weights with
	// l1 and mse (IDC's --fc, off: only convolution kernels are matched;
	// biases and normalisation parameters never are).
	MatchFC bool `json:"match_fc,omitempty"`
	// NetData is the number of real images of one network-training epoch
	// between rounds (IDC's n_data, default 500; 2000 for cifar10).
	NetData int `json:"net_data,omitempty"`
	// Mixup is IDCMixupCut or IDCMixupNone for the network updates
	// (default cut, except none for mnist with Factor > 1, as IDC); with
	// CutMix, cutout is dropped from their per-sample augmentation.
	Mixup string `json:"mixup,omitempty"`
	// MixProb is the probability of CutMix per batch (IDC's mix_p, 0.5).
	MixProb float64 `json:"mix_prob,omitempty"`
	// BatchSynMax caps the decoded images of a class used per matching: a
	// random subset of that many when there are more (IDC's batch_syn_max,
	// 128).
	BatchSynMax int `json:"batch_syn_max,omitempty"`
}

// idcDefaults fills idc's zero fields for the data set dataset (a name as
// for data.Load). It runs before the generic defaults, so it can choose
// its own batch, loops, learning rate and augmentation.
func (cfg Config) idcDefaults(dataset string) Config {
	if cfg.Method != MethodIDC {
		return cfg
	}
	name := strings.ToLower(strings.TrimSpace(dataset))
	digits := name == "mnist" || name == "fmnist"
	p := &cfg.IDC
	if p.Factor == 0 {
		p.Factor = 2
	}
	if p.Metric == "" {
		switch {
		case cfg.Match.Distance != "":
			// --match-distance as an alias; idc's own metrics (l1, mse)
			// are not distances GradMatchLoss knows, so the alias moves.
			p.Metric, cfg.Match.Distance = cfg.Match.Distance, ""
		case digits:
			p.Metric = IDCMetricL1
		default:
			p.Metric = IDCMetricMSE
		}
	}
	if p.NetData == 0 {
		p.NetData = 500
		if name == "cifar10" {
			p.NetData = 2000
		}
	}
	if p.Mixup == "" {
		p.Mixup = IDCMixupCut
		if name == "mnist" && p.Factor > 1 {
			p.Mixup = IDCMixupNone
		}
	}
	if p.MixProb == 0 {
		p.MixProb = 0.5
	}
	if p.BatchSynMax == 0 {
		p.BatchSynMax = 128
	}
	if cfg.BatchReal == 0 {
		cfg.BatchReal = 64
	}
	// Each loop has its own default: a zero inner loop must not silently
	// turn off the network's training on real data.
	if cfg.OuterLoop == 0 {
		cfg.OuterLoop = 100
	}
	if cfg.InnerLoop == 0 {
		cfg.InnerLoop = 1
	}
	if cfg.LRImg == 0 {
		cfg.LRImg = idcDefaultLRImg(name, cfg.IPC)
	}
	if cfg.DSAStrategy == "" {
		cfg.DSAStrategy = "color_crop_cutout"
		if name == "mnist" && p.Factor > 1 {
			cfg.DSAStrategy = "color_crop"
		}
	}
	cfg.Match.InnerReal = true
	return cfg
}

// idcDefaultLRImg is IDC's image learning rate for a data set and IPC, in
// fedsim's normalized space. IDC learns images in [0, 1] with rate
// base·(IPC/10)·(size/ref)² (argument.py tune_lr_img; base 1e-4 for mnist
// and fashion, 5e-3 otherwise; ref 28 for mnist and 32 for every other
// data set, Fashion-MNIST included, so its 28-pixel images get 0.766×).
// An SGD step of rate η on pixels p = x·std + mean is a step of rate
// η/std² on the normalized x (the gradient scales by std, the step by
// 1/std), so the rate is divided by std² (averaged over channels as
// 1/std², which is exact for one channel).
func idcDefaultLRImg(dataset string, ipc int) float64 {
	base, ref := 5e-3, 32.0
	if dataset == "mnist" || dataset == "fmnist" {
		base = 1e-4
	}
	if dataset == "mnist" {
		ref = 28
	}
	size, inv := ref, 1.0
	if info, err := data.Lookup(dataset); err == nil {
		size = float64(info.Width)
		inv = 0
		for _, s := range info.Std {
			inv += 1 / (float64(s) * float64(s))
		}
		inv /= float64(len(info.Std))
	}
	return base * float64(ipc) / 10 * (size / ref) * (size / ref) * inv
}

// idcValidate checks idc's fields (after Defaults).
func (cfg Config) idcValidate() []error {
	if cfg.Method != MethodIDC {
		return nil
	}
	var errs []error
	p := cfg.IDC
	finitePos := func(v float64) bool { return v > 0 && !math.IsInf(v, 0) }
	if cfg.ZCAReg > 0 {
		// IDC's image lr and its [0, 1] clamp are in pixel units.
		errs = append(errs, errors.New("idc works on normalized pixels (its image lr and clamp are in pixel units), not ZCA-whitened images: drop --zca"))
	}
	if p.Factor < 1 || p.Factor > 64 {
		errs = append(errs, fmt.Errorf("multi-formation factor %d must be in [1, 64] (--idc-factor; default 2)", p.Factor))
	}
	switch p.Metric {
	case IDCMetricL1, IDCMetricMSE, DistanceLayerwise, DistanceMagnitude:
	default:
		errs = append(errs, fmt.Errorf("gradient distance %q: want %s, %s, %s or %s (--idc-metric)", p.Metric, IDCMetricL1, IDCMetricMSE, DistanceLayerwise, DistanceMagnitude))
	}
	if p.NetData < 1 {
		errs = append(errs, fmt.Errorf("real images per network epoch %d must be positive (--idc-net-data; default 500, or --inner-loop 0 for no network updates)", p.NetData))
	}
	if p.Mixup != IDCMixupCut && p.Mixup != IDCMixupNone {
		errs = append(errs, fmt.Errorf("network mixing %q: want %s or %s (--idc-mixup)", p.Mixup, IDCMixupCut, IDCMixupNone))
	}
	if !(p.MixProb >= 0 && p.MixProb <= 1) {
		errs = append(errs, fmt.Errorf("CutMix probability %g must be in [0, 1] (--idc-mix-prob)", p.MixProb))
	}
	if p.BatchSynMax < 1 {
		errs = append(errs, fmt.Errorf("synthetic batch cap %d must be positive (--idc-batch-syn-max; default 128)", p.BatchSynMax))
	}
	if !finitePos(cfg.LRImg) || !finitePos(cfg.LRNet) {
		errs = append(errs, fmt.Errorf("learning rates (images %g, network %g) must be positive and finite (--lr-img)", cfg.LRImg, cfg.LRNet))
	}
	if cfg.Match.ClassSum {
		errs = append(errs, errors.New("idc matches per class: --class-sum is not supported"))
	}
	if !cfg.Match.InnerReal {
		errs = append(errs, errors.New("idc trains its network on real data: Match.InnerReal must be set (the defaults set it)"))
	}
	return errs
}

// idcFormation is IDC's uniform multi-formation function (decode_zoom):
// an image (C, H, W) is padded on the bottom and right to multiples of f
// with a constant (IDC pads with pixel value 0.5), cut into an f×f grid of
// cells of sh×sw pixels, and every cell is resized back to H×W by
// bilinear interpolation with PyTorch's align_corners=False convention
// (nn.Upsample(mode="bilinear"), the paper's resizing). The map is affine
// in the image (linear plus the padding constant), so its gradient is the
// transpose of its linear part (adjoint).
//
// A batch of n stored images decodes to f²·n images ordered cell-major,
// as IDC's torch.cat of the crops: output k·n + j is cell k (row-major in
// the grid) of stored image j.
type idcFormation struct {
	f, c, h, w int
	sh, sw     int       // cell size: ⌈H/f⌉ × ⌈W/f⌉
	rows, cols []idcTap  // the two taps of every output row (H) and column (W) within a cell
	pad        []float64 // padding value per channel
}

// idcTap is one output coordinate's bilinear taps i0, i1 (cell-local) and
// weights w0, w1.
type idcTap struct {
	i0, i1 int
	w0, w1 float64
}

// newIDCFormation returns the multi-formation of factor f for images
// (c, h, w) padded with pad[channel]. f must be in [1, min(h, w)].
func newIDCFormation(f, c, h, w int, pad []float64) (*idcFormation, error) {
	if f < 1 || f > h || f > w {
		return nil, fmt.Errorf("distill: idc: multi-formation factor %d does not fit %d×%d images (each cell needs a pixel): use --idc-factor between 1 and %d", f, h, w, min(h, w))
	}
	if len(pad) != c {
		return nil, fmt.Errorf("distill: idc: %d padding values for %d channels", len(pad), c)
	}
	sh, sw := (h+f-1)/f, (w+f-1)/f
	return &idcFormation{f: f, c: c, h: h, w: w, sh: sh, sw: sw,
		rows: bilinearTaps(sh, h), cols: bilinearTaps(sw, w), pad: slices.Clone(pad)}, nil
}

// bilinearTaps returns, for each of out output positions, the two input
// positions and weights of 1-D linear interpolation from in samples with
// align_corners=False: source x = (o + ½)·in/out − ½, clamped below at 0;
// i0 = ⌊x⌋, i1 = min(i0 + 1, in − 1), weights 1 − (x − i0) and x − i0
// (PyTorch's upsample_bilinear2d).
func bilinearTaps(in, out int) []idcTap {
	taps := make([]idcTap, out)
	scale := float64(in) / float64(out)
	for o := range taps {
		x := max((float64(o)+0.5)*scale-0.5, 0)
		i0 := min(int(x), in-1)
		i1 := min(i0+1, in-1)
		l := x - float64(i0)
		taps[o] = idcTap{i0: i0, i1: i1, w0: 1 - l, w1: l}
	}
	return taps
}

// count returns the number of decoded images of n stored ones.
func (m *idcFormation) count(n int) int { return m.f * m.f * n }

// idcDecode decodes x (n, C, H, W) into (f²·n, C, H, W).
func idcDecode[T tensor.Float](m *idcFormation, x *tensor.Tensor[T]) *tensor.Tensor[T] {
	n := x.Shape[0]
	hw := m.h * m.w
	out := tensor.New[T](m.count(n), m.c, m.h, m.w)
	for k := range m.f * m.f {
		r0, c0 := (k/m.f)*m.sh, (k%m.f)*m.sw // the cell's corner in the padded image
		for j := range n {
			for ch := range m.c {
				src := x.Data[(j*m.c+ch)*hw : (j*m.c+ch+1)*hw]
				pad := m.pad[ch]
				at := func(r, c int) float64 {
					if r >= m.h || c >= m.w {
						return pad
					}
					return float64(src[r*m.w+c])
				}
				dst := out.Data[((k*n+j)*m.c+ch)*hw : ((k*n+j)*m.c+ch+1)*hw]
				for oh, rt := range m.rows {
					ra, rb := r0+rt.i0, r0+rt.i1
					for ow, ct := range m.cols {
						ca, cb := c0+ct.i0, c0+ct.i1
						v := rt.w0*(ct.w0*at(ra, ca)+ct.w1*at(ra, cb)) + rt.w1*(ct.w0*at(rb, ca)+ct.w1*at(rb, cb))
						dst[oh*m.w+ow] = T(v)
					}
				}
			}
		}
	}
	return out
}

// idcAdjoint returns the gradient with respect to the stored images (n,
// C, H, W) of a loss whose gradient with respect to their decoding is g
// (f²·n, C, H, W): the transpose of idcDecode's linear part. Every
// output pixel sends its gradient back to its four bilinear taps; taps in
// the padding carry no parameter and are dropped.
func idcAdjoint[T tensor.Float](m *idcFormation, g *tensor.Tensor[T], n int) *tensor.Tensor[T] {
	hw := m.h * m.w
	gx := tensor.New[T](n, m.c, m.h, m.w)
	acc := make([]float64, hw)
	for j := range n {
		for ch := range m.c {
			clear(acc)
			add := func(r, c int, v float64) {
				if r < m.h && c < m.w {
					acc[r*m.w+c] += v
				}
			}
			for k := range m.f * m.f {
				r0, c0 := (k/m.f)*m.sh, (k%m.f)*m.sw
				src := g.Data[((k*n+j)*m.c+ch)*hw : ((k*n+j)*m.c+ch+1)*hw]
				for oh, rt := range m.rows {
					ra, rb := r0+rt.i0, r0+rt.i1
					for ow, ct := range m.cols {
						v := float64(src[oh*m.w+ow])
						if v == 0 {
							continue
						}
						ca, cb := c0+ct.i0, c0+ct.i1
						add(ra, ca, rt.w0*ct.w0*v)
						add(ra, cb, rt.w0*ct.w1*v)
						add(rb, ca, rt.w1*ct.w0*v)
						add(rb, cb, rt.w1*ct.w1*v)
					}
				}
			}
			dst := gx.Data[(j*m.c+ch)*hw : (j*m.c+ch+1)*hw]
			for i, v := range acc {
				dst[i] = T(v)
			}
		}
	}
	return gx
}

// idcMixInit builds IDC's "mix" initialisation of the ipc stored images
// of one class from imgs (at least f²·ipc real images, (N, C, H, W)):
// grid cell k (row-major) of stored image j holds image k·ipc + j,
// shrunk to the cell by nearest-neighbour resizing (F.interpolate's
// default, source index ⌊o·in/out⌋). The first H mod f rows of cells are
// one pixel taller (likewise for columns), so the cells tile the image
// exactly, as IDC's init does.
func idcMixInit(f, ipc int, imgs *tensor.Tensor[float32]) *tensor.Tensor[float32] {
	c, h, w := imgs.Shape[1], imgs.Shape[2], imgs.Shape[3]
	out := tensor.New[float32](ipc, c, h, w)
	sizes := func(total int) (start, size []int) {
		s, rem := total/f, total%f
		at := 0
		for i := range f {
			n := s
			if i < rem {
				n++
			}
			start, size = append(start, at), append(size, n)
			at += n
		}
		return start, size
	}
	rs, rn := sizes(h)
	cs, cn := sizes(w)
	for k := range f * f {
		gi, gj := k/f, k%f
		for j := range ipc {
			src := imgs.Data[(k*ipc+j)*c*h*w : (k*ipc+j+1)*c*h*w]
			dst := out.Data[j*c*h*w : (j+1)*c*h*w]
			for ch := range c {
				for r := range rn[gi] {
					sr := min(int(float64(r)*float64(h)/float64(rn[gi])), h-1)
					for q := range cn[gj] {
						sq := min(int(float64(q)*float64(w)/float64(cn[gj])), w-1)
						dst[(ch*h+rs[gi]+r)*w+cs[gj]+q] = src[(ch*h+sr)*w+sq]
					}
				}
			}
		}
	}
	return out
}

// idcAugment draws IDC's differentiable augmentation (misc/augment.py
// DiffAug): flip and color (when in the strategy) are always applied, then
// one family drawn uniformly from the rest of the strategy (crop, scale,
// rotate), then cutout (when in the strategy). Shared draws one parameter
// set for the whole batch (IDC's batch=True, the Siamese matching
// augmentation of real and synthetic images together); otherwise every
// sample gets its own (the network updates). The magnitudes are DSA's
// (data.DefaultDSAParams), which IDC's DiffAug shares.
type idcAugment struct {
	pre, mid, post []string
	shared         bool
}

// newIDCAugment splits strategy into IDC's always/once/last families;
// dropCutout removes cutout (IDC does so for the network updates when
// they use CutMix). It returns nil for an empty strategy.
func newIDCAugment(strategy []string, shared, dropCutout bool) *idcAugment {
	a := &idcAugment{shared: shared}
	for _, op := range []string{data.DSAFlip, data.DSAColor} {
		if slices.Contains(strategy, op) {
			a.pre = append(a.pre, op)
		}
	}
	for _, op := range strategy {
		if op != data.DSAFlip && op != data.DSAColor && op != data.DSACutout {
			a.mid = append(a.mid, op)
		}
	}
	if slices.Contains(strategy, data.DSACutout) && !dropCutout {
		a.post = []string{data.DSACutout}
	}
	if len(a.pre)+len(a.mid)+len(a.post) == 0 {
		return nil
	}
	return a
}

// sample draws one augmentation for up to n images of h×w.
func (a *idcAugment) sample(rng *tensor.RNG, n, h, w int) *data.Augmentation {
	ops := slices.Clone(a.pre)
	if len(a.mid) > 0 {
		ops = append(ops, a.mid[rng.IntN(len(a.mid))])
	}
	ops = append(ops, a.post...)
	p := data.DefaultDSAParams()
	p.Mode, p.Shared = data.DSAMultiple, a.shared
	d := data.DSA{Strategy: ops, Params: p}
	return d.Sample(rng, n, h, w)
}

// idcMatched reports whether a parameter of this shape takes part in the
// l1/mse distances: convolution kernels (rank ≥ 3) always, fully
// connected weights (rank 2) with matchFC, biases and normalisation
// parameters (rank 1) never (IDC's matchloss with --bias and --fc off).
func idcMatched(shape []int, matchFC bool) bool {
	return len(shape) >= 3 || (matchFC && len(shape) == 2)
}

// IDCGradMatchLoss is IDC's per-class gradient-matching loss
// D(∇θ CE(m(A(real)), realY), ∇θ CE(m(A(syn)), synY)) at m's current
// parameters, with aug (if not nil) applied to both batches, and writes
// its gradient with respect to syn (the decoded images) into grad. metric
// is IDCMetricL1 or IDCMetricMSE (over the parameters idcMatched selects)
// or one of the DC distances, for which it is GradMatchLoss.
func IDCGradMatchLoss[T tensor.Float](m nn.Model[T], real *tensor.Tensor[T], realY []int, syn *tensor.Tensor[T], synY []int, aug *data.Augmentation, metric string, matchFC bool, grad *tensor.Tensor[T]) (float64, error) {
	switch metric {
	case DistanceLayerwise, DistanceMagnitude:
		return GradMatchLoss(m, real, realY, syn, synY, aug, MatchConfig{Distance: metric}, grad)
	case IDCMetricL1, IDCMetricMSE:
	default:
		return 0, fmt.Errorf("distill: idc: gradient distance %q is not implemented", metric)
	}
	tp := ag.NewTape[T]()
	defer tp.Release()
	target, err := realGradients(tp, m, real, realY, aug, func(shape []int) bool { return idcMatched(shape, matchFC) })
	if err != nil {
		return 0, err
	}

	xs := tp.Param(syn)
	x := xs
	if aug != nil {
		x = data.Apply(aug, x)
	}
	ps := nn.Bind(tp, m)
	gS, err := tp.Grad([]*ag.Var[T]{ag.CrossEntropy(m.Forward(x, ps), synY)}, nil, ps, true)
	if err != nil {
		return 0, err
	}
	var dist *ag.Var[T]
	for i, g := range gS {
		if target[i] == nil {
			continue
		}
		diff := ag.Sub(tp.Const(target[i]), g)
		var d *ag.Var[T]
		if metric == IDCMetricL1 {
			d = ag.Sum(ag.Abs(diff))
		} else {
			d = ag.Sum(ag.Square(diff))
		}
		if dist == nil {
			dist = d
		} else {
			dist = ag.Add(dist, d)
		}
	}
	if dist == nil {
		return 0, errors.New("distill: idc: the model has no convolution kernels to match: pass --idc-match-fc to match its fully connected weights")
	}
	gx, err := tp.Grad([]*ag.Var[T]{dist}, nil, []*ag.Var[T]{xs}, false)
	if err != nil {
		return 0, err
	}
	copy(grad.Data, gx[0].Value.Data)
	return float64(dist.Value.Item()), nil
}

// idc is the IDC distiller. The stored images live in imageState.syn
// (classes·IPC, class-major; the set the budget is charged for, and what
// Checkpoint saves, with their SGD velocity); dec holds their decoding,
// which Synthetic returns.
//
// One Step is one of IDC's outer iterations: a freshly initialised
// network, then OuterLoop rounds; in each round, for every class c, the
// stored images of c are decoded, a random subset of at most BatchSynMax
// of the decoded images is matched against BatchReal real images of c
// under one shared augmentation, and the stored images take an SGD step
// on the gradient carried back through the decoder (idcAdjoint) — IDC
// updates after each class; then the network trains InnerLoop epochs of
// NetData real images (SGD momentum 0.9, weight decay 5e-4, per-sample
// augmentation, CutMix), except after the last round, whose network is
// discarded anyway. The stored images are clamped to the pixel range [0,
// 1] at the start of every Step, as IDC does (not with ZCA whitening).
//
// Simplifications: only IDC's uniform multi-formation ("single" decode
// type; not "multi" or "bound"); no pretrained matching networks (IDC
// uses them for ImageNet only); the initial real images are drawn at
// random (IDC takes the first ones of each class); real batches for the
// network updates are drawn with replacement, the class batches for
// matching without. fedsim distill evaluates with fedsim's protocol (DSA,
// no CutMix, DefaultEvalEpochs) unless asked for IDC's own recipe
// (IDCEvalConfig: batch 64, CutMix, 1000 epochs; --eval-models idc).
//
// Its checkpoint holds the stored (undecoded) images, IPC per class: a
// valid synthetic.npz of the stored set, not of the f²·IPC decoded images
// that Synthetic returns and synthetic.npz holds.
type idc struct {
	imageState
	form       *idcFormation
	dec        *SyntheticSet
	match, net *idcAugment
	lo, hi     []float32 // per-channel clamp bounds; nil: no clamping
}

func newIDC(cfg Config) *idc { return &idc{imageState: imageState{cfg: cfg}} }

// Synthetic returns the decoded set: f²·IPC images per class, class-major.
func (d *idc) Synthetic() *SyntheticSet { return d.dec }

// Floats returns the number of stored floats, classes·IPC·C·H·W: the
// budget of a plain set of IPC images per class, exactly.
func (d *idc) Floats() int { return len(d.syn.X.Data) }

// Factor returns the multi-formation factor.
func (d *idc) Factor() int { return d.cfg.IDC.Factor }

func (d *idc) Init(_ context.Context, real *data.Dataset) error {
	cfg := d.cfg
	if err := cfg.checkData(real); err != nil {
		return err
	}
	shape := real.ImageShape()
	pad := make([]float64, shape[0])
	if cfg.ZCAReg == 0 {
		d.lo, d.hi = make([]float32, shape[0]), make([]float32, shape[0])
		for ch := range shape[0] {
			m, s := float64(real.Mean[ch]), float64(real.Std[ch])
			pad[ch] = (0.5 - m) / s
			d.lo[ch], d.hi[ch] = float32(-m/s), float32((1-m)/s)
		}
	}
	form, err := newIDCFormation(cfg.IDC.Factor, shape[0], shape[1], shape[2], pad)
	if err != nil {
		return err
	}
	if cfg.IDC.Metric == IDCMetricL1 || cfg.IDC.Metric == IDCMetricMSE {
		m, err := nn.New[float32](cfg.Model, shape, real.Classes, tensor.NewRNG(0, 0))
		if err != nil {
			return fmt.Errorf("distill: %w", err)
		}
		if !slices.ContainsFunc(m.Params(), func(p *tensor.Tensor[float32]) bool { return idcMatched(p.Shape, cfg.IDC.MatchFC) }) {
			return fmt.Errorf("distill: idc: model %s has no convolution kernels for the %s distance: pass --idc-match-fc or use --idc-metric %s", cfg.Model, cfg.IDC.Metric, DistanceLayerwise)
		}
	}
	strategy, err := data.ParseDSAStrategy(cfg.DSAStrategy)
	if err != nil {
		return err
	}
	d.form, d.real, d.byClass = form, real, real.ClassIndices()
	d.match = newIDCAugment(strategy, true, false)
	d.net = newIDCAugment(strategy, false, cfg.IDC.Mixup == IDCMixupCut)
	rng := tensor.NewRNG(cfg.Seed, streamInit)
	switch {
	case cfg.Init == InitNoise:
		d.syn = noiseSet(real, cfg.IPC, rng)
	case cfg.IDC.Factor == 1:
		d.syn = randomReal(real, d.byClass, cfg.IPC, rng)
	default:
		d.syn = d.mixInit(rng)
	}
	d.velocity = tensor.New[float32](d.syn.X.Shape...)
	d.grad = tensor.New[float32](d.syn.X.Shape...)
	d.refresh()
	return nil
}

// mixInit draws f²·IPC real images of every class (all of them, cycled,
// when a class has fewer) and builds the stored images with idcMixInit.
func (d *idc) mixInit(rng *tensor.RNG) *SyntheticSet {
	ipc, f := d.cfg.IPC, d.cfg.IDC.Factor
	shape := d.real.ImageShape()
	sz := shape[0] * shape[1] * shape[2]
	x := tensor.New[float32](d.real.Classes*ipc, shape[0], shape[1], shape[2])
	y := make([]int, 0, d.real.Classes*ipc)
	for c, idx := range d.byClass {
		perm := rng.Perm(len(idx))
		pick := make([]int, f*f*ipc)
		for i := range pick {
			pick[i] = idx[perm[i%len(idx)]]
		}
		imgs, _ := d.real.Batch(pick)
		copy(x.Data[c*ipc*sz:(c+1)*ipc*sz], idcMixInit(f, ipc, imgs).Data)
		for range ipc {
			y = append(y, c)
		}
	}
	return &SyntheticSet{X: x, Y: y, Mean: slices.Clone(d.real.Mean), Std: slices.Clone(d.real.Std), Classes: d.real.Classes}
}

// refresh decodes the stored images into d.dec.
func (d *idc) refresh() {
	ipc, classes := d.cfg.IPC, d.real.Classes
	per := d.form.count(ipc)
	shape := d.real.ImageShape()
	sz := shape[0] * shape[1] * shape[2]
	x := tensor.New[float32](classes*per, shape[0], shape[1], shape[2])
	y := make([]int, 0, classes*per)
	for c := range classes {
		copy(x.Data[c*per*sz:(c+1)*per*sz], idcDecode(d.form, d.classImages(c)).Data)
		for range per {
			y = append(y, c)
		}
	}
	d.dec = &SyntheticSet{X: x, Y: y, Mean: slices.Clone(d.syn.Mean), Std: slices.Clone(d.syn.Std), Classes: classes}
}

// clamp keeps the stored images in the pixel range [0, 1].
func (d *idc) clamp() {
	if d.lo == nil {
		return
	}
	x := d.syn.X
	hw := x.Shape[2] * x.Shape[3]
	for i := 0; i < len(x.Data); i += hw {
		ch := (i / hw) % x.Shape[1]
		lo, hi := d.lo[ch], d.hi[ch]
		for j, v := range x.Data[i : i+hw] {
			x.Data[i+j] = min(max(v, lo), hi)
		}
	}
}

func (d *idc) Step(ctx context.Context, it int) (float64, error) {
	cfg := d.cfg
	rng := iterRNG(cfg.Seed, it)
	m, err := nn.New[float32](cfg.Model, d.real.ImageShape(), d.real.Classes, rng)
	if err != nil {
		return 0, fmt.Errorf("distill: %w", err)
	}
	if tm, ok := m.(nn.Trainable); ok {
		tm.SetTraining(true)
	}
	opt := &nn.SGD[float32]{LR: cfg.LRNet, Momentum: idcNetMomentum, WeightDecay: idcNetWeightDecay}
	// A failed step leaves the set as it was.
	x0, v0 := d.syn.X.Clone(), d.velocity.Clone()
	fail := func(err error) (float64, error) {
		d.syn.X, d.velocity = x0, v0
		return 0, err
	}
	d.clamp()
	var total float64
	for r := range cfg.OuterLoop {
		for c := range d.real.Classes {
			if err := ctx.Err(); err != nil {
				return fail(fmt.Errorf("distill: idc iteration %d: %w", it, err))
			}
			loss, err := d.classGrad(m, c, rng)
			if err != nil {
				return fail(fmt.Errorf("distill: idc iteration %d round %d class %d: %w", it, r, c, err))
			}
			if err := d.update(it, loss); err != nil {
				return fail(err)
			}
			total += loss
		}
		if r < cfg.OuterLoop-1 && cfg.InnerLoop > 0 {
			if err := d.trainNet(ctx, m, opt, rng); err != nil {
				return fail(fmt.Errorf("distill: idc iteration %d round %d network update: %w", it, r, err))
			}
		}
	}
	d.refresh()
	return total / float64(d.real.Classes*cfg.OuterLoop), nil
}

// classGrad computes class c's matching loss and writes its gradient
// with respect to the stored images into d.grad (zero outside class c).
func (d *idc) classGrad(m nn.Model[float32], c int, rng *tensor.RNG) (float64, error) {
	ipc := d.cfg.IPC
	xr, yr := d.realBatch(c, rng)
	dec := idcDecode(d.form, d.classImages(c))
	n := dec.Shape[0]
	syn, pick := dec, []int(nil)
	if n > d.cfg.IDC.BatchSynMax {
		pick = rng.Perm(n)[:d.cfg.IDC.BatchSynMax]
		syn = gatherRows(dec, pick)
	}
	synY := make([]int, syn.Shape[0])
	for i := range synY {
		synY[i] = c
	}
	var aug *data.Augmentation
	if d.match != nil {
		aug = d.match.sample(rng, max(xr.Shape[0], syn.Shape[0]), xr.Shape[2], xr.Shape[3])
	}
	g := tensor.New[float32](syn.Shape...)
	loss, err := IDCGradMatchLoss(m, xr, yr, syn, synY, aug, d.cfg.IDC.Metric, d.cfg.IDC.MatchFC, g)
	if err != nil {
		return 0, err
	}
	if pick != nil {
		full := tensor.New[float32](dec.Shape...)
		sz := len(g.Data) / len(pick)
		for i, j := range pick {
			copy(full.Data[j*sz:(j+1)*sz], g.Data[i*sz:(i+1)*sz])
		}
		g = full
	}
	clear(d.grad.Data)
	copy(classSlice(d.grad, c, ipc).Data, idcAdjoint(d.form, g, ipc).Data)
	return loss, nil
}

// gatherRows returns the rows idx of x (N, …) as a new tensor.
func gatherRows[T tensor.Float](x *tensor.Tensor[T], idx []int) *tensor.Tensor[T] {
	sz := len(x.Data) / x.Shape[0]
	out := tensor.New[T](append([]int{len(idx)}, x.Shape[1:]...)...)
	for i, j := range idx {
		copy(out.Data[i*sz:(i+1)*sz], x.Data[j*sz:(j+1)*sz])
	}
	return out
}

// trainNet trains m for InnerLoop epochs of NetData real images drawn
// uniformly (with replacement) from the whole training set, in batches of
// BatchReal, with IDC's train_epoch: per-sample augmentation, then CutMix
// with probability MixProb (λ ~ Beta(1, 1); a box of side √(1−λ) of the
// image pasted from a permuted batch; loss r·CE(y) + (1−r)·CE(y_perm) with
// r the unpasted area), SGD with momentum 0.9 and weight decay 5e-4 whose
// momentum persists across the rounds of one network.
func (d *idc) trainNet(ctx context.Context, m nn.Model[float32], opt *nn.SGD[float32], rng *tensor.RNG) error {
	cfg := d.cfg
	bs := cfg.BatchReal
	steps := cfg.InnerLoop * ((cfg.IDC.NetData + bs - 1) / bs)
	params := m.Params()
	grads := make([]*tensor.Tensor[float32], len(params))
	tp := ag.NewTape[float32]()
	defer tp.Release()
	for s := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		idx := make([]int, bs)
		for i := range idx {
			idx[i] = rng.IntN(d.real.Len())
		}
		x, y := d.real.Batch(idx)
		if d.net != nil {
			if err := data.ApplyInto(d.net.sample(rng, bs, x.Shape[2], x.Shape[3]), x, x); err != nil {
				return err
			}
		}
		ratio, yb := 1.0, []int(nil)
		if cfg.IDC.Mixup == IDCMixupCut && rng.Float64() < cfg.IDC.MixProb {
			ratio, yb = cutMix(x, y, rng)
		}
		ps := nn.Bind(tp, m)
		logits := m.Forward(tp.Const(x), ps)
		loss := ag.CrossEntropy(logits, y)
		if yb != nil {
			loss = ag.Add(ag.Scale(loss, float32(ratio)), ag.Scale(ag.CrossEntropy(logits, yb), float32(1-ratio)))
		}
		gs, err := tp.Grad([]*ag.Var[float32]{loss}, nil, ps, false)
		if err != nil {
			return err
		}
		if l := float64(loss.Value.Item()); math.IsNaN(l) || math.IsInf(l, 0) {
			return fmt.Errorf("%w: the network's loss is %v at step %d (lower its learning rate, now %g)", ErrDiverged, l, s, cfg.LRNet)
		}
		for i, g := range gs {
			grads[i] = g.Value
		}
		err = opt.Step(params, grads)
		tp.Release()
		if err != nil {
			return err
		}
	}
	return nil
}

// cutMix applies CutMix to the batch x (N, C, H, W) in place, as IDC's
// train_epoch (see cutMixBox), and returns the fraction r of each image
// left unpasted and the labels y∘π of the pasted images.
func cutMix(x *tensor.Tensor[float32], y []int, rng *tensor.RNG) (float64, []int) {
	perm, r := cutMixBox(x, rng)
	yb := make([]int, len(y))
	for i, j := range perm {
		yb[i] = y[j]
	}
	return r, yb
}

// cutMixBox is CutMix's image half, as IDC's train_epoch: λ ~ U(0, 1)
// (Beta(1, 1)), a random permutation π of the batch, a box of side
// ⌊H·√(1−λ)⌋ × ⌊W·√(1−λ)⌋ centred uniformly and clipped to the image is
// copied from image π(i) into image i of x (N, C, H, W), in place. It
// returns π and the fraction r of each image left unpasted: the loss is
// r·CE(y) + (1−r)·CE(y∘π).
func cutMixBox(x *tensor.Tensor[float32], rng *tensor.RNG) ([]int, float64) {
	n, c, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	lam := rng.Float64()
	perm := rng.Perm(n)
	cut := math.Sqrt(1 - lam)
	ch, cw := int(float64(h)*cut), int(float64(w)*cut)
	cy, cx := rng.IntN(h), rng.IntN(w)
	r1, r2 := min(max(cy-ch/2, 0), h), min(max(cy+ch/2, 0), h)
	c1, c2 := min(max(cx-cw/2, 0), w), min(max(cx+cw/2, 0), w)
	src := x.Clone()
	sz := c * h * w
	for i, j := range perm {
		for k := range c {
			for r := r1; r < r2; r++ {
				off := k*h*w + r*w
				copy(x.Data[i*sz+off+c1:i*sz+off+c2], src.Data[j*sz+off+c1:j*sz+off+c2])
			}
		}
	}
	return perm, 1 - float64((r2-r1)*(c2-c1))/float64(h*w)
}

// Restore replaces the stored images and their velocity with c's and
// decodes them again.
func (d *idc) Restore(c *Checkpoint) error {
	if err := d.imageState.Restore(c); err != nil {
		return err
	}
	d.grad = tensor.New[float32](d.syn.X.Shape...)
	d.refresh()
	return nil
}

// SaveFactors writes the stored (un-decoded) images of an idc run to path
// (atomically) as an .npz file: images float32 (classes·IPC, C, H, W) in
// the normalized space, labels int64, factor int64 (1), the
// multi-formation factor that decodes them (Synthetic's images are their
// decoding), floats int64 (1), the number of stored floats the set is
// charged for (classes·IPC·C·H·W), and mean, std float32 (C).
func (d *idc) SaveFactors(path string) error {
	if d.syn == nil {
		return errors.New("distill: idc: SaveFactors before Init")
	}
	y := make([]int64, len(d.syn.Y))
	for i, l := range d.syn.Y {
		y[i] = int64(l)
	}
	var arrays []*npz.Array
	for _, a := range []struct {
		name  string
		shape []int
		data  any
	}{
		{"images", slices.Clone(d.syn.X.Shape), slices.Clone(d.syn.X.Data)},
		{"labels", []int{len(y)}, y},
		{"factor", []int{1}, []int64{int64(d.cfg.IDC.Factor)}},
		{"floats", []int{1}, []int64{int64(d.Floats())}},
		{"mean", []int{len(d.syn.Mean)}, slices.Clone(d.syn.Mean)},
		{"std", []int{len(d.syn.Std)}, slices.Clone(d.syn.Std)},
	} {
		arr, err := npz.New(a.name, a.shape, a.data)
		if err != nil {
			return fmt.Errorf("distill: idc factors: %w", err)
		}
		arrays = append(arrays, arr)
	}
	if err := npz.Write(path, arrays); err != nil {
		return fmt.Errorf("distill: writing idc factors: %w", err)
	}
	return nil
}
