package distill

import (
	"context"
	"fmt"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/nn"
)

// EvalUnrolled is the name of the meta-learning methods' own evaluation
// among the evaluation models (fedsim distill --eval-models unrolled):
// see EvaluateUnrolled.
const EvalUnrolled = "unrolled"

// UnrolledEval describes the inner loop a dd, sldd, ld or linba set was learned
// for: Steps full-batch SGD steps of a freshly initialised Model at step
// size LR with heavy-ball momentum Momentum (MetaTask's m ← β·m + g,
// θ ← θ − η·m), no weight decay, no augmentation.
type UnrolledEval struct {
	Model        string
	Steps        int
	LR, Momentum float64
}

// UnrolledEvalFor returns the inner loop of cfg (after Defaults) at the
// learned step size lr.
func UnrolledEvalFor(cfg Config, lr float64) UnrolledEval {
	return UnrolledEval{Model: cfg.Model, Steps: cfg.Meta.Steps, LR: lr, Momentum: cfg.Meta.Momentum}
}

// EvaluateUnrolled tests syn as DD (Wang et al.) and its successors report
// their sets: runs fresh networks, each trained by exactly the inner loop
// u the set was meta-learned for and tested on test; it returns their
// accuracies with mean and population standard deviation, as Evaluate.
// The networks are initialised from (seed, k) streams, not the ones seen
// while distilling. Soft labels (syn.YSoft) are used as Evaluate uses
// them. The long training of EvalConfig is the other, harder test of the
// same set: images tuned for a short unroll need not survive 1000 epochs.
func EvaluateUnrolled(ctx context.Context, syn *SyntheticSet, test *data.Dataset, u UnrolledEval, runs int, seed uint64, zca *ZCA) (mean, std float64, accs []float64, err error) {
	if u.Steps < 1 || runs < 1 || !(u.LR > 0) || !(u.Momentum >= 0 && u.Momentum < 1) {
		return 0, 0, nil, fmt.Errorf("distill: unrolled evaluation: %d steps, %d runs, step size %g and momentum %g: want steps and runs ≥ 1, step size > 0, momentum in [0, 1)", u.Steps, runs, u.LR, u.Momentum)
	}
	return Evaluate(syn, test, unrolledConfig(ctx, syn, u, runs, seed, zca))
}

// unrolledConfig is the EvalConfig whose training is the inner loop u.
func unrolledConfig(ctx context.Context, syn *SyntheticSet, u UnrolledEval, runs int, seed uint64, zca *ZCA) EvalConfig {
	return EvalConfig{Model: u.Model, Runs: runs, Epochs: u.Steps, BatchSize: syn.Len(), LR: u.LR, Momentum: u.Momentum,
		DSAStrategy: "none", Schedule: nn.ConstantLR{}, Seed: seed, Context: ctx, ZCA: zca}
}
