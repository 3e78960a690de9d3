package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/distill"
	"github.com/fedsim/fedsim/federation"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/privacy/attack"
	"github.com/fedsim/fedsim/tensor"
)

// AttackOptions are the flags of `fedsim attack mia|lira|dlg|leakage`.
type AttackOptions struct {
	Dataset string
	DataDir string
	Model   string
	// Weights is the target model (e.g. a run's global.npz); "" trains one
	// here on the raw data (the attack's sanity check).
	Weights string
	// TrainLimit is the number of training images the target saw (the
	// run's --train-limit; 0: the whole split): they are the members.
	TrainLimit int
	// Members is how many members (and as many non-members) are attacked.
	Members   int
	Seed      uint64
	Bootstrap int
	Out       string
	JSON      bool

	// Training recipe of the raw target and the shadow models.
	Epochs int
	Batch  int
	LR     float64

	// LiRA.
	Shadows        int
	Offline        bool
	GlobalVariance bool
	// ShadowCache is a JSON file of shadow confidences: read if it exists
	// and matches, else written after training (shadows depend only on the
	// pool, the recipe and the seed, so several targets share them).
	ShadowCache string

	// DLG.
	BatchSize int // images in the client's batch
	Index     int // first training image of the batch
	Iters     int
	Optimizer string
	ClientLR  float64

	// Leakage.
	Synthetic  string
	Checkpoint string
	MaxImages  int
}

// AttackReport is the output of `fedsim attack … --json`.
type AttackReport struct {
	Attack  string         `json:"attack"`
	Target  string         `json:"target"`
	Dataset string         `json:"dataset"`
	Seed    uint64         `json:"seed"`
	Report  *attack.Report `json:"report,omitempty"`
	// DLG.
	PSNR        []float64 `json:"psnr_db,omitempty"`
	SSIM        []float64 `json:"ssim,omitempty"`
	LabelsTrue  []int     `json:"labels_true,omitempty"`
	LabelsFound []int     `json:"labels_found,omitempty"`
	GradDist    float64   `json:"gradient_distance,omitempty"`
	// Leakage.
	Nearest  []attack.Nearest `json:"nearest,omitempty"`
	MeanSSIM float64          `json:"mean_nearest_ssim,omitempty"`
	MaxSSIM  float64          `json:"max_nearest_ssim,omitempty"`
	Files    []string         `json:"files,omitempty"`
}

func newAttackCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "attack",
		Short: "Privacy attacks: membership inference (loss threshold, LiRA), gradient inversion (DLG/iDLG), synthetic-set leakage",
		Long: `attack measures privacy empirically.

  mia      loss-threshold membership inference against a model (--weights,
           e.g. a run's global.npz, whose members are the first --train-limit
           training images; without --weights a model is trained here on
           --members raw images, the check that the attack works)
  lira     the likelihood-ratio attack (Carlini et al. 2022), online or
           --offline, with --shadows models trained on random halves of the
           attacked pool
  dlg      gradient inversion of a FedAvg client's one-step update on a
           batch of --batch-size images (iDLG label recovery for one image)
  leakage  SSIM of each synthetic image to its nearest real image

Membership metrics: AUC and TPR at 1% and 0.1% FPR with 95% bootstrap
intervals; --out DIR receives report.json and a log-log ROC curve (PNG).`,
		Args: cobra.NoArgs,
	}
	add := func(use, short string, run func(context.Context, *AttackOptions, io.Writer, io.Writer) error, flags func(*pflag.FlagSet, *AttackOptions)) {
		o := &AttackOptions{}
		c := &cobra.Command{Use: use, Short: short, Args: cobra.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error { return run(c.Context(), o, stdout, stderr) }}
		f := c.Flags()
		f.StringVar(&o.Dataset, "dataset", "mnist", "data set")
		f.StringVar(&o.DataDir, "data-dir", "", "folder with the data set's files")
		f.Uint64Var(&o.Seed, "seed", 1, "random seed")
		f.StringVar(&o.Out, "out", "", "output folder (report.json and plots)")
		f.BoolVar(&o.JSON, "json", false, "print the report as JSON")
		flags(f, o)
		cmd.AddCommand(c)
	}
	mem := func(f *pflag.FlagSet, o *AttackOptions) {
		f.StringVar(&o.Model, "model", "convnet-w32", "model of the target (and of the shadows)")
		f.StringVar(&o.Weights, "weights", "", "target model weights (.npz); empty: train a target on raw data here")
		f.IntVar(&o.TrainLimit, "train-limit", 0, "training images the target saw (the run's --train-limit; 0: all)")
		f.IntVar(&o.Members, "members", 500, "members attacked (and as many non-members)")
		f.IntVar(&o.Bootstrap, "bootstrap", 200, "bootstrap resamples for the 95% intervals")
		f.IntVar(&o.Epochs, "epochs", 30, "training epochs of a target trained here and of the shadows")
		f.IntVar(&o.Batch, "batch", 64, "training batch size")
		f.Float64Var(&o.LR, "lr", 0.01, "training learning rate (SGD, momentum 0.9)")
	}
	add("mia", "Loss-threshold membership inference", RunAttackMIA, mem)
	add("lira", "LiRA membership inference with shadow models", RunAttackLiRA, func(f *pflag.FlagSet, o *AttackOptions) {
		mem(f, o)
		f.IntVar(&o.Shadows, "shadows", 16, "shadow models (each on a random half of the pool)")
		f.BoolVar(&o.Offline, "offline", false, "offline LiRA (OUT shadows only)")
		f.BoolVar(&o.GlobalVariance, "global-variance", false, "one pooled variance per side (recommended below 64 shadows)")
		f.StringVar(&o.ShadowCache, "shadow-cache", "", "JSON file of shadow confidences to reuse (written if absent)")
	})
	add("dlg", "Gradient inversion (DLG / iDLG) of a FedAvg client's update", RunAttackDLG, func(f *pflag.FlagSet, o *AttackOptions) {
		f.StringVar(&o.Model, "model", "mlp", "client model (mlp, lenet, convnet-…)")
		f.StringVar(&o.Weights, "weights", "", "global weights the client starts from (empty: a fresh model from --seed)")
		f.IntVar(&o.BatchSize, "batch-size", 1, "images in the client's batch (1: iDLG label recovery; more: DLG learns the labels)")
		f.IntVar(&o.Index, "index", 0, "first training image of the client's batch")
		f.IntVar(&o.Iters, "iters", 300, "optimizer iterations")
		f.StringVar(&o.Optimizer, "optimizer", "lbfgs", "lbfgs or adam")
		f.Float64Var(&o.ClientLR, "client-lr", 0.1, "the client's SGD learning rate (the update is −lr × gradient)")
	})
	add("leakage", "SSIM of each synthetic image to its nearest real image of the same class", RunAttackLeakage, func(f *pflag.FlagSet, o *AttackOptions) {
		f.StringVar(&o.Synthetic, "synthetic", "", "synthetic.npz to check")
		f.StringVar(&o.Checkpoint, "checkpoint", "", "or a run's checkpoint.fsw: every client's uploaded set (searched against all real images of the class, an upper bound on the client's own)")
		f.IntVar(&o.TrainLimit, "train-limit", 0, "real training images to search (0: all)")
		f.IntVar(&o.MaxImages, "max-images", 0, "check only this many synthetic images, drawn at random with --seed (0: all)")
	})
	var plotOut, title string
	plotCmd := &cobra.Command{
		Use:   "plot NAME=report.json …",
		Short: "Draw the ROC curves of several attack reports on one log-log plot",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return RunAttackPlot(args, plotOut, title, stdout)
		},
	}
	plotCmd.Flags().StringVar(&plotOut, "out", "roc.png", "PNG file to write")
	plotCmd.Flags().StringVar(&title, "title", "membership inference", "plot title")
	cmd.AddCommand(plotCmd)
	return cmd
}

// RunAttackPlot runs `fedsim attack plot`: each argument is NAME=FILE, a
// report.json of mia or lira.
func RunAttackPlot(args []string, out, title string, stdout io.Writer) error {
	var curves []attack.NamedCurve
	for _, a := range args {
		name, file, ok := strings.Cut(a, "=")
		if !ok || name == "" || file == "" {
			return usagef("argument %q: want NAME=report.json", a)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		var r AttackReport
		if err := json.Unmarshal(b, &r); err != nil || r.Report == nil || len(r.Report.Curve.FPR) == 0 {
			return fmt.Errorf("%s is not a membership-inference report with a ROC curve (%v)", file, err)
		}
		curves = append(curves, attack.NamedCurve{Name: name, Curve: r.Report.Curve})
	}
	if err := attack.PlotROC(out, title, curves); err != nil {
		return err
	}
	_, err := fmt.Fprintf(stdout, "wrote %s\n", out)
	return err
}

func (o *AttackOptions) loadData() (train, test *data.Dataset, err error) {
	if train, err = data.Load(o.Dataset, "train", o.DataDir); err != nil {
		return nil, nil, err
	}
	if o.TrainLimit < 0 {
		return nil, nil, usagef("--train-limit %d must not be negative", o.TrainLimit)
	}
	if o.TrainLimit > 0 && o.TrainLimit < train.Len() {
		train = train.Slice(o.TrainLimit)
	}
	test, err = data.Load(o.Dataset, "test", o.DataDir)
	return train, test, err
}

func (o *AttackOptions) recipe() attack.Recipe {
	return attack.Recipe{Model: o.Model, Epochs: o.Epochs, Batch: o.Batch, LR: o.LR}
}

func (o *AttackOptions) checkMembership() error {
	switch {
	case o.Members < 2:
		return usagef("--members %d: want at least 2", o.Members)
	case o.Bootstrap < 0:
		return usagef("--bootstrap %d must not be negative", o.Bootstrap)
	}
	if err := o.recipe().Validate(); err != nil {
		return usageError{err}
	}
	return nil
}

// sample returns n distinct indices of [0, total) drawn from seed, sorted.
func attackSample(total, n int, seed uint64, stream uint64) []int {
	perm := tensor.NewRNG(seed, stream).Perm(total)[:n]
	slices.Sort(perm)
	return perm
}

// membershipPool returns the attacked examples: members first (from the
// target's training images), then as many non-members (test images), the
// membership mask, and the target model (loaded, or trained here on the
// members).
func (o *AttackOptions) membershipPool(ctx context.Context, stderr io.Writer) (*data.Dataset, []bool, nn.Model[float32], string, error) {
	train, test, err := o.loadData()
	if err != nil {
		return nil, nil, nil, "", err
	}
	var target nn.Model[float32]
	var members *data.Dataset
	desc := ""
	if o.Weights != "" {
		if o.Members > train.Len() || o.Members > test.Len() {
			return nil, nil, nil, "", usagef("--members %d: more than the %d training images the target saw or the %d test images", o.Members, train.Len(), test.Len())
		}
		target, err = nn.New[float32](o.Model, train.ImageShape(), train.Classes, tensor.NewRNG(0, 0))
		if err != nil {
			return nil, nil, nil, "", usageError{err}
		}
		if err := nn.Load(o.Weights, target); err != nil {
			return nil, nil, nil, "", err
		}
		members = train.Subset(attackSample(train.Len(), o.Members, o.Seed, 1))
		desc = o.Weights
	} else {
		if o.Members > train.Len() || o.Members > test.Len() {
			return nil, nil, nil, "", usagef("--members %d: more than the %d training or %d test images", o.Members, train.Len(), test.Len())
		}
		members = train.Subset(attackSample(train.Len(), o.Members, o.Seed, 1))
		fmt.Fprintf(stderr, "fedsim attack: training the target %s on %d raw images for %d epochs\n", o.Model, o.Members, o.Epochs)
		if target, err = o.recipe().Train(ctx, members, o.Seed); err != nil {
			return nil, nil, nil, "", err
		}
		desc = fmt.Sprintf("%s trained on %d raw images, %d epochs", o.Model, o.Members, o.Epochs)
	}
	non := test.Subset(attackSample(test.Len(), o.Members, o.Seed, 2))
	pool := attackConcat(members, non)
	member := make([]bool, pool.Len())
	for i := range o.Members {
		member[i] = true
	}
	return pool, member, target, desc, nil
}

func attackConcat(a, b *data.Dataset) *data.Dataset {
	x := tensor.New[float32](append([]int{a.Len() + b.Len()}, a.ImageShape()...)...)
	copy(x.Data, a.X.Data)
	copy(x.Data[len(a.X.Data):], b.X.Data)
	out := *a
	out.X, out.Y = x, append(slices.Clone(a.Y), b.Y...)
	return &out
}

// RunAttackMIA runs `fedsim attack mia`.
func RunAttackMIA(ctx context.Context, o *AttackOptions, stdout, stderr io.Writer) error {
	if err := o.checkMembership(); err != nil {
		return err
	}
	pool, member, target, desc, err := o.membershipPool(ctx, stderr)
	if err != nil {
		return err
	}
	out, err := attack.Query(target, pool.X, pool.Y, 0)
	if err != nil {
		return err
	}
	rep, err := attack.Evaluate(attack.LossScores(out), member, o.Bootstrap, o.Seed)
	if err != nil {
		return err
	}
	return o.finish(&AttackReport{Attack: "loss-threshold", Target: desc, Dataset: o.Dataset, Seed: o.Seed, Report: rep}, stdout)
}

// RunAttackLiRA runs `fedsim attack lira`: the pool is the attacked
// members and non-members; with a target trained here the members are a
// random half of a pool of 2·--members training images (so shadows and
// target come from one distribution, as in Carlini et al.).
func RunAttackLiRA(ctx context.Context, o *AttackOptions, stdout, stderr io.Writer) error {
	if err := o.checkMembership(); err != nil {
		return err
	}
	if o.Shadows < 1 || (!o.Offline && o.Shadows < 2) {
		return usagef("--shadows %d: want at least 2 online (1 offline); 16 or more give a useful attack", o.Shadows)
	}
	var (
		pool   *data.Dataset
		member []bool
		target nn.Model[float32]
		desc   string
		err    error
	)
	if o.Weights != "" {
		if pool, member, target, desc, err = o.membershipPool(ctx, stderr); err != nil {
			return err
		}
	} else {
		train, _, err := o.loadData()
		if err != nil {
			return err
		}
		if 2*o.Members > train.Len() {
			return usagef("--members %d: a pool of %d images needs that many training images (%d)", o.Members, 2*o.Members, train.Len())
		}
		pool = train.Subset(attackSample(train.Len(), 2*o.Members, o.Seed, 1))
		member = attack.RandomHalf(pool.Len(), o.Seed)
		var idx []int
		for i, m := range member {
			if m {
				idx = append(idx, i)
			}
		}
		fmt.Fprintf(stderr, "fedsim attack: training the target %s on %d of %d raw images\n", o.Model, len(idx), pool.Len())
		if target, err = o.recipe().Train(ctx, pool.Subset(idx), o.Seed); err != nil {
			return err
		}
		desc = fmt.Sprintf("%s trained on %d raw images, %d epochs", o.Model, len(idx), o.Epochs)
	}
	tout, err := attack.Query(target, pool.X, pool.Y, 0)
	if err != nil {
		return err
	}
	sh, err := o.shadows(ctx, pool, stderr)
	if err != nil {
		return err
	}
	scores, err := attack.LiRA(tout.Confidence, sh, attack.LiRAOptions{Offline: o.Offline, GlobalVariance: o.GlobalVariance})
	if err != nil {
		return err
	}
	rep, err := attack.Evaluate(scores, member, o.Bootstrap, o.Seed)
	if err != nil {
		return err
	}
	name := "lira-online"
	if o.Offline {
		name = "lira-offline"
	}
	// the loss threshold on the same pool, for comparison on one plot
	base, err := attack.Evaluate(attack.LossScores(tout), member, 0, o.Seed)
	if err != nil {
		return err
	}
	r := &AttackReport{Attack: name, Target: desc, Dataset: o.Dataset, Seed: o.Seed, Report: rep}
	if o.Out != "" {
		if err := os.MkdirAll(o.Out, 0o755); err != nil {
			return err
		}
		p := filepath.Join(o.Out, "roc_compare.png")
		if err := attack.PlotROC(p, "membership inference", []attack.NamedCurve{{Name: name, Curve: rep.Curve}, {Name: "loss threshold", Curve: base.Curve}}); err != nil {
			return err
		}
		r.Files = append(r.Files, p)
	}
	return o.finish(r, stdout)
}

// finish writes report.json and the ROC plot to --out and prints the
// report.
func (o *AttackOptions) finish(r *AttackReport, stdout io.Writer) error {
	if o.Out != "" {
		if err := os.MkdirAll(o.Out, 0o755); err != nil {
			return err
		}
		if r.Report != nil {
			p := filepath.Join(o.Out, "roc.png")
			if err := attack.PlotROC(p, r.Attack, []attack.NamedCurve{{Name: r.Attack, Curve: r.Report.Curve}}); err != nil {
				return err
			}
			r.Files = append(r.Files, p)
		}
		r.Files = append(r.Files, filepath.Join(o.Out, "report.json"))
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		if err := writeFileAtomic(filepath.Join(o.Out, "report.json"), append(b, '\n')); err != nil {
			return err
		}
	}
	if o.JSON {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	fmt.Fprintf(stdout, "%s against %s (%s)\n", r.Attack, r.Target, r.Dataset)
	if rep := r.Report; rep != nil {
		fmt.Fprintf(stdout, "members %d, non-members %d, %d bootstrap resamples (95%% intervals)\n", rep.Members, rep.NonMembers, rep.Bootstrap)
		fmt.Fprintf(stdout, "AUC             %s\nTPR at 1%% FPR   %s\nTPR at 0.1%% FPR %s\n", rep.AUC, rep.TPR1, rep.TPR01)
	}
	for i := range r.PSNR {
		fmt.Fprintf(stdout, "image %d: label %d found %d, PSNR %.2f dB, SSIM %.4f\n", i, r.LabelsTrue[i], r.LabelsFound[i], r.PSNR[i], r.SSIM[i])
	}
	if r.Nearest != nil {
		fmt.Fprintf(stdout, "%d synthetic images: nearest-real SSIM mean %.4f, max %.4f\n", len(r.Nearest), r.MeanSSIM, r.MaxSSIM)
	}
	for _, f := range r.Files {
		fmt.Fprintf(stdout, "wrote %s\n", f)
	}
	return nil
}

// pixels returns image i of x (N, C, H, W) in [0, 1] pixel space.
func attackPixels[T tensor.Float](x *tensor.Tensor[T], i int, mean, std []float32) []float64 {
	c, h, w := x.Shape[1], x.Shape[2], x.Shape[3]
	sz := c * h * w
	out := make([]float64, sz)
	for j := range sz {
		ch := j / (h * w)
		v := float64(x.Data[i*sz+j])*float64(std[ch]) + float64(mean[ch])
		out[j] = math.Min(1, math.Max(0, v))
	}
	return out
}

// RunAttackDLG runs `fedsim attack dlg`: a client holding --batch-size
// training images takes one SGD step from the global weights; the server
// sees the update, turns it into the gradient and inverts it.
func RunAttackDLG(_ context.Context, o *AttackOptions, stdout, _ io.Writer) error {
	switch {
	case o.BatchSize < 1:
		return usagef("--batch-size %d must be at least 1", o.BatchSize)
	case o.Iters < 1:
		return usagef("--iters %d must be at least 1", o.Iters)
	case o.Optimizer != "lbfgs" && o.Optimizer != "adam":
		return usagef("--optimizer %q: want lbfgs or adam", o.Optimizer)
	case !(o.ClientLR > 0):
		return usagef("--client-lr %g must be positive", o.ClientLR)
	case o.Index < 0:
		return usagef("--index %d must not be negative", o.Index)
	}
	train, err := data.Load(o.Dataset, "train", o.DataDir)
	if err != nil {
		return err
	}
	if o.Index+o.BatchSize > train.Len() {
		return usagef("--index %d + --batch-size %d is past the %d training images", o.Index, o.BatchSize, train.Len())
	}
	// The attack runs in float64 (the optimisation needs the precision);
	// the client's update is float32 like a real one.
	m32, err := nn.New[float32](o.Model, train.ImageShape(), train.Classes, tensor.NewRNG(o.Seed, 0))
	if err != nil {
		return usageError{err}
	}
	if o.Weights != "" {
		if err := nn.Load(o.Weights, m32); err != nil {
			return err
		}
	}
	m, err := nn.New[float64](o.Model, train.ImageShape(), train.Classes, tensor.NewRNG(o.Seed, 0))
	if err != nil {
		return usageError{err}
	}
	for i, p := range m.Params() {
		for j, v := range m32.Params()[i].Data {
			p.Data[j] = float64(v)
		}
	}
	batch := train.Subset(attackSeq(o.Index, o.Index+o.BatchSize))
	g32, err := attack.Gradient(m32, batch.X, batch.Y)
	if err != nil {
		return err
	}
	before := m32.Params()
	after := make([]*tensor.Tensor[float32], len(before))
	for i, p := range before {
		after[i] = p.Clone()
		for j := range after[i].Data {
			after[i].Data[j] -= float32(o.ClientLR) * g32[i].Data[j]
		}
	}
	g, err := attack.GradientFromUpdate(before, after, o.ClientLR)
	if err != nil {
		return err
	}
	target := make([]*tensor.Tensor[float64], len(g))
	for i, t := range g {
		target[i] = tensor.New[float64](t.Shape...)
		for j, v := range t.Data {
			target[i].Data[j] = float64(v)
		}
	}
	var labels []int
	if o.BatchSize == 1 {
		// the classifier's weight (classes, features): the last 2-D parameter
		last := -1
		for i, p := range m.Params() {
			if p.Rank() == 2 {
				last = i
			}
		}
		if last < 0 {
			return usagef("--model %s has no linear classifier for iDLG's label recovery", o.Model)
		}
		l, err := attack.IDLGLabel(target[last])
		if err != nil {
			return err
		}
		labels = []int{l}
	}
	shape := append([]int{o.BatchSize}, train.ImageShape()...)
	res, err := attack.Invert(m, target, shape, labels, attack.DLGConfig{Iters: o.Iters, Optimizer: o.Optimizer, Seed: o.Seed})
	if err != nil {
		return err
	}
	r := &AttackReport{Attack: "dlg", Target: fmt.Sprintf("%s, one SGD step (lr %g) on %d image(s) from index %d", o.Model, o.ClientLR, o.BatchSize, o.Index),
		Dataset: o.Dataset, Seed: o.Seed, LabelsTrue: batch.Y, GradDist: res.Loss}
	if o.BatchSize == 1 {
		r.Attack = "idlg"
	}
	c, h, w := shape[1], shape[2], shape[3]
	// DLG returns the batch in any order: pair each original with its most
	// similar reconstruction (greedily).
	used := make([]bool, o.BatchSize)
	recon := tensor.New[float32](shape...)
	for i := range o.BatchSize {
		orig := attackPixels(batch.X, i, train.Mean, train.Std)
		best, bestS := -1, math.Inf(-1)
		for k := range o.BatchSize {
			if used[k] {
				continue
			}
			s, err := attack.SSIM(attackPixels(res.X, k, train.Mean, train.Std), orig, c, h, w, 1)
			if err != nil {
				return err
			}
			if s > bestS {
				best, bestS = k, s
			}
		}
		used[best] = true
		p, err := attack.PSNR(attackPixels(res.X, best, train.Mean, train.Std), orig, 1)
		if err != nil {
			return err
		}
		r.PSNR, r.SSIM, r.LabelsFound = append(r.PSNR, p), append(r.SSIM, bestS), append(r.LabelsFound, res.Labels[best])
		sz := c * h * w
		for j := range sz {
			recon.Data[i*sz+j] = float32(res.X.Data[best*sz+j])
		}
	}
	if o.Out != "" {
		if err := os.MkdirAll(o.Out, 0o755); err != nil {
			return err
		}
		// row 0: the client's images; row 1: the reconstructions
		grid := &distill.SyntheticSet{X: attackConcatImages(batch.X, recon), Classes: 2, Mean: train.Mean, Std: train.Std}
		for range 2 * o.BatchSize {
			grid.Y = append(grid.Y, len(grid.Y)/o.BatchSize)
		}
		p := filepath.Join(o.Out, "dlg.png")
		if err := distill.WriteGrid(p, grid); err != nil {
			return err
		}
		r.Files = append(r.Files, p)
	}
	return o.finish(r, stdout)
}

func attackConcatImages(a, b *tensor.Tensor[float32]) *tensor.Tensor[float32] {
	x := tensor.New[float32](append([]int{a.Shape[0] + b.Shape[0]}, a.Shape[1:]...)...)
	copy(x.Data, a.Data)
	copy(x.Data[len(a.Data):], b.Data)
	return x
}

func attackSeq(lo, hi int) []int {
	s := make([]int, 0, hi-lo)
	for i := lo; i < hi; i++ {
		s = append(s, i)
	}
	return s
}

// RunAttackLeakage runs `fedsim attack leakage`.
func RunAttackLeakage(_ context.Context, o *AttackOptions, stdout, _ io.Writer) error {
	if (o.Synthetic == "") == (o.Checkpoint == "") {
		return usagef("give one of --synthetic FILE and --checkpoint FILE")
	}
	train, err := data.Load(o.Dataset, "train", o.DataDir)
	if err != nil {
		return err
	}
	if o.TrainLimit < 0 {
		return usagef("--train-limit %d must not be negative", o.TrainLimit)
	}
	if o.TrainLimit > 0 && o.TrainLimit < train.Len() {
		train = train.Slice(o.TrainLimit)
	}
	syn, err := o.leakageSet(train)
	if err != nil {
		return err
	}
	if !slices.Equal(syn.ImageShape(), train.ImageShape()) {
		return usagef("--synthetic images are %v, %s's are %v", syn.ImageShape(), o.Dataset, train.ImageShape())
	}
	if o.MaxImages < 0 {
		return usagef("--max-images %d must not be negative", o.MaxImages)
	}
	var s, r [][]float64
	pick := attackSeq(0, syn.Len())
	if o.MaxImages > 0 && o.MaxImages < syn.Len() {
		pick = attackSample(syn.Len(), o.MaxImages, o.Seed, 3)
	}
	var sy []int
	for _, i := range pick {
		s = append(s, attackPixels(syn.X, i, syn.Mean, syn.Std))
		sy = append(sy, syn.Y[i])
	}
	for i := range train.Len() {
		r = append(r, attackPixels(train.X, i, train.Mean, train.Std))
	}
	sh := train.ImageShape()
	nr, err := attack.NearestReal(s, sy, r, train.Y, sh[0], sh[1], sh[2], 1)
	if err != nil {
		return err
	}
	rep := &AttackReport{Attack: "leakage", Target: o.Synthetic + o.Checkpoint, Dataset: o.Dataset, Seed: o.Seed, Nearest: nr, MaxSSIM: math.Inf(-1)}
	for _, n := range nr {
		rep.MeanSSIM += n.SSIM / float64(len(nr))
		rep.MaxSSIM = max(rep.MaxSSIM, n.SSIM)
	}
	return o.finish(rep, stdout)
}

// leakageSet reads --synthetic, or stacks the client sets of --checkpoint
// in client order.
func (o *AttackOptions) leakageSet(train *data.Dataset) (*distill.SyntheticSet, error) {
	if o.Synthetic != "" {
		return distill.ReadSynthetic(o.Synthetic, train.Classes)
	}
	b, err := os.ReadFile(o.Checkpoint)
	if err != nil {
		return nil, err
	}
	snap, err := federation.DecodeSnapshot(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Checkpoint, err)
	}
	if len(snap.Synthetic) == 0 {
		return nil, fmt.Errorf("%s holds no synthetic set (was the run a distillation run?)", o.Checkpoint)
	}
	ids := slices.Sorted(maps.Keys(snap.Synthetic))
	var xs []*tensor.Tensor[float32]
	var y []int
	for _, id := range ids {
		xs = append(xs, snap.Synthetic[id].X)
		y = append(y, snap.Synthetic[id].Y...)
	}
	x := xs[0]
	for _, t := range xs[1:] {
		x = attackConcatImages(x, t)
	}
	return &distill.SyntheticSet{X: x, Y: y, Mean: train.Mean, Std: train.Std, Classes: train.Classes}, nil
}

// shadowCacheFile is --shadow-cache's content.
type shadowCacheFile struct {
	Recipe  attack.Recipe   `json:"recipe"`
	Seed    uint64          `json:"seed"`
	Labels  []int           `json:"labels"`
	Shadows *attack.Shadows `json:"shadows"`
}

// shadows trains the shadow models of LiRA, or reads them from
// --shadow-cache when it was made with the same recipe, seed, count and
// pool labels.
func (o *AttackOptions) shadows(ctx context.Context, pool *data.Dataset, stderr io.Writer) (*attack.Shadows, error) {
	if o.ShadowCache != "" {
		if b, err := os.ReadFile(o.ShadowCache); err == nil {
			var c shadowCacheFile
			if json.Unmarshal(b, &c) == nil && c.Recipe == o.recipe() && c.Seed == o.Seed && slices.Equal(c.Labels, pool.Y) &&
				c.Shadows != nil && len(c.Shadows.Confidence) == o.Shadows {
				fmt.Fprintf(stderr, "fedsim attack: %d shadow models from %s\n", o.Shadows, o.ShadowCache)
				return c.Shadows, nil
			}
			fmt.Fprintf(stderr, "fedsim attack: %s is for other shadows; training them again\n", o.ShadowCache)
		}
	}
	bar := newProgress(stderr, "shadows", o.Shadows, o.JSON)
	sh, err := attack.TrainShadows(ctx, pool, o.Shadows, o.recipe(), o.Seed+1, func(d int) { bar.update(d, "") })
	bar.finish()
	if err != nil {
		return nil, err
	}
	if o.ShadowCache != "" {
		b, err := json.Marshal(shadowCacheFile{Recipe: o.recipe(), Seed: o.Seed, Labels: pool.Y, Shadows: sh})
		if err != nil {
			return nil, err
		}
		if err := writeFileAtomic(o.ShadowCache, b); err != nil {
			return nil, err
		}
	}
	return sh, nil
}
