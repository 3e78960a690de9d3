package distill

import (
	"fmt"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// DistanceMagnitude is the magnitude-aware gradient distance of Jiang et
// al. (survey eq. 26): per output channel 1 − cos(A_i, B_i) + ‖A_i − B_i‖
// (MagnitudeGradDistance).
const DistanceMagnitude = "magnitude"

// Distances lists the gradient distances MatchConfig.Distance accepts.
func Distances() []string { return []string{DistanceLayerwise, DistanceMagnitude} }

// ValidateMatch checks a gradient-matching configuration: the distance
// must be one of Distances ("" means DistanceLayerwise); ClassSum (DCC,
// eq. 25) is accepted with either distance.
func ValidateMatch(m MatchConfig) error {
	switch m.Distance {
	case "", DistanceLayerwise, DistanceMagnitude:
		return nil
	}
	return fmt.Errorf("gradient distance %q is not implemented (want %s or %s)", m.Distance, DistanceLayerwise, DistanceMagnitude)
}

// magnitudeEps keeps the gradient of ‖A_i − B_i‖ finite where the two rows
// coincide: the norm is computed as sqrt(‖A_i − B_i‖² + 1e-12).
const magnitudeEps = 1e-12

// MagnitudeGradDistance is the magnitude-aware distance of survey eq. 26:
// for every parameter of two or more dimensions, reshaped to
// (out-channels, rest), the sum over output channels of
// 1 − <A_i, B_i>/(‖A_i‖‖B_i‖ + 1e-6) + ‖A_i − B_i‖. As in
// LayerwiseGradDistance, one-dimensional parameters contribute nothing and
// the cosine carries the DC authors' 1e-6; the Euclidean norm is computed
// as sqrt(‖A_i − B_i‖² + 1e-12) so that its gradient stays finite when the
// rows coincide.
func MagnitudeGradDistance[T ag.Float](gS, gT []*ag.Var[T]) *ag.Var[T] {
	return sumOverRows(gS, gT, func(s2, t2 *ag.Var[T]) *ag.Var[T] {
		diff := ag.Sqrt(ag.AddScalar(ag.SumAxes(ag.Square(ag.Sub(s2, t2)), []int{1}, false), magnitudeEps))
		return ag.Add(ag.AddScalar(ag.Neg(rowCosine(s2, t2)), 1), diff)
	})
}

// GradMatchLossSum is DCC's inter-class objective (survey eq. 25) for the
// network m at its current parameters θ:
//
//	D(Σ_g ∇θ CE(m(A_g(syn_g)), synY_g), Σ_g ∇θ CE(m(A_g(real_g)), realY_g))
//
// over groups g (the classes; each CE is the mean over its group's batch,
// as in eq. 24). aug[g], if aug is not nil and aug[g] is not nil, is
// applied to both batches of group g. It writes the gradient with respect
// to syn[g] into grad[g] (syn[g]'s shape) and returns the distance. Each
// group is a forward pass of its own, as in the per-class objective, so a
// batch-norm network sees the same batches under both objectives. The real
// gradients are computed without a graph, one group at a time.
func GradMatchLossSum[T tensor.Float](m nn.Model[T], real []*tensor.Tensor[T], realY [][]int, syn []*tensor.Tensor[T], synY [][]int, aug []*data.Augmentation, match MatchConfig, grad []*tensor.Tensor[T]) (float64, error) {
	if len(real) != len(realY) || len(syn) != len(synY) || len(syn) != len(grad) || len(real) != len(syn) || (aug != nil && len(aug) != len(syn)) {
		return 0, fmt.Errorf("distill: GradMatchLossSum: %d real groups (%d label sets), %d synthetic groups (%d label sets), %d gradients, %d augmentations",
			len(real), len(realY), len(syn), len(synY), len(grad), len(aug))
	}
	augOf := func(g int) *data.Augmentation {
		if aug == nil {
			return nil
		}
		return aug[g]
	}
	tp := ag.NewTape[T]()
	defer tp.Release()
	var target []*tensor.Tensor[T]
	for g := range real {
		xr := tp.Const(real[g])
		if a := augOf(g); a != nil {
			xr = data.Apply(a, xr)
		}
		ps := nn.Bind(tp, m)
		gr, err := tp.Grad([]*ag.Var[T]{ag.CrossEntropy(m.Forward(xr, ps), realY[g])}, nil, ps, false)
		if err != nil {
			return 0, err
		}
		if target == nil {
			target = make([]*tensor.Tensor[T], len(gr))
			for i, v := range gr {
				target[i] = v.Value.Clone()
			}
		} else {
			for i, v := range gr {
				tensor.Axpy(1, v.Value.Data, target[i].Data)
			}
		}
		tp.Release()
	}

	xs := make([]*ag.Var[T], len(syn))
	var lossS *ag.Var[T]
	ps := nn.Bind(tp, m)
	for g := range syn {
		xs[g] = tp.Param(syn[g])
		x := xs[g]
		if a := augOf(g); a != nil {
			x = data.Apply(a, x)
		}
		l := ag.CrossEntropy(m.Forward(x, ps), synY[g])
		if lossS == nil {
			lossS = l
		} else {
			lossS = ag.Add(lossS, l)
		}
	}
	if err := tp.Err(); err != nil {
		return 0, err
	}
	gS, err := tp.Grad([]*ag.Var[T]{lossS}, nil, ps, true)
	if err != nil {
		return 0, err
	}
	gT := make([]*ag.Var[T], len(target))
	for i, t := range target {
		gT[i] = tp.Const(t)
	}
	dist, err := gradDistance(match, gS, gT)
	if err != nil {
		return 0, err
	}
	gx, err := tp.Grad([]*ag.Var[T]{dist}, nil, xs, false)
	if err != nil {
		return 0, err
	}
	for g := range grad {
		copy(grad[g].Data, gx[g].Value.Data)
	}
	return float64(dist.Value.Item()), nil
}

// GMOptions are the gradient-matching options that MatchConfig has no
// field for yet.
type GMOptions struct {
	// InnerReal trains the matching network on real data between outer
	// steps instead of on the synthetic set (IDC, Kim et al.; survey eq.
	// 27): the same number of SGD steps as the synthetic inner loop would
	// take (InnerLoop epochs of the synthetic set in batches of 256), each
	// on 256 real images drawn at random from the whole training set, with
	// per-sample DSA augmentation when the method augments.
	InnerReal bool
}

// newGM returns the gradient-matching distiller (DC or DSA by cfg.Method)
// with the options opt. cfg must be completed and validated.
func newGM(cfg Config, opt GMOptions) Distiller {
	return &gm{imageState: imageState{cfg: cfg}, innerReal: opt.InnerReal}
}

// realInnerSteps is the number of SGD steps the inner loop takes: what
// InnerLoop epochs over n synthetic images in batches of 256 take.
func realInnerSteps(innerLoop, n int) int {
	return innerLoop * ((n + 255) / 256)
}

// indexDataset is a view of d's samples idx, as an nn training set.
type indexDataset struct {
	d   *data.Dataset
	idx []int
}

func (s indexDataset) Len() int          { return len(s.idx) }
func (s indexDataset) ImageShape() []int { return s.d.ImageShape() }
func (s indexDataset) Batch(idx []int) (*tensor.Tensor[float32], []int) {
	pick := make([]int, len(idx))
	for i, j := range idx {
		pick[i] = s.idx[j]
	}
	return s.d.Batch(pick)
}

// randomRealSubset draws n sample indices of real uniformly with
// replacement.
func randomRealSubset(real *data.Dataset, n int, rng *tensor.RNG) indexDataset {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = rng.IntN(real.Len())
	}
	return indexDataset{d: real, idx: idx}
}
