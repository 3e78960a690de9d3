package distill

import (
	"context"
	"fmt"
	"math"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// coreset selects real images: at random, by herding or by k-center
// greedy in the feature space of a ConvNet trained on the real data. All
// the work happens in Init.
type coreset struct {
	cfg      Config
	syn      *SyntheticSet
	selected [][]int // per class, indices into the real set, in selection order
}

func (s *coreset) Config() Config           { return s.cfg }
func (s *coreset) Iterative() bool          { return false }
func (s *coreset) Synthetic() *SyntheticSet { return s.syn }

// Selected returns, per class, the indices of the chosen real images in
// the order they were chosen.
func (s *coreset) Selected() [][]int { return s.selected }

func (s *coreset) Step(context.Context, int) (float64, error) {
	return 0, fmt.Errorf("distill: %s selects its images in Init and has no iterations", s.cfg.Method)
}

func (s *coreset) Checkpoint(next int) *Checkpoint {
	return &Checkpoint{Config: s.cfg, Next: next, Syn: s.syn.Clone()}
}

func (s *coreset) Restore(c *Checkpoint) error {
	if err := c.matches(s.cfg); err != nil {
		return err
	}
	s.syn = c.Syn.Clone()
	return nil
}

func (s *coreset) Init(ctx context.Context, real *data.Dataset) error {
	if err := s.cfg.checkData(real); err != nil {
		return err
	}
	byClass := real.ClassIndices()
	if s.cfg.Method == MethodRandom {
		rng := tensor.NewRNG(s.cfg.Seed, streamInit)
		s.selected = make([][]int, len(byClass))
		for c, idx := range byClass {
			perm := rng.Perm(len(idx))
			for i := range s.cfg.IPC {
				s.selected[c] = append(s.selected[c], idx[perm[i]])
			}
		}
	} else {
		net := s.cfg.FeatureNet
		if net == nil {
			var err error
			if net, err = FeatureNet(ctx, real, s.cfg.Model, s.cfg.FeatureEpochs, s.cfg.Seed); err != nil {
				return err
			}
		}
		s.selected = make([][]int, len(byClass))
		for c, idx := range byClass {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("distill: %s: %w", s.cfg.Method, err)
			}
			x, _ := real.Batch(idx)
			f, err := Features(net, x, 256)
			if err != nil {
				return fmt.Errorf("distill: %s: class %d features: %w", s.cfg.Method, c, err)
			}
			var pick []int
			if s.cfg.Method == MethodHerding {
				pick = Herding(f, len(idx), s.cfg.IPC)
			} else {
				pick = KCenterGreedy(f, len(idx), s.cfg.IPC)
			}
			for _, p := range pick {
				s.selected[c] = append(s.selected[c], idx[p])
			}
		}
	}
	var all []int
	for _, sel := range s.selected {
		all = append(all, sel...)
	}
	s.syn = subsetSet(real, all)
	return nil
}

// FeatureNet builds the model called model (which must expose its
// features, as ConvNets do) from the seed and trains it epochs epochs on
// real with the DC evaluation's optimizer (SGD lr 0.01, momentum 0.9,
// weight decay 5e-4, batch 256). epochs 0 leaves it at its random
// initialisation.
func FeatureNet(ctx context.Context, real *data.Dataset, model string, epochs int, seed uint64) (nn.Embedder[float32], error) {
	m, err := nn.New[float32](model, real.ImageShape(), real.Classes, tensor.NewRNG(seed, streamFeature))
	if err != nil {
		return nil, fmt.Errorf("distill: %w", err)
	}
	e, ok := m.(nn.Embedder[float32])
	if !ok {
		return nil, fmt.Errorf("distill: feature network %q does not expose its features (use a ConvNet)", model)
	}
	if epochs > 0 {
		tc := nn.DefaultTrainConfig[float32]()
		tc.Epochs, tc.Seed, tc.Context = epochs, seed, ctx
		if err := nn.Train[float32](m, real, tc, nil); err != nil {
			return nil, fmt.Errorf("distill: training the feature network: %w", err)
		}
	}
	return e, nil
}

// Features embeds x (N, C, H, W) with m in evaluation mode, in batches,
// without a graph, and returns the features row-major (N × d) in float64.
func Features(m nn.Embedder[float32], x *tensor.Tensor[float32], batch int) ([]float64, error) {
	if tm, ok := m.(nn.Trainable); ok {
		prev := tm.Training()
		tm.SetTraining(false)
		defer tm.SetTraining(prev)
	}
	n := x.Shape[0]
	sz := x.Shape[1] * x.Shape[2] * x.Shape[3]
	var out []float64
	tp := ag.NewTape[float32]()
	defer tp.Release()
	for lo := 0; lo < n; lo += batch {
		hi := min(n, lo+batch)
		xb := &tensor.Tensor[float32]{Shape: []int{hi - lo, x.Shape[1], x.Shape[2], x.Shape[3]}, Data: x.Data[lo*sz : hi*sz]}
		tp.NoGrad(func() {
			e := m.Embed(tp.Const(xb), nn.BindConst(tp, m))
			if tp.Err() == nil {
				for _, v := range e.Value.Data {
					out = append(out, float64(v))
				}
			}
		})
		if err := tp.Err(); err != nil {
			return nil, err
		}
		tp.Release()
	}
	return out, nil
}

// Herding selects k of the n feature rows f (n × d) greedily (Welling
// 2009, as in iCaRL): at step t the row that brings the mean of the t rows
// chosen so far closest to the mean of all rows. Ties go to the lower
// index, so the result is deterministic.
func Herding(f []float64, n, k int) []int {
	d := len(f) / max(n, 1)
	mu := make([]float64, d)
	for i := range n {
		for j, v := range f[i*d : (i+1)*d] {
			mu[j] += v
		}
	}
	for j := range mu {
		mu[j] /= float64(n)
	}
	sum := make([]float64, d)
	used := make([]bool, n)
	var out []int
	for t := 1; t <= min(k, n); t++ {
		best, bestD := -1, math.Inf(1)
		for i := range n {
			if used[i] {
				continue
			}
			var dist float64
			row := f[i*d : (i+1)*d]
			for j := range d {
				diff := mu[j] - (sum[j]+row[j])/float64(t)
				dist += diff * diff
			}
			if dist < bestD {
				best, bestD = i, dist
			}
		}
		used[best] = true
		out = append(out, best)
		for j, v := range f[best*d : (best+1)*d] {
			sum[j] += v
		}
	}
	return out
}

// KCenterGreedy selects k of the n feature rows f (n × d): first the row
// closest to the mean, then repeatedly the row farthest from all rows
// chosen so far (Sener & Savarese 2018's greedy k-center). Ties go to the
// lower index.
func KCenterGreedy(f []float64, n, k int) []int {
	if n == 0 || k <= 0 {
		return nil
	}
	d := len(f) / n
	mu := make([]float64, d)
	for i := range n {
		for j, v := range f[i*d : (i+1)*d] {
			mu[j] += v / float64(n)
		}
	}
	sq := func(a, b []float64) float64 {
		var s float64
		for j := range a {
			x := a[j] - b[j]
			s += x * x
		}
		return s
	}
	first, bestD := 0, math.Inf(1)
	for i := range n {
		if dd := sq(f[i*d:(i+1)*d], mu); dd < bestD {
			first, bestD = i, dd
		}
	}
	out := []int{first}
	minD := make([]float64, n) // squared distance to the nearest centre; −1 once chosen
	for i := range n {
		minD[i] = sq(f[i*d:(i+1)*d], f[first*d:(first+1)*d])
	}
	minD[first] = -1
	for len(out) < min(k, n) {
		next, far := -1, -0.5
		for i, v := range minD {
			if v > far {
				next, far = i, v
			}
		}
		out = append(out, next)
		minD[next] = -1
		c := f[next*d : (next+1)*d]
		for i := range n {
			if dd := sq(f[i*d:(i+1)*d], c); dd < minD[i] {
				minD[i] = dd
			}
		}
	}
	return out
}
