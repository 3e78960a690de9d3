package distill

import (
	"fmt"
	"math"

	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// TrainSoft is nn.Train with soft labels: it trains m on images x
// (N, C, H, W) against the target distributions ySoft (N, K), minimising
// the mean soft cross entropy −Σ_k ySoft[n,k]·log softmax(m(x_n))_k
// (autograd.CrossEntropySoft). Everything else is nn.Train's: cfg's
// defaults, the minibatch order drawn from cfg.Seed (the same batches as
// nn.Train on the same set), the optimizer and schedule, Augment, the
// training mode, progress (its accuracy counts agreement with each row's
// largest target) and its errors.
//
// The rows of ySoft are used as given: soft labels stored as logits (as
// SyntheticSet.YSoft holds them) go through SoftTargets first.
func TrainSoft(m nn.Model[float32], x, ySoft *tensor.Tensor[float32], cfg nn.TrainConfig[float32], progress func(nn.Progress)) error {
	if x == nil || x.Rank() != 4 || ySoft == nil || ySoft.Rank() != 2 || ySoft.Shape[0] != x.Shape[0] {
		return fmt.Errorf("distill: TrainSoft: want images (N, C, H, W) and soft labels (N, K)")
	}
	set, err := nn.NewTensorDataset(x, make([]int, x.Shape[0]))
	if err != nil {
		return fmt.Errorf("distill: TrainSoft: %w", err)
	}
	cfg.SoftTargets = ySoft
	return nn.Train(m, set, cfg, progress)
}

// SoftTargets returns the row-wise softmax of label logits (N, K): the
// target distributions of a synthetic set's soft labels.
func SoftTargets(logits *tensor.Tensor[float32]) *tensor.Tensor[float32] {
	out := tensor.New[float32](logits.Shape...)
	k := logits.Shape[len(logits.Shape)-1]
	for i := 0; i+k <= len(logits.Data); i += k {
		row, dst := logits.Data[i:i+k], out.Data[i:i+k]
		mx := row[0]
		for _, v := range row {
			mx = max(mx, v)
		}
		var sum float64
		for j, v := range row {
			e := math.Exp(float64(v - mx))
			dst[j] = float32(e)
			sum += e
		}
		for j := range dst {
			dst[j] = float32(float64(dst[j]) / sum)
		}
	}
	return out
}
