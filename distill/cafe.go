package distill

import (
	"context"
	"fmt"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// MethodCAFE is the method name of CAFE (newCAFE).
const MethodCAFE = "cafe"

// CAFEOptions are CAFE's loss weights.
type CAFEOptions struct {
	// LayerWeights weighs the per-layer feature alignment (eq. 32): one
	// weight per ConvNet block (its activation output, before pooling)
	// and a last one for the pooled final features. nil selects
	// DefaultCAFEOptions' weights.
	LayerWeights []float64
	// Beta weighs the discrimination loss (eq. 33–34), a cross entropy
	// summed (not averaged) over the real samples, as the reference code's
	// inner_weight × CrossEntropyLoss(reduction='sum'). 0 selects 0.01.
	Beta float64
}

// DefaultCAFEOptions returns the reference code's weights for a ConvNet of
// the given depth. For depth 3 (its only network) it weighs the three
// block outputs 0.1, 0.1 and 1 (fourth_weight, third_weight,
// second_weight) and the pooled features 2: first_weight (1) plus the
// separate alignment of the synthetic class centres with the real ones
// (criterion_middle on the last features, weight 1), which is the same
// term. Other depths weigh every block but the last 0.1. Beta is
// inner_weight, 0.01.
func DefaultCAFEOptions(depth int) CAFEOptions {
	w := make([]float64, depth+1)
	for i := range depth {
		w[i] = 0.1
	}
	w[depth-1] = 1
	w[depth] = 2
	return CAFEOptions{LayerWeights: w, Beta: 0.01}
}

// cafe is CAFE (Wang et al., CVPR 2022, "Learning to condense dataset by
// aligning features"; survey eq. 32–34) as the authors' distill.py runs
// it, with DC's fixed loops. Every iteration a freshly initialised ConvNet;
// for each of OuterLoop steps, a batch of BatchReal real images per class
// and the synthetic images go through the network (with the same DSA
// parameters per class when augmenting); the loss is
//
//	Σ_c Σ_l w_l ‖mean_{x∈real_c} f_l(x) − mean_{s∈syn_c} f_l(s)‖²
//	  + β Σ_i CE(f_L(real_i) · F̄ᵀ, y_i)
//
// where f_l are the block outputs and the pooled features f_L, and F̄
// (classes × features) holds the synthetic class centres mean f_L(syn_c):
// the centres classify the real samples (eq. 33–34). The images take one
// SGD step on it, and the network then trains InnerLoop epochs on the
// synthetic set (lr LRNet), as in DC.
//
// Departures from the reference code: its outer and inner loops stop
// adaptively when the network's accuracy on real images settles
// (lambda_1, lambda_2 "watchers"); here they are Config's fixed
// OuterLoop/InnerLoop (by IPC, as DC). Its image learning rate halves at
// iterations 1200, 1600 and 1800 of its 2000; here it is constant. Its
// loss also adds the network's cross entropy on the real batch, which
// does not depend on the images and is left out. Its batch norm (for
// ConvNetBN) sees all classes in one batch; here each class is a forward
// pass of its own, as in DC and DM.
type cafe struct {
	imageState
	opt  CAFEOptions
	each *data.DSA // per-sample augmentation for the inner loop
}

// newCAFE returns the CAFE distiller. cfg should be completed with
// Defaults and validated; a zero LRImg becomes the reference's 0.1.
func newCAFE(cfg Config) Distiller {
	if cfg.LRImg == 0 {
		cfg.LRImg = 0.1
	}
	return &cafe{imageState: imageState{cfg: cfg}}
}

func (c *cafe) Init(_ context.Context, real *data.Dataset) error {
	if err := c.init(real); err != nil {
		return err
	}
	m, err := nn.New[float32](c.cfg.Model, real.ImageShape(), real.Classes, tensor.NewRNG(0, 0))
	if err != nil {
		return fmt.Errorf("distill: %w", err)
	}
	cn, ok := m.(*nn.ConvNet[float32])
	if !ok {
		return fmt.Errorf("distill: cafe aligns the features of every ConvNet block; model %q is not a ConvNet", c.cfg.Model)
	}
	if c.opt.LayerWeights == nil {
		c.opt.LayerWeights = DefaultCAFEOptions(cn.Config().Depth).LayerWeights
	}
	if c.opt.Beta == 0 {
		c.opt.Beta = 0.01
	}
	if len(c.opt.LayerWeights) != cn.Config().Depth+1 {
		return fmt.Errorf("distill: cafe has %d layer weights for a ConvNet of depth %d (want depth+1)", len(c.opt.LayerWeights), cn.Config().Depth)
	}
	if c.shared != nil {
		c.each = &data.DSA{Strategy: c.shared.Strategy, Params: data.DefaultDSAParams()}
	}
	return nil
}

func (c *cafe) Step(ctx context.Context, it int) (float64, error) {
	rng := iterRNG(c.cfg.Seed, it)
	m, err := nn.New[float32](c.cfg.Model, c.real.ImageShape(), c.real.Classes, rng)
	if err != nil {
		return 0, fmt.Errorf("distill: %w", err)
	}
	net := m.(*nn.ConvNet[float32])
	net.SetTraining(true)
	k, ipc := c.real.Classes, c.cfg.IPC
	var total float64
	for ol := range c.cfg.OuterLoop {
		real := make([]*tensor.Tensor[float32], k)
		syn := make([]*tensor.Tensor[float32], k)
		grads := make([]*tensor.Tensor[float32], k)
		var augs []*data.Augmentation
		if c.shared != nil {
			augs = make([]*data.Augmentation, k)
		}
		for cl := range k {
			if err := ctx.Err(); err != nil {
				return 0, fmt.Errorf("distill: iteration %d: %w", it, err)
			}
			real[cl], _ = c.realBatch(cl, rng)
			if augs != nil {
				augs[cl] = c.shared.Sample(rng, max(real[cl].Shape[0], ipc), real[cl].Shape[2], real[cl].Shape[3])
			}
			syn[cl], grads[cl] = c.classImages(cl), classSlice(c.grad, cl, ipc)
		}
		loss, err := CAFELoss(net, real, syn, augs, c.opt, grads)
		if err != nil {
			return 0, fmt.Errorf("distill: cafe iteration %d outer step %d: %w", it, ol, err)
		}
		if err := c.update(it, loss); err != nil {
			return loss, err
		}
		total += loss
		if ol == c.cfg.OuterLoop-1 || c.cfg.InnerLoop == 0 {
			continue
		}
		tc := nn.TrainConfig[float32]{Epochs: c.cfg.InnerLoop, BatchSize: 256, LR: c.cfg.LRNet, Seed: rng.Uint64(), Context: ctx}
		if c.each != nil {
			tc.Augment = func(_ *ag.Tape[float32], x *ag.Var[float32]) *ag.Var[float32] {
				s := x.Shape()
				return data.Apply(c.each.Sample(rng, s[0], s[2], s[3]), x)
			}
		}
		if err := nn.Train[float32](m, c.syn.Dataset(), tc, nil); err != nil {
			return 0, fmt.Errorf("distill: cafe iteration %d inner loop: %w", it, err)
		}
	}
	return total / float64(k*c.cfg.OuterLoop), nil
}

// CAFELoss returns CAFE's loss (see cafe) for the ConvNet m at its current
// parameters, held constant: real[g] and syn[g] are the real and synthetic
// images of class g (the label of group g is g; m has at least len(real)
// classes), aug[g] (if aug is not nil) is applied to both batches of class
// g. It writes the gradient with respect to syn[g] into grad[g] and returns
// the loss. opt's zero fields take DefaultCAFEOptions' values. The real
// features are computed without a graph, one class at a time.
func CAFELoss[T tensor.Float](m *nn.ConvNet[T], real, syn []*tensor.Tensor[T], aug []*data.Augmentation, opt CAFEOptions, grad []*tensor.Tensor[T]) (float64, error) {
	k := len(real)
	if len(syn) != k || len(grad) != k || (aug != nil && len(aug) != k) || k == 0 {
		return 0, fmt.Errorf("distill: CAFELoss: %d real groups, %d synthetic groups, %d gradients, %d augmentations", len(real), len(syn), len(grad), len(aug))
	}
	depth := m.Config().Depth
	def := DefaultCAFEOptions(depth)
	if opt.LayerWeights == nil {
		opt.LayerWeights = def.LayerWeights
	}
	if opt.Beta == 0 {
		opt.Beta = def.Beta
	}
	if len(opt.LayerWeights) != depth+1 {
		return 0, fmt.Errorf("distill: CAFELoss: %d layer weights for depth %d (want depth+1)", len(opt.LayerWeights), depth)
	}
	augOf := func(g int) *data.Augmentation {
		if aug == nil {
			return nil
		}
		return aug[g]
	}
	tp := ag.NewTape[T]()
	defer tp.Release()

	// Real side: per class the mean of every layer's features, and every
	// real sample's final features for the discrimination loss.
	means := make([][]*tensor.Tensor[T], k)
	var embeds []*tensor.Tensor[T]
	var labels []int
	for g := range k {
		tp.NoGrad(func() {
			x := tp.Const(real[g])
			if a := augOf(g); a != nil {
				x = data.Apply(a, x)
			}
			f := ConvNetFeatures(m, x, nn.BindConst(tp, m))
			if tp.Err() != nil {
				return
			}
			for _, v := range append(f.Blocks, f.Embed) {
				means[g] = append(means[g], ag.MeanAxes(v, []int{0}, false).Value.Clone())
			}
			embeds = append(embeds, f.Embed.Value.Clone())
			for range real[g].Shape[0] {
				labels = append(labels, g)
			}
		})
		if err := tp.Err(); err != nil {
			return 0, err
		}
		tp.Release()
	}
	d := embeds[0].Shape[1]
	realEmbed := tensor.New[T](len(labels), d)
	off := 0
	for _, e := range embeds {
		copy(realEmbed.Data[off:], e.Data)
		off += len(e.Data)
	}

	// Synthetic side, on one graph: the alignment terms and the class
	// centres.
	ps := nn.BindConst(tp, m)
	xs := make([]*ag.Var[T], k)
	centres := make([]*ag.Var[T], k)
	var loss *ag.Var[T]
	add := func(v *ag.Var[T]) {
		if loss == nil {
			loss = v
		} else {
			loss = ag.Add(loss, v)
		}
	}
	for g := range k {
		xs[g] = tp.Param(syn[g])
		x := xs[g]
		if a := augOf(g); a != nil {
			x = data.Apply(a, x)
		}
		f := ConvNetFeatures(m, x, ps)
		if err := tp.Err(); err != nil {
			return 0, err
		}
		for l, v := range append(f.Blocks, f.Embed) {
			if opt.LayerWeights[l] == 0 {
				continue
			}
			mean := ag.MeanAxes(v, []int{0}, false)
			add(ag.Scale(ag.Sum(ag.Square(ag.Sub(tp.Const(means[g][l]), mean))), T(opt.LayerWeights[l])))
		}
		centres[g] = ag.MeanAxes(f.Embed, []int{0}, true)
	}
	logits := ag.MatMul(tp.Const(realEmbed), ag.Concat(0, centres...), false, true)
	ce := ag.CrossEntropy(logits, labels) // mean over the real samples
	add(ag.Scale(ce, T(opt.Beta*float64(len(labels)))))
	if err := tp.Err(); err != nil {
		return 0, err
	}
	gx, err := tp.Grad([]*ag.Var[T]{loss}, nil, xs, false)
	if err != nil {
		return 0, err
	}
	for g := range k {
		copy(grad[g].Data, gx[g].Value.Data)
	}
	return float64(loss.Value.Item()), nil
}
