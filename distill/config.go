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
)

// Methods lists the method names New accepts, in a fixed order.
func Methods() []string {
	return []string{MethodRandom, MethodHerding, MethodKCenter, MethodDM, MethodDC, MethodDSA}
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
	// OuterLoop and InnerLoop are DC/DSA's loops: image updates per network
	// initialisation, and training epochs of the network on the synthetic
	// set between them. Default by IPC as in the reference: (1, 1) at IPC 1,
	// (10, 50) at IPC 10, (50, 10) at IPC 50, (10, 50) otherwise.
	OuterLoop int `json:"outer_loop"`
	InnerLoop int `json:"inner_loop"`
	// Init is InitReal or InitNoise (default: noise for DC, real otherwise).
	Init string `json:"init"`
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
}

// Defaults returns cfg with its zero fields set to the method's reference
// values for the data set dataset (a name as for data.Load).
func (cfg Config) Defaults(dataset string) Config {
	cfg.Method = strings.ToLower(strings.TrimSpace(cfg.Method))
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
	case MethodDC, MethodDSA:
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
		if cfg.Method == MethodDC {
			cfg.Init = InitNoise
		}
	}
	if cfg.DSAStrategy == "" {
		cfg.DSAStrategy = "none"
		if cfg.Method == MethodDM || cfg.Method == MethodDSA {
			cfg.DSAStrategy = DefaultDSAStrategy(dataset)
		}
	}
	if cfg.Match.Distance == "" {
		cfg.Match.Distance = DistanceLayerwise
	}
	if cfg.FeatureEpochs == 0 {
		cfg.FeatureEpochs = 1
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

// DefaultDSAStrategy returns the reference's augmentation for a data set:
// no flips for the grey-scale 28×28 sets (MNIST, Fashion-MNIST).
func DefaultDSAStrategy(dataset string) string {
	if strings.Contains(strings.ToLower(dataset), "mnist") {
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
	iterative := cfg.Method == MethodDM || cfg.Method == MethodDC || cfg.Method == MethodDSA
	if iterative && (!(cfg.LRImg > 0) || !(cfg.LRNet > 0) || math.IsInf(cfg.LRImg, 0) || math.IsInf(cfg.LRNet, 0)) {
		errs = append(errs, fmt.Errorf("learning rates (images %g, network %g) must be positive", cfg.LRImg, cfg.LRNet))
	}
	if !(cfg.Momentum >= 0 && cfg.Momentum < 1) {
		errs = append(errs, fmt.Errorf("image momentum %g must be in [0, 1)", cfg.Momentum))
	}
	if cfg.OuterLoop < 1 || cfg.InnerLoop < 0 {
		errs = append(errs, fmt.Errorf("outer loop %d must be ≥ 1 and inner loop %d ≥ 0", cfg.OuterLoop, cfg.InnerLoop))
	}
	if cfg.Init != InitReal && cfg.Init != InitNoise {
		errs = append(errs, fmt.Errorf("initialisation %q: want %s or %s", cfg.Init, InitReal, InitNoise))
	}
	if _, err := data.ParseDSAStrategy(cfg.DSAStrategy); err != nil {
		errs = append(errs, err)
	}
	if cfg.Match.Distance != DistanceLayerwise {
		errs = append(errs, fmt.Errorf("gradient distance %q is not implemented (want %s)", cfg.Match.Distance, DistanceLayerwise))
	}
	if cfg.Match.ClassSum {
		errs = append(errs, errors.New("the inter-class gradient sum (DCC) is not implemented yet"))
	}
	if cfg.FeatureEpochs < 0 {
		errs = append(errs, fmt.Errorf("feature-network epochs %d must not be negative", cfg.FeatureEpochs))
	}
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
