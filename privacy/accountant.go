package privacy

import (
	"slices"
	"sync"
)

// Accountant composes steps of the sampled Gaussian mechanism with possibly
// different sampling rates and noise multipliers, order by order in RDP.
// The zero Accountant uses DefaultOrders and the Improved conversion; set
// Config before the first Add. It is safe for concurrent use.
type Accountant struct {
	Config Config

	mu    sync.Mutex
	rdp   []float64
	steps int
	// cache of the last per-step RDP vector (clients repeat the same q, σ)
	lastQ, lastSigma float64
	lastRDP          []float64
}

// NewAccountant returns an empty accountant with the given configuration.
func NewAccountant(c Config) *Accountant { return &Accountant{Config: c} }

func (a *Accountant) perStep(q, sigma float64) ([]float64, error) {
	if a.lastRDP != nil && q == a.lastQ && sigma == a.lastSigma {
		return a.lastRDP, nil
	}
	r, err := RDP(q, sigma, 1, a.Config.orders())
	if err != nil {
		return nil, err
	}
	a.lastQ, a.lastSigma, a.lastRDP = q, sigma, r
	return r, nil
}

// composed returns the RDP after adding steps more steps of (q, sigma).
func (a *Accountant) composed(q, sigma float64, steps int) ([]float64, error) {
	if err := checkQSigma(q, sigma); err != nil {
		return nil, err
	}
	if err := checkSteps(steps); err != nil {
		return nil, err
	}
	per, err := a.perStep(q, sigma)
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(per))
	for i, r := range per {
		out[i] = r * float64(steps)
		if a.rdp != nil {
			out[i] += a.rdp[i]
		}
	}
	return out, nil
}

// Add records steps steps of the sampled Gaussian mechanism with sampling
// rate q and noise multiplier sigma.
func (a *Accountant) Add(q, sigma float64, steps int) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, err := a.composed(q, sigma, steps)
	if err != nil {
		return err
	}
	a.rdp, a.steps = r, a.steps+steps
	return nil
}

// Spent returns the ε spent so far at δ and the order attaining it
// (0 before any step).
func (a *Accountant) Spent(delta float64) (eps, order float64, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	orders := a.Config.orders()
	rdp := a.rdp
	if rdp == nil {
		rdp = make([]float64, len(orders))
	}
	return EpsilonFromRDP(orders, rdp, delta, a.Config.Conversion)
}

// SpentAfter returns what Spent would return after Add(q, sigma, steps),
// without recording the steps.
func (a *Accountant) SpentAfter(q, sigma float64, steps int, delta float64) (eps, order float64, err error) {
	return a.SpentAfterAll([]Mechanism{{Q: q, Sigma: sigma, Steps: steps}}, delta)
}

// TryAdd records the steps only if the ε spent afterwards at δ stays within
// budget, and reports whether it did: a client stops training when it
// returns false.
func (a *Accountant) TryAdd(q, sigma float64, steps int, delta, budget float64) (bool, error) {
	return a.TryAddAll([]Mechanism{{Q: q, Sigma: sigma, Steps: steps}}, delta, budget)
}

// TryAddAll is TryAdd for several mechanisms at once (a release and the
// steps after it): all are recorded or none.
func (a *Accountant) TryAddAll(ms []Mechanism, delta, budget float64) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := checkDelta(delta); err != nil {
		return false, err
	}
	if err := checkTarget(budget); err != nil {
		return false, err
	}
	r, err := a.Config.rdp(ms)
	if err != nil {
		return false, err
	}
	for i := range r {
		if a.rdp != nil {
			r[i] += a.rdp[i]
		}
	}
	eps, _, err := EpsilonFromRDP(a.Config.orders(), r, delta, a.Config.Conversion)
	if err != nil || eps > budget {
		return false, err
	}
	a.rdp = r
	for _, m := range ms {
		a.steps += m.Steps
	}
	return true, nil
}

// SpentAfterAll is SpentAfter for several mechanisms.
func (a *Accountant) SpentAfterAll(ms []Mechanism, delta float64) (eps, order float64, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := checkDelta(delta); err != nil {
		return 0, 0, err
	}
	r, err := a.Config.rdp(ms)
	if err != nil {
		return 0, 0, err
	}
	for i := range r {
		if a.rdp != nil {
			r[i] += a.rdp[i]
		}
	}
	return EpsilonFromRDP(a.Config.orders(), r, delta, a.Config.Conversion)
}

// Steps returns the number of steps recorded.
func (a *Accountant) Steps() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.steps
}

// RDP returns a copy of the composed RDP at each order of Config.Orders
// (nil before any step).
func (a *Accountant) RDP() []float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.rdp)
}
