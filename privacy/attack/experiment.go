package attack

import (
	"context"
	"fmt"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// Recipe is how target and shadow models are trained: SGD with momentum
// 0.9 on a data set, no augmentation (membership leaks most without it,
// which is what a check that the attack works wants).
type Recipe struct {
	Model  string
	Epochs int
	Batch  int
	LR     float64
}

// Validate checks the recipe.
func (r Recipe) Validate() error {
	if r.Epochs < 1 || r.Batch < 1 || !(r.LR > 0) {
		return fmt.Errorf("attack: training recipe: epochs %d, batch %d, lr %g: want ≥ 1, ≥ 1, > 0", r.Epochs, r.Batch, r.LR)
	}
	return nil
}

// Train trains a fresh model (initialised from seed) on d.
func (r Recipe) Train(ctx context.Context, d *data.Dataset, seed uint64) (nn.Model[float32], error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	m, err := nn.New[float32](r.Model, d.ImageShape(), d.Classes, tensor.NewRNG(seed, 1))
	if err != nil {
		return nil, fmt.Errorf("attack: %w", err)
	}
	tc := nn.TrainConfig[float32]{Epochs: r.Epochs, BatchSize: r.Batch, LR: r.LR, Momentum: 0.9, Seed: seed, Context: ctx}
	if err := nn.Train(m, d, tc, nil); err != nil {
		return nil, fmt.Errorf("attack: training: %w", err)
	}
	return m, nil
}

// RandomHalf returns a membership mask over n examples with each example
// in with probability 1/2, drawn from seed.
func RandomHalf(n int, seed uint64) []bool {
	rng := tensor.NewRNG(seed, 2)
	in := make([]bool, n)
	for i := range in {
		in[i] = rng.IntN(2) == 0
	}
	return in
}

func indices(in []bool, want bool) []int {
	var idx []int
	for i, v := range in {
		if v == want {
			idx = append(idx, i)
		}
	}
	return idx
}

// ShadowMasks returns which of n examples each of k shadow models trains
// on: as in Carlini et al.'s code, every example is IN for exactly ⌊k/2⌋
// shadows chosen at random (so online LiRA always has both sides), each
// shadow then holding about half the pool; with k = 1 the one shadow
// takes a random half.
func ShadowMasks(n, k int, seed uint64) [][]bool {
	if k == 1 {
		return [][]bool{RandomHalf(n, seed)}
	}
	rng := tensor.NewRNG(seed, 3)
	in := make([][]bool, k)
	for j := range in {
		in[j] = make([]bool, n)
	}
	for i := range n {
		for r, j := range rng.Perm(k) {
			in[j][i] = r < k/2
		}
	}
	return in
}

// TrainShadows trains k shadow models on the halves of pool given by
// ShadowMasks and records their confidences on the whole pool (LiRA's IN
// and OUT distributions). progress, if not nil, is called after each
// model.
func TrainShadows(ctx context.Context, pool *data.Dataset, k int, r Recipe, seed uint64, progress func(done int)) (*Shadows, error) {
	if k < 1 {
		return nil, fmt.Errorf("attack: %d shadow models: want at least 1 (16 or more for LiRA online)", k)
	}
	masks := ShadowMasks(pool.Len(), k, seed)
	sh := &Shadows{}
	for j, in := range masks {
		s := tensor.NewRNG(seed, 100+uint64(j)).Uint64()
		m, err := r.Train(ctx, pool.Subset(indices(in, true)), s)
		if err != nil {
			return nil, fmt.Errorf("attack: shadow model %d: %w", j, err)
		}
		o, err := Query(m, pool.X, pool.Y, 0)
		if err != nil {
			return nil, err
		}
		if err := sh.Add(o.Confidence, in); err != nil {
			return nil, err
		}
		if progress != nil {
			progress(j + 1)
		}
	}
	return sh, nil
}
