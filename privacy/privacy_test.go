package privacy

import (
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
)

func relErr(got, want float64) float64 { return math.Abs(got-want) / math.Abs(want) }

// MNIST DP-SGD settings of TF-Privacy's tutorials: N = 60000, batch 256.
const mnistQ = 256.0 / 60000

func mnistSteps(epochs int) int { return int(math.Ceil(float64(epochs) * 60000 / 256)) }

// Published ε values of TF-Privacy (classic conversion, δ = 1e-5).
func TestClassicMatchesTFPrivacyReferences(t *testing.T) {
	cases := []struct {
		sigma  float64
		epochs int
		want   float64
		source string
	}{
		// tensorflow/privacy tutorials/README.md (MNIST table) and
		// mnist_dpsgd_tutorial: noise 1.1, 60 epochs → ε = 3.01.
		{1.1, 60, 3.01, "TF-Privacy MNIST tutorial"},
		// compute_dp_sgd_privacy.py docstring: --N=60000 --batch_size=256
		// --noise_multiplier=1.12 --epochs=60 --delta=1e-5 → (2.92, 1e-5)-DP.
		{1.12, 60, 2.92, "TF-Privacy compute_dp_sgd_privacy"},
		// tutorials/README.md: noise 0.7, 45 epochs → ε = 7.10.
		{0.7, 45, 7.10, "TF-Privacy tutorials README"},
	}
	for _, c := range cases {
		eps, order, err := EpsilonClassic(mnistQ, c.sigma, mnistSteps(c.epochs), 1e-5)
		if err != nil {
			t.Fatal(err)
		}
		if !(relErr(eps, c.want) <= 0.01) {
			t.Errorf("%s: σ=%g, %d epochs: ε = %.4f (order %g), want %.2f within 1%%", c.source, c.sigma, c.epochs, eps, order, c.want)
		}
		imp, _, err := Epsilon(mnistQ, c.sigma, mnistSteps(c.epochs), 1e-5)
		if err != nil {
			t.Fatal(err)
		}
		if !(imp < eps) {
			t.Errorf("σ=%g: improved ε %g not below classic %g", c.sigma, imp, eps)
		}
	}
}

func TestPlainGaussian(t *testing.T) {
	orders := []float64{1.5, 2, 2.5, 10, 64, 256}
	for _, sigma := range []float64{0.5, 1, 3.7} {
		r, err := RDP(1, sigma, 7, orders)
		if err != nil {
			t.Fatal(err)
		}
		for i, a := range orders {
			if want := 7 * a / (2 * sigma * sigma); !(relErr(r[i], want) <= 1e-12) {
				t.Errorf("σ=%g α=%g: RDP %g, want %g", sigma, a, r[i], want)
			}
		}
	}
	// As q → 1 the subsampled formulas approach the plain Gaussian.
	for _, a := range []float64{2.5, 4} {
		r, _ := RDP(1-1e-9, 2, 1, []float64{a})
		if want := a / 8; !(relErr(r[0], want) <= 1e-6) {
			t.Errorf("q→1, α=%g: RDP %g, want %g", a, r[0], want)
		}
	}
}

// quadRDP computes the one-step RDP by direct trapezoid quadrature of
// A_α − 1 = E_{z~N(0,σ²)}[(μ(z)/μ0(z))^α − 1], μ = (1−q)μ0 + qμ1.
func quadRDP(q, sigma, alpha float64) float64 {
	lo, hi := -40*sigma, 40*sigma+2*alpha*sigma*sigma+2
	const h = 1e-3
	n := int((hi - lo) / h)
	var sum float64
	for k := 0; k <= n; k++ {
		z := lo + float64(k)*h
		logPDF := -z*z/(2*sigma*sigma) - math.Log(sigma*math.Sqrt(2*math.Pi))
		l := alpha * math.Log1p(q*math.Expm1((2*z-1)/(2*sigma*sigma))) // α log(μ/μ0)
		var f float64
		if l < 1 {
			f = math.Exp(logPDF) * math.Expm1(l)
		} else { // far tail: μ0 underflows alone
			f = math.Exp(logPDF+l) - math.Exp(logPDF)
		}
		if k == 0 || k == n {
			f /= 2
		}
		sum += f
	}
	return math.Log1p(sum*h) / (alpha - 1)
}

func TestSmallQAgainstQuadrature(t *testing.T) {
	for _, c := range []struct{ q, sigma, alpha float64 }{
		{0.01, 1, 2.5}, {0.01, 1, 8}, {0.001, 0.8, 3.5}, {0.001, 0.8, 6}, {0.05, 2, 13.25}, {0.05, 2, 20}, {0.3, 0.7, 4.5}, {0.5, 1, 1.1},
	} {
		r, err := RDP(c.q, c.sigma, 1, []float64{c.alpha})
		if err != nil {
			t.Fatal(err)
		}
		want := quadRDP(c.q, c.sigma, c.alpha)
		if !(relErr(r[0], want) <= 1e-6) {
			t.Errorf("q=%g σ=%g α=%g: RDP %.12g, quadrature %.12g (rel %.2g)", c.q, c.sigma, c.alpha, r[0], want, relErr(r[0], want))
		}
	}
}

// The fractional-order method agrees with the integer one as α nears an
// integer (RDP is continuous in α).
func TestFractionalContinuity(t *testing.T) {
	for _, a := range []float64{2, 5, 12} {
		r, _ := RDP(0.02, 1.1, 1, []float64{a - 1e-7, a, a + 1e-7})
		if !(relErr(r[0], r[1]) <= 1e-5) || !(relErr(r[2], r[1]) <= 1e-5) {
			t.Errorf("α≈%g: RDP %v not continuous", a, r)
		}
	}
}

func TestMonotonicity(t *testing.T) {
	const delta = 1e-5
	eps := func(q, sigma float64, steps int) float64 {
		e, _, err := Epsilon(q, sigma, steps, delta)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	prev := math.Inf(1)
	for _, s := range []float64{0.6, 0.8, 1, 1.5, 2, 4, 8} {
		e := eps(0.01, s, 1000)
		if !(e < prev) {
			t.Errorf("ε not decreasing in σ at σ=%g: %g after %g", s, e, prev)
		}
		prev = e
	}
	prev = 0
	for _, n := range []int{1, 10, 100, 1000, 10000} {
		e := eps(0.01, 1, n)
		if !(e > prev) {
			t.Errorf("ε not increasing in steps at %d: %g after %g", n, e, prev)
		}
		prev = e
	}
	prev = 0
	for _, q := range []float64{0.001, 0.01, 0.05, 0.2, 0.5, 1} {
		e := eps(q, 1, 100)
		if !(e > prev) {
			t.Errorf("ε not increasing in q at %g: %g after %g", q, e, prev)
		}
		prev = e
	}
}

func TestImprovedNeverWorseThanClassic(t *testing.T) {
	for _, q := range []float64{0.001, 0.01, 0.1, 1} {
		for _, s := range []float64{0.5, 1, 2, 5} {
			for _, n := range []int{1, 100, 10000} {
				for _, d := range []float64{1e-3, 1e-5, 1e-9} {
					imp, _, err1 := Epsilon(q, s, n, d)
					cla, _, err2 := EpsilonClassic(q, s, n, d)
					if err1 != nil || err2 != nil {
						t.Fatal(err1, err2)
					}
					if imp > cla {
						t.Errorf("q=%g σ=%g T=%d δ=%g: improved %g > classic %g", q, s, n, d, imp, cla)
					}
				}
			}
		}
	}
}

func TestNoiseForEpsilonInverts(t *testing.T) {
	for _, c := range []struct {
		q     float64
		steps int
		eps   float64
	}{{mnistQ, mnistSteps(60), 3}, {0.01, 1000, 1}, {0.1, 50, 8}, {1, 10, 2}} {
		for _, conv := range []Conversion{Improved, Classic} {
			cfg := Config{Conversion: conv}
			s, err := cfg.NoiseForEpsilon(c.q, c.steps, c.eps, 1e-5)
			if err != nil {
				t.Fatal(err)
			}
			got, _, _ := cfg.Epsilon(c.q, s, c.steps, 1e-5)
			if got > c.eps || !(relErr(got, c.eps) <= 1e-5) {
				t.Errorf("%v q=%g T=%d: σ=%g gives ε=%g, want %g", conv, c.q, c.steps, s, got, c.eps)
			}
			below, _, _ := cfg.Epsilon(c.q, s*(1-1e-6), c.steps, 1e-5)
			if below <= c.eps {
				t.Errorf("%v: σ=%g is not the smallest: σ(1−1e-6) gives ε=%g ≤ %g", conv, s, below, c.eps)
			}
		}
	}
	// The MNIST anchor the other way round: ε = 3.01 classic needs σ ≈ 1.1.
	s, err := Config{Conversion: Classic}.NoiseForEpsilon(mnistQ, mnistSteps(60), 3.01, 1e-5)
	if err != nil || !(relErr(s, 1.1) <= 0.01) {
		t.Errorf("σ for ε=3.01 = %g (%v), want ≈ 1.1", s, err)
	}
}

func TestStepsForEpsilon(t *testing.T) {
	n, err := StepsForEpsilon(0.01, 1, 2, 1e-5)
	if err != nil {
		t.Fatal(err)
	}
	e1, _, _ := Epsilon(0.01, 1, n, 1e-5)
	e2, _, _ := Epsilon(0.01, 1, n+1, 1e-5)
	if n <= 0 || e1 > 2 || e2 <= 2 {
		t.Errorf("steps %d: ε(n)=%g, ε(n+1)=%g around budget 2", n, e1, e2)
	}
	if n, err := StepsForEpsilon(1, 0.3, 0.1, 1e-5); err != nil || n != 0 {
		t.Errorf("no step fits: got %d, %v", n, err)
	}
}

func TestAccountantComposes(t *testing.T) {
	var a Accountant
	if e, _, err := a.Spent(1e-5); err != nil || e != 0 {
		t.Fatalf("empty accountant spent %g, %v", e, err)
	}
	// Heterogeneous steps add order by order.
	if err := a.Add(0.01, 1, 300); err != nil {
		t.Fatal(err)
	}
	if err := a.Add(0.02, 1.5, 200); err != nil {
		t.Fatal(err)
	}
	if err := a.Add(0.01, 1, 100); err != nil {
		t.Fatal(err)
	}
	r1, _ := RDP(0.01, 1, 400, nil)
	r2, _ := RDP(0.02, 1.5, 200, nil)
	want := make([]float64, len(r1))
	for i := range r1 {
		want[i] = r1[i] + r2[i]
	}
	wantEps, wantOrder, _ := EpsilonFromRDP(DefaultOrders(), want, 1e-5, Improved)
	eps, order, err := a.Spent(1e-5)
	if err != nil || !(relErr(eps, wantEps) <= 1e-12) || order != wantOrder || a.Steps() != 600 {
		t.Errorf("spent %g (order %g, %v, %d steps), want %g (order %g, 600 steps)", eps, order, err, a.Steps(), wantEps, wantOrder)
	}
	// Homogeneous composition equals Epsilon.
	b := NewAccountant(Config{Conversion: Classic})
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.Add(mnistQ, 1.1, mnistSteps(60)/10); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	got, _, _ := b.Spent(1e-5)
	ref, _, _ := EpsilonClassic(mnistQ, 1.1, 10*(mnistSteps(60)/10), 1e-5)
	if !(relErr(got, ref) <= 1e-12) {
		t.Errorf("accountant %g, Epsilon %g", got, ref)
	}
}

func TestAccountantBudget(t *testing.T) {
	var a Accountant
	const budget, delta = 1.0, 1e-5
	rounds := 0
	for {
		ok, err := a.TryAdd(0.01, 1.2, 20, delta, budget)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		rounds++
		if rounds > 1000 {
			t.Fatal("budget never exhausted")
		}
	}
	spent, _, _ := a.Spent(delta)
	next, _, _ := a.SpentAfter(0.01, 1.2, 20, delta)
	if rounds == 0 || spent > budget || next <= budget || a.Steps() != 20*rounds {
		t.Errorf("%d rounds: spent %g, next %g, budget %g, steps %d", rounds, spent, next, budget, a.Steps())
	}
}

func TestBadInput(t *testing.T) {
	check := func(err error, want ...string) {
		t.Helper()
		if err == nil {
			t.Errorf("no error, want one mentioning %q", want)
			return
		}
		if !strings.HasPrefix(err.Error(), "privacy: ") {
			t.Errorf("error %q does not start with \"privacy: \"", err)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not mention %q", err, w)
			}
		}
	}
	_, err := RDP(0.01, 0, 10, nil)
	check(err, "σ = 0", "positive")
	_, err = RDP(0.01, -1, 10, nil)
	check(err, "σ = -1")
	_, err = RDP(0, 1, 10, nil)
	check(err, "q = 0", "(0, 1]")
	_, err = RDP(1.5, 1, 10, nil)
	check(err, "q = 1.5")
	_, err = RDP(math.NaN(), 1, 10, nil)
	check(err, "q = NaN")
	_, err = RDP(0.1, 1, -3, nil)
	check(err, "steps = -3")
	_, err = RDP(0.1, 1, 3, []float64{0.5})
	check(err, "α = 0.5")
	_, _, err = Epsilon(0.1, 1, 3, 0)
	check(err, "δ = 0", "(0, 1)")
	_, _, err = Epsilon(0.1, 1, 3, 1)
	check(err, "δ = 1")
	_, err = NoiseForEpsilon(0.1, 100, -1, 1e-5)
	check(err, "target ε = -1")
	_, err = NoiseForEpsilon(0.1, 0, 1, 1e-5)
	check(err, "steps = 0")
	_, err = NoiseForEpsilon(1, 1e6, 1e-6, 1e-5)
	check(err, "unreachable", "target ε = 1e-06")
	var a Accountant
	check(a.Add(0.1, 0, 1), "σ = 0")
	if a.Steps() != 0 {
		t.Error("a failed Add recorded steps")
	}
	_, err = a.TryAdd(0.1, 1, 1, 1e-5, 0)
	check(err, "ε = 0")
	_, err = ParseConversion("tight")
	check(err, `"tight"`)
}

// The two conversions at a single order, against hand-computed values
// (Python: 1 + log(1e5)/9 and 1 + log1p(-0.1) - log(1e-5*10)/9).
func TestConversionFormulas(t *testing.T) {
	orders, rdp := []float64{10}, []float64{1}
	cla, o, err := EpsilonFromRDP(orders, rdp, 1e-5, Classic)
	if err != nil || o != 10 || !(relErr(cla, 2.2792139405522476) <= 1e-12) {
		t.Errorf("classic: %v %v %v", cla, o, err)
	}
	imp, _, err := EpsilonFromRDP(orders, rdp, 1e-5, Improved)
	if err != nil || !(relErr(imp, 1.9180106367839715) <= 1e-12) {
		t.Errorf("improved: %v %v", imp, err)
	}
	// δ ≥ sqrt(1 − exp(−rdp)): ε = 0 (total-variation bound).
	if e, _, err := EpsilonFromRDP(orders, []float64{1e-12}, 1e-5, Improved); err != nil || e != 0 {
		t.Errorf("tiny RDP: ε = %v, %v", e, err)
	}
	// Orders at or below 1.01 are skipped by the improved conversion.
	if e, _, err := EpsilonFromRDP([]float64{1.005}, []float64{0.1}, 1e-5, Improved); err != nil || !math.IsInf(e, 1) {
		t.Errorf("α = 1.005: ε = %v, %v", e, err)
	}
}

// A release before the steps (DP-DM's class means) is composed with them:
// NoiseForEpsilonAfter's σ spends exactly the target with the release, the
// accountant agrees, TryAddAll records all or nothing, and a release that
// alone spends the target is refused.
func TestPriorRelease(t *testing.T) {
	const q, steps, target, delta = 0.5, 200, 10.0, 1e-5
	prior := []Mechanism{{Q: 1, Sigma: 5, Steps: 1}}
	plain, err := NoiseForEpsilon(q, steps, target, delta)
	if err != nil {
		t.Fatal(err)
	}
	after, err := Config{}.NoiseForEpsilonAfter(prior, q, steps, target, delta)
	if err != nil {
		t.Fatal(err)
	}
	if !(after > plain) {
		t.Fatalf("σ with a prior release %g, without %g: want more noise with it", after, plain)
	}
	eps, _, err := Config{}.EpsilonAfter(prior, q, after, steps, delta)
	if err != nil || !(eps <= target && eps > target*(1-1e-6)) {
		t.Fatalf("ε of release + steps at σ = %g: %g (%v), want just under %g", after, eps, err, target)
	}
	// The release's RDP is the plain Gaussian's α/(2σ²).
	r, _ := RDP(1, 5, 1, []float64{2, 8})
	if math.Abs(r[0]-2.0/50) > 1e-12 || math.Abs(r[1]-8.0/50) > 1e-12 {
		t.Fatalf("release RDP %v, want [0.04 0.16]", r)
	}
	var a Accountant
	ms := append(slices.Clone(prior), Mechanism{Q: q, Sigma: after, Steps: steps})
	if ok, err := a.TryAddAll(ms, delta, target); !ok || err != nil {
		t.Fatalf("release + steps within the budget refused: %v", err)
	}
	if got, _, _ := a.Spent(delta); relErr(got, eps) > 1e-12 || a.Steps() != steps+1 {
		t.Fatalf("accountant spent %g over %d steps, want %g over %d", got, a.Steps(), eps, steps+1)
	}
	if ok, err := a.TryAddAll(prior, delta, target); ok || err != nil {
		t.Fatalf("a second release past the budget: ok %v, %v", ok, err)
	}
	if got, _, _ := a.Spent(delta); relErr(got, eps) > 1e-12 {
		t.Fatalf("a refused release was recorded: spent %g, want %g", got, eps)
	}
	if _, err := (Config{}).NoiseForEpsilonAfter([]Mechanism{{Q: 1, Sigma: 0.5, Steps: 1}}, q, steps, 1, delta); err == nil || !strings.Contains(err.Error(), "releases before the steps") {
		t.Fatalf("a release over the target alone: %v", err)
	}
	s := Settings{Epsilon: target, Clip: 1, Delta: delta, Prior: prior}
	if got, err := s.Resolve(q, steps, steps); err != nil || got != after {
		t.Fatalf("Settings.Resolve with the prior: %g (%v), want %g", got, err, after)
	}
	s.Noise = plain // enough for the steps alone, not with the release
	if _, err := s.Resolve(q, steps, steps); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("σ without room for the release: %v", err)
	}
}
