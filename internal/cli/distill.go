package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/distill"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// DistillOptions are the flags of `fedsim distill`.
type DistillOptions struct {
	Dataset, DataDir string
	Method           string
	IPC, Iters       int
	Out              string
	EvalEvery        int
	EvalModels       []string
	EvalRuns         int
	EvalEpochs       int
	// EvalLR is the evaluation models' learning rate (0: the learned step
	// size of mtt/ftd/tesla/dd, as their reference code evaluates, else
	// 0.01).
	EvalLR          float64
	Seed            uint64
	Resume          bool
	CheckpointEvery int
	// Method hyper-parameters (0 or "": the method's reference value).
	Model       string
	BatchReal   int
	LRImg       float64
	ImageSteps  int
	OuterLoop   int
	InnerLoop   int
	Init        string
	DSAStrategy string
	// DCAugment evaluates with DC's own augmentation instead of DSA
	// (data.DCAug; "": DSA).
	DCAugment     string
	FeatureEpochs int
	// Gradient-matching options (dc, dsa): distance, DCC's class sum, IDC's
	// inner loop on real data.
	MatchDistance string
	ClassSum      bool
	InnerReal     bool
	// Trajectory matching (mtt, ftd, tesla); 0 or "": the defaults.
	Buffer        string
	SynSteps      int
	ExpertEpochs  int
	MaxStartEpoch int
	BatchSyn      int
	LRLR          float64
	LRInit        float64
	StartNoise    float64
	Labels        string
	LRLabel       float64
	FixedAdjoint  bool
	// ZCA whitens the real images before distilling (MTT, KIP); ZCAReg is
	// its regularisation ε (0: distill.DefaultZCAReg).
	ZCA    bool
	ZCAReg float64
	// Kernel methods (kip, rfad, frepo) and meta-learning (dd, sldd, ld);
	// 0 or "": the defaults (distill.KRRConfig, distill.MetaConfig). They
	// also read --lr-label, and dd/sldd/ld --lr-teacher (initial step size)
	// and --lr-lr.
	Kernel      string
	KernelDepth int
	NNGP        bool
	KRRReg      float64
	LearnLabels bool
	LRCosine    bool
	RFModels    int
	RFWidth     int
	MaxAge      int
	Unroll      int
	UnrollMom   float64
	UnrollSeg   int
	Bases       int
	Formations  int
	// IDC (idc); 0 or "": the defaults (distill.IDCConfig).
	IDCFactor      int
	IDCMetric      string
	IDCMatchFC     bool
	IDCNetData     int
	IDCMixup       string
	IDCMixProb     float64
	IDCBatchSynMax int
	// Generator methods (gtn, itgan; distill.GTNConfig, distill.ITGANConfig);
	// gtn also reads --unroll, --unroll-momentum, --lr-teacher and --lr-lr.
	GenZDim, GenWarm, ITGANEpochs, ITGANBatch, ITGANInvert int
	GenHidden, ITGANDisc                                   []int
	GenLR, ITGANLR, ITGANInvertLR, ITGANRec                float64
	GTNOverBudget, ITGANOverBudget                         bool
	// HaBa (haba): bases per class, hallucinators, their width, the
	// budget override and the hallucinators' learning rate and λ; 0: the
	// defaults (distill.HaBaConfig).
	HaBaBases, HaBaHallucinators, HaBaWidth, HaBaBudgetIPC int
	HaBaLRHal, HaBaLambda                                  float64
	// KFS sizes and trains kfs (distill.KFSConfig; 0: the defaults).
	KFS distill.KFSConfig
	// TrainLimit and TestLimit use only the first N images (0: all), for
	// quick checks.
	TrainLimit, TestLimit int
	Quiet                 bool
}

// defaultDistillIters is the iteration budget when --iters is not given:
// the DC/DSA papers' 1000 (the DM paper runs 20 000).
const defaultDistillIters = 1000

func newDistillCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &DistillOptions{}
	cmd := &cobra.Command{
		Use:   "distill",
		Short: "Distill a real data set into a few synthetic images per class and evaluate them",
		Long: `distill condenses the training split of a data set into --ipc images per
class with one of the survey's methods, then trains fresh models on them and
reports test accuracy (mean ± std over --eval-runs models).

Methods: random, herding and kcenter select real images (herding and kcenter
in the feature space of a ConvNet trained briefly on the real data); dm
matches mean embeddings of randomly initialised ConvNets (Zhao & Bilen); dc
and dsa match per-class training gradients (Zhao et al.), dsa with Siamese
augmentation. mtt, ftd and tesla match expert training trajectories
(Cazenavette et al.; Du et al.; Cui et al.) from a buffer that
"fedsim distill buffer" trains first (--buffer DIR); tesla computes the same
meta-gradient as mtt in constant memory and learns soft labels.

--out DIR receives synthetic.npz (x, y, mean, std: numpy.load reads it),
grid.png (one row per class), report.json, and checkpoint.npz, written
atomically every --checkpoint-every iterations; --resume continues from it.
With --zca the method works on ZCA-whitened images (as MTT and KIP do);
synthetic.npz and grid.png are mapped back to the normalized space, zca.npz
holds the transform, and evaluation (here and in "fedsim eval", which finds
zca.npz beside synthetic.npz) whitens the synthetic and test images again.
kip, rfad and frepo learn the set by kernel ridge regression (KIP's
closed-form NTK/NNGP kernels, --kernel fc|conv; RFAD's random-feature NNGP
with a Platt-scaled loss; FRePo's features of a pool of networks trained
online), --learn-labels also learns the labels and --lr-cosine decays
their Adam rates over --iters; dd, sldd and ld
backpropagate through --unroll SGD steps of a fresh network (dd: images and
step size; sldd: also soft labels; ld: labels only); linba learns
memory bases and addressing matrices (Deng & Russakovsky) within the float
budget of --ipc images per class, writes the decoded images to
synthetic.npz and the factors to factors.npz. idc (Kim et al.) stores --ipc
images per class, each decoded into --idc-factor² smaller images by
multi-formation, and learns them by gradient matching with a network
trained on real data; synthetic.npz holds the decoded images. gtn meta-learns a small
conditional generator and its input codes through --unroll SGD steps (Such
et al.; generator and codes must fit the float budget); itgan trains a small
conditional GAN, inverts real images into its latent space and learns the
codes by distribution matching (Zhao & Bilen). kfs (Lee et al.) learns
small latent codes per class and a few decoders shared by all classes by
distribution matching, within the same float budget. haba (Liu et al.) learns
per-class bases and a few hallucinator networks shared by all classes by
trajectory matching (needs --buffer) with an adversarial contrastive
constraint, within the same float budget (--haba-budget-ipc overrides it).
A run that diverges stops with an error and keeps its last good checkpoint.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return RunDistill(c.Context(), o, stdout, stderr)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Dataset, "dataset", "mnist", "data set: "+strings.Join(data.Names(), ", "))
	f.StringVar(&o.DataDir, "data-dir", "", "folder with the data set's files (overrides the built-in locations)")
	f.StringVar(&o.Method, "method", distill.MethodDM, "method: "+strings.Join(distill.Methods(), ", "))
	f.IntVar(&o.IPC, "ipc", 1, "synthetic images per class")
	f.IntVar(&o.Iters, "iters", 0, fmt.Sprintf("iterations of dm, dc and dsa (0: %d)", defaultDistillIters))
	f.StringVar(&o.Out, "out", "", "output folder (required)")
	f.IntVar(&o.EvalEvery, "eval-every", 0, "also evaluate every K iterations (0: only at the end)")
	f.StringSliceVar(&o.EvalModels, "eval-models", []string{"convnet"}, "models to evaluate on the synthetic set, comma-separated ("+strings.Join(nn.ModelNames(), ", ")+"), or krr: kernel ridge regression with the set's kernel (KIP's evaluation; --kernel and its flags, default the fully connected NTK), or unrolled (dd, sldd, ld, linba: fresh --model networks trained by exactly the --unroll full-batch steps at the learned step size, whatever --eval-lr says; DD's evaluation; one step per epoch in report.json), or idc (ConvNets trained by IDC's recipe: 1000 epochs unless --eval-epochs, batch 64, lr ×0.2 at 2/3 and 5/6, CutMix 0.5, DSA without cutout)")
	f.IntVar(&o.EvalRuns, "eval-runs", 5, "models trained per evaluation (0: no evaluation)")
	f.IntVar(&o.EvalEpochs, "eval-epochs", 0, "training epochs per evaluation model (0: as the reference code: 1000 on mnist; elsewhere 1000 for dsa, dm, mtt, ftd, tesla, 600 for cafe, 300 for the rest)")
	f.Float64Var(&o.EvalLR, "eval-lr", 0, "learning rate of the evaluation models (0: the learned step size for mtt/ftd/tesla/dd/sldd/ld, as their reference code evaluates; 0.01 otherwise)")
	f.Uint64Var(&o.Seed, "seed", 1, "random seed (the whole run is reproducible from it)")
	f.BoolVar(&o.Resume, "resume", false, "continue from DIR/checkpoint.npz (a fresh start when there is none)")
	f.IntVar(&o.CheckpointEvery, "checkpoint-every", 50, "write DIR/checkpoint.npz every K iterations")
	f.StringVar(&o.Model, "model", "", "network used for matching and for the coreset feature space (default convnet)")
	f.IntVar(&o.BatchReal, "batch-real", 0, "real images per class per iteration (0: 256)")
	f.Float64Var(&o.LRImg, "lr-img", 0, "learning rate of the synthetic images (0: dm 1.0, dc/dsa 0.1)")
	f.IntVar(&o.ImageSteps, "image-steps", 0, "dm: image updates per iteration against its targets (0 or 1: one, the reference's; with DP the extra steps cost no privacy)")
	f.IntVar(&o.OuterLoop, "outer-loop", 0, "dc/dsa image updates per network (0: by IPC, as the reference)")
	f.IntVar(&o.InnerLoop, "inner-loop", 0, "dc/dsa network epochs between image updates (0: by IPC)")
	f.StringVar(&o.Init, "init", "", "initial synthetic images: real, noise, or mean (each class's mean image pooled over 4×4 blocks, plus jitter; dm, dc, dsa) (default: noise for dc, real otherwise)")
	f.StringVar(&o.DSAStrategy, "dsa-strategy", "", "augmentation of dm, dsa and evaluation (default by data set; none to turn off)")
	f.StringVar(&o.DCAugment, "dc-augment", "", dcAugmentHelp)
	f.StringVar(&o.MatchDistance, "match-distance", "", "dc/dsa gradient distance: "+strings.Join(distill.Distances(), " or ")+" (default layerwise)")
	f.BoolVar(&o.ClassSum, "class-sum", false, "dc/dsa: match the sum of the per-class gradients (DCC, survey eq. 25)")
	f.BoolVar(&o.InnerReal, "inner-real", false, "dc/dsa: train the matching network on real data between image updates (IDC, eq. 27)")
	f.IntVar(&o.FeatureEpochs, "feature-epochs", 0, "epochs of the herding/kcenter feature network on the real data (0: 1)")
	f.IntVar(&o.TrainLimit, "train-limit", 0, "use only the first N training images (0: all)")
	f.IntVar(&o.TestLimit, "test-limit", 0, "test on only the first N test images (0: all)")
	f.StringVar(&o.Buffer, "buffer", "", "mtt/ftd/tesla: folder of expert trajectories (from `fedsim distill buffer`)")
	f.IntVar(&o.SynSteps, "syn-steps", 0, "mtt/ftd/tesla: student steps per iteration (0: 50 at IPC 1, 30 otherwise)")
	f.IntVar(&o.ExpertEpochs, "expert-epochs", 0, "mtt/ftd/tesla: expert epochs matched (0: 2)")
	f.IntVar(&o.MaxStartEpoch, "max-start-epoch", 0, "mtt/ftd/tesla: start epochs are drawn below this (0: 2 at IPC 1, 20 at IPC ≤ 10, 40 above)")
	f.IntVar(&o.BatchSyn, "batch-syn", 0, "mtt/ftd/tesla: synthetic images per student step (0: all)")
	f.Float64Var(&o.LRLR, "lr-lr", 0, "mtt/ftd/tesla: learning rate of the learned step size (0: 1e-7 at IPC 1, 1e-5 otherwise); dd/sldd/ld/gtn: Adam rate of log step size (0: 0.01)")
	f.Float64Var(&o.LRInit, "lr-teacher", 0, "mtt/ftd/tesla, dd/sldd/ld/gtn: initial student (inner-loop) step size (0: 0.01)")
	f.Float64Var(&o.StartNoise, "start-noise", 0, "ftd: relative noise on the starting weights (0: 0.01 for ftd)")
	f.StringVar(&o.Labels, "labels", "", "mtt/ftd/tesla: hard or soft (learned logits from an expert; default soft for tesla)")
	f.Float64Var(&o.LRLabel, "lr-label", 0, "mtt/ftd/tesla: learning rate of soft labels (0: 2)")
	f.BoolVar(&o.FixedAdjoint, "fixed-adjoint", false, "tesla: the paper's first-order pass (drops the Hessian terms) instead of the exact one")
	f.BoolVar(&o.ZCA, "zca", false, "distill in ZCA-whitened space (MTT/KIP); synthetic.npz stays in the normalized space and zca.npz holds the transform")
	f.Float64Var(&o.ZCAReg, "zca-reg", 0, fmt.Sprintf("ZCA regularisation ε (0: %g)", distill.DefaultZCAReg))
	f.StringVar(&o.Kernel, "kernel", "", "kip: fc or conv (closed-form ReLU network kernel; default fc)")
	f.IntVar(&o.KernelDepth, "kernel-depth", 0, "kip: hidden layers of the kernel's network (0: 3 for fc, 2 for conv)")
	f.BoolVar(&o.NNGP, "nngp", false, "kip: NNGP kernel instead of the NTK")
	f.Float64Var(&o.KRRReg, "krr-reg", 0, "kip/rfad/frepo: ridge relative to the mean kernel diagonal (0: 1e-6; rfad 1e-4)")
	f.BoolVar(&o.LearnLabels, "learn-labels", false, "kip/rfad/frepo: also learn the labels (written as y_soft logits)")
	f.BoolVar(&o.LRCosine, "lr-cosine", false, "kip/rfad/frepo: decay the Adam rates of images and labels to zero along a half cosine over --iters (default: constant, as KIP's code)")
	f.IntVar(&o.RFModels, "rf-models", 0, "rfad: random networks per iteration; frepo: pool size (0: 4)")
	f.IntVar(&o.RFWidth, "rf-width", 0, "rfad: channels of the random networks (0: 64)")
	f.IntVar(&o.MaxAge, "max-age", 0, "frepo: online steps before a pool network is re-initialised (0: 100)")
	f.IntVar(&o.Unroll, "unroll", 0, "dd/sldd/ld: unrolled inner SGD steps (0: 10)")
	f.Float64Var(&o.UnrollMom, "unroll-momentum", 0, "dd/sldd/ld: inner-loop momentum (Deng & Russakovsky; 0: plain SGD)")
	f.IntVar(&o.UnrollSeg, "unroll-segment", 0, "dd/sldd/ld: back-propagate K unrolled steps at a time with recomputation (bounded memory for long unrolls; 0: all at once)")
	f.IntVar(&o.Bases, "bases", 0, "linba: memory bases (0: the most that fit the budget of --ipc images per class)")
	f.IntVar(&o.Formations, "formations", 0, "linba: images decoded per class (0: 4 × --ipc)")
	f.IntVar(&o.IDCFactor, "idc-factor", 0, "idc: multi-formation factor f, f² decoded images per stored image (0: 2; 1 is IDC-I); idc also reads --outer-loop (image-update rounds per network, 0: 100), --inner-loop (network epochs of --idc-net-data real images per round, 0: 1), --batch-real (0: 64) and --lr-img (0: IDC's, by data set and IPC)")
	f.StringVar(&o.IDCMetric, "idc-metric", "", "idc: gradient distance l1, mse, layerwise or magnitude (default l1 for mnist/fmnist, mse otherwise)")
	f.BoolVar(&o.IDCMatchFC, "idc-match-fc", false, "idc: also match fully connected weights with l1/mse (default: convolution kernels only)")
	f.IntVar(&o.IDCNetData, "idc-net-data", 0, "idc: real images per network-training epoch between rounds (0: 500; 2000 for cifar10)")
	f.StringVar(&o.IDCMixup, "idc-mixup", "", "idc: cut (CutMix) or none for the network updates (default cut; none for mnist with factor > 1)")
	f.Float64Var(&o.IDCMixProb, "idc-mix-prob", 0, "idc: CutMix probability per batch (0: 0.5)")
	f.IntVar(&o.IDCBatchSynMax, "idc-batch-syn-max", 0, "idc: at most this many decoded images per class per matching (0: 128)")
	f.IntVar(&o.GenZDim, "gen-zdim", 0, "gtn/itgan: generator code size (0: gtn 32, itgan 64)")
	f.IntSliceVar(&o.GenHidden, "gen-hidden", nil, "gtn/itgan: generator hidden widths, comma-separated (default: gtn 64, itgan 256,512)")
	f.Float64Var(&o.GenLR, "gen-lr", 0, "gtn: Adam learning rate of the generator weights (0: 1e-3; --lr-img: of the codes)")
	f.IntVar(&o.GenWarm, "gtn-warm-steps", 0, "gtn: steps fitting generator and codes to real images first, with --init real (0: 500)")
	f.BoolVar(&o.GTNOverBudget, "gtn-over-budget", false, "gtn: allow a generator and codes larger than the float budget of --ipc images per class")
	f.BoolVar(&o.ITGANOverBudget, "itgan-over-budget", false, "itgan: allow codes and generator larger than the float budget of --ipc images per class (the paper counts only the codes)")
	f.IntVar(&o.ITGANEpochs, "itgan-epochs", 0, "itgan: GAN training epochs on the real data (0: 4)")
	f.IntVar(&o.ITGANBatch, "itgan-batch", 0, "itgan: GAN batch size (0: 128)")
	f.Float64Var(&o.ITGANLR, "itgan-lr", 0, "itgan: GAN Adam learning rate (0: 5e-4)")
	f.IntSliceVar(&o.ITGANDisc, "itgan-disc-hidden", nil, "itgan: discriminator hidden widths (default 512,256)")
	f.IntVar(&o.ITGANInvert, "itgan-invert-steps", 0, "itgan: Adam steps inverting the real images into codes (0: 500)")
	f.Float64Var(&o.ITGANInvertLR, "itgan-invert-lr", 0, "itgan: learning rate of the inversion (0: 0.05)")
	f.Float64Var(&o.ITGANRec, "itgan-rec", 0, "itgan: weight of the distance to the inverted real image (0: 0.01; negative: off)")
	f.IntVar(&o.HaBaBases, "haba-bases", 0, "haba: bases per class (0: the most that fit the budget next to the hallucinators)")
	f.IntVar(&o.HaBaHallucinators, "haba-hallucinators", 0, "haba: hallucinator networks shared by all classes (0: 5)")
	f.IntVar(&o.HaBaWidth, "haba-width", 0, "haba: hallucinator feature channels (0: the image channels)")
	f.IntVar(&o.HaBaBudgetIPC, "haba-budget-ipc", 0, "haba: charge the stored floats against this many plain images per class instead of --ipc (an explicit override)")
	f.Float64Var(&o.HaBaLRHal, "haba-lr-hal", 0, "haba: SGD learning rate of the hallucinators (0: 100)")
	f.Float64Var(&o.HaBaLambda, "haba-lambda", 0, "haba: weight λ of the adversarial diversity term (0: 0.1; negative: off)")
	f.IntVar(&o.KFS.Codes, "kfs-codes", 0, "kfs: latent codes per class (0: as many as fit the budget of --ipc images per class)")
	f.IntVar(&o.KFS.Decoders, "kfs-decoders", 0, "kfs: decoders shared by all classes (0: 8); a class decodes to codes × decoders images")
	f.IntVar(&o.KFS.CodeChannels, "kfs-code-channels", 0, "kfs: channels of a latent code (0: the image channels)")
	f.IntVar(&o.KFS.Downsample, "kfs-downsample", 0, "kfs: image size / code size, 1, 2, 4 or 8 (0: 2)")
	f.IntVar(&o.KFS.Width, "kfs-width", 0, "kfs: hidden channels of a decoder (0: 8)")
	f.Float64Var(&o.KFS.LRCode, "kfs-lr-code", 0, "kfs: Adam learning rate of the codes (0: 0.01)")
	f.Float64Var(&o.KFS.LRDecoder, "kfs-lr-decoder", 0, "kfs: Adam learning rate of the decoders (0: 0.001)")
	f.Float64Var(&o.KFS.Contrast, "kfs-contrast", 0, "kfs: weight of the class-prototype contrastive term (0: off)")
	f.Float64Var(&o.KFS.Temperature, "kfs-temperature", 0, "kfs: temperature of the contrastive term (0: 0.1)")
	f.IntVar(&o.KFS.BatchCodes, "kfs-batch-codes", 0, "kfs: codes per class decoded per iteration (0: all)")
	f.IntVar(&o.KFS.MaxFloats, "kfs-max-floats", 0, "kfs: budget of stored floats, overriding classes × --ipc × C×H×W (0: no override)")
	f.BoolVar(&o.Quiet, "quiet", false, "no progress display")
	cmd.AddCommand(newDistillBufferCmd(stdout, stderr))
	return cmd
}

// EvalRecord is one evaluation of a synthetic set with one model.
type EvalRecord struct {
	Iteration int     `json:"iteration"`
	Model     string  `json:"model"`
	Runs      int     `json:"runs"`
	Epochs    int     `json:"epochs"`
	LR        float64 `json:"lr"`
	// Augmentation is what the models trained with: "dsa:STRATEGY",
	// "dc:STRATEGY" (DC's own) or "none"; empty for the krr and unrolled
	// evaluations, which have none.
	Augmentation string    `json:"augmentation,omitempty"`
	Mean         float64   `json:"acc_mean"`
	Std          float64   `json:"acc_std"`
	Accs         []float64 `json:"accs"`
	WallS        float64   `json:"wall_s"`
}

// DistillReport is report.json.
type DistillReport struct {
	Dataset     string         `json:"dataset"`
	Method      string         `json:"method"`
	IPC         int            `json:"ipc"`
	Iterations  int            `json:"iterations"`
	Seed        uint64         `json:"seed"`
	TrainImages int            `json:"train_images"`
	TestImages  int            `json:"test_images"`
	Config      distill.Config `json:"hyper_parameters"`
	ResumedAt   int            `json:"resumed_at,omitempty"`
	FinalLoss   *float64       `json:"final_loss,omitempty"`
	StepSize    float64        `json:"learned_step_size,omitempty"`
	SecPerIter  float64        `json:"seconds_per_iteration,omitempty"`
	// SecPerIterMedian is the median time of the iterations after the
	// first (which warms pools and caches), the statistic benchmarks
	// compare; set when at least two iterations ran.
	SecPerIterMedian float64      `json:"seconds_per_iteration_median,omitempty"`
	DistillWallS     float64      `json:"distill_wall_s"`
	EvalWallS        float64      `json:"eval_wall_s"`
	WallS            float64      `json:"wall_s"`
	Evals            []EvalRecord `json:"evaluations"`
}

// dcAugmentHelp is the help of --dc-augment in distill and eval.
const dcAugmentHelp = "evaluate with DC's own augmentation instead of DSA: one of the operations per image, joined by _ from crop, scale, rotate, noise (crop_scale_rotate: the DC reference's MNIST evaluation)"

// validateEvalAugment checks the evaluation's augmentation flags: a DSA
// strategy and DC's augmentation, which replaces DSA when given.
func validateEvalAugment(dsa, dc string) error {
	if _, err := data.ParseDSAStrategy(dsa); err != nil {
		return usagef("--dsa-strategy: %v", err)
	}
	if _, err := data.NewDCAug(dc); err != nil {
		return usagef("--dc-augment: %v", err)
	}
	return nil
}

// validateEvalFlags checks the evaluation flags shared by distill and eval.
func validateEvalFlags(models []string, runs, epochs int, lr float64, shape []int, classes int) error {
	if !(lr >= 0) || math.IsInf(lr, 0) {
		return usagef("--eval-lr %g must be a non-negative number (0: the default)", lr)
	}
	if runs < 0 {
		return usagef("--eval-runs %d must not be negative", runs)
	}
	if epochs < 0 {
		return usagef("--eval-epochs %d must not be negative", epochs)
	}
	if runs > 0 && len(models) == 0 {
		return usagef("--eval-models is empty")
	}
	for _, m := range models {
		if m == distill.EvalKRR || m == distill.EvalUnrolled || m == distill.EvalIDC {
			continue // kernel ridge regression, the meta-learning inner loop and IDC's ConvNet recipe
		}
		if _, err := nn.New[float32](m, shape, classes, tensor.NewRNG(0, 0)); err != nil {
			return usageError{fmt.Errorf("--eval-models: %w", err)}
		}
	}
	return nil
}

// RunDistill runs `fedsim distill` with o.
func RunDistill(ctx context.Context, o *DistillOptions, stdout, stderr io.Writer) error {
	start := time.Now()
	info, err := data.Lookup(o.Dataset)
	if err != nil {
		return usageError{err}
	}
	o.Dataset = info.Name
	o.Method = strings.ToLower(strings.TrimSpace(o.Method))
	switch {
	case !slices.Contains(distill.Methods(), o.Method):
		return usagef("--method %q is not one of %s", o.Method, strings.Join(distill.Methods(), ", "))
	case o.IPC < 1:
		return usagef("--ipc %d must be at least 1", o.IPC)
	case o.Iters < 0:
		return usagef("--iters %d must not be negative", o.Iters)
	case o.Out == "":
		return usagef("--out is required: the folder for synthetic.npz, grid.png and report.json")
	case distill.IsTrajectoryMethod(o.Method) && o.Buffer == "":
		return usagef("--method %s needs --buffer DIR: expert trajectories from `fedsim distill buffer`", o.Method)
	case o.EvalEvery < 0:
		return usagef("--eval-every %d must not be negative", o.EvalEvery)
	case o.CheckpointEvery < 0:
		return usagef("--checkpoint-every %d must not be negative", o.CheckpointEvery)
	case o.TrainLimit < 0 || o.TestLimit < 0:
		return usagef("--train-limit and --test-limit must not be negative")
	case !(o.ZCAReg >= 0) || math.IsInf(o.ZCAReg, 0):
		return usagef("--zca-reg %g must be a non-negative number (0: %g)", o.ZCAReg, distill.DefaultZCAReg)
	case o.ZCAReg > 0 && !o.ZCA:
		return usagef("--zca-reg %g needs --zca", o.ZCAReg)
	}
	if o.ZCA && o.ZCAReg == 0 {
		o.ZCAReg = distill.DefaultZCAReg
	}
	if o.Iters == 0 {
		o.Iters = defaultDistillIters
	}
	explicitEvalEpochs := o.EvalEpochs
	if o.EvalEpochs == 0 {
		o.EvalEpochs = distill.DefaultEvalEpochs(o.Dataset, o.Method)
	}
	shape := []int{info.Channels, info.Height, info.Width}
	if err := validateEvalAugment(o.DSAStrategy, o.DCAugment); err != nil {
		return err
	}
	if err := validateEvalFlags(o.EvalModels, o.EvalRuns, o.EvalEpochs, o.EvalLR, shape, info.Classes); err != nil {
		return err
	}
	if o.LRCosine && !distill.IsKRRMethod(o.Method) {
		return usagef("--lr-cosine decays the Adam rates of kip, rfad and frepo; --method %s does not read it", o.Method)
	}
	if slices.Contains(o.EvalModels, distill.EvalUnrolled) && !distill.IsMetaMethod(o.Method) {
		return usagef("--eval-models %s trains networks by the inner loop of dd, sldd, ld and linba; %s has none (use a network such as convnet)", distill.EvalUnrolled, o.Method)
	}
	cfg := distill.Config{Method: o.Method, IPC: o.IPC, Seed: o.Seed, Model: o.Model, BatchReal: o.BatchReal,
		LRImg: o.LRImg, ImageSteps: o.ImageSteps, OuterLoop: o.OuterLoop, InnerLoop: o.InnerLoop, Init: o.Init, DSAStrategy: o.DSAStrategy,
		FeatureEpochs: o.FeatureEpochs,
		Match:         distill.MatchConfig{Distance: o.MatchDistance, ClassSum: o.ClassSum, InnerReal: o.InnerReal},
		TM: distill.TMConfig{Buffer: o.Buffer, SynSteps: o.SynSteps, ExpertEpochs: o.ExpertEpochs, MaxStartEpoch: o.MaxStartEpoch,
			BatchSyn: o.BatchSyn, LRInit: o.LRInit, LRLR: o.LRLR, StartNoise: o.StartNoise, Labels: o.Labels, LRLabel: o.LRLabel,
			FixedAdjoint: o.FixedAdjoint},
		ZCAReg: o.ZCAReg,
		KRR: distill.KRRConfig{Kernel: o.Kernel, Depth: o.KernelDepth, NNGP: o.NNGP, Reg: o.KRRReg, LearnLabels: o.LearnLabels,
			LRLabel: o.LRLabel, Models: o.RFModels, Width: o.RFWidth, MaxAge: o.MaxAge}}
	if o.LRCosine {
		// The decay spans the whole run, so a resumed run must ask for the
		// same --iters: the checkpoint's configuration check enforces it.
		cfg.KRR.CosineIters = o.Iters
	}
	if distill.IsMetaMethod(o.Method) {
		cfg.Meta = distill.MetaConfig{Steps: o.Unroll, LRInit: o.LRInit, LRLR: o.LRLR, LRLabel: o.LRLabel, Momentum: o.UnrollMom, Segment: o.UnrollSeg,
			Bases: o.Bases, Formations: o.Formations}
	}
	if !distill.IsKRRMethod(o.Method) {
		cfg.KRR = distill.KRRConfig{}
	}
	switch o.Method {
	case distill.MethodIDC:
		cfg.IDC = distill.IDCConfig{Factor: o.IDCFactor, Metric: o.IDCMetric, MatchFC: o.IDCMatchFC, NetData: o.IDCNetData,
			Mixup: o.IDCMixup, MixProb: o.IDCMixProb, BatchSynMax: o.IDCBatchSynMax}
	case distill.MethodGTN:
		cfg.GTN = distill.GTNConfig{ZDim: o.GenZDim, Hidden: o.GenHidden, Steps: o.Unroll, Momentum: o.UnrollMom, LRInit: o.LRInit, LRLR: o.LRLR,
			LRGen: o.GenLR, WarmSteps: o.GenWarm, OverBudget: o.GTNOverBudget}
	case distill.MethodITGAN:
		cfg.ITGAN = distill.ITGANConfig{ZDim: o.GenZDim, Hidden: o.GenHidden, DiscHidden: o.ITGANDisc, GANEpochs: o.ITGANEpochs, GANBatch: o.ITGANBatch,
			GANLR: o.ITGANLR, InvertSteps: o.ITGANInvert, InvertLR: o.ITGANInvertLR, Rec: o.ITGANRec, OverBudget: o.ITGANOverBudget}
	case distill.MethodHaBa:
		cfg.HaBa = distill.HaBaConfig{Bases: o.HaBaBases, Hallucinators: o.HaBaHallucinators, Width: o.HaBaWidth, BudgetIPC: o.HaBaBudgetIPC,
			LRHal: o.HaBaLRHal, Lambda: o.HaBaLambda}
	case distill.MethodKFS:
		cfg.KFS = o.KFS
	}
	d, err := distill.New(cfg, o.Dataset)
	if err != nil {
		return usageError{err}
	}
	cfg = d.Config()
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return fmt.Errorf("cannot create --out folder: %w", err)
	}
	ckPath := filepath.Join(o.Out, "checkpoint.npz")
	if d.Iterative() && !o.Resume {
		if _, err := os.Stat(ckPath); err == nil {
			return usagef("%s exists: pass --resume to continue that run, or choose another --out", ckPath)
		}
	}

	train, err := data.Load(o.Dataset, "train", o.DataDir)
	if err != nil {
		return err
	}
	if o.TrainLimit > 0 && o.TrainLimit < train.Len() {
		train = train.Slice(o.TrainLimit)
	}
	for c, n := range train.Histogram() {
		if n < o.IPC {
			return usagef("--ipc %d is more than class %d of %s has (%d training images)", o.IPC, c, o.Dataset, n)
		}
	}
	// With --zca the distiller works on whitened images; every set that
	// leaves it (files, grid, evaluation) is mapped back to the normalized
	// space first, and the evaluation whitens again as MTT does.
	var zca *distill.ZCA
	export := func(s *distill.SyntheticSet) (*distill.SyntheticSet, error) { return s.Clone(), nil }
	if o.ZCA {
		if zca, err = distill.FitZCA(train, o.ZCAReg); err != nil {
			return err
		}
		if train, err = zca.Dataset(train); err != nil {
			return err
		}
		if err := zca.Save(filepath.Join(o.Out, "zca.npz")); err != nil {
			return err
		}
		export = zca.ExportSet
	}
	var test *data.Dataset
	if o.EvalRuns > 0 {
		if test, err = data.Load(o.Dataset, "test", o.DataDir); err != nil {
			return err
		}
		if o.TestLimit > 0 && o.TestLimit < test.Len() {
			test = test.Slice(o.TestLimit)
		}
	}

	rep := &DistillReport{Dataset: o.Dataset, Method: o.Method, IPC: o.IPC, Seed: o.Seed, TrainImages: train.Len(), Config: cfg}
	if test != nil {
		rep.TestImages = test.Len()
	}
	evaluate := func(it int, syn *distill.SyntheticSet) error {
		lr, learned := o.EvalLR, 0.0
		if s, ok := d.(interface{ StepSize() float64 }); ok {
			learned = s.StepSize()
			if lr == 0 {
				lr = learned
			}
		}
		for _, m := range o.EvalModels {
			if m == distill.EvalKRR {
				r, err := evalKRR(ctx, cfg.KRR, syn, test, zca)
				if err != nil {
					return err
				}
				r.Iteration = it
				rep.Evals = append(rep.Evals, r)
				rep.EvalWallS += r.WallS
				fmt.Fprintf(stdout, "iteration %d  krr  test accuracy %.4f  (kernel ridge regression on the set)\n", it, r.Mean)
				continue
			}
			if m == distill.EvalUnrolled {
				r, err := evalUnrolled(ctx, syn, test, zca, distill.UnrolledEvalFor(d.Config(), learned), o.EvalRuns, o.Seed)
				if err != nil {
					return err
				}
				r.Iteration = it
				rep.Evals = append(rep.Evals, r)
				rep.EvalWallS += r.WallS
				fmt.Fprintf(stdout, "iteration %d  unrolled  test accuracy %.4f ± %.4f  (%d fresh %s × %d full-batch steps at step size %.4g, the inner loop)\n", it, r.Mean, r.Std, r.Runs, d.Config().Model, r.Epochs, r.LR)
				continue
			}
			if m == distill.EvalIDC {
				lr = o.EvalLR // IDC's recipe, not the learned step size
			}
			epochs := evalEpochs(m, explicitEvalEpochs, o.Dataset, o.Method)
			r, err := evalModel(ctx, syn, test, zca, evalSpec{model: m, runs: o.EvalRuns, epochs: epochs, lr: lr, dsaStrategy: o.DSAStrategy, dcAugment: o.DCAugment, seed: o.Seed}, o.Quiet, stderr)
			if err != nil {
				return err
			}
			r.Iteration = it
			rep.Evals = append(rep.Evals, r)
			rep.EvalWallS += r.WallS
			fmt.Fprintf(stdout, "iteration %d  %s  test accuracy %.4f ± %.4f  (%d models × %d epochs, augmentation %s)\n", it, m, r.Mean, r.Std, r.Runs, r.Epochs, r.Augmentation)
		}
		return nil
	}

	if d.Iterative() {
		rep.Iterations = o.Iters
		fmt.Fprintf(stdout, "distilling %s with %s: %d images per class, %d iterations, seed %d\n", o.Dataset, o.Method, o.IPC, o.Iters, o.Seed)
	} else {
		fmt.Fprintf(stdout, "selecting %d images per class of %s with %s, seed %d\n", o.IPC, o.Dataset, o.Method, o.Seed)
	}
	var bar *progress
	var stepStart, lastMark time.Time
	var stepTimes []float64 // seconds of each iteration, evaluations left out
	firstIt := -1
	var lastLoss float64
	distillStart := time.Now()
	var evalDuring time.Duration
	rc := distill.RunConfig{Iterations: o.Iters, CheckpointPath: ckPath, CheckpointEvery: o.CheckpointEvery, Resume: o.Resume,
		BeforeFirst: func(first int) {
			firstIt = first
			stepStart = time.Now()
			lastMark = stepStart
			label := "distill"
			if first > 0 {
				label = fmt.Sprintf("distill (resumed after %d)", first)
				// Said when it happens, so a long run's log (appended to by
				// every resumption) shows where each part started.
				fmt.Fprintf(stdout, "resumed from the checkpoint after %d iterations\n", first)
			}
			bar = newProgress(stderr, label, o.Iters-first, o.Quiet)
		},
		AfterStep: func(it int, loss float64) error {
			lastLoss = loss
			stepTimes = append(stepTimes, time.Since(lastMark).Seconds())
			defer func() { lastMark = time.Now() }() // after any evaluation below
			done := it + 1 - firstIt
			rate := float64(done) / max(time.Since(stepStart).Seconds()-evalDuring.Seconds(), 1e-9)
			bar.update(done, fmt.Sprintf("loss %.4f %.3g it/s", loss, rate))
			if o.EvalEvery > 0 && (it+1)%o.EvalEvery == 0 && it+1 < o.Iters && o.EvalRuns > 0 {
				t0 := time.Now()
				syn, err := export(d.Synthetic())
				if err == nil {
					err = evaluate(it+1, syn)
				}
				evalDuring += time.Since(t0)
				return err
			}
			return nil
		}}
	resumedAt, err := distill.Run(ctx, d, train, rc)
	if bar != nil {
		bar.finish()
	}
	if err != nil {
		return err
	}
	rep.ResumedAt = resumedAt
	rep.DistillWallS = time.Since(distillStart).Seconds() - evalDuring.Seconds()
	if firstIt >= 0 {
		rep.SecPerIter = (time.Since(stepStart).Seconds() - evalDuring.Seconds()) / float64(o.Iters-firstIt)
	}
	if len(stepTimes) >= 2 {
		rep.SecPerIterMedian = median(stepTimes[1:])
	}
	if d.Iterative() {
		if resumedAt > 0 && firstIt < 0 { // the checkpoint held every iteration
			fmt.Fprintf(stdout, "resumed from the checkpoint after %d iterations\n", resumedAt)
		}
		if firstIt >= 0 {
			rep.FinalLoss = &lastLoss
			fmt.Fprintf(stdout, "distilled in %.1f s (%.3f s per iteration), final loss %.4f\n", rep.DistillWallS, rep.SecPerIter, lastLoss)
		}
	}
	if s, ok := d.(interface{ StepSize() float64 }); ok {
		rep.StepSize = s.StepSize()
		fmt.Fprintf(stdout, "learned student step size %.6g\n", rep.StepSize)
	}
	syn, err := export(d.Synthetic())
	if err != nil {
		return err
	}
	if err := syn.Save(filepath.Join(o.Out, "synthetic.npz")); err != nil {
		return err
	}
	// Factorized sets (linba) also write their factors, in the space the
	// method worked in (whitened with --zca).
	if f, ok := d.(interface{ SaveFactors(string) error }); ok && distill.HasFactors(o.Method) {
		if err := f.SaveFactors(filepath.Join(o.Out, "factors.npz")); err != nil {
			return err
		}
	}
	if err := distill.WriteGrid(filepath.Join(o.Out, "grid.png"), syn); err != nil {
		return err
	}
	if o.EvalRuns > 0 {
		it := 0
		if d.Iterative() {
			it = o.Iters
		}
		if err := evaluate(it, syn); err != nil {
			return err
		}
	}
	rep.WallS = time.Since(start).Seconds()
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(o.Out, "report.json"), append(b, '\n')); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "wrote %s, grid.png and report.json (%.0f s)\n", filepath.Join(o.Out, "synthetic.npz"), rep.WallS)
	return err
}

// evalSpec says how evalModel trains its fresh models.
type evalSpec struct {
	model        string
	runs, epochs int
	lr           float64 // 0: the protocol's default
	// dsaStrategy augments the training batches: "" is the protocol's
	// default (the data set's, or IDC's for idc), "none" turns it off.
	dsaStrategy string
	// dcAugment, if set and not "none", replaces DSA by DC's augmentation.
	dcAugment string
	seed      uint64
}

// evalModel trains s.runs fresh s.model networks on syn (in the
// normalized space) and tests them on test, with a progress display; with
// zca, both are whitened first.
func evalModel(ctx context.Context, syn *distill.SyntheticSet, test *data.Dataset, zca *distill.ZCA, s evalSpec, quiet bool, stderr io.Writer) (EvalRecord, error) {
	t0 := time.Now()
	model, runs, epochs := s.model, s.runs, s.epochs
	cfg := distill.DefaultEvalConfig(test.Name)
	cfg.Model = model
	if model == distill.EvalIDC {
		cfg = distill.IDCEvalConfig(test.Name, epochs)
	}
	cfg.Runs, cfg.Epochs, cfg.Seed, cfg.Context, cfg.ZCA = runs, epochs, s.seed, ctx, zca
	if s.lr > 0 {
		cfg.LR = s.lr
	}
	if s.dsaStrategy != "" {
		cfg.DSAStrategy = s.dsaStrategy
	}
	cfg.DCAugment = s.dcAugment
	augmentation, err := cfg.Augmentation(test.Name)
	if err != nil {
		return EvalRecord{}, err
	}
	bar := newProgress(stderr, "eval "+model, runs*epochs, quiet)
	cfg.Progress = func(run int, p nn.Progress) {
		if p.EpochDone {
			bar.update(run*epochs+p.Epoch+1, fmt.Sprintf("model %d/%d epoch %d/%d loss %.4f", run+1, runs, p.Epoch+1, epochs, p.EpochLoss))
		}
	}
	mean, std, accs, err := distill.Evaluate(syn, test, cfg)
	bar.finish()
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return EvalRecord{}, fmt.Errorf("evaluation of %s interrupted: %w", model, err)
		}
		return EvalRecord{}, err
	}
	return EvalRecord{Model: model, Runs: runs, Epochs: epochs, LR: cfg.LR, Augmentation: augmentation, Mean: mean, Std: std, Accs: accs, WallS: time.Since(t0).Seconds()}, nil
}

// evalEpochs returns the epochs each network of model trains for: the
// explicit --eval-epochs if given, else IDC's recipe length for idc and
// the protocol's default (distill.DefaultEvalEpochs; fedsim eval does not
// know the set's method and passes "") for the others.
func evalEpochs(model string, explicit int, dataset, method string) int {
	switch {
	case explicit > 0:
		return explicit
	case model == distill.EvalIDC:
		return distill.IDCEvalEpochs
	}
	return distill.DefaultEvalEpochs(dataset, method)
}

// evalUnrolled evaluates syn by the meta-learning methods' own protocol:
// fresh networks trained by exactly the inner loop u (EvaluateUnrolled).
func evalUnrolled(ctx context.Context, syn *distill.SyntheticSet, test *data.Dataset, zca *distill.ZCA, u distill.UnrolledEval, runs int, seed uint64) (EvalRecord, error) {
	t0 := time.Now()
	mean, std, accs, err := distill.EvaluateUnrolled(ctx, syn, test, u, runs, seed, zca)
	if err != nil {
		return EvalRecord{}, err
	}
	return EvalRecord{Model: distill.EvalUnrolled, Runs: runs, Epochs: u.Steps, LR: u.LR, Mean: mean, Std: std, Accs: accs, WallS: time.Since(t0).Seconds()}, nil
}

// evalKRR evaluates syn by kernel ridge regression with the kernel of krr
// (KIP's evaluation; zero fields: KIP's defaults), in the whitened space
// when the run used --zca.
func evalKRR(ctx context.Context, krr distill.KRRConfig, syn *distill.SyntheticSet, test *data.Dataset, zca *distill.ZCA) (EvalRecord, error) {
	t0 := time.Now()
	if zca != nil {
		var err error
		if syn, err = zca.ImportSet(syn); err != nil {
			return EvalRecord{}, err
		}
		if test, err = zca.Dataset(test); err != nil {
			return EvalRecord{}, err
		}
	}
	acc, err := distill.EvaluateKRR(ctx, krr, syn, test, 0)
	if err != nil {
		return EvalRecord{}, err
	}
	return EvalRecord{Model: distill.EvalKRR, Runs: 1, Mean: acc, Accs: []float64{acc}, WallS: time.Since(t0).Seconds()}, nil
}

// BufferOptions are the flags of `fedsim distill buffer`.
type BufferOptions struct {
	Dataset, DataDir string
	Model            string
	Experts, Epochs  int
	LR               float64
	Batch            int
	DSAStrategy      string
	Seed             uint64
	Out              string
	// TrainLimit and TestLimit use only the first N images (0: all);
	// TestLimit < 0 skips the per-epoch test.
	TrainLimit, TestLimit int
	Quiet                 bool
}

func newDistillBufferCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &BufferOptions{}
	cmd := &cobra.Command{
		Use:   "buffer",
		Short: "Train expert networks and store their training trajectories for mtt, ftd and tesla",
		Long: `buffer trains --experts networks on the real training data with plain SGD
(no momentum, no weight decay, DSA augmentation on every batch, as MTT's
buffer.py) and stores each one's parameters after every epoch (epochs
0…--epochs) in --out: compressed expert_NNN.traj files and index.json.
MTT trains 100 experts × 50 epochs; the defaults here are smaller. Running
it again on the same folder with the same settings adds the missing experts.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return RunBuffer(c.Context(), o, stdout, stderr)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Dataset, "dataset", "mnist", "data set: "+strings.Join(data.Names(), ", "))
	f.StringVar(&o.DataDir, "data-dir", "", "folder with the data set's files (overrides the built-in locations)")
	f.StringVar(&o.Model, "model", "convnet", "expert network (must be the model distillation uses)")
	f.IntVar(&o.Experts, "experts", 5, "expert trajectories")
	f.IntVar(&o.Epochs, "epochs", 15, "epochs per expert (MTT: 50)")
	f.Float64Var(&o.LR, "lr", 0.01, "SGD learning rate (MTT's lr_teacher)")
	f.IntVar(&o.Batch, "batch", 256, "training batch size")
	f.StringVar(&o.DSAStrategy, "dsa-strategy", "", "augmentation (default by data set; none to turn off)")
	f.Uint64Var(&o.Seed, "seed", 1, "random seed")
	f.StringVar(&o.Out, "out", "", "buffer folder (required)")
	f.IntVar(&o.TrainLimit, "train-limit", 0, "use only the first N training images (0: all)")
	f.IntVar(&o.TestLimit, "test-limit", 0, "test each epoch on the first N test images (0: all, -1: no test)")
	f.BoolVar(&o.Quiet, "quiet", false, "no progress display")
	return cmd
}

// RunBuffer runs `fedsim distill buffer` with o.
func RunBuffer(ctx context.Context, o *BufferOptions, stdout, stderr io.Writer) error {
	start := time.Now()
	info, err := data.Lookup(o.Dataset)
	if err != nil {
		return usageError{err}
	}
	o.Dataset = info.Name
	switch {
	case o.Out == "":
		return usagef("--out is required: the folder for the expert trajectories")
	case o.Experts < 1 || o.Epochs < 1 || o.Batch < 1:
		return usagef("--experts %d, --epochs %d and --batch %d must be positive", o.Experts, o.Epochs, o.Batch)
	case !(o.LR > 0):
		return usagef("--lr %g must be positive", o.LR)
	case o.TrainLimit < 0:
		return usagef("--train-limit must not be negative")
	}
	if _, err := nn.New[float32](o.Model, []int{info.Channels, info.Height, info.Width}, info.Classes, tensor.NewRNG(0, 0)); err != nil {
		return usageError{fmt.Errorf("--model: %w", err)}
	}
	if o.DSAStrategy != "" {
		if _, err := data.ParseDSAStrategy(o.DSAStrategy); err != nil {
			return usageError{fmt.Errorf("--dsa-strategy: %w", err)}
		}
	}
	train, err := data.Load(o.Dataset, "train", o.DataDir)
	if err != nil {
		return err
	}
	if o.TrainLimit > 0 && o.TrainLimit < train.Len() {
		train = train.Slice(o.TrainLimit)
	}
	var test *data.Dataset
	if o.TestLimit >= 0 {
		if test, err = data.Load(o.Dataset, "test", o.DataDir); err != nil {
			return err
		}
		if o.TestLimit > 0 && o.TestLimit < test.Len() {
			test = test.Slice(o.TestLimit)
		}
	}
	fmt.Fprintf(stdout, "training %d %s experts for %d epochs on %d %s images (SGD lr %g, batch %d)\n", o.Experts, o.Model, o.Epochs, train.Len(), o.Dataset, o.LR, o.Batch)
	steps := (train.Len() + o.Batch - 1) / o.Batch
	bar := newProgress(stderr, "buffer", o.Experts*o.Epochs*steps, o.Quiet)
	cfg := distill.BufferConfig{Model: o.Model, Experts: o.Experts, Epochs: o.Epochs, LR: o.LR, BatchSize: o.Batch, DSAStrategy: o.DSAStrategy, Seed: o.Seed, Context: ctx,
		Progress: func(e int, p nn.Progress) {
			bar.update((e*o.Epochs+p.Epoch)*steps+p.Step+1, fmt.Sprintf("expert %d/%d epoch %d/%d loss %.4f", e+1, o.Experts, p.Epoch+1, o.Epochs, p.EpochLoss))
		},
		EpochDone: func(e, ep int, acc float64) {
			if test != nil {
				fmt.Fprintf(stdout, "expert %d epoch %d: test accuracy %.4f\n", e, ep+1, acc)
			}
		}}
	b, err := distill.TrainExperts(train, test, cfg, o.Out)
	bar.finish()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "wrote %d expert trajectories of %d epochs (%d parameters each) to %s (%.0f s)\n", b.Experts(), b.Epochs(), b.Index.NumParams, o.Out, time.Since(start).Seconds())
	return err
}

// median returns the median of xs (the mean of the middle two for an even
// count) without reordering xs; it panics if xs is empty.
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
