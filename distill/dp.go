package distill

import (
	"fmt"
	"math"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// DPConfig makes distribution matching and gradient matching differentially
// private at the level of one real example. Every iteration each real
// example is drawn independently with probability SampleRate (Poisson
// sampling, which is what the accountant's subsampled Gaussian mechanism
// assumes); each drawn example's contribution — its embedding (DM) or its
// parameter gradient (DC/DSA, Chen et al. 2022's private set generation) —
// is clipped to L2 norm Clip (DM with Center: its offset from the synthetic
// class mean); the per-class sums get Gaussian noise
// N(0, Noise²·Clip²) on every coordinate before they are divided by the
// expected class batch SampleRate·n_c. Only the real side is privatized:
// the synthetic images are a post-processing of the noised sums.
//
// One iteration of DM (one outer step of DC/DSA) is one application of the
// sampled Gaussian mechanism with (SampleRate, Noise): an example belongs
// to one class, so the vector of all class sums has sensitivity Clip. The
// accountant is in package privacy (which sits above distill).
type DPConfig struct {
	// SampleRate q ∈ (0, 1] is the probability that a real example takes
	// part in an iteration.
	SampleRate float64 `json:"sample_rate"`
	// Clip C > 0 bounds each example's L2 contribution.
	Clip float64 `json:"clip"`
	// Noise σ ≥ 0 is the noise multiplier (σ = 0 gives clipping and
	// sampling without privacy, for ablations).
	Noise float64 `json:"noise"`
	// Center (DM only) clips each real embedding's offset from a center,
	// the mean embedding of the class's synthetic images under the same
	// network and augmentation, instead of the embedding itself, and adds
	// the center back after the noise. Embeddings of a random network share
	// a large common part, so the offsets are several times shorter than
	// the embeddings: the same noise multiplier with a clip that fits the
	// offsets puts less noise on the class means. The center depends on
	// the synthetic images only (a post-processing of earlier noised
	// releases), so each example still moves the class sums by at most
	// Clip and the accounting is unchanged.
	Center bool `json:"center,omitempty"`
	// Project (DM only), if positive, replaces each iteration's embedding
	// e (d values) by eP, P a d × Project matrix of N(0, 1/Project)
	// entries drawn afresh every iteration from the seed (data-independent,
	// the same for the real and the synthetic side), before clipping and
	// noise. The projection keeps norms on average, so the clip stays where
	// it was, but the noise, Noise·Clip on each of Project coordinates
	// instead of d, shrinks by √(Project/d): every iteration matches fewer
	// directions with less noise on each, and the fresh network and
	// projection of the next iteration cover others. The accounting is
	// unchanged. 0: no projection.
	Project int `json:"project,omitempty"`
	// InitClip and InitNoise are the clipping norm and noise multiplier of
	// the private release of the class means that InitMean starts from
	// (ClassMeans; defaults DefaultDPInitClip and DefaultDPInitNoise when
	// the configuration asks for InitMean).
	InitClip  float64 `json:"init_clip,omitempty"`
	InitNoise float64 `json:"init_noise,omitempty"`
}

// Validate checks the ranges; errors name the field and the fix.
func (c DPConfig) Validate() error {
	switch {
	case !(c.SampleRate > 0 && c.SampleRate <= 1):
		return fmt.Errorf("distill: dp: sample rate q = %g must be in (0, 1]", c.SampleRate)
	case !(c.Clip > 0) || math.IsInf(c.Clip, 0):
		return fmt.Errorf("distill: dp: clipping norm C = %g must be positive and finite", c.Clip)
	case !(c.Noise >= 0) || math.IsInf(c.Noise, 0):
		return fmt.Errorf("distill: dp: noise multiplier σ = %g must be finite and not negative", c.Noise)
	case c.Project < 0:
		return fmt.Errorf("distill: dp: projection dimension %d must not be negative (0: no projection)", c.Project)
	}
	return nil
}

// noiseStd is σC, and 0 when σ = 0 (also with C = +Inf, which tests use to
// turn clipping off).
func (c DPConfig) noiseStd() float64 {
	if c.Noise == 0 {
		return 0
	}
	return c.Noise * c.Clip
}

// PoissonSample returns the elements of idx kept independently with
// probability q, in their order.
func PoissonSample(idx []int, q float64, rng *tensor.RNG) []int {
	var out []int
	for _, i := range idx {
		if q >= 1 || rng.Float64() < q {
			out = append(out, i)
		}
	}
	return out
}

// ClipRowsSum clips each row of x (n rows of d values, row-major) to L2
// norm clip (rows already within it are unchanged; clip = +Inf leaves
// every row unchanged) and returns their sum, in float64, and the largest
// row norm before clipping.
func ClipRowsSum[T tensor.Float](x []T, n, d int, clip float64) (sum []float64, maxNorm float64) {
	sum = make([]float64, d)
	for i := range n {
		row := x[i*d : (i+1)*d]
		var ss float64
		for _, v := range row {
			ss += float64(v) * float64(v)
		}
		norm := math.Sqrt(ss)
		maxNorm = math.Max(maxNorm, norm)
		s := 1.0
		if norm > clip {
			s = clip / norm
		}
		for j, v := range row {
			sum[j] += s * float64(v)
		}
	}
	return sum, maxNorm
}

// AddGaussian adds N(0, std²) to every element of v (std = 0: nothing).
func AddGaussian(v []float64, std float64, rng *tensor.RNG) {
	if std == 0 {
		return
	}
	for i := range v {
		v[i] += std * rng.NormFloat64()
	}
}

// DPDMLoss is DMLoss with a privatized real side: the embeddings of the
// real images (any number, also none: then the target is pure noise) are
// clipped to dp.Clip each (with dp.Center, their offsets from the synthetic
// images' mean embedding, which is added back after the noise), summed, noised with N(0, dp.Noise²·dp.Clip²)
// per coordinate from rng, and divided by denom (the expected batch,
// SampleRate·n_c; the sampled count itself would leak it). The synthetic
// half is DMLoss's own, so with dp.Noise = 0, dp.Clip = +Inf and denom
// the number of real images this is DMLoss. It writes the gradient with
// respect to syn into grad and returns the loss.
func DPDMLoss[T tensor.Float](m nn.Embedder[T], real *tensor.Tensor[T], denom float64, syn *tensor.Tensor[T], aug *data.Augmentation, dp DPConfig, rng *tensor.RNG, grad *tensor.Tensor[T]) (float64, error) {
	target, center, err := dpDMTarget(m, real, denom, syn, aug, dp, rng)
	if err != nil {
		return 0, err
	}
	tp := ag.NewTape[T]()
	defer tp.Release()
	return dmMatch(tp, m, target, syn, aug, dp.Clip, center, grad)
}

// clipAroundVar is clipRowsVar applied to the rows' offsets from center
// (D values, held constant), with the center added back: center + clip(e_i
// − center). A nil center clips the rows themselves.
func clipAroundVar[T tensor.Float](e *ag.Var[T], clip float64, center []T) *ag.Var[T] {
	if center == nil || clip == 0 || math.IsInf(clip, 1) || e.Tape().Err() != nil {
		return clipRowsVar(e, clip)
	}
	tp := e.Tape()
	rows := tensor.New[T](e.Value.Shape...)
	d := len(center)
	for i := 0; i < len(rows.Data); i += d {
		copy(rows.Data[i:i+d], center)
	}
	c := tp.Const(rows)
	return ag.Add(clipRowsVar(ag.Sub(e, c), clip), c)
}

// clipRowsVar clips each row of e (N, D) to L2 norm clip on the tape, as
// ClipRowsSum does to the real embeddings: the synthetic side of DP-DM
// goes through the same function, so that both sides estimate the mean
// clipped embedding (matching unclipped synthetic embeddings to a clipped
// target would pull them towards norm C). The row scale min(1, C/‖e_i‖)
// takes its branch from the values (a constant mask, exact almost
// everywhere, as ReLU). clip = 0 or +Inf: e unchanged.
func clipRowsVar[T tensor.Float](e *ag.Var[T], clip float64) *ag.Var[T] {
	if clip == 0 || math.IsInf(clip, 1) {
		return e
	}
	tp := e.Tape()
	norm := ag.Sqrt(ag.AddScalar(ag.SumAxes(ag.Square(e), []int{1}, true), 1e-12))
	if tp.Err() != nil {
		return e
	}
	n := norm.Value.Shape[0]
	over, under := tensor.New[T](n, 1), tensor.New[T](n, 1)
	for i, v := range norm.Value.Data {
		if float64(v) > clip {
			over.Data[i] = 1
		} else {
			under.Data[i] = 1
		}
	}
	scale := ag.Add(ag.Mul(tp.Const(over), ag.Div(tp.Scalar(T(clip)), norm)), tp.Const(under))
	return ag.Mul(e, scale)
}

// dpDMTarget is DPDMLoss's privatized target: (Σ clip(embed(A(real_i))) +
// N(0, σ²C²)) / denom, or with dp.Center, μ + (Σ clip(embed(A(real_i)) − μ)
// + N(0, σ²C²)) / denom where μ, also returned, is the mean embedding of
// A(syn) (nil without dp.Center).
func dpDMTarget[T tensor.Float](m nn.Embedder[T], real *tensor.Tensor[T], denom float64, syn *tensor.Tensor[T], aug *data.Augmentation, dp DPConfig, rng *tensor.RNG) (*tensor.Tensor[T], []T, error) {
	if !(denom > 0) {
		return nil, nil, fmt.Errorf("distill: dp: denominator %g of the noisy mean must be positive", denom)
	}
	var center []T
	if dp.Center {
		c, err := embedConst(m, syn, aug, true)
		if err != nil {
			return nil, nil, err
		}
		center = c.Data
	}
	var sum []float64
	if real != nil && real.Shape[0] > 0 {
		emb, err := embedConst(m, real, aug, false)
		if err != nil {
			return nil, nil, err
		}
		n := emb.Shape[0]
		if center != nil {
			d := len(center)
			for k := range emb.Data {
				emb.Data[k] -= center[k%d]
			}
		}
		sum, _ = ClipRowsSum(emb.Data, n, len(emb.Data)/n, dp.Clip)
	} else {
		// No real image this iteration: the target is pure noise, of the
		// embedding's size (the center's, or one synthetic forward pass).
		d := len(center)
		if center == nil {
			e, err := embedConst(m, syn, nil, true)
			if err != nil {
				return nil, nil, err
			}
			d = len(e.Data)
		}
		sum = make([]float64, d)
	}
	AddGaussian(sum, dp.noiseStd(), rng)
	target := tensor.New[T](len(sum))
	for j, v := range sum {
		target.Data[j] = T(v / denom)
		if center != nil {
			target.Data[j] += center[j]
		}
	}
	return target, center, nil
}

// ClippedGradSum returns Σ_i clip(∇θ CE(m(x_i), y_i)) over the rows of x
// with labels y, each example's gradient (all parameters flattened into
// one vector) clipped to L2 norm clip, as one float64 slice per parameter,
// and the largest per-example norm before clipping. Per-example gradients
// are computed one example at a time, so the model must not mix examples
// in its forward pass (no batch norm).
func ClippedGradSum[T tensor.Float](m nn.Model[T], x *tensor.Tensor[T], y []int, clip float64) ([][]float64, float64, error) {
	if b, ok := m.(nn.Buffered[T]); ok && len(b.Buffers()) > 0 {
		return nil, 0, fmt.Errorf("distill: dp: per-example gradients need a model without batch norm (its batch statistics mix examples); use an instance-norm ConvNet")
	}
	ps := m.Params()
	sums := make([][]float64, len(ps))
	for i, p := range ps {
		sums[i] = make([]float64, len(p.Data))
	}
	if x == nil || x.Shape[0] == 0 {
		return sums, 0, nil
	}
	n := x.Shape[0]
	if len(y) != n {
		return nil, 0, fmt.Errorf("distill: dp: %d images but %d labels", n, len(y))
	}
	sz := len(x.Data) / n
	tp := ag.NewTape[T]()
	defer tp.Release()
	var maxNorm float64
	for i := range n {
		xi := &tensor.Tensor[T]{Shape: append([]int{1}, x.Shape[1:]...), Data: x.Data[i*sz : (i+1)*sz]}
		vs := nn.Bind(tp, m)
		g, err := tp.Grad([]*ag.Var[T]{ag.CrossEntropy(m.Forward(tp.Const(xi), vs), y[i:i+1])}, nil, vs, false)
		if err != nil {
			return nil, 0, err
		}
		var ss float64
		for _, gv := range g {
			for _, v := range gv.Value.Data {
				ss += float64(v) * float64(v)
			}
		}
		norm := math.Sqrt(ss)
		maxNorm = math.Max(maxNorm, norm)
		s := 1.0
		if norm > clip {
			s = clip / norm
		}
		for k, gv := range g {
			for j, v := range gv.Value.Data {
				sums[k][j] += s * float64(v)
			}
		}
		tp.Release()
	}
	return sums, maxNorm, nil
}

// DPGradMatchLoss is GradMatchLoss with a privatized real side (private set
// generation, Chen et al. 2022): the per-example gradients of the real
// images at m's parameters are clipped to dp.Clip each, summed, noised
// with N(0, dp.Noise²·dp.Clip²) per coordinate from rng and divided by
// denom (the expected batch). The augmentation aug, if any, is applied to
// the real images before their gradients (per example, no graph) and to
// the synthetic ones as in GradMatchLoss, whose synthetic half this
// shares: with dp.Noise = 0, dp.Clip = +Inf and denom the number of real
// images it equals GradMatchLoss up to rounding (a mean of per-example
// gradients instead of the gradient of the mean).
func DPGradMatchLoss[T tensor.Float](m nn.Model[T], real *tensor.Tensor[T], realY []int, denom float64, syn *tensor.Tensor[T], synY []int, aug *data.Augmentation, match MatchConfig, dp DPConfig, rng *tensor.RNG, grad *tensor.Tensor[T]) (float64, error) {
	if !(denom > 0) {
		return 0, fmt.Errorf("distill: dp: denominator %g of the noisy mean must be positive", denom)
	}
	xr := real
	if aug != nil && real != nil && real.Shape[0] > 0 {
		xr = tensor.New[T](real.Shape...)
		if err := data.ApplyInto(aug, xr, real); err != nil {
			return 0, err
		}
	}
	sums, _, err := ClippedGradSum(m, xr, realY, dp.Clip)
	if err != nil {
		return 0, err
	}
	ps := m.Params()
	target := make([]*tensor.Tensor[T], len(sums))
	for i, s := range sums {
		AddGaussian(s, dp.noiseStd(), rng)
		target[i] = tensor.New[T](ps[i].Shape...)
		for j, v := range s {
			target[i].Data[j] = T(v / denom)
		}
	}
	tp := ag.NewTape[T]()
	defer tp.Release()
	return gmMatch(tp, m, target, syn, synY, aug, match, grad)
}

// classBatch is the real batch of class c for one iteration: without DP
// the reference's fixed-size batch drawn without replacement (denominator
// its size), with DP a Poisson sample at rate SampleRate (denominator the
// expected size q·n_c, so the sampled count is never released).
func (s *imageState) classBatch(c int, rng *tensor.RNG) (*tensor.Tensor[float32], []int, float64) {
	if s.cfg.DP == nil {
		x, y := s.realBatch(c, rng)
		return x, y, float64(x.Shape[0])
	}
	idx := s.byClass[c]
	x, y := s.real.Batch(PoissonSample(idx, s.cfg.DP.SampleRate, rng))
	return x, y, s.cfg.DP.SampleRate * float64(len(idx))
}

// gmLoss is one class's gradient-matching loss, private when the
// configuration asks.
func (s *imageState) gmLoss(m nn.Model[float32], xr *tensor.Tensor[float32], yr []int, denom float64, c int, aug *data.Augmentation, rng *tensor.RNG) (float64, error) {
	ipc := s.cfg.IPC
	synY := s.syn.Y[c*ipc : (c+1)*ipc]
	if s.cfg.DP == nil {
		return GradMatchLoss(m, xr, yr, s.classImages(c), synY, aug, s.cfg.Match, classSlice(s.grad, c, ipc))
	}
	return DPGradMatchLoss(m, xr, yr, denom, s.classImages(c), synY, aug, s.cfg.Match, *s.cfg.DP, rng, classSlice(s.grad, c, ipc))
}

// validateDP checks the DP settings against the rest of the configuration:
// only DM, DC and DSA have a private variant, the synthetic images must
// start from noise or the privately released class means (real images
// would be released as they are), and the
// IDC inner loop and the DCC class sum (which read real data outside the
// clipped sums) are not private.
func (cfg Config) validateDP() error {
	if cfg.DP == nil {
		return nil
	}
	if err := cfg.DP.Validate(); err != nil {
		return err
	}
	switch {
	case cfg.Method != MethodDM && cfg.Method != MethodDC && cfg.Method != MethodDSA:
		return fmt.Errorf("distill: dp: method %s has no private variant: use dm, dc or dsa", cfg.Method)
	case cfg.DP.Project > 0 && cfg.Method != MethodDM:
		return fmt.Errorf("distill: dp: the random projection of the embeddings is for dm, not %s: drop it", cfg.Method)
	case cfg.Init != InitNoise && cfg.Init != InitMean:
		return fmt.Errorf("distill: dp: initialisation %q would release real images: use %s or %s", cfg.Init, InitNoise, InitMean)
	case cfg.Match.InnerReal || cfg.Match.ClassSum:
		return fmt.Errorf("distill: dp: the inner loop on real data and the class-sum objective are not private: turn them off")
	}
	if cfg.Init == InitMean {
		return cfg.DP.validateInitRelease()
	}
	return nil
}

// DPStepsPerIteration is how many steps of the sampled Gaussian mechanism
// one Step of a private run spends: one for DM (every class's noisy sum
// once), OuterLoop for DC/DSA (the noisy gradients are drawn again at
// every outer step). An accountant composes Iterations × this many steps.
func (cfg Config) DPStepsPerIteration() int {
	if cfg.Method == MethodDC || cfg.Method == MethodDSA {
		return cfg.OuterLoop
	}
	return 1
}

// projected is an embedder whose features are those of Embedder times the
// fixed matrix p (d × k): DPConfig.Project.
type projected[T tensor.Float] struct {
	nn.Embedder[T]
	p *tensor.Tensor[T]
}

// Embed implements nn.Embedder.
func (m projected[T]) Embed(x *ag.Var[T], params []*ag.Var[T]) *ag.Var[T] {
	e := m.Embedder.Embed(x, params)
	return ag.MatMul(e, e.Tape().Const(m.p), false, false)
}

// projectEmbedder returns m, whose embeddings have dim values, with its
// embeddings projected onto k random directions (entries N(0, 1/k) from
// rng).
func projectEmbedder[T tensor.Float](m nn.Embedder[T], dim, k int, rng *tensor.RNG) nn.Embedder[T] {
	p := tensor.New[T](dim, k)
	tensor.FillNormal(rng, p, 0, 1/math.Sqrt(float64(k)))
	return projected[T]{Embedder: m, p: p}
}
