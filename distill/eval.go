package distill

import (
	"context"
	"fmt"
	"math"
	"strings"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// EvalConfig is the evaluation protocol of the DC/DSA/DM papers: train Runs
// fresh models from scratch on the synthetic set and test them on the real
// test set. Start from DefaultEvalConfig: zero Runs, Epochs, BatchSize, LR,
// Model and DSAStrategy select the defaults, but Momentum and WeightDecay
// are taken literally.
type EvalConfig struct {
	Model     string // a name for nn.New; default "convnet"
	Runs      int    // models trained; default 5
	Epochs    int    // default DefaultEvalEpochs(data set, "")
	BatchSize int    // default 256
	// LR (default 0.01) decays ×0.1 at half the epochs (nn.HalfwayDecay)
	// unless Schedule says otherwise.
	LR, Momentum, WeightDecay float64
	// Schedule sets each epoch's rate (nil: nn.HalfwayDecay(Epochs), the
	// protocol's).
	Schedule nn.Schedule
	// DSAStrategy augments every training batch with per-sample DSA
	// parameters; default by data set (DefaultDSAStrategy); "none" for no
	// augmentation.
	DSAStrategy string
	// DCAugment, if set and not "none", trains with DC's own augmentation
	// instead of DSA (data.DCAug: one of its operations per image, e.g.
	// data.DCAugStrategyDigits, with which the DC reference evaluates its
	// MNIST sets); DSAStrategy is then ignored.
	DCAugment string
	// CutMix is the probability per training batch of IDC's CutMix
	// (cutMixBox; the loss mixes the targets by the pasted area); 0: none.
	CutMix float64
	// Seed: run k initialises its model and draws its batches from streams
	// derived from (Seed, k).
	Seed    uint64
	Context context.Context
	// ZCA, if set, whitens the synthetic images (read in the normalized
	// space, as synthetic.npz holds them) and the test images before
	// training and testing, as MTT, FTD, TESLA and KIP evaluate sets
	// distilled in ZCA space.
	ZCA *ZCA
	// Progress, if set, is called after every training step of run k.
	Progress func(run int, p nn.Progress)
}

// DefaultEvalConfig returns the reference protocol for the data set named
// dataset: ConvNet, 5 runs, SGD lr 0.01 momentum 0.9 weight decay 5e-4,
// ×0.1 at half the epochs, batch 256, DSA augmentation, and
// DefaultEvalEpochs epochs.
func DefaultEvalConfig(dataset string) EvalConfig {
	return EvalConfig{Model: "convnet", Runs: 5, Epochs: DefaultEvalEpochs(dataset, ""), BatchSize: 256,
		LR: 0.01, Momentum: 0.9, WeightDecay: 5e-4, DSAStrategy: DefaultDSAStrategy(dataset)}
}

// DefaultEvalEpochs is the reference code's training length for a set
// made by method on dataset: 1000 epochs on MNIST; on the other data sets
// 1000 for dsa, dm, mtt, ftd and tesla (their scripts' epoch_eval_train),
// 600 for cafe (CAFE's distill.py without augmentation), and 300 for dc and
// every other method or an unknown one ("": DC's main.py without its MNIST
// augmentation). docs/hyperparameters.md §1 has the sources.
func DefaultEvalEpochs(dataset, method string) int {
	if strings.EqualFold(strings.TrimSpace(dataset), "mnist") {
		return 1000
	}
	switch strings.ToLower(strings.TrimSpace(method)) {
	case "dsa", "dm", "mtt", "ftd", "tesla":
		return 1000
	case "cafe":
		return 600
	}
	return 300
}

// Evaluate trains cfg.Runs fresh cfg.Model networks on syn and returns
// their accuracies on test, with their mean and (population, as NumPy's
// np.std) standard deviation. syn must match test's images, classes and
// normalization. When syn.YSoft is set the models train against the soft
// labels: syn.YSoft holds label logits, as the trajectory-matching
// distillers learn them (mtt.go), and image i's target distribution is
// softmax(YSoft[i]) (TrainSoft: soft cross entropy). Otherwise they train
// against syn.Y (nn.Train).
func Evaluate(syn *SyntheticSet, test *data.Dataset, cfg EvalConfig) (mean, std float64, accs []float64, err error) {
	if cfg.Model == "" {
		cfg.Model = "convnet"
	}
	if cfg.Runs == 0 {
		cfg.Runs = 5
	}
	if cfg.Epochs == 0 {
		cfg.Epochs = DefaultEvalEpochs(test.Name, "")
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 256
	}
	if cfg.LR == 0 {
		cfg.LR = 0.01
	}
	if cfg.DSAStrategy == "" {
		cfg.DSAStrategy = DefaultDSAStrategy(test.Name)
	}
	if cfg.Runs < 0 || cfg.Epochs < 0 || cfg.BatchSize < 0 || !(cfg.LR > 0) {
		return 0, 0, nil, fmt.Errorf("distill: evaluation runs %d, epochs %d, batch %d and learning rate %g must be positive", cfg.Runs, cfg.Epochs, cfg.BatchSize, cfg.LR)
	}
	if !(cfg.CutMix >= 0 && cfg.CutMix <= 1) {
		return 0, 0, nil, fmt.Errorf("distill: evaluation CutMix probability %g must be in [0, 1]", cfg.CutMix)
	}
	if err := syn.Validate(); err != nil {
		return 0, 0, nil, err
	}
	if err := test.Validate(); err != nil {
		return 0, 0, nil, err
	}
	if err := syn.CheckAgainst(test); err != nil {
		return 0, 0, nil, err
	}
	strategy, dc, _, err := cfg.augmentation(test.Name)
	if err != nil {
		return 0, 0, nil, err
	}
	if _, err := nn.New[float32](cfg.Model, test.ImageShape(), test.Classes, tensor.NewRNG(0, 0)); err != nil {
		return 0, 0, nil, fmt.Errorf("distill: %w", err)
	}
	ctx := cfg.Context
	if ctx == nil {
		ctx = context.Background()
	}
	if cfg.ZCA != nil {
		if syn, err = cfg.ZCA.ImportSet(syn); err != nil {
			return 0, 0, nil, err
		}
		if test, err = cfg.ZCA.Dataset(test); err != nil {
			return 0, 0, nil, err
		}
	}
	for k := range cfg.Runs {
		m, err := trainEvalModel(ctx, syn, test, cfg, strategy, dc, k)
		if err != nil {
			return 0, 0, nil, err
		}
		acc, _, err := nn.Evaluate[float32](m, test.X, test.Y, 500)
		if err != nil {
			return 0, 0, nil, fmt.Errorf("distill: evaluation run %d: %w", k+1, err)
		}
		accs = append(accs, acc)
	}
	mean, std = MeanStd(accs)
	return mean, std, accs, nil
}

// Augmentation names what Evaluate trains the models of cfg with on the
// data set dataset: "dsa:STRATEGY", "dc:STRATEGY" (DC's augmentation, which
// replaces DSA) or "none".
func (cfg EvalConfig) Augmentation(dataset string) (string, error) {
	_, _, label, err := cfg.augmentation(dataset)
	return label, err
}

// augmentation resolves cfg's augmentation flags: the DSA strategy (the
// data set's by default), or DC's augmentation dc if it has operations,
// and their label (Augmentation).
func (cfg EvalConfig) augmentation(dataset string) (strategy []string, dc *data.DCAug, label string, err error) {
	dsa := cfg.DSAStrategy
	if dsa == "" {
		dsa = DefaultDSAStrategy(dataset)
	}
	if strategy, err = data.ParseDSAStrategy(dsa); err != nil {
		return nil, nil, "", err
	}
	if dc, err = data.NewDCAug(cfg.DCAugment); err != nil {
		return nil, nil, "", err
	}
	switch {
	case len(dc.Strategy) > 0:
		return nil, dc, "dc:" + dc.String(), nil
	case len(strategy) == 0:
		return nil, dc, "none", nil
	}
	return strategy, dc, "dsa:" + dsa, nil
}

// trainEvalModel trains run k of the evaluation cfg (defaults filled) on
// syn, in the space of test, with the DSA strategy or, if it is not
// nil and has operations, DC's augmentation dc; it returns the model.
func trainEvalModel(ctx context.Context, syn *SyntheticSet, test *data.Dataset, cfg EvalConfig, strategy []string, dc *data.DCAug, k int) (nn.Model[float32], error) {
	m, err := nn.New[float32](cfg.Model, test.ImageShape(), test.Classes, tensor.NewRNG(cfg.Seed, 1000+uint64(k)))
	if err != nil {
		return nil, fmt.Errorf("distill: %w", err)
	}
	schedule := cfg.Schedule
	if schedule == nil {
		schedule = nn.HalfwayDecay(cfg.Epochs)
	}
	tc := nn.TrainConfig[float32]{Epochs: cfg.Epochs, BatchSize: cfg.BatchSize, LR: cfg.LR, Momentum: cfg.Momentum,
		WeightDecay: cfg.WeightDecay, Schedule: schedule,
		Seed: tensor.NewRNG(cfg.Seed, 2000+uint64(k)).Uint64(), Context: ctx}
	if len(strategy) > 0 {
		dsa := &data.DSA{Strategy: strategy, Params: data.DefaultDSAParams()}
		rng := tensor.NewRNG(cfg.Seed, 3000+uint64(k))
		tc.Augment = func(_ *ag.Tape[float32], x *ag.Var[float32]) *ag.Var[float32] {
			s := x.Shape()
			return data.Apply(dsa.Sample(rng, s[0], s[2], s[3]), x)
		}
	}
	if dc != nil && len(dc.Strategy) > 0 {
		rng := tensor.NewRNG(cfg.Seed, 3000+uint64(k))
		tc.Augment = func(tp *ag.Tape[float32], x *ag.Var[float32]) *ag.Var[float32] {
			return tp.Const(dc.Apply(rng, x.Value))
		}
	}
	if cfg.CutMix > 0 {
		rng := tensor.NewRNG(cfg.Seed, 4000+uint64(k))
		tc.Mix = func(x *tensor.Tensor[float32]) ([]int, float64) {
			if rng.Float64() >= cfg.CutMix {
				return nil, 1
			}
			return cutMixBox(x, rng)
		}
	}
	var progress func(nn.Progress)
	if cfg.Progress != nil {
		progress = func(p nn.Progress) { cfg.Progress(k, p) }
	}
	train := func() error { return nn.Train[float32](m, syn.Dataset(), tc, progress) }
	if syn.YSoft != nil {
		train = func() error { return TrainSoft(m, syn.X, SoftTargets(syn.YSoft), tc, progress) }
	}
	if err := train(); err != nil {
		return nil, fmt.Errorf("distill: evaluation run %d: %w", k+1, err)
	}
	return m, nil
}

// MeanStd returns the mean and the population standard deviation of v.
func MeanStd(v []float64) (mean, std float64) {
	if len(v) == 0 {
		return 0, 0
	}
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	for _, x := range v {
		std += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(std / float64(len(v)))
}
