package nn

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/tensor"
)

// Dataset is a labelled image set that Train draws minibatches from.
// data.Dataset implements Dataset[float32]; TensorDataset wraps tensors.
type Dataset[T Float] interface {
	// Len returns the number of samples.
	Len() int
	// ImageShape returns (C, H, W).
	ImageShape() []int
	// Batch returns the samples idx as a (len(idx), C, H, W) tensor that the
	// caller may keep, with their labels.
	Batch(idx []int) (*tensor.Tensor[T], []int)
}

// TensorDataset is a Dataset over images X (N, C, H, W) and labels Y.
type TensorDataset[T Float] struct {
	X *tensor.Tensor[T]
	Y []int
}

// NewTensorDataset checks that x is (N, C, H, W) with N labels and wraps
// them (without copying).
func NewTensorDataset[T Float](x *tensor.Tensor[T], y []int) (*TensorDataset[T], error) {
	if x == nil || x.Rank() != 4 || len(x.Data) != tensor.Size(x.Shape) {
		var shape []int
		if x != nil {
			shape = x.Shape
		}
		return nil, fmt.Errorf("nn: images must be an (N, C, H, W) tensor, got shape %v", shape)
	}
	if len(y) != x.Shape[0] {
		return nil, fmt.Errorf("nn: %d images but %d labels", x.Shape[0], len(y))
	}
	return &TensorDataset[T]{X: x, Y: y}, nil
}

// Len returns the number of samples.
func (d *TensorDataset[T]) Len() int { return len(d.Y) }

// ImageShape returns (C, H, W).
func (d *TensorDataset[T]) ImageShape() []int { return slices.Clone(d.X.Shape[1:]) }

// Batch copies the samples idx into a new tensor. It panics if an index is
// out of range.
func (d *TensorDataset[T]) Batch(idx []int) (*tensor.Tensor[T], []int) {
	sz := d.X.Shape[1] * d.X.Shape[2] * d.X.Shape[3]
	x := tensor.New[T](len(idx), d.X.Shape[1], d.X.Shape[2], d.X.Shape[3])
	y := make([]int, len(idx))
	for k, i := range idx {
		copy(x.Data[k*sz:(k+1)*sz], d.X.Data[i*sz:(i+1)*sz])
		y[k] = d.Y[i]
	}
	return x, y
}

// TrainConfig configures Train. Start from DefaultTrainConfig: the zero
// values of Momentum and WeightDecay mean none.
type TrainConfig[T Float] struct {
	Epochs    int // default 1
	BatchSize int // default 256 (the DC evaluation's batch_train)
	// LR, Momentum and WeightDecay configure the default optimizer, SGD
	// (DC evaluation: 0.01, 0.9, 5e-4). LR is also the base rate of the
	// schedule; default 0.01.
	LR, Momentum, WeightDecay float64
	// Optimizer replaces SGD if set (LR, Momentum and WeightDecay are then
	// ignored); its own learning rate is the schedule's base rate.
	Optimizer Optimizer[T]
	// Schedule sets the rate of each epoch (nil: constant).
	Schedule Schedule
	// Seed seeds the minibatch order (stream 0 of tensor.NewRNG).
	Seed uint64
	// Augment, if set, transforms each training batch (N, C, H, W) on the
	// step's tape before the forward pass (e.g. DSA augmentation).
	Augment func(tp *ag.Tape[T], x *ag.Var[T]) *ag.Var[T]
	// Context cancels training between steps (nil: never).
	Context context.Context
	// SoftTargets, if set, holds one target distribution per training
	// sample (N, classes): the loss is then the soft cross entropy
	// −Σ_k t_k·log softmax(logits)_k (soft labels of TESLA, SLDD, KIP), and
	// the reported accuracy counts agreement with each row's largest
	// target. The dataset's hard labels are not used for the loss.
	SoftTargets *tensor.Tensor[T]
	// Mix, if set, mixes each training batch after Augment, as CutMix and
	// mixup do: it may change the batch x (N, C, H, W; the step's own copy)
	// in place and returns a permutation perm of the batch and a ratio r,
	// and the loss becomes r·CE(targets) + (1−r)·CE(targets∘perm), the
	// cross entropy against the mixed targets. A nil perm leaves the batch
	// unmixed. The reported accuracy still counts the unmixed labels.
	Mix func(x *tensor.Tensor[T]) (perm []int, r float64)
}

// DefaultTrainConfig returns the DC/DSA/DM evaluation settings: SGD with
// learning rate 0.01, momentum 0.9, weight decay 5e-4, batch 256, one
// epoch, constant rate. Set Epochs and, for the DC schedule,
// Schedule = HalfwayDecay(Epochs).
func DefaultTrainConfig[T Float]() TrainConfig[T] {
	return TrainConfig[T]{Epochs: 1, BatchSize: 256, LR: 0.01, Momentum: 0.9, WeightDecay: 5e-4}
}

// Progress reports one training step.
type Progress struct {
	Epoch, Epochs int // Epoch is 0-based
	Step, Steps   int // step within the epoch (0-based) and steps per epoch
	GlobalStep    int // steps done so far, including this one
	TotalSteps    int
	LR            float64
	Loss          float64 // this batch's mean loss
	EpochLoss     float64 // mean loss over the epoch so far
	EpochAcc      float64 // training accuracy over the epoch so far
	Images        int     // images seen this epoch
	ImagesPerSec  float64 // over the epoch so far
	EpochDone     bool    // the epoch's last step
}

// Train trains m on set with minibatch gradient descent: each epoch visits
// the samples once in an order drawn from cfg.Seed (the last batch may be
// smaller), minimising the mean cross-entropy. The model is in training
// mode during Train; its previous mode is restored on return. progress, if
// not nil, is called after every step. Each step's tape is released before
// the next, so memory stays flat. Train returns the first error of a step
// (shape mismatch, a non-finite loss, cancellation).
func Train[T Float](m Model[T], set Dataset[T], cfg TrainConfig[T], progress func(Progress)) error {
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
		return fmt.Errorf("nn: Train: epochs %d, batch size %d and learning rate %g must be positive", cfg.Epochs, cfg.BatchSize, cfg.LR)
	}
	n := set.Len()
	if n == 0 {
		return fmt.Errorf("nn: Train: empty training set")
	}
	if tm, ok := m.(Trainable); ok {
		prev := tm.Training()
		tm.SetTraining(true)
		defer tm.SetTraining(prev)
	}
	opt := cfg.Optimizer
	if opt == nil {
		opt = &SGD[T]{LR: cfg.LR, Momentum: cfg.Momentum, WeightDecay: cfg.WeightDecay}
	}
	base := opt.LearningRate()
	sched := cfg.Schedule
	if sched == nil {
		sched = ConstantLR{}
	}
	ctx := cfg.Context
	if ctx == nil {
		ctx = context.Background()
	}
	if t := cfg.SoftTargets; t != nil && (t.Rank() != 2 || t.Shape[0] != n) {
		return fmt.Errorf("nn: Train: soft targets of shape %v for %d samples (want (%d, classes))", t.Shape, n, n)
	}
	rng := tensor.NewRNG(cfg.Seed, 0)
	steps := (n + cfg.BatchSize - 1) / cfg.BatchSize
	params := m.Params()
	grads := make([]*tensor.Tensor[T], len(params))
	tp := ag.NewTape[T]()
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
				return fmt.Errorf("nn: Train: %w", err)
			}
			idx := perm[s*cfg.BatchSize : min(n, (s+1)*cfg.BatchSize)]
			xb, yb := set.Batch(idx)
			x := tp.Const(xb)
			if cfg.Augment != nil {
				x = cfg.Augment(tp, x)
			}
			var perm []int
			ratio := 1.0
			if cfg.Mix != nil {
				if perm, ratio = cfg.Mix(x.Value); perm != nil && len(perm) != len(idx) {
					tp.Release()
					return fmt.Errorf("nn: Train: epoch %d step %d: Mix returned a permutation of %d for a batch of %d", ep, s, len(perm), len(idx))
				}
			}
			ps := Bind(tp, m)
			logits := m.Forward(x, ps)
			// The batch's targets: its soft rows, or its labels; the loss
			// is the cross entropy against them, mixed with the targets
			// of perm when Mix asked for it.
			var loss, mixed *ag.Var[T]
			if cfg.SoftTargets != nil {
				tb := tp.AllocUninit(len(idx), cfg.SoftTargets.Shape[1])
				tensor.IndexRows(tb, cfg.SoftTargets, idx)
				loss = ag.CrossEntropySoft(logits, tp.Const(tb))
				if perm != nil {
					tm := tp.AllocUninit(len(idx), cfg.SoftTargets.Shape[1])
					tensor.IndexRows(tm, tb, perm)
					mixed = ag.CrossEntropySoft(logits, tp.Const(tm))
				}
				yb = argmaxRows(tb)
			} else {
				loss = ag.CrossEntropy(logits, yb)
				if perm != nil {
					ym := make([]int, len(yb))
					for i, j := range perm {
						ym[i] = yb[j]
					}
					mixed = ag.CrossEntropy(logits, ym)
				}
			}
			if mixed != nil {
				loss = ag.Add(ag.Scale(loss, T(ratio)), ag.Scale(mixed, T(1-ratio)))
			}
			gs, err := tp.Grad([]*ag.Var[T]{loss}, nil, ps, false)
			if err != nil {
				tp.Release()
				return fmt.Errorf("nn: Train: epoch %d step %d: %w", ep, s, err)
			}
			l := float64(loss.Value.Item())
			if math.IsNaN(l) || math.IsInf(l, 0) {
				tp.Release()
				return fmt.Errorf("nn: Train: epoch %d step %d: loss is %v (diverged; lower the learning rate)", ep, s, l)
			}
			correct += CountCorrect(logits.Value, yb)
			for i, g := range gs {
				grads[i] = g.Value
			}
			err = opt.Step(params, grads)
			tp.Release()
			if err != nil {
				return fmt.Errorf("nn: Train: %w", err)
			}
			clear(grads)
			seen += len(idx)
			sumLoss += l * float64(len(idx))
			global++
			if progress != nil {
				el := time.Since(start).Seconds()
				progress(Progress{
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

// countCorrect returns how many rows of logits (N, K) have their maximum at
// the label (the first maximum on ties).
// argmaxRows returns the position of each row's first maximum.
func argmaxRows[T Float](t *tensor.Tensor[T]) []int {
	k := t.Shape[1]
	out := make([]int, t.Shape[0])
	for i := range out {
		row := t.Data[i*k : (i+1)*k]
		for j, v := range row {
			if v > row[out[i]] {
				out[i] = j
			}
		}
	}
	return out
}

// CountCorrect counts the rows of logits (N, K) whose first largest value
// is at the row's label in y (len(y) rows are read).
func CountCorrect[T Float](logits *tensor.Tensor[T], y []int) int {
	k := logits.Shape[1]
	c := 0
	for i, l := range y {
		row := logits.Data[i*k : (i+1)*k]
		best := 0
		for j, v := range row {
			if v > row[best] {
				best = j
			}
		}
		if best == l {
			c++
		}
	}
	return c
}

// Evaluate returns m's accuracy and mean cross-entropy on images x
// (N, C, H, W) with labels y, in batches of batch (≤ 0: 256), in
// evaluation mode (the previous mode is restored) and without recording a
// graph; each batch's tape is released before the next.
func Evaluate[T Float](m Model[T], x *tensor.Tensor[T], y []int, batch int) (acc, loss float64, err error) {
	if x == nil || x.Rank() != 4 || len(x.Data) != tensor.Size(x.Shape) {
		var shape []int
		if x != nil {
			shape = x.Shape
		}
		return 0, 0, fmt.Errorf("nn: Evaluate: images must be an (N, C, H, W) tensor, got shape %v", shape)
	}
	n := x.Shape[0]
	if len(y) != n {
		return 0, 0, fmt.Errorf("nn: Evaluate: %d images but %d labels", n, len(y))
	}
	if n == 0 {
		return 0, 0, fmt.Errorf("nn: Evaluate: no images")
	}
	if batch <= 0 {
		batch = 256
	}
	if tm, ok := m.(Trainable); ok {
		prev := tm.Training()
		tm.SetTraining(false)
		defer tm.SetTraining(prev)
	}
	sz := x.Shape[1] * x.Shape[2] * x.Shape[3]
	tp := ag.NewTape[T]()
	defer tp.Release()
	var sum float64
	correct := 0
	for lo := 0; lo < n; lo += batch {
		hi := min(n, lo+batch)
		xb := &tensor.Tensor[T]{Shape: []int{hi - lo, x.Shape[1], x.Shape[2], x.Shape[3]}, Data: x.Data[lo*sz : hi*sz]}
		tp.NoGrad(func() {
			logits := m.Forward(tp.Const(xb), BindConst(tp, m))
			l := ag.CrossEntropy(logits, y[lo:hi])
			if tp.Err() == nil {
				sum += float64(l.Value.Item()) * float64(hi-lo)
				correct += CountCorrect(logits.Value, y[lo:hi])
			}
		})
		if err := tp.Err(); err != nil {
			return 0, 0, fmt.Errorf("nn: Evaluate: batch at %d: %w", lo, err)
		}
		tp.Release()
	}
	return float64(correct) / float64(n), sum / float64(n), nil
}
