package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/distill"
)

// EvalOptions are the flags of `fedsim eval`.
type EvalOptions struct {
	Synthetic  string
	Dataset    string
	DataDir    string
	EvalModels []string
	EvalRuns   int
	EvalEpochs int
	// EvalLR is the models' learning rate (0: 0.01); pass a trajectory-
	// matching set's learned step size (report.json's learned_step_size)
	// to evaluate it as MTT does.
	EvalLR float64
	// DSAStrategy is the augmentation of the models' training batches
	// ("": the data set's default, as the reference code; "none": off).
	DSAStrategy string
	// DCAugment evaluates with DC's own augmentation instead of DSA
	// (data.DCAug; "": DSA).
	DCAugment string
	Seed      uint64
	TestLimit int
	// ZCA is the ZCA transform the set was distilled with ("": zca.npz
	// beside Synthetic if there is one; "none": no whitening).
	ZCA   string
	JSON  bool
	Quiet bool
}

// EvalReport is the output of `fedsim eval --json`.
type EvalReport struct {
	Synthetic  string       `json:"synthetic"`
	Dataset    string       `json:"dataset"`
	Images     int          `json:"images"`
	PerClass   []int        `json:"images_per_class"`
	TestImages int          `json:"test_images"`
	ZCA        string       `json:"zca,omitempty"`
	Seed       uint64       `json:"seed"`
	Evals      []EvalRecord `json:"evaluations"`
}

func newEvalCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &EvalOptions{}
	cmd := &cobra.Command{
		Use:   "eval",
		Short: "Train fresh models on a synthetic set and report test accuracy mean ± std",
		Long: `eval applies the DC/DSA/DM papers' evaluation protocol to any synthetic.npz:
it trains --eval-runs fresh models of each of --eval-models from scratch on
the synthetic images (SGD lr 0.01, momentum 0.9, weight decay 5e-4, ×0.1 at
half the epochs, batch 256, DSA augmentation on every batch (--dsa-strategy;
--dc-augment for DC's own)) and tests them
on the real test split. The data set is recognised from the file's
normalization constants unless --dataset names it. A set distilled with
--zca is evaluated in ZCA space: the transform is read from zca.npz beside
the file (or --zca PATH; --zca none turns it off).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return RunEval(c.Context(), o, stdout, stderr)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Synthetic, "synthetic", "", "the synthetic set (a synthetic.npz written by fedsim distill, or any file with the same arrays)")
	f.StringVar(&o.Dataset, "dataset", "", "data set whose test split to use (default: recognised from the file's mean and std)")
	f.StringVar(&o.DataDir, "data-dir", "", "folder with the data set's files (overrides the built-in locations)")
	f.StringSliceVar(&o.EvalModels, "eval-models", []string{"convnet"}, "models to train, comma-separated (network names, or idc: ConvNets trained by IDC's recipe: 1000 epochs unless --eval-epochs, batch 64, lr ×0.2 at 2/3 and 5/6, CutMix 0.5, DSA without cutout)")
	f.IntVar(&o.EvalRuns, "eval-runs", 5, "models trained per architecture")
	f.IntVar(&o.EvalEpochs, "eval-epochs", 0, "training epochs per model (0: 1000 for mnist, 300 otherwise, as DC; the reference code of dsa, dm, mtt, ftd and tesla trains 1000, of cafe 600)")
	f.Float64Var(&o.EvalLR, "eval-lr", 0, "learning rate of the models (0: 0.01; for mtt/ftd/tesla sets, report.json's learned_step_size evaluates as their reference code does)")
	f.StringVar(&o.DSAStrategy, "dsa-strategy", "", "augmentation of the models' training batches, DSA operations joined by _ (default by data set; none to turn off)")
	f.StringVar(&o.DCAugment, "dc-augment", "", dcAugmentHelp)
	f.Uint64Var(&o.Seed, "seed", 1, "random seed")
	f.IntVar(&o.TestLimit, "test-limit", 0, "test on only the first N test images (0: all)")
	f.StringVar(&o.ZCA, "zca", "", "ZCA transform of a set distilled with --zca (default: zca.npz beside --synthetic if present; none: off)")
	f.BoolVar(&o.JSON, "json", false, "print the result as JSON")
	f.BoolVar(&o.Quiet, "quiet", false, "no progress display")
	return cmd
}

// guessDataset returns the data set whose image shape and normalization
// match s.
func guessDataset(s *distill.SyntheticSet) (string, bool) {
	for _, name := range data.Names() {
		in, _ := data.Lookup(name)
		if !slices.Equal(s.ImageShape(), []int{in.Channels, in.Height, in.Width}) || len(in.Mean) != len(s.Mean) {
			continue
		}
		ok := true
		for c := range in.Mean {
			if math.Abs(float64(in.Mean[c]-s.Mean[c])) > 1e-4 || math.Abs(float64(in.Std[c]-s.Std[c])) > 1e-4 {
				ok = false
			}
		}
		if ok {
			return name, true
		}
	}
	return "", false
}

// RunEval runs `fedsim eval` with o.
func RunEval(ctx context.Context, o *EvalOptions, stdout, stderr io.Writer) error {
	switch {
	case o.Synthetic == "":
		return usagef("--synthetic is required: the synthetic.npz to evaluate")
	case o.EvalRuns < 1:
		return usagef("--eval-runs %d must be at least 1", o.EvalRuns)
	case o.TestLimit < 0:
		return usagef("--test-limit %d must not be negative", o.TestLimit)
	}
	if err := validateEvalAugment(o.DSAStrategy, o.DCAugment); err != nil {
		return err
	}
	syn, err := distill.ReadSynthetic(o.Synthetic, 0)
	if err != nil {
		return usageError{err}
	}
	if o.Dataset == "" {
		name, ok := guessDataset(syn)
		if !ok {
			return usagef("cannot tell which data set %s belongs to (images %v, mean %v, std %v): pass --dataset", o.Synthetic, syn.ImageShape(), syn.Mean, syn.Std)
		}
		o.Dataset = name
	}
	info, err := data.Lookup(o.Dataset)
	if err != nil {
		return usageError{err}
	}
	o.Dataset = info.Name
	if syn.YSoft == nil {
		syn.Classes = info.Classes
	}
	if err := syn.Validate(); err != nil {
		return usageError{fmt.Errorf("%s does not fit %s: %w", o.Synthetic, o.Dataset, err)}
	}
	for _, m := range o.EvalModels {
		if m == distill.EvalKRR || m == distill.EvalUnrolled {
			return usagef("--eval-models %s needs the settings the set was distilled with: use it with fedsim distill (here, name networks such as convnet)", m)
		}
	}
	if err := validateEvalFlags(o.EvalModels, o.EvalRuns, o.EvalEpochs, o.EvalLR, []int{info.Channels, info.Height, info.Width}, info.Classes); err != nil {
		return err
	}
	test, err := data.Load(o.Dataset, "test", o.DataDir)
	if err != nil {
		return err
	}
	if err := syn.CheckAgainst(test); err != nil {
		return usageError{fmt.Errorf("%s does not fit %s: %w", o.Synthetic, o.Dataset, err)}
	}
	if o.TestLimit > 0 && o.TestLimit < test.Len() {
		test = test.Slice(o.TestLimit)
	}
	zcaPath := o.ZCA
	if zcaPath == "" {
		if p := filepath.Join(filepath.Dir(o.Synthetic), "zca.npz"); fileExists(p) {
			zcaPath = p
		}
	}
	var zca *distill.ZCA
	if zcaPath != "" && zcaPath != "none" {
		if zca, err = distill.ReadZCA(zcaPath); err != nil {
			return usageError{fmt.Errorf("%w (pass --zca none to evaluate without whitening)", err)}
		}
		if _, err := zca.ImportSet(syn); err != nil {
			return usageError{fmt.Errorf("%s does not fit %s: %w", zcaPath, o.Synthetic, err)}
		}
	} else {
		zcaPath = ""
	}
	rep := EvalReport{Synthetic: o.Synthetic, Dataset: o.Dataset, Images: syn.Len(), PerClass: syn.PerClass(), TestImages: test.Len(), ZCA: zcaPath, Seed: o.Seed}
	epochsOf := func(model string) int { return evalEpochs(model, o.EvalEpochs, o.Dataset, "") }
	if !o.JSON {
		plan := make([]string, len(o.EvalModels))
		for i, m := range o.EvalModels {
			plan[i] = fmt.Sprintf("%s (%d epochs)", m, epochsOf(m))
		}
		fmt.Fprintf(stdout, "evaluating %s (%d images, per class %v) on %s: %d models each of %s\n",
			o.Synthetic, syn.Len(), syn.PerClass(), o.Dataset, o.EvalRuns, strings.Join(plan, ", "))
		if zca != nil {
			fmt.Fprintf(stdout, "in ZCA space (%s, ε = %g)\n", zcaPath, zca.Eps)
		}
	}
	for _, m := range o.EvalModels {
		r, err := evalModel(ctx, syn, test, zca, evalSpec{model: m, runs: o.EvalRuns, epochs: epochsOf(m), lr: o.EvalLR, dsaStrategy: o.DSAStrategy, dcAugment: o.DCAugment, seed: o.Seed},
			o.Quiet || o.JSON && !isTerminal(stderr), stderr)
		if err != nil {
			return err
		}
		rep.Evals = append(rep.Evals, r)
		if !o.JSON {
			fmt.Fprintf(stdout, "%s  test accuracy %.4f ± %.4f  (%d models × %d epochs, augmentation %s, %.0f s)  %v\n", m, r.Mean, r.Std, r.Runs, r.Epochs, r.Augmentation, r.WallS, roundAll(r.Accs))
		}
	}
	if o.JSON {
		return json.NewEncoder(stdout).Encode(rep)
	}
	return nil
}

func roundAll(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = math.Round(x*1e4) / 1e4
	}
	return out
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
