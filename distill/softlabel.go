package distill

import (
	"context"
	"fmt"
	"math"
	"time"

	ag "github.com/fedsim/fedsim/autograd"
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
	if cfg.Epochs == 0 {
		cfg.Epochs = 1
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 256
	}
	if cfg.LR == 0 {
		cfg.LR = 0.01
	}
	if cfg.Epochs < 0 || cfg.BatchSize < 0 || !(cfg.LR >= 0) {
		return fmt.Errorf("distill: TrainSoft: epochs %d, batch size %d and learning rate %g must be positive", cfg.Epochs, cfg.BatchSize, cfg.LR)
	}
	if x == nil || x.Rank() != 4 || ySoft == nil || ySoft.Rank() != 2 || ySoft.Shape[0] != x.Shape[0] {
		return fmt.Errorf("distill: TrainSoft: want images (N, C, H, W) and soft labels (N, K)")
	}
	n, k := x.Shape[0], ySoft.Shape[1]
	if n == 0 {
		return fmt.Errorf("distill: TrainSoft: empty training set")
	}
	if tm, ok := m.(nn.Trainable); ok {
		prev := tm.Training()
		tm.SetTraining(true)
		defer tm.SetTraining(prev)
	}
	opt := cfg.Optimizer
	if opt == nil {
		opt = &nn.SGD[float32]{LR: cfg.LR, Momentum: cfg.Momentum, WeightDecay: cfg.WeightDecay}
	}
	base := opt.LearningRate()
	sched := cfg.Schedule
	if sched == nil {
		sched = nn.ConstantLR{}
	}
	ctx := cfg.Context
	if ctx == nil {
		ctx = context.Background()
	}
	imgs := &nn.TensorDataset[float32]{X: x, Y: make([]int, n)}
	targets := &nn.TensorDataset[float32]{X: &tensor.Tensor[float32]{Shape: []int{n, 1, 1, k}, Data: ySoft.Data}, Y: make([]int, n)}
	rng := tensor.NewRNG(cfg.Seed, 0)
	steps := (n + cfg.BatchSize - 1) / cfg.BatchSize
	params := m.Params()
	grads := make([]*tensor.Tensor[float32], len(params))
	tp := ag.NewTape[float32]()
	defer tp.Release()
	global := 0
	for ep := range cfg.Epochs {
		lr := sched.LR(base, ep, cfg.Epochs)
		opt.SetLR(lr)
		perm := rng.Perm(n)
		start := time.Now()
		var sumLoss float64
		var correct, seen int
		for s := range steps {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("distill: TrainSoft: %w", err)
			}
			idx := perm[s*cfg.BatchSize : min(n, (s+1)*cfg.BatchSize)]
			xb, _ := imgs.Batch(idx)
			tb, _ := targets.Batch(idx)
			tb.Shape = []int{len(idx), k}
			xv := tp.Const(xb)
			if cfg.Augment != nil {
				xv = cfg.Augment(tp, xv)
			}
			ps := nn.Bind(tp, m)
			logits := m.Forward(xv, ps)
			loss := ag.CrossEntropySoft(logits, tp.Const(tb))
			gs, err := tp.Grad([]*ag.Var[float32]{loss}, nil, ps, false)
			if err != nil {
				tp.Release()
				return fmt.Errorf("distill: TrainSoft: epoch %d step %d: %w", ep, s, err)
			}
			l := float64(loss.Value.Item())
			if math.IsNaN(l) || math.IsInf(l, 0) {
				tp.Release()
				return fmt.Errorf("distill: TrainSoft: epoch %d step %d: loss is %v (diverged; lower the learning rate)", ep, s, l)
			}
			correct += agreeArgmax(logits.Value.Data, tb.Data, k)
			for i, g := range gs {
				grads[i] = g.Value
			}
			err = opt.Step(params, grads)
			tp.Release()
			if err != nil {
				return fmt.Errorf("distill: TrainSoft: %w", err)
			}
			clear(grads)
			seen += len(idx)
			sumLoss += l * float64(len(idx))
			global++
			if progress != nil {
				el := time.Since(start).Seconds()
				progress(nn.Progress{
					Epoch: ep, Epochs: cfg.Epochs, Step: s, Steps: steps,
					GlobalStep: global, TotalSteps: steps * cfg.Epochs, LR: lr,
					Loss: l, EpochLoss: sumLoss / float64(seen), EpochAcc: float64(correct) / float64(seen),
					Images: seen, ImagesPerSec: float64(seen) / max(el, 1e-9), EpochDone: s == steps-1,
				})
			}
		}
	}
	return nil
}

// agreeArgmax counts the rows (of k values) whose first maximum is at the
// same position in a and b.
func agreeArgmax(a, b []float32, k int) int {
	arg := func(r []float32) int {
		best := 0
		for j, v := range r {
			if v > r[best] {
				best = j
			}
		}
		return best
	}
	c := 0
	for i := 0; i+k <= len(a); i += k {
		if arg(a[i:i+k]) == arg(b[i:i+k]) {
			c++
		}
	}
	return c
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
