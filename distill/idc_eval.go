package distill

import (
	"strings"

	"github.com/fedsim/fedsim/nn"
)

// EvalIDC is the name of IDC's own evaluation among the evaluation models
// (`--eval-models idc`): ConvNets trained by IDCEvalConfig's recipe.
const EvalIDC = "idc"

// IDCEvalEpochs is the training length of IDC's evaluation on MNIST,
// Fashion-MNIST and CIFAR-10 (argument.py: epochs 1000 whenever IPC > 0).
const IDCEvalEpochs = 1000

// IDCEvalConfig returns the evaluation of IDC's code (Kim et al. 2022;
// snu-mllab/Efficient-Dataset-Condensation test.py, train.py and
// argument.py), under which IDC's published figures were measured: fresh
// ConvNets (width 128, depth 3, instance norm) trained for epochs epochs
// (0: IDCEvalEpochs) in batches of 64 with SGD at 0.01, momentum 0.9 and
// weight decay 5e-4, the rate ×0.2 at 2/3 and at 5/6 of the epochs
// (MultiStepLR), per-sample DSA without cutout (CutMix replaces it; on
// MNIST also without flips), and CutMix with probability 0.5 per batch.
//
// It differs from DefaultEvalConfig in the batch (64 against 256: 4× the
// steps per epoch), the schedule, CutMix and the flips. The DSA
// magnitudes are fedsim's (DSA's), not those of IDC's DiffAug. The set is
// used as given: IDC's test.py decodes multi-formation sets first, and
// fedsim's synthetic.npz already holds the decoded images. IDC's test.py
// also turns CutMix off for MNIST multi-formation sets; this recipe does
// not know how a set was made, so set CutMix to 0 for those.
func IDCEvalConfig(dataset string, epochs int) EvalConfig {
	if epochs == 0 {
		epochs = IDCEvalEpochs
	}
	strategy := "color_crop_flip_scale_rotate"
	if strings.EqualFold(strings.TrimSpace(dataset), "mnist") {
		strategy = "color_crop_scale_rotate"
	}
	return EvalConfig{Model: "convnet", Runs: 5, Epochs: epochs, BatchSize: 64, LR: 0.01, Momentum: 0.9, WeightDecay: 5e-4,
		Schedule:    nn.StepLR{Milestones: []int{2 * epochs / 3, 5 * epochs / 6}, Gamma: 0.2},
		DSAStrategy: strategy, CutMix: 0.5}
}
