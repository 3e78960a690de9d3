package privacy

import (
	"fmt"
	"math"
	"slices"
)

// Config selects the grid of Rényi orders and the (ε, δ) conversion. The
// zero Config uses DefaultOrders and the Improved conversion; the
// package-level functions use it.
type Config struct {
	Orders     []float64  // nil: DefaultOrders()
	Conversion Conversion // Improved (default) or Classic
}

func (c Config) orders() []float64 {
	if c.Orders == nil {
		return defaultOrders
	}
	return c.Orders
}

// EpsilonFromRDP converts RDP values rdp at orders into the smallest ε for
// which the mechanism is (ε, δ)-DP, and returns it with the order that
// attains it.
func EpsilonFromRDP(orders, rdp []float64, delta float64, conv Conversion) (eps, order float64, err error) {
	if err := checkDelta(delta); err != nil {
		return 0, 0, err
	}
	if err := checkOrders(orders); err != nil {
		return 0, 0, err
	}
	if len(rdp) != len(orders) {
		return 0, 0, fmt.Errorf("privacy: %d RDP values for %d orders", len(rdp), len(orders))
	}
	if conv != Improved && conv != Classic {
		return 0, 0, fmt.Errorf("privacy: unknown conversion %v", conv)
	}
	best, bestOrder := math.Inf(1), orders[0]
	for i, a := range orders {
		r := rdp[i]
		if r < 0 || math.IsNaN(r) {
			return 0, 0, fmt.Errorf("privacy: RDP %g at order %g must not be negative", r, a)
		}
		var e float64
		switch {
		case r == 0:
			e = 0 // the two distributions coincide
		case conv == Classic:
			e = r - math.Log(delta)/(a-1)
		case delta*delta+math.Expm1(-r) >= 0:
			// δ ≥ sqrt(1 − exp(−KL)) bounds the total variation: ε = 0.
			e = 0
		case a > 1.01:
			// Unstable as α → 1, hence the minimum order (as TF-Privacy, Opacus).
			e = r + math.Log1p(-1/a) - math.Log(delta*a)/(a-1)
		default:
			e = math.Inf(1)
		}
		if e < best {
			best, bestOrder = e, a
		}
	}
	return math.Max(0, best), bestOrder, nil
}

// Epsilon returns the ε of steps compositions of the sampled Gaussian
// mechanism (q, sigma) at the given δ, and the Rényi order attaining it.
func (c Config) Epsilon(q, sigma float64, steps int, delta float64) (eps, order float64, err error) {
	if err := checkDelta(delta); err != nil {
		return 0, 0, err
	}
	rdp, err := RDP(q, sigma, steps, c.orders())
	if err != nil {
		return 0, 0, err
	}
	return EpsilonFromRDP(c.orders(), rdp, delta, c.Conversion)
}

// EpsilonAfter is Epsilon for the mechanisms prior followed by steps
// steps of (q, sigma).
func (c Config) EpsilonAfter(prior []Mechanism, q, sigma float64, steps int, delta float64) (eps, order float64, err error) {
	if err := checkDelta(delta); err != nil {
		return 0, 0, err
	}
	rdp, err := c.rdp(append(slices.Clone(prior), Mechanism{Q: q, Sigma: sigma, Steps: steps}))
	if err != nil {
		return 0, 0, err
	}
	return EpsilonFromRDP(c.orders(), rdp, delta, c.Conversion)
}

// Epsilon is Config{}.Epsilon: default orders, Improved conversion.
func Epsilon(q, sigma float64, steps int, delta float64) (eps, order float64, err error) {
	return Config{}.Epsilon(q, sigma, steps, delta)
}

// EpsilonClassic is Epsilon with the Classic conversion (Mironov 2017), the
// one behind the ε values in TF-Privacy's published tutorials.
func EpsilonClassic(q, sigma float64, steps int, delta float64) (eps, order float64, err error) {
	return Config{Conversion: Classic}.Epsilon(q, sigma, steps, delta)
}

// Search range of NoiseForEpsilon.
const (
	minSigma = 1e-3
	maxSigma = 1e4
)

func checkTarget(targetEps float64) error {
	if !(targetEps > 0) || math.IsInf(targetEps, 1) {
		return fmt.Errorf("privacy: target ε = %g must be positive and finite", targetEps)
	}
	return nil
}

// NoiseForEpsilon returns the smallest noise multiplier σ (to relative
// precision 1e-9, rounded up) for which steps compositions of the sampled
// Gaussian mechanism with rate q spend at most targetEps at δ.
func (c Config) NoiseForEpsilon(q float64, steps int, targetEps, delta float64) (float64, error) {
	return c.NoiseForEpsilonAfter(nil, q, steps, targetEps, delta)
}

// Mechanism is Steps compositions of the sampled Gaussian mechanism with
// sampling rate Q and noise multiplier Sigma (Q = 1: the plain Gaussian
// mechanism).
type Mechanism struct {
	Q, Sigma float64
	Steps    int
}

func (m Mechanism) String() string {
	return fmt.Sprintf("%d× q = %g, σ = %g", m.Steps, m.Q, m.Sigma)
}

// rdp returns the RDP of the mechanisms ms composed, at c's orders (zeros
// for none).
func (c Config) rdp(ms []Mechanism) ([]float64, error) {
	out := make([]float64, len(c.orders()))
	for _, m := range ms {
		r, err := RDP(m.Q, m.Sigma, m.Steps, c.orders())
		if err != nil {
			return nil, err
		}
		for i := range out {
			out[i] += r[i]
		}
	}
	return out, nil
}

// NoiseForEpsilonAfter is NoiseForEpsilon when the mechanisms prior are
// composed before the steps (a private release at the start of training,
// say): the smallest σ for which prior and the steps together spend at
// most targetEps at δ.
func (c Config) NoiseForEpsilonAfter(prior []Mechanism, q float64, steps int, targetEps, delta float64) (float64, error) {
	if err := checkQSigma(q, 1); err != nil {
		return 0, err
	}
	if err := checkSteps(steps); err != nil {
		return 0, err
	}
	if err := checkDelta(delta); err != nil {
		return 0, err
	}
	if err := checkTarget(targetEps); err != nil {
		return 0, err
	}
	if steps == 0 {
		return 0, fmt.Errorf("privacy: steps = 0 spend no privacy, so any noise multiplier meets ε = %g: give the number of training steps", targetEps)
	}
	base, err := c.rdp(prior)
	if err != nil {
		return 0, err
	}
	if e, _, err := EpsilonFromRDP(c.orders(), base, delta, c.Conversion); err != nil {
		return 0, err
	} else if len(prior) > 0 && e >= targetEps {
		return 0, fmt.Errorf("privacy: target ε = %g is unreachable: the releases before the steps (%v) already spend ε = %.4g at δ = %g; raise the target or their noise", targetEps, prior, e, delta)
	}
	total := make([]float64, len(base))
	eps := func(sigma float64) (float64, error) {
		r, err := RDP(q, sigma, steps, c.orders())
		if err != nil {
			return 0, err
		}
		for i := range total {
			total[i] = base[i] + r[i]
		}
		e, _, err := EpsilonFromRDP(c.orders(), total, delta, c.Conversion)
		return e, err
	}
	// Bracket: eps(lo) > target ≥ eps(hi).
	lo, hi := 0.5, 1.0
	for {
		e, err := eps(hi)
		if err != nil {
			return 0, err
		}
		if e <= targetEps {
			break
		}
		if hi >= maxSigma {
			return 0, fmt.Errorf("privacy: target ε = %g is unreachable: even σ = %g spends ε = %.4g over %d steps at q = %g; raise the target, or lower the steps or the sampling rate", targetEps, hi, e, steps, q)
		}
		lo, hi = hi, math.Min(2*hi, maxSigma)
	}
	if hi == 1 {
		for {
			e, err := eps(lo)
			if err != nil {
				return 0, err
			}
			if e > targetEps {
				break
			}
			if lo <= minSigma {
				return 0, fmt.Errorf("privacy: target ε = %g is met even with σ = %g; the accountant does not search below it: lower the target", targetEps, lo)
			}
			hi, lo = lo, math.Max(lo/2, minSigma)
		}
	}
	for hi-lo > 1e-9*hi {
		mid := (lo + hi) / 2
		e, err := eps(mid)
		if err != nil {
			return 0, err
		}
		if e <= targetEps {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi, nil
}

// NoiseForEpsilon is Config{}.NoiseForEpsilon.
func NoiseForEpsilon(q float64, steps int, targetEps, delta float64) (float64, error) {
	return Config{}.NoiseForEpsilon(q, steps, targetEps, delta)
}

// maxStepsSearch caps StepsForEpsilon's search.
const maxStepsSearch = 1 << 40

// StepsForEpsilon returns the largest number of steps of the sampled
// Gaussian mechanism (q, sigma) whose ε at δ is at most targetEps (0 if not
// even one step fits).
func (c Config) StepsForEpsilon(q, sigma, targetEps, delta float64) (int, error) {
	if err := checkQSigma(q, sigma); err != nil {
		return 0, err
	}
	if err := checkDelta(delta); err != nil {
		return 0, err
	}
	if err := checkTarget(targetEps); err != nil {
		return 0, err
	}
	orders := c.orders()
	per, err := RDP(q, sigma, 1, orders)
	if err != nil {
		return 0, err
	}
	scaled := make([]float64, len(per))
	fits := func(t int) (bool, error) {
		for i, r := range per {
			scaled[i] = r * float64(t)
		}
		e, _, err := EpsilonFromRDP(orders, scaled, delta, c.Conversion)
		return e <= targetEps, err
	}
	lo, hi := 0, 1 // fits(lo), and !fits(hi) once bracketed
	for {
		ok, err := fits(hi)
		if err != nil {
			return 0, err
		}
		if !ok {
			break
		}
		if hi >= maxStepsSearch {
			return 0, fmt.Errorf("privacy: more than %d steps fit in ε = %g at σ = %g, q = %g", maxStepsSearch, targetEps, sigma, q)
		}
		lo, hi = hi, 2*hi
	}
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		ok, err := fits(mid)
		if err != nil {
			return 0, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo, nil
}

// StepsForEpsilon is Config{}.StepsForEpsilon.
func StepsForEpsilon(q, sigma, targetEps, delta float64) (int, error) {
	return Config{}.StepsForEpsilon(q, sigma, targetEps, delta)
}
