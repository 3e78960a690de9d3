package distill

import (
	"context"
	"fmt"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// gm is gradient matching: DC (Zhao, Mopuri & Bilen, ICLR 2021; survey eq.
// 21–24) and, with Siamese augmentation, DSA (Zhao & Bilen, ICML 2021; eq.
// 28), as the authors' main.py runs them. One iteration is one freshly
// initialised network; for each of OuterLoop steps the per-class distance
// between the network's gradient on a real batch and on the synthetic
// images is summed over classes and the images take one SGD step on it;
// between outer steps the network trains InnerLoop epochs on the synthetic
// set (lr LRNet, with per-sample DSA augmentation for DSA).
//
// Match.ClassSum matches the sum over classes of the gradients once per
// outer step (DCC, eq. 25; GradMatchLossSum) instead of summing per-class
// distances; Match.Distance selects eq. 23 or eq. 26; innerReal trains the
// network on real data instead of the synthetic set (IDC, eq. 27;
// GMOptions).
type gm struct {
	imageState
	each      *data.DSA // per-sample augmentation for the inner loop (DSA only)
	innerReal bool      // inner loop on real data (GMOptions.InnerReal)
}

func (g *gm) Init(_ context.Context, real *data.Dataset) error {
	if err := g.init(real); err != nil {
		return err
	}
	if g.cfg.Method == MethodDC {
		g.shared = nil
	} else if g.shared != nil {
		g.each = &data.DSA{Strategy: g.shared.Strategy, Params: data.DefaultDSAParams()}
	}
	return nil
}

func (g *gm) Step(ctx context.Context, it int) (float64, error) {
	rng := iterRNG(g.cfg.Seed, it)
	m, err := nn.New[float32](g.cfg.Model, g.real.ImageShape(), g.real.Classes, rng)
	if err != nil {
		return 0, fmt.Errorf("distill: %w", err)
	}
	if tm, ok := m.(nn.Trainable); ok {
		tm.SetTraining(true)
	}
	ipc := g.cfg.IPC
	var total float64
	for ol := range g.cfg.OuterLoop {
		var loss float64
		perClass := g.real.Classes
		if g.cfg.Match.ClassSum {
			perClass = 0 // one distance of the class sums instead
			l, err := g.classSumLoss(ctx, m, rng)
			if err != nil {
				return 0, fmt.Errorf("distill: %s iteration %d outer step %d: %w", g.cfg.Method, it, ol, err)
			}
			loss = l
		}
		for c := range perClass {
			if err := ctx.Err(); err != nil {
				return 0, fmt.Errorf("distill: iteration %d: %w", it, err)
			}
			xr, yr, denom := g.classBatch(c, rng)
			var aug *data.Augmentation
			if g.shared != nil {
				aug = g.shared.Sample(rng, max(xr.Shape[0], ipc), xr.Shape[2], xr.Shape[3])
			}
			l, err := g.gmLoss(m, xr, yr, denom, c, aug, rng)
			if err != nil {
				return 0, fmt.Errorf("distill: %s iteration %d outer step %d class %d: %w", g.cfg.Method, it, ol, c, err)
			}
			loss += l
		}
		if err := g.update(it, loss); err != nil {
			return loss, err
		}
		total += loss
		if ol == g.cfg.OuterLoop-1 || g.cfg.InnerLoop == 0 {
			continue
		}
		var set nn.Dataset[float32] = g.syn.Dataset()
		tc := nn.TrainConfig[float32]{Epochs: g.cfg.InnerLoop, BatchSize: 256, LR: g.cfg.LRNet, Seed: rng.Uint64(), Context: ctx}
		if g.innerReal {
			set = randomRealSubset(g.real, 256*realInnerSteps(g.cfg.InnerLoop, g.syn.Len()), rng)
			tc.Epochs = 1
		}
		if g.each != nil {
			tc.Augment = func(_ *ag.Tape[float32], x *ag.Var[float32]) *ag.Var[float32] {
				s := x.Shape()
				return data.Apply(g.each.Sample(rng, s[0], s[2], s[3]), x)
			}
		}
		if err := nn.Train[float32](m, set, tc, nil); err != nil {
			return 0, fmt.Errorf("distill: %s iteration %d inner loop: %w", g.cfg.Method, it, err)
		}
	}
	if g.cfg.Match.ClassSum {
		return total / float64(g.cfg.OuterLoop), nil
	}
	return total / float64(g.real.Classes*g.cfg.OuterLoop), nil
}

// classSumLoss runs one outer step's DCC objective (eq. 25) over all
// classes and writes the image gradient into g.grad.
func (g *gm) classSumLoss(ctx context.Context, m nn.Model[float32], rng *tensor.RNG) (float64, error) {
	k, ipc := g.real.Classes, g.cfg.IPC
	real, synX, grads := make([]*tensor.Tensor[float32], k), make([]*tensor.Tensor[float32], k), make([]*tensor.Tensor[float32], k)
	realY, synY := make([][]int, k), make([][]int, k)
	var augs []*data.Augmentation
	if g.shared != nil {
		augs = make([]*data.Augmentation, k)
	}
	for c := range k {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		real[c], realY[c] = g.realBatch(c, rng)
		if augs != nil {
			augs[c] = g.shared.Sample(rng, max(real[c].Shape[0], ipc), real[c].Shape[2], real[c].Shape[3])
		}
		synX[c], synY[c], grads[c] = g.classImages(c), g.syn.Y[c*ipc:(c+1)*ipc], classSlice(g.grad, c, ipc)
	}
	return GradMatchLossSum(m, real, realY, synX, synY, augs, g.cfg.Match, grads)
}

// GradMatchLoss returns one class's gradient-matching loss
// D(∇θ CE(m(A(syn)), synY), ∇θ CE(m(A(real)), realY)) at m's current
// parameters θ and writes its gradient with respect to syn into grad
// (syn's shape). aug, if not nil, is applied to both batches (Siamese
// augmentation). The real gradient is computed without a graph; the
// synthetic one with a graph, so the image gradient is exact (second
// order through the network).
func GradMatchLoss[T tensor.Float](m nn.Model[T], real *tensor.Tensor[T], realY []int, syn *tensor.Tensor[T], synY []int, aug *data.Augmentation, match MatchConfig, grad *tensor.Tensor[T]) (float64, error) {
	tp := ag.NewTape[T]()
	defer tp.Release()
	target, err := realGradients(tp, m, real, realY, aug, layerwiseMatched)
	if err != nil {
		return 0, err
	}
	return gmMatch(tp, m, target, syn, synY, aug, match, grad)
}

// layerwiseMatched reports whether the DC distances (eq. 23 and 26) read
// a parameter of this shape: one-dimensional ones (biases, norm scales)
// contribute nothing, so their gradients need not be computed.
func layerwiseMatched(shape []int) bool { return len(shape) >= 2 }

// realGradients returns the gradient of m's cross entropy on the
// (augmented) real batch with respect to the parameters whose shape
// matched accepts, computed on tp without a graph and cloned, and releases
// tp for the synthetic side. The other parameters are bound as constants,
// so the backward pass skips their gradients (a conv bias's is a sum over
// every output pixel of the batch), and their entries are nil.
func realGradients[T tensor.Float](tp *ag.Tape[T], m nn.Model[T], real *tensor.Tensor[T], realY []int, aug *data.Augmentation, matched func(shape []int) bool) ([]*tensor.Tensor[T], error) {
	xr := tp.Const(real)
	if aug != nil {
		xr = data.Apply(aug, xr)
	}
	params := m.Params()
	ps, wrt := bindSome(tp, m, func(i int) bool { return matched(params[i].Shape) })
	gr, err := tp.Grad([]*ag.Var[T]{ag.CrossEntropy(m.Forward(xr, ps), realY)}, nil, wrt, false)
	if err != nil {
		return nil, err
	}
	target := make([]*tensor.Tensor[T], len(ps))
	k := 0
	for i, p := range ps {
		if p.RequiresGrad() {
			target[i] = gr[k].Value.Clone()
			k++
		}
	}
	tp.Release()
	return target, nil
}

// bindSome binds m's parameters on tp: those whose index keep accepts as
// parameters (also returned in order as wrt), the others as constants.
func bindSome[T tensor.Float](tp *ag.Tape[T], m nn.Model[T], keep func(i int) bool) (ps, wrt []*ag.Var[T]) {
	params := m.Params()
	ps = make([]*ag.Var[T], len(params))
	for i, p := range params {
		if keep(i) {
			ps[i] = tp.Param(p)
			wrt = append(wrt, ps[i])
		} else {
			ps[i] = tp.Const(p)
		}
	}
	return ps, wrt
}

// gmMatch is GradMatchLoss's synthetic half: the distance between the
// synthetic batch's parameter gradient and a fixed target gradient, and
// its gradient with respect to syn written into grad. It is shared with DP
// gradient matching (dp.go), whose target is a clipped, noised sum of
// per-example gradients.
func gmMatch[T tensor.Float](tp *ag.Tape[T], m nn.Model[T], target []*tensor.Tensor[T], syn *tensor.Tensor[T], synY []int, aug *data.Augmentation, match MatchConfig, grad *tensor.Tensor[T]) (float64, error) {
	xs := tp.Param(syn)
	x := xs
	if aug != nil {
		x = data.Apply(aug, x)
	}
	// Parameters without a target (see realGradients) are constants here
	// too: the distances ignore them.
	if n := len(m.Params()); len(target) != n {
		return 0, fmt.Errorf("distill: %d target gradients for a network of %d parameters", len(target), n)
	}
	ps, wrt := bindSome(tp, m, func(i int) bool { return target[i] != nil })
	gT := make([]*ag.Var[T], 0, len(wrt))
	for _, t := range target {
		if t != nil {
			gT = append(gT, tp.Const(t))
		}
	}
	gS, err := tp.Grad([]*ag.Var[T]{ag.CrossEntropy(m.Forward(x, ps), synY)}, nil, wrt, true)
	if err != nil {
		return 0, err
	}
	dist, err := gradDistance(match, gS, gT)
	if err != nil {
		return 0, err
	}
	gx, err := tp.Grad([]*ag.Var[T]{dist}, nil, []*ag.Var[T]{xs}, false)
	if err != nil {
		return 0, err
	}
	copy(grad.Data, gx[0].Value.Data)
	return float64(dist.Value.Item()), nil
}

// gradDistance is the per-class distance of the gradient-matching
// objective selected by match: eq. 23 (layer-wise cosine) or eq. 26
// (magnitude-aware).
func gradDistance[T tensor.Float](match MatchConfig, gS, gT []*ag.Var[T]) (*ag.Var[T], error) {
	switch match.Distance {
	case "", DistanceLayerwise:
		return LayerwiseGradDistance(gS, gT), nil
	case DistanceMagnitude:
		return MagnitudeGradDistance(gS, gT), nil
	}
	return nil, fmt.Errorf("distill: gradient distance %q is not implemented", match.Distance)
}
