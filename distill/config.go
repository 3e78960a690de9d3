package distill

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// Method names.
const (
	MethodRandom  = "random"  // random real images per class
	MethodHerding = "herding" // herding in a trained ConvNet's feature space
	MethodKCenter = "kcenter" // k-center greedy in the same feature space
	MethodDM      = "dm"      // distribution matching (Zhao & Bilen)
	MethodDC      = "dc"      // gradient matching (Zhao et al.)
	MethodDSA     = "dsa"     // gradient matching with Siamese augmentation
	MethodMTT     = "mtt"     // trajectory matching (Cazenavette et al.)
	MethodFTD     = "ftd"     // MTT with noisy starting weights (Du et al.)
	MethodTESLA   = "tesla"   // MTT with a constant-memory meta-gradient and soft labels (Cui et al.)
)

// Methods lists the method names New accepts, in a fixed order.
func Methods() []string {
	return append([]string{MethodRandom, MethodHerding, MethodKCenter, MethodDM, MethodDC, MethodDSA, MethodCAFE, MethodMTT, MethodFTD, MethodTESLA}, part2Methods()...)
}

// IsTrajectoryMethod reports whether method matches expert trajectories
// (mtt, ftd, tesla, haba) and so needs a trajectory buffer (Config.TM.Buffer).
func IsTrajectoryMethod(method string) bool {
	return method == MethodMTT || method == MethodFTD || method == MethodTESLA || method == MethodHaBa
}

// Initialisations of the synthetic images.
const (
	InitReal  = "real"  // random real images of the class
	InitNoise = "noise" // standard normal noise in the normalized space
)

// Gradient-matching distances (Config.Match.Distance).
const (
	// DistanceLayerwise is DC's layer-wise cosine distance (survey eq. 22–23,
	// LayerwiseGradDistance).
	DistanceLayerwise = "layerwise"
)

// MatchConfig selects the gradient-matching objective of DC and DSA. It is
// the place for the variants of the survey's §3.1: DCC's inter-class sum of
// gradients (eq. 25) and the magnitude-aware distance (eq. 26) are not
// implemented yet and are rejected by Validate.
type MatchConfig struct {
	// Distance is the per-layer distance; "" means DistanceLayerwise.
	Distance string `json:"distance"`
	// ClassSum matches the sum of the per-class gradients (DCC, eq. 25)
	// instead of summing the per-class distances (eq. 24).
	ClassSum bool `json:"class_sum"`
	// InnerReal trains the matching network on real data between outer
	// steps instead of on the synthetic set (IDC, eq. 27).
	InnerReal bool `json:"inner_real"`
}

// Config configures a distillation run. Zero values select the reference
// settings of the method (see Defaults).
type Config struct {
	Method string `json:"method"`
	// IPC is the number of synthetic images per class.
	IPC int `json:"ipc"`
	// Seed makes the run reproducible: every random draw of iteration it
	// comes from a generator derived from (Seed, it), so a resumed run is
	// identical to an uninterrupted one.
	Seed uint64 `json:"seed"`
	// Model is the network used for matching and, for herding and k-center,
	// for the feature space (a name for nn.New); default "convnet".
	Model string `json:"model"`
	// BatchReal is the number of real images per class per iteration
	// (default 256).
	BatchReal int `json:"batch_real"`
	// LRImg and Momentum configure SGD on the synthetic images (DM: 1.0 and
	// 0.5; DC/DSA: 0.1 and 0.5).
	LRImg    float64 `json:"lr_img"`
	Momentum float64 `json:"momentum_img"`
	// LRNet is the inner network's learning rate (DC/DSA; default 0.01).
	LRNet float64 `json:"lr_net"`
	// ImageSteps (DM only) is how many SGD steps the synthetic images take
	// against each iteration's class targets, with the iteration's network
	// and augmentation held (0 or 1: one, the reference's). Under DP the
	// noised targets are released once per iteration, so the further steps
	// are post-processing: they speed up private runs from noise, whose
	// iterations are rationed by the privacy budget, at no privacy cost.
	ImageSteps int `json:"image_steps,omitempty"`
	// OuterLoop and InnerLoop are DC/DSA's loops: image updates per network
	// initialisation, and training epochs of the network on the synthetic
	// set between them. Default by IPC as in the reference: (1, 1) at IPC 1,
	// (10, 50) at IPC 10, (50, 10) at IPC 50, (10, 50) otherwise.
	OuterLoop int `json:"outer_loop"`
	InnerLoop int `json:"inner_loop"`
	// Init is InitReal, InitNoise or InitMean (DM, DC and DSA only; see
	// InitMean) (default: noise for DC and with DP, real otherwise).
	Init string `json:"init"`
	// ZCAReg records that the caller ZCA-whitened the real images with
	// this regularisation ε before distilling (FitZCA, ZCA.Dataset; 0: not
	// whitened). The methods do not read it: it is part of the
	// configuration so that a checkpoint of images in whitened space is
	// never resumed on unwhitened data, or the other way round.
	ZCAReg float64 `json:"zca_reg,omitempty"`
	// DSAStrategy is the Siamese augmentation of DM and DSA; default the
	// digits strategy (no flip) for MNIST and Fashion-MNIST, the full one
	// otherwise; "none" turns it off. DC never augments.
	DSAStrategy string `json:"dsa_strategy"`
	// Match selects the gradient-matching objective (DC and DSA).
	Match MatchConfig `json:"match"`
	// FeatureEpochs is how long herding and k-center train their feature
	// network on the real data (default 1). FeatureNet, if set, is used
	// instead (it must accept the data set's images).
	FeatureEpochs int                  `json:"feature_epochs"`
	FeatureNet    nn.Embedder[float32] `json:"-"`
	// TM configures trajectory matching (mtt, ftd, tesla).
	TM TMConfig `json:"tm"`
	// KRR configures the kernel methods (kip, rfad, frepo) and Meta the
	// meta-learning ones (dd, sldd, ld, linba); see part2.go.
	KRR  KRRConfig  `json:"krr,omitzero"`
	Meta MetaConfig `json:"meta,omitzero"`
	// IDC configures idc (idc.go).
	IDC IDCConfig `json:"idc,omitzero"`
	// GTN and ITGAN configure the generator-based methods (gtn.go, itgan.go).
	GTN   GTNConfig   `json:"gtn,omitzero"`
	ITGAN ITGANConfig `json:"itgan,omitzero"`
	// HaBa configures haba (haba.go).
	HaBa HaBaConfig `json:"haba,omitzero"`
	// KFS configures kfs (kfs.go).
	KFS KFSConfig `json:"kfs,omitzero"`
	// DP, if set, makes DM, DC and DSA differentially private (dp.go);
	// the initialisation then defaults to noise.
	DP *DPConfig `json:"dp,omitempty"`
	// TMState is not configuration: it carries trajectory matching's
	// optimiser state (the learned step size and momenta) inside a
	// Checkpoint, whose file holds the configuration as JSON. It is nil in
	// a run's own configuration and ignored when a checkpoint's
	// configuration is compared with the run's.
	TMState *TMState `json:"tm_state,omitempty"`
}

// Soft-label modes (TMConfig.Labels).
const (
	LabelsHard = "hard" // the class labels
	LabelsSoft = "soft" // learnable logits initialised from an expert (TESLA)
)

// TMConfig configures trajectory matching. Zero values select the
// defaults documented in docs/trajectory-matching.md (MTT's CIFAR-10
// settings; the MTT paper has no MNIST row).
type TMConfig struct {
	// Buffer is the folder of expert trajectories (`fedsim distill buffer`).
	Buffer string `json:"buffer"`
	// SynSteps (N) is the number of student steps on synthetic batches;
	// ExpertEpochs (M) how many expert epochs they are matched against;
	// the start epoch is drawn uniformly from [0, MaxStartEpoch).
	SynSteps      int `json:"syn_steps"`
	ExpertEpochs  int `json:"expert_epochs"`
	MaxStartEpoch int `json:"max_start_epoch"`
	// BatchSyn is the synthetic minibatch of a student step (0: the whole
	// set, as the reference).
	BatchSyn int `json:"batch_syn"`
	// LRInit is the initial learnable student step size α (the
	// reference's lr_teacher, 0.01); LRLR is α's SGD learning rate
	// (momentum Config.Momentum).
	LRInit float64 `json:"lr_init"`
	LRLR   float64 `json:"lr_lr"`
	// StartNoise (FTD) perturbs the student's starting weights: each
	// tensor p gets Gaussian noise of standard deviation
	// StartNoise·rms(p). Default 0.01 for ftd, 0 otherwise.
	StartNoise float64 `json:"start_noise"`
	// Labels is LabelsHard or LabelsSoft (default soft for tesla, hard
	// otherwise); LRLabel is the soft labels' SGD learning rate.
	Labels  string  `json:"labels"`
	LRLabel float64 `json:"lr_label"`
	// FixedAdjoint selects TESLA's published first-order pass, which holds
	// the adjoint 2(θ_N − θ*)/D fixed across steps (it ignores how earlier
	// batches move later parameters). The default (false) carries the
	// adjoint back through every step's Hessian-vector product, so tesla's
	// gradient equals mtt's exactly at the same cost per step.
	FixedAdjoint bool `json:"fixed_adjoint"`
}

// TMState is trajectory matching's optimiser state in a checkpoint.
type TMState struct {
	LR            float32   `json:"lr"`
	LRVelocity    float32   `json:"lr_velocity"`
	LabelVelocity []float32 `json:"label_velocity,omitempty"`
}

// tmDefaults fills trajectory matching's zero fields.
func (cfg Config) tmDefaults() Config {
	t := &cfg.TM
	if t.SynSteps == 0 {
		t.SynSteps = 50
		if cfg.IPC > 1 {
			t.SynSteps = 30
		}
	}
	if t.ExpertEpochs == 0 {
		t.ExpertEpochs = 2
	}
	if t.MaxStartEpoch == 0 {
		switch {
		case cfg.IPC <= 1:
			t.MaxStartEpoch = 2
		case cfg.IPC <= 10:
			t.MaxStartEpoch = 20
		default:
			t.MaxStartEpoch = 40
		}
	}
	if t.LRInit == 0 {
		t.LRInit = 0.01
	}
	if t.LRLR == 0 {
		t.LRLR = 1e-5
		if cfg.IPC <= 1 {
			t.LRLR = 1e-7
		}
	}
	if t.StartNoise == 0 && cfg.Method == MethodFTD {
		t.StartNoise = 0.01
	}
	if t.Labels == "" {
		t.Labels = LabelsHard
		if cfg.Method == MethodTESLA {
			t.Labels = LabelsSoft
		}
	}
	if t.LRLabel == 0 && t.Labels == LabelsSoft {
		t.LRLabel = 2
	}
	if cfg.LRImg == 0 {
		cfg.LRImg = 1000
	}
	return cfg
}

func (t TMConfig) validate() []error {
	var errs []error
	if t.SynSteps < 1 || t.ExpertEpochs < 1 || t.MaxStartEpoch < 1 || t.BatchSyn < 0 {
		errs = append(errs, fmt.Errorf("synthetic steps %d, expert epochs %d and max start epoch %d must be positive and the synthetic batch %d not negative",
			t.SynSteps, t.ExpertEpochs, t.MaxStartEpoch, t.BatchSyn))
	}
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	if !(t.LRInit > 0) || !finite(t.LRInit) || !(t.LRLR >= 0) || !finite(t.LRLR) || !(t.LRLabel >= 0) || !finite(t.LRLabel) {
		errs = append(errs, fmt.Errorf("initial step size %g must be positive and the step-size and label learning rates (%g, %g) finite and not negative", t.LRInit, t.LRLR, t.LRLabel))
	}
	if !(t.StartNoise >= 0) || !finite(t.StartNoise) {
		errs = append(errs, fmt.Errorf("start noise %g must be finite and not negative", t.StartNoise))
	}
	if t.Labels != LabelsHard && t.Labels != LabelsSoft {
		errs = append(errs, fmt.Errorf("labels %q: want %s or %s", t.Labels, LabelsHard, LabelsSoft))
	}
	return errs
}

// Defaults returns cfg with its zero fields set to the method's reference
// values for the data set dataset (a name as for data.Load).
func (cfg Config) Defaults(dataset string) Config {
	cfg.Method = strings.ToLower(strings.TrimSpace(cfg.Method))
	cfg = cfg.part2Defaults()
	cfg = cfg.idcDefaults(dataset)
	if cfg.Model == "" {
		cfg.Model = "convnet"
	}
	if cfg.BatchReal == 0 {
		cfg.BatchReal = 256
	}
	if cfg.Momentum == 0 {
		cfg.Momentum = 0.5
	}
	switch cfg.Method {
	case MethodDM:
		if cfg.LRImg == 0 {
			cfg.LRImg = 1.0
		}
	case MethodDC, MethodDSA, MethodCAFE:
		if cfg.LRImg == 0 {
			cfg.LRImg = 0.1
		}
	}
	if cfg.LRNet == 0 {
		cfg.LRNet = 0.01
	}
	if cfg.OuterLoop == 0 && cfg.InnerLoop == 0 {
		cfg.OuterLoop, cfg.InnerLoop = Loops(cfg.IPC)
	}
	if cfg.Init == "" {
		cfg.Init = InitReal
		if cfg.Method == MethodDC || cfg.DP != nil {
			cfg.Init = InitNoise
		}
	}
	if cfg.Init == InitMean && cfg.DP != nil && (cfg.DP.InitClip == 0 || cfg.DP.InitNoise == 0) {
		dp := *cfg.DP // the caller's settings stay as they are
		if dp.InitClip == 0 {
			dp.InitClip = DefaultDPInitClip
		}
		if dp.InitNoise == 0 {
			dp.InitNoise = DefaultDPInitNoise
		}
		cfg.DP = &dp
	}
	if cfg.DSAStrategy == "" {
		cfg.DSAStrategy = "none"
		if cfg.Method == MethodDM || cfg.Method == MethodDSA || cfg.Method == MethodKFS || IsTrajectoryMethod(cfg.Method) || cfg.Method == MethodITGAN {
			cfg.DSAStrategy = DefaultDSAStrategy(dataset)
		}
	}
	if cfg.Match.Distance == "" {
		cfg.Match.Distance = DistanceLayerwise
	}
	if cfg.FeatureEpochs == 0 {
		cfg.FeatureEpochs = 1
	}
	if IsTrajectoryMethod(cfg.Method) {
		cfg = cfg.tmDefaults()
	}
	return cfg
}

// Loops returns the reference's (outer, inner) loops of DC/DSA for ipc.
func Loops(ipc int) (outer, inner int) {
	switch ipc {
	case 1:
		return 1, 1
	case 50:
		return 50, 10
	default:
		return 10, 50
	}
}

// DefaultDSAStrategy returns the reference's augmentation for a data set
// (a name as for data.Load): no flips for MNIST's digits, the full
// strategy otherwise, Fashion-MNIST included (DatasetCondensation's
// readme; docs/hyperparameters.md).
func DefaultDSAStrategy(dataset string) string {
	if strings.EqualFold(strings.TrimSpace(dataset), "mnist") {
		return data.DSAStrategyDigits
	}
	return data.DSAStrategyDefault
}

// Validate checks cfg (after Defaults) without looking at data.
func (cfg Config) Validate() error {
	if !slices.Contains(Methods(), cfg.Method) {
		return fmt.Errorf("distill: unknown method %q: want one of %s", cfg.Method, strings.Join(Methods(), ", "))
	}
	if cfg.IPC < 1 {
		return fmt.Errorf("distill: images per class %d must be at least 1", cfg.IPC)
	}
	var errs []error
	if cfg.BatchReal < 1 {
		errs = append(errs, fmt.Errorf("real batch %d must be positive", cfg.BatchReal))
	}
	iterative := cfg.Method == MethodDM || cfg.Method == MethodDC || cfg.Method == MethodDSA || cfg.Method == MethodCAFE || IsTrajectoryMethod(cfg.Method)
	if IsTrajectoryMethod(cfg.Method) {
		errs = append(errs, cfg.TM.validate()...)
	}
	if iterative && (!(cfg.LRImg > 0) || !(cfg.LRNet > 0) || math.IsInf(cfg.LRImg, 0) || math.IsInf(cfg.LRNet, 0)) {
		errs = append(errs, fmt.Errorf("learning rates (images %g, network %g) must be positive", cfg.LRImg, cfg.LRNet))
	}
	if !(cfg.Momentum >= 0 && cfg.Momentum < 1) {
		errs = append(errs, fmt.Errorf("image momentum %g must be in [0, 1)", cfg.Momentum))
	}
	if cfg.OuterLoop < 1 || cfg.InnerLoop < 0 {
		errs = append(errs, fmt.Errorf("outer loop %d must be ≥ 1 and inner loop %d ≥ 0", cfg.OuterLoop, cfg.InnerLoop))
	}
	switch {
	case cfg.ImageSteps < 0:
		errs = append(errs, fmt.Errorf("image steps per iteration %d must not be negative (--image-steps; 0 or 1: one)", cfg.ImageSteps))
	case cfg.Method != MethodDM && cfg.ImageSteps > 1:
		errs = append(errs, fmt.Errorf("image steps per iteration (%d) are a dm setting, not %s's: drop --image-steps", cfg.ImageSteps, cfg.Method))
	}
	switch {
	case cfg.Init == InitMean && cfg.Method != MethodDM && cfg.Method != MethodDC && cfg.Method != MethodDSA:
		errs = append(errs, fmt.Errorf("initialisation %s is for dm, dc and dsa, not %s: use %s or %s", InitMean, cfg.Method, InitReal, InitNoise))
	case cfg.Init != InitReal && cfg.Init != InitNoise && cfg.Init != InitMean:
		errs = append(errs, fmt.Errorf("initialisation %q: want %s, %s or %s", cfg.Init, InitReal, InitNoise, InitMean))
	}
	if _, err := data.ParseDSAStrategy(cfg.DSAStrategy); err != nil {
		errs = append(errs, err)
	}
	if err := ValidateMatch(cfg.Match); err != nil {
		errs = append(errs, err)
	}
	if cfg.FeatureEpochs < 0 {
		errs = append(errs, fmt.Errorf("feature-network epochs %d must not be negative", cfg.FeatureEpochs))
	}
	if err := cfg.validateDP(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, cfg.part2Validate()...)
	errs = append(errs, cfg.idcValidate()...)
	if len(errs) > 0 {
		return fmt.Errorf("distill: %s: %w", cfg.Method, errors.Join(errs...))
	}
	return nil
}

// checkData checks that real has at least IPC images of every class and
// that the model accepts its images, before any work starts.
func (cfg Config) checkData(real *data.Dataset) error {
	if err := real.Validate(); err != nil {
		return err
	}
	for c, n := range real.Histogram() {
		if n < cfg.IPC {
			return fmt.Errorf("distill: class %d of %s has %d images, fewer than the %d images per class asked for", c, real.Name, n, cfg.IPC)
		}
	}
	if _, err := nn.New[float32](cfg.Model, real.ImageShape(), real.Classes, tensor.NewRNG(0, 0)); err != nil {
		return fmt.Errorf("distill: %w", err)
	}
	return nil
}
