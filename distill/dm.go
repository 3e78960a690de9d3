package distill

import (
	"context"
	"fmt"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// dm is distribution matching (Zhao & Bilen, WACV 2023; survey eq. 31),
// as the authors' main_DM.py runs it: every iteration a freshly initialised
// network; for each class a batch of real images and the class's synthetic
// images, augmented with the same DSA parameters; loss
// Σ_c ‖mean embed(real_c) − mean embed(syn_c)‖²; one SGD step with
// momentum on the synthetic images.
type dm struct {
	imageState
	// embedDim is the length of the model's embedding, measured once in
	// Init for DPConfig.Project (0 without it).
	embedDim int
}

func (d *dm) Init(_ context.Context, real *data.Dataset) error {
	if err := d.init(real); err != nil {
		return err
	}
	m, err := nn.New[float32](d.cfg.Model, real.ImageShape(), real.Classes, tensor.NewRNG(0, 0))
	if err != nil {
		return fmt.Errorf("distill: %w", err)
	}
	emb, ok := m.(nn.Embedder[float32])
	if !ok {
		return fmt.Errorf("distill: dm needs a model that exposes its features; %q does not (use a ConvNet)", d.cfg.Model)
	}
	if d.cfg.DP != nil && d.cfg.DP.Project > 0 {
		x := d.syn.X
		e, err := embedConst(emb, &tensor.Tensor[float32]{Shape: append([]int{1}, x.Shape[1:]...), Data: x.Data[:len(x.Data)/x.Shape[0]]}, nil, false)
		if err != nil {
			return fmt.Errorf("distill: dm: %w", err)
		}
		d.embedDim = e.Shape[1]
	}
	return nil
}

// Step is one iteration: a fresh network; per class a real batch (under DP
// a Poisson sample), one shared augmentation and the class's target, the
// mean real embedding (under DP clipped and noised, released once); then
// Config.ImageSteps SGD steps of the synthetic images against those
// targets. It returns the loss before the first step.
func (d *dm) Step(ctx context.Context, it int) (float64, error) {
	m, rng, err := iterNet(d.cfg, d.real, it)
	if err != nil {
		return 0, err
	}
	emb := m.(nn.Embedder[float32])
	if d.embedDim > 0 {
		emb = projectEmbedder(emb, d.embedDim, d.cfg.DP.Project, tensor.NewRNG(d.cfg.Seed, streamProject+uint64(it)))
	}
	targets := make([]dmTarget, d.real.Classes)
	for c := range d.real.Classes {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("distill: iteration %d: %w", it, err)
		}
		xr, _, denom := d.classBatch(c, rng)
		t := &targets[c]
		if d.shared != nil {
			t.aug = d.shared.Sample(rng, max(xr.Shape[0], d.cfg.IPC), xr.Shape[2], xr.Shape[3])
		}
		if d.cfg.DP == nil {
			t.mean, err = embedConst(emb, xr, t.aug, true)
		} else {
			t.mean, t.center, err = dpDMTarget(emb, xr, denom, d.classImages(c), t.aug, *d.cfg.DP, rng)
		}
		if err != nil {
			return 0, fmt.Errorf("distill: dm iteration %d class %d: %w", it, c, err)
		}
	}
	var first float64
	for step := range max(1, d.cfg.ImageSteps) {
		var total float64
		for c, t := range targets {
			if err := ctx.Err(); err != nil {
				return 0, fmt.Errorf("distill: iteration %d: %w", it, err)
			}
			loss, err := d.matchTarget(emb, c, t)
			if err != nil {
				return 0, fmt.Errorf("distill: dm iteration %d class %d: %w", it, c, err)
			}
			total += loss
		}
		total /= float64(d.real.Classes)
		if step == 0 {
			first = total
		}
		if err := d.update(it, total); err != nil {
			return first, err
		}
	}
	return first, nil
}

// dmTarget is one class's target in one DM iteration: the augmentation
// both sides share, the (under DP noised) mean real embedding and, with
// centered clipping, the center the synthetic side is clipped around.
type dmTarget struct {
	aug    *data.Augmentation
	mean   *tensor.Tensor[float32]
	center []float32
}

// matchTarget writes the gradient of class c's loss against t into the
// image gradient and returns the loss; the synthetic side is clipped as
// the real one was under DP.
func (d *dm) matchTarget(emb nn.Embedder[float32], c int, t dmTarget) (float64, error) {
	var clip float64
	if d.cfg.DP != nil {
		clip = d.cfg.DP.Clip
	}
	tp := ag.NewTape[float32]()
	defer tp.Release()
	return dmMatch(tp, emb, t.mean, d.classImages(c), t.aug, clip, t.center, classSlice(d.grad, c, d.cfg.IPC))
}

// DMLoss returns one class's distribution-matching loss
// ‖mean embed(A(real)) − mean embed(A(syn))‖² for the network m (its
// parameters held constant) and writes its gradient with respect to syn
// into grad (syn's shape). aug, if not nil, is applied to both batches
// (Siamese augmentation). The real embedding is computed without a graph.
func DMLoss[T tensor.Float](m nn.Embedder[T], real, syn *tensor.Tensor[T], aug *data.Augmentation, grad *tensor.Tensor[T]) (float64, error) {
	target, err := embedConst(m, real, aug, true)
	if err != nil {
		return 0, err
	}
	tp := ag.NewTape[T]()
	defer tp.Release()
	return dmMatch(tp, m, target, syn, aug, 0, nil, grad)
}

// embedConst returns m's embeddings of A(x) (aug nil: x), one row per
// image, or their mean over the images when mean is set, computed without
// a graph on a tape of its own (released on return).
func embedConst[T tensor.Float](m nn.Embedder[T], x *tensor.Tensor[T], aug *data.Augmentation, mean bool) (*tensor.Tensor[T], error) {
	tp := ag.NewTape[T]()
	defer tp.Release()
	var out *tensor.Tensor[T]
	tp.NoGrad(func() {
		v := tp.Const(x)
		if aug != nil {
			v = data.Apply(aug, v)
		}
		e := m.Embed(v, nn.BindConst(tp, m))
		if mean {
			e = ag.MeanAxes(e, []int{0}, false)
		}
		if tp.Err() == nil {
			out = e.Value.Clone()
		}
	})
	return out, tp.Err()
}

// dmMatch is DMLoss's synthetic half: the loss ‖target − mean embed(A(syn))‖²
// against a fixed target embedding, its gradient with respect to syn
// written into grad. It is shared with DP distribution matching (dp.go),
// whose target is a clipped, noised mean: clip > 0 clips each synthetic
// embedding (its offset from center when center is not nil) to that norm
// as the real ones were (0 or +Inf: none), so that with no clipping and no
// noise DP-DM is DMLoss to the last bit.
func dmMatch[T tensor.Float](tp *ag.Tape[T], m nn.Embedder[T], target, syn *tensor.Tensor[T], aug *data.Augmentation, clip float64, center []T, grad *tensor.Tensor[T]) (float64, error) {
	xs := tp.Param(syn)
	x := xs
	if aug != nil {
		x = data.Apply(aug, x)
	}
	mean := ag.MeanAxes(clipAroundVar(m.Embed(x, nn.BindConst(tp, m)), clip, center), []int{0}, false)
	loss := ag.Sum(ag.Square(ag.Sub(tp.Const(target), mean)))
	gs, err := tp.Grad([]*ag.Var[T]{loss}, nil, []*ag.Var[T]{xs}, false)
	if err != nil {
		return 0, err
	}
	copy(grad.Data, gs[0].Value.Data)
	return float64(loss.Value.Item()), nil
}
