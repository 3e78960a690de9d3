// Package privacy is fedsim's differential-privacy accountant for DP-SGD
// style training: the Poisson-subsampled Gaussian mechanism (each record
// joins a step's batch independently with probability q, and Gaussian noise
// of standard deviation σ·C is added to a sum of gradients clipped to norm C).
//
// # Method
//
// Privacy is tracked in Rényi differential privacy (RDP, Mironov 2017). For
// an order α > 1 the RDP of one step of the sampled Gaussian mechanism is
//
//	ε(α) = log A_α / (α − 1),  A_α = E_{z~μ0}[(μ(z)/μ0(z))^α],
//
// with μ0 = N(0, σ²), μ1 = N(1, σ²) and μ = (1 − q)μ0 + qμ1. A_α is computed
// exactly as in Mironov, Talwar & Zhang 2019, "Rényi Differential Privacy of
// the Sampled Gaussian Mechanism" (arXiv:1908.10530), and as in the RDP
// accountants of TensorFlow Privacy (rdp_accountant.py) and Opacus
// (analysis/rdp.py):
//
//   - integer α: the binomial expansion
//     A_α = Σ_{i=0..α} C(α,i) q^i (1−q)^{α−i} exp((i²−i)/(2σ²)), summed in log space;
//   - fractional α: the paper's two-series method, which splits the integral
//     at z0 = σ² log(1/q − 1) + 1/2 and sums two convergent series with erfc
//     weights, in log space, until the terms fall below e^−30;
//   - q = 1: the plain Gaussian mechanism, ε(α) = α/(2σ²).
//
// RDP composes additively, so T identical steps cost T·ε(α), and steps with
// different (q, σ) add order by order (see Accountant).
//
// # Conversion to (ε, δ)
//
// Two conversions are provided, each minimised over the grid of orders:
//
//   - Improved (the default): Balle, Barthe, Gaboardi, Hsu & Sato 2020,
//     "Hypothesis testing interpretations and Rényi differential privacy"
//     (arXiv:1905.09982), and Canonne, Kamath & Steinke 2020, "The discrete
//     Gaussian for differential privacy" (arXiv:2004.00010):
//     ε = rdp − (log δ + log α)/(α − 1) + log((α − 1)/α), as in TF-Privacy's
//     (dp_accounting) and Opacus's current accountants, with TF-Privacy's
//     guards: ε = 0 when δ² + expm1(−rdp) ≥ 0 (a total-variation bound), and
//     orders α ≤ 1.01 are skipped;
//   - Classic: Mironov 2017, Proposition 3: ε = rdp − log δ/(α − 1), as in
//     older TF-Privacy releases (get_privacy_spent) and the published
//     tutorials. It is never tighter than Improved.
//
// NoiseForEpsilon inverts the map σ ↦ ε by bisection (ε decreases in σ),
// StepsForEpsilon finds the largest number of steps within a budget, and
// Accountant composes heterogeneous steps for a client that must stop before
// its budget is exceeded (TryAdd).
//
// The tests check the classic conversion against ε values published with
// TF-Privacy's MNIST tutorials, and the RDP against direct numerical
// quadrature of A_α.
package privacy

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// Conversion selects the RDP → (ε, δ) conversion.
type Conversion int

const (
	// Improved is the conversion of Balle et al. 2020 / Canonne, Kamath &
	// Steinke 2020, used by current TF-Privacy and Opacus.
	Improved Conversion = iota
	// Classic is Mironov 2017's ε = rdp − log δ/(α − 1).
	Classic
)

// String returns "improved" or "classic".
func (c Conversion) String() string {
	switch c {
	case Improved:
		return "improved"
	case Classic:
		return "classic"
	}
	return fmt.Sprintf("Conversion(%d)", int(c))
}

// ParseConversion parses "improved" or "classic".
func ParseConversion(s string) (Conversion, error) {
	switch s {
	case "improved":
		return Improved, nil
	case "classic":
		return Classic, nil
	}
	return 0, fmt.Errorf("privacy: conversion %q is not improved or classic", s)
}

// defaultOrders is the union of the grids used by TF-Privacy's tutorials
// (1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5, 5…63, 128, 256, 512) and
// Opacus's DEFAULT_ALPHAS (1.1, 1.2, …, 10.9, 12…63), plus 64.
var defaultOrders = func() []float64 {
	var o []float64
	for x := 1; x < 100; x++ {
		o = append(o, 1+float64(x)/10)
	}
	o = append(o, 1.25, 1.75, 2.25)
	for a := 11; a <= 64; a++ {
		o = append(o, float64(a))
	}
	o = append(o, 128, 256, 512)
	slices.Sort(o)
	return slices.Compact(o)
}()

// DefaultOrders returns a copy of the default grid of Rényi orders.
func DefaultOrders() []float64 { return slices.Clone(defaultOrders) }

func checkQSigma(q, sigma float64) error {
	if !(q > 0 && q <= 1) {
		return fmt.Errorf("privacy: sampling rate q = %g must be in (0, 1]: use batch size / data-set size", q)
	}
	if !(sigma > 0) || math.IsInf(sigma, 1) {
		return fmt.Errorf("privacy: noise multiplier σ = %g must be positive and finite: σ is the noise standard deviation divided by the clipping norm", sigma)
	}
	return nil
}

func checkSteps(steps int) error {
	if steps < 0 {
		return fmt.Errorf("privacy: steps = %d must not be negative", steps)
	}
	return nil
}

func checkDelta(delta float64) error {
	if !(delta > 0 && delta < 1) {
		return fmt.Errorf("privacy: δ = %g must be in (0, 1): a common choice is below 1/(data-set size), e.g. 1e-5", delta)
	}
	return nil
}

func checkOrders(orders []float64) error {
	if len(orders) == 0 {
		return errors.New("privacy: no Rényi orders given: use DefaultOrders()")
	}
	for _, a := range orders {
		if !(a > 1) || math.IsInf(a, 1) {
			return fmt.Errorf("privacy: Rényi order α = %g must be finite and greater than 1", a)
		}
	}
	return nil
}

// RDP returns the Rényi DP, at each of orders (nil: DefaultOrders), of steps
// compositions of the Poisson-subsampled Gaussian mechanism with sampling
// rate q and noise multiplier sigma.
func RDP(q, sigma float64, steps int, orders []float64) ([]float64, error) {
	if orders == nil {
		orders = defaultOrders
	}
	if err := checkQSigma(q, sigma); err != nil {
		return nil, err
	}
	if err := checkSteps(steps); err != nil {
		return nil, err
	}
	if err := checkOrders(orders); err != nil {
		return nil, err
	}
	out := make([]float64, len(orders))
	for i, a := range orders {
		out[i] = rdpStep(q, sigma, a) * float64(steps)
	}
	return out, nil
}

// rdpStep is the RDP at order a of one step (q ∈ (0, 1], σ > 0, a > 1).
func rdpStep(q, sigma, a float64) float64 {
	if q == 1 {
		return a / (2 * sigma * sigma)
	}
	var logA float64
	if a == math.Trunc(a) {
		logA = logAInt(q, sigma, int(a))
	} else {
		logA = logAFrac(q, sigma, a)
	}
	r := logA / (a - 1)
	if r < 0 { // rounding for tiny q: RDP is never negative
		r = 0
	}
	return r
}

// logAdd returns log(e^x + e^y).
func logAdd(x, y float64) float64 {
	a, b := math.Min(x, y), math.Max(x, y)
	if math.IsInf(a, -1) || math.IsInf(b, 1) {
		return b
	}
	return math.Log1p(math.Exp(a-b)) + b
}

// logSub returns log(e^x − e^y) for x ≥ y.
func logSub(x, y float64) float64 {
	if math.IsInf(y, -1) {
		return x
	}
	if x <= y {
		return math.Inf(-1)
	}
	d := math.Expm1(x - y)
	if math.IsInf(d, 1) {
		return x
	}
	return math.Log(d) + y
}

// logBinom returns log|C(a, i)| and the sign of C(a, i) for real a.
func logBinom(a float64, i int) (float64, int) {
	l1, s1 := math.Lgamma(a + 1)
	l2, _ := math.Lgamma(float64(i) + 1)
	l3, s3 := math.Lgamma(a - float64(i) + 1)
	return l1 - l2 - l3, s1 * s3
}

// logErfc returns log(erfc(x)), accurate in the far right tail.
func logErfc(x float64) float64 {
	if x < 25 {
		return math.Log(math.Erfc(x))
	}
	// Asymptotic (Laurent) series of log erfc at +∞.
	x2 := x * x
	return -math.Log(math.Pi)/2 - math.Log(x) - x2 - 0.5/x2 + 0.625/(x2*x2) - 37.0/24.0/(x2*x2*x2) + 353.0/64.0/(x2*x2*x2*x2)
}

// logAInt is log A_α for integer α ≥ 2 by the binomial expansion.
func logAInt(q, sigma float64, alpha int) float64 {
	logA := math.Inf(-1)
	lq, l1q := math.Log(q), math.Log1p(-q)
	s2 := 2 * sigma * sigma
	for i := 0; i <= alpha; i++ {
		lc, _ := logBinom(float64(alpha), i)
		fi := float64(i)
		s := lc + fi*lq + float64(alpha-i)*l1q + (fi*fi-fi)/s2
		logA = logAdd(logA, s)
	}
	return logA
}

// maxFracTerms bounds the two-series loop; it converges long before this
// for any σ and q a DP-SGD run uses.
const maxFracTerms = 1 << 20

// logAFrac is log A_α for fractional α by the two-series method.
func logAFrac(q, sigma, alpha float64) float64 {
	logA0, logA1 := math.Inf(-1), math.Inf(-1)
	z0 := sigma*sigma*math.Log(1/q-1) + 0.5
	lq, l1q := math.Log(q), math.Log1p(-q)
	s2 := 2 * sigma * sigma
	rs := math.Sqrt2 * sigma
	for i := 0; i < maxFracTerms; i++ {
		lc, sign := logBinom(alpha, i)
		fi := float64(i)
		j := alpha - fi
		logT0 := lc + fi*lq + j*l1q
		logT1 := lc + j*lq + fi*l1q
		logE0 := math.Log(0.5) + logErfc((fi-z0)/rs)
		logE1 := math.Log(0.5) + logErfc((z0-j)/rs)
		logS0 := logT0 + (fi*fi-fi)/s2 + logE0
		logS1 := logT1 + (j*j-j)/s2 + logE1
		if sign > 0 {
			logA0 = logAdd(logA0, logS0)
			logA1 = logAdd(logA1, logS1)
		} else {
			logA0 = logSub(logA0, logS0)
			logA1 = logSub(logA1, logS1)
		}
		if math.Max(logS0, logS1) < -30 {
			break
		}
	}
	return logAdd(logA0, logA1)
}
