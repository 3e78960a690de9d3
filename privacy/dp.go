package privacy

import (
	"fmt"
	"math"

	"github.com/fedsim/fedsim/tensor"
)

// Settings are the user's differential-privacy settings (the --dp-* flags
// of `fedsim run`): a noise multiplier σ or a target ε (or both: σ then
// runs until the budget ε would be exceeded), a clipping norm C and δ.
type Settings struct {
	Noise   float64 // σ; 0: find it from Epsilon
	Epsilon float64 // budget ε; 0: none (σ given, ε reported)
	Clip    float64 // C
	Delta   float64 // δ
	// Prior are mechanisms each client runs before the steps (DP-DM's
	// release of the class means); the budget covers them too.
	Prior []Mechanism
}

// Enabled reports whether any DP setting is given.
func (s Settings) Enabled() bool { return s.Noise != 0 || s.Epsilon != 0 || s.Clip != 0 }

// Resolve checks s for a mechanism applied steps times with sampling rate
// q and returns the noise multiplier to use: s.Noise if given, else the
// smallest σ whose ε after all steps is at most s.Epsilon. With both given
// it checks that the budget admits at least firstSteps steps (one task),
// so that a run cannot start only to have every client refuse. Every bad
// value gives an error naming it and the fix, before any work.
func (s Settings) Resolve(q float64, steps, firstSteps int) (float64, error) {
	switch {
	case math.IsNaN(s.Noise) || s.Noise < 0 || math.IsInf(s.Noise, 0):
		return 0, fmt.Errorf("privacy: noise multiplier σ = %g must be positive and finite (--dp-noise)", s.Noise)
	case math.IsNaN(s.Epsilon) || s.Epsilon < 0 || math.IsInf(s.Epsilon, 0):
		return 0, fmt.Errorf("privacy: target ε = %g must be positive and finite (--dp-epsilon)", s.Epsilon)
	case s.Noise == 0 && s.Epsilon == 0:
		return 0, fmt.Errorf("privacy: differential privacy needs a noise multiplier σ > 0 (--dp-noise) or a target ε > 0 (--dp-epsilon)")
	case !(s.Clip > 0) || math.IsInf(s.Clip, 0):
		return 0, fmt.Errorf("privacy: clipping norm C = %g must be positive and finite (--dp-clip; 1 is a common start)", s.Clip)
	case !(s.Delta > 0 && s.Delta < 1):
		return 0, fmt.Errorf("privacy: δ = %g must be in (0, 1) (--dp-delta; below 1/(records per client), e.g. 1e-5)", s.Delta)
	case !(q > 0 && q <= 1):
		return 0, fmt.Errorf("privacy: sampling rate q = %g must be in (0, 1]", q)
	case steps < 1 || firstSteps < 1 || firstSteps > steps:
		return 0, fmt.Errorf("privacy: %d steps (%d in the first task): a private run needs at least one step", steps, firstSteps)
	}
	if s.Noise == 0 {
		sigma, err := Config{}.NoiseForEpsilonAfter(s.Prior, q, steps, s.Epsilon, s.Delta)
		if err != nil {
			return 0, err
		}
		return sigma, nil
	}
	if s.Epsilon > 0 {
		eps, _, err := Config{}.EpsilonAfter(s.Prior, q, s.Noise, firstSteps, s.Delta)
		if err != nil {
			return 0, err
		}
		if eps > s.Epsilon {
			return 0, fmt.Errorf("privacy: the budget ε = %g is unreachable: one task (%d steps at q = %g, σ = %g) already spends ε = %.4g at δ = %g; raise --dp-epsilon or --dp-noise, or lower the steps", s.Epsilon, firstSteps, q, s.Noise, eps, s.Delta)
		}
	}
	return s.Noise, nil
}

// ClipUpdate scales the update Δ (the concatenation of every tensor in
// ts) in place to L2 norm at most clip and returns its norm before
// clipping. DP-FedAvg (McMahan et al. 2018) clips each client's update
// w_i − w_global so that one client moves the average by at most clip/n.
func ClipUpdate(ts []*tensor.Tensor[float32], clip float64) float64 {
	var ss float64
	for _, t := range ts {
		for _, v := range t.Data {
			ss += float64(v) * float64(v)
		}
	}
	norm := math.Sqrt(ss)
	if norm > clip {
		s := float32(clip / norm)
		for _, t := range ts {
			for j := range t.Data {
				t.Data[j] *= s
			}
		}
	}
	return norm
}

// AddNoise adds N(0, std²) to every element of every tensor of ts.
func AddNoise(ts []*tensor.Tensor[float32], std float64, rng *tensor.RNG) {
	if std == 0 {
		return
	}
	for _, t := range ts {
		for j := range t.Data {
			t.Data[j] += float32(std * rng.NormFloat64())
		}
	}
}
