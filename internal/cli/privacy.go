package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"math"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/fedsim/fedsim/privacy"
)

// PrivacyOptions are the flags of `fedsim privacy epsilon` and
// `fedsim privacy noise`.
type PrivacyOptions struct {
	SampleRate    float64 // q: batch size / data-set size
	Noise         float64 // σ (epsilon only)
	TargetEpsilon float64 // ε (noise only)
	Steps         int
	Delta         float64
	Conversion    string // improved or classic
	JSON          bool
}

// PrivacyResult is the output of `fedsim privacy … --json`.
type PrivacyResult struct {
	Epsilon    float64 `json:"epsilon"`
	Order      float64 `json:"order,omitempty"`
	Delta      float64 `json:"delta"`
	Noise      float64 `json:"noise"`
	SampleRate float64 `json:"sample_rate"`
	Steps      int     `json:"steps"`
	Conversion string  `json:"conversion"`
}

func newPrivacyCmd(stdout, _ io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "privacy",
		Short: "Differential-privacy accounting for DP-SGD (sampled Gaussian mechanism)",
		Long: `privacy computes the (ε, δ) spent by steps of the Poisson-subsampled
Gaussian mechanism (DP-SGD with sampling rate q = batch / data-set size and
noise multiplier σ), with a Rényi-DP accountant as in TF-Privacy and Opacus.`,
		Args: cobra.NoArgs,
	}
	eo := &PrivacyOptions{}
	eps := &cobra.Command{
		Use:   "epsilon",
		Short: "Print the ε spent by --steps steps at --sample-rate and --noise",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return RunPrivacyEpsilon(eo, stdout)
		},
	}
	f := eps.Flags()
	addPrivacyFlags(f, eo)
	f.Float64Var(&eo.Noise, "noise", 0, "noise multiplier σ (noise standard deviation / clipping norm)")

	no := &PrivacyOptions{}
	noise := &cobra.Command{
		Use:   "noise",
		Short: "Print the smallest noise multiplier that keeps ε within --target-epsilon",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return RunPrivacyNoise(no, stdout)
		},
	}
	f = noise.Flags()
	addPrivacyFlags(f, no)
	f.Float64Var(&no.TargetEpsilon, "target-epsilon", 0, "privacy budget ε to stay within")

	so := &PrivacyOptions{}
	steps := &cobra.Command{
		Use:   "steps",
		Short: "Print the largest number of steps that keeps ε within --target-epsilon",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return RunPrivacySteps(so, stdout)
		},
	}
	f = steps.Flags()
	addPrivacyFlags(f, so)
	f.Float64Var(&so.Noise, "noise", 0, "noise multiplier σ (noise standard deviation / clipping norm)")
	f.Float64Var(&so.TargetEpsilon, "target-epsilon", 0, "privacy budget ε to stay within")
	_ = f.MarkHidden("steps")
	cmd.AddCommand(eps, noise, steps)
	return cmd
}

func addPrivacyFlags(f *pflag.FlagSet, o *PrivacyOptions) {
	f.Float64Var(&o.SampleRate, "sample-rate", 0, "sampling rate q in (0, 1]: batch size / data-set size")
	f.IntVar(&o.Steps, "steps", 0, "number of DP-SGD steps (epochs / q)")
	f.Float64Var(&o.Delta, "delta", 1e-5, "δ in (0, 1), usually below 1 / data-set size")
	f.StringVar(&o.Conversion, "conversion", "improved", "RDP to (ε, δ) conversion: improved (Balle et al. 2020, as current TF-Privacy and Opacus) or classic (Mironov 2017)")
	f.BoolVar(&o.JSON, "json", false, "print a JSON object")
}

func (o *PrivacyOptions) check() (privacy.Config, error) {
	return o.checkSteps(true)
}

func (o *PrivacyOptions) checkSteps(needSteps bool) (privacy.Config, error) {
	switch {
	case !(o.SampleRate > 0 && o.SampleRate <= 1):
		return privacy.Config{}, usagef("--sample-rate %g must be in (0, 1] (batch size / data-set size)", o.SampleRate)
	case needSteps && o.Steps <= 0:
		return privacy.Config{}, usagef("--steps %d must be positive", o.Steps)
	case !(o.Delta > 0 && o.Delta < 1):
		return privacy.Config{}, usagef("--delta %g must be in (0, 1), e.g. 1e-5", o.Delta)
	}
	conv, err := privacy.ParseConversion(o.Conversion)
	if err != nil {
		return privacy.Config{}, usagef("--conversion %q is not improved or classic", o.Conversion)
	}
	return privacy.Config{Conversion: conv}, nil
}

// RunPrivacyEpsilon runs `fedsim privacy epsilon` with o.
func RunPrivacyEpsilon(o *PrivacyOptions, stdout io.Writer) error {
	cfg, err := o.check()
	if err != nil {
		return err
	}
	if !(o.Noise > 0) || math.IsInf(o.Noise, 1) {
		return usagef("--noise %g must be positive (the noise multiplier σ)", o.Noise)
	}
	eps, order, err := cfg.Epsilon(o.SampleRate, o.Noise, o.Steps, o.Delta)
	if err != nil {
		return err
	}
	if o.JSON {
		return json.NewEncoder(stdout).Encode(PrivacyResult{Epsilon: eps, Order: order, Delta: o.Delta,
			Noise: o.Noise, SampleRate: o.SampleRate, Steps: o.Steps, Conversion: cfg.Conversion.String()})
	}
	_, err = fmt.Fprintf(stdout, "epsilon = %.4f (order %g)\n", eps, order)
	return err
}

// RunPrivacyNoise runs `fedsim privacy noise` with o.
func RunPrivacyNoise(o *PrivacyOptions, stdout io.Writer) error {
	cfg, err := o.check()
	if err != nil {
		return err
	}
	if !(o.TargetEpsilon > 0) || math.IsInf(o.TargetEpsilon, 1) {
		return usagef("--target-epsilon %g must be positive", o.TargetEpsilon)
	}
	sigma, err := cfg.NoiseForEpsilon(o.SampleRate, o.Steps, o.TargetEpsilon, o.Delta)
	if err != nil {
		// Bad combinations (an unreachable target) are the caller's to fix.
		return usageError{err}
	}
	eps, order, err := cfg.Epsilon(o.SampleRate, sigma, o.Steps, o.Delta)
	if err != nil {
		return err
	}
	if o.JSON {
		return json.NewEncoder(stdout).Encode(PrivacyResult{Epsilon: eps, Order: order, Delta: o.Delta,
			Noise: sigma, SampleRate: o.SampleRate, Steps: o.Steps, Conversion: cfg.Conversion.String()})
	}
	_, err = fmt.Fprintf(stdout, "noise = %.6g (epsilon = %.4f, order %g)\n", sigma, eps, order)
	return err
}

// RunPrivacySteps runs `fedsim privacy steps` with o.
func RunPrivacySteps(o *PrivacyOptions, stdout io.Writer) error {
	cfg, err := o.checkSteps(false)
	if err != nil {
		return err
	}
	switch {
	case o.Steps != 0:
		return usagef("--steps %d: privacy steps computes the number of steps; leave --steps out", o.Steps)
	case !(o.Noise > 0) || math.IsInf(o.Noise, 1):
		return usagef("--noise %g must be positive (the noise multiplier σ)", o.Noise)
	case !(o.TargetEpsilon > 0) || math.IsInf(o.TargetEpsilon, 1):
		return usagef("--target-epsilon %g must be positive", o.TargetEpsilon)
	}
	n, err := cfg.StepsForEpsilon(o.SampleRate, o.Noise, o.TargetEpsilon, o.Delta)
	if err != nil {
		return usageError{err}
	}
	eps, order, err := cfg.Epsilon(o.SampleRate, o.Noise, n, o.Delta)
	if err != nil {
		return err
	}
	if o.JSON {
		return json.NewEncoder(stdout).Encode(PrivacyResult{Epsilon: eps, Order: order, Delta: o.Delta,
			Noise: o.Noise, SampleRate: o.SampleRate, Steps: n, Conversion: cfg.Conversion.String()})
	}
	_, err = fmt.Fprintf(stdout, "steps = %d (epsilon = %.4f, order %g)\n", n, eps, order)
	return err
}
