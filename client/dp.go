package client

import (
	"fmt"
	"math"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/distill"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/privacy"
	"github.com/fedsim/fedsim/tensor"
)

// DPTask asks for example-level differentially private distillation: each
// iteration every real example joins with probability SampleRate, each
// example's embedding (DM) or gradient (GM) is clipped to Clip, and the
// per-class sums get Gaussian noise of standard deviation Noise·Clip (see
// distill.DPConfig). One iteration is one step of the sampled Gaussian
// mechanism on the client's data (an example belongs to one class), so a
// task of I iterations spends I steps of the client's budget.
type DPTask struct {
	SampleRate float64 `json:"sample_rate"`
	Clip       float64 `json:"clip"`
	Noise      float64 `json:"noise"`
	Delta      float64 `json:"delta"`
	// Center clips DM's embeddings around the synthetic class mean
	// (distill.DPConfig.Center).
	Center bool `json:"center,omitempty"`
	// Project projects DM's embeddings onto that many random directions
	// before clipping and noise (distill.DPConfig.Project; 0: none).
	Project int `json:"project,omitempty"`
	// InitClip and InitNoise are the clipping norm and noise multiplier of
	// the release of the class means a task with init mean starts from
	// (distill.ClassMeans): one Gaussian mechanism (sampling rate 1) per
	// such task, charged before the iterations.
	InitClip  float64 `json:"init_clip,omitempty"`
	InitNoise float64 `json:"init_noise,omitempty"`
	// MinClass leaves out of a private task the classes with fewer real
	// examples: their noisy sums carry noise of standard deviation
	// σC/(q·n_c) per coordinate, so their images stay mostly noise and
	// teach the global model little but noise. The class sizes are
	// treated as public, as the iterations' denominators q·n_c are.
	MinClass int `json:"min_class,omitempty"`
	// Budget is the ε the client may spend in all (0: no limit): a task
	// that would take the client past it is refused before any work.
	Budget float64 `json:"budget,omitempty"`
	// PriorSteps is the number of steps of this mechanism that earlier
	// tasks of the run asked of this client (the server's ledger). A client
	// whose accountant holds fewer — one rebuilt after the server resumed
	// from a checkpoint, or hosted by a restarted worker — charges the
	// difference before anything else, so a budget holds across restarts.
	PriorSteps int `json:"prior_steps,omitempty"`
	// PriorReleases is the same ledger for the class-mean releases.
	PriorReleases int `json:"prior_releases,omitempty"`
}

// distillConfig is the distill package's view of the settings (nil for
// none).
func (d *DPTask) distillConfig() *distill.DPConfig {
	if d == nil {
		return nil
	}
	return &distill.DPConfig{SampleRate: d.SampleRate, Clip: d.Clip, Noise: d.Noise, Center: d.Center,
		Project: d.Project, InitClip: d.InitClip, InitNoise: d.InitNoise}
}

// spendPrivacy checks a private task's settings and records its steps in
// the client's accountant, or refuses the task (before any work) when the
// steps would exceed the budget.
func (c *Client) spendPrivacy(t *Task) error {
	if t.DP == nil {
		return nil
	}
	d := t.DP
	if err := d.distillConfig().Validate(); err != nil {
		return err
	}
	if !(d.Noise > 0) {
		return fmt.Errorf("private task: noise multiplier σ = %g must be positive", d.Noise)
	}
	if !(d.Delta > 0 && d.Delta < 1) || !(d.Budget >= 0) || math.IsInf(d.Budget, 0) {
		return fmt.Errorf("private task: δ = %g must be in (0, 1) and the budget ε = %g finite and not negative", d.Delta, d.Budget)
	}
	if d.MinClass < 0 {
		return fmt.Errorf("private task: min_class %d must not be negative", d.MinClass)
	}
	if d.PriorSteps < 0 || d.PriorReleases < 0 {
		return fmt.Errorf("private task: prior steps %d and prior releases %d must not be negative", d.PriorSteps, d.PriorReleases)
	}
	release := t.Init == InitMean
	if (release || d.PriorReleases > 0) && !(d.InitNoise > 0 && d.InitClip > 0) {
		return fmt.Errorf("private task: init %s releases the class means: its noise multiplier %g and clipping norm %g must be positive", InitMean, d.InitNoise, d.InitClip)
	}
	if c.privacy == nil {
		c.privacy = privacy.NewAccountant(privacy.Config{})
	}
	if missing := d.PriorSteps - c.privateSteps; missing > 0 {
		if err := c.ChargePrivacy(d.SampleRate, d.Noise, missing); err != nil {
			return err
		}
	}
	if missing := d.PriorReleases - c.privateReleases; missing > 0 {
		if err := c.privacy.Add(1, d.InitNoise, missing); err != nil {
			return err
		}
		c.privateReleases += missing
	}
	var ms []privacy.Mechanism
	if release {
		ms = append(ms, privacy.Mechanism{Q: 1, Sigma: d.InitNoise, Steps: 1})
	}
	if t.Iterations > 0 {
		ms = append(ms, privacy.Mechanism{Q: d.SampleRate, Sigma: d.Noise, Steps: t.Iterations})
	}
	if len(ms) == 0 {
		return nil
	}
	budget := d.Budget
	if budget == 0 {
		budget = math.MaxFloat64
	}
	ok, err := c.privacy.TryAddAll(ms, d.Delta, budget)
	if err != nil {
		return err
	}
	if !ok {
		spent, _, _ := c.privacy.Spent(d.Delta)
		after, _, _ := c.privacy.SpentAfterAll(ms, d.Delta)
		return fmt.Errorf("privacy budget: refusing the task: it would take ε from %.4g to %.4g, over the budget ε = %g at δ = %g", spent, after, d.Budget, d.Delta)
	}
	c.privateSteps += t.Iterations
	if release {
		c.privateReleases++
	}
	return nil
}

// ChargePrivacy records steps of the sampled Gaussian mechanism (q, sigma)
// that the client spent before this process started. Private tasks do it
// themselves from DPTask.PriorSteps.
func (c *Client) ChargePrivacy(q, sigma float64, steps int) error {
	if c.privacy == nil {
		c.privacy = privacy.NewAccountant(privacy.Config{})
	}
	if err := c.privacy.Add(q, sigma, steps); err != nil {
		return err
	}
	c.privateSteps += steps
	return nil
}

// Spent returns the ε the client has spent at δ.
func (c *Client) Spent(delta float64) (float64, error) {
	if c.privacy == nil {
		return 0, nil
	}
	eps, _, err := c.privacy.Spent(delta)
	return eps, err
}

// noiseImages returns n standard-normal images: the start of a private
// synthetic set.
func noiseImages(n int, shape []int, rng *tensor.RNG) *tensor.Tensor[float32] {
	x := tensor.New[float32](append([]int{n}, shape...)...)
	tensor.FillNormal(rng, x, 0, 1)
	return x
}

// dpClassLoss is one class's private matching loss for distillMatch: the
// Poisson-sampled real batch xr of class k (nk real examples in all) against
// the synthetic images syn.
func dpClassLoss(t *Task, net nn.Model[float32], xr *tensor.Tensor[float32], yr []int, nk int, syn *tensor.Tensor[float32], k int, aug *data.Augmentation, rng *tensor.RNG, grad *tensor.Tensor[float32]) (float64, error) {
	dp := *t.DP.distillConfig()
	denom := dp.SampleRate * float64(nk)
	if t.Method == MethodDM {
		return distill.DPDMLoss(net.(nn.Embedder[float32]), xr, denom, syn, aug, dp, rng, grad)
	}
	synY := make([]int, syn.Shape[0])
	for i := range synY {
		synY[i] = k
	}
	return distill.DPGradMatchLoss(net, xr, yr, denom, syn, synY, aug, distill.MatchConfig{}, dp, rng, grad)
}
