package distill

import (
	"context"
	"errors"
	"fmt"
	"math"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// tm is trajectory matching: MTT (Cazenavette et al., CVPR 2022; survey
// eq. 30), FTD (Du et al., CVPR 2023: MTT from noisy starting weights) and
// TESLA (Cui et al., ICML 2023: a constant-memory meta-gradient and soft
// labels from the experts), as MTT's distill.py runs them. Every
// iteration draws an expert and a start epoch t < MaxStartEpoch from the
// buffer, lets a student take SynSteps SGD steps with the learnable step
// size α on minibatches of the synthetic set (each augmented with
// per-sample DSA), and minimises ‖θ_N − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖²
// with respect to the images (SGD, LRImg, momentum), α (SGD, TM.LRLR, same
// momentum) and, for soft labels, the label logits (SGD, TM.LRLabel, same
// momentum). mtt and ftd differentiate the recorded unroll
// (UnrolledMatchGrad); tesla recomputes every step instead
// (AdjointMatchGrad).
//
// With soft labels, SyntheticSet.YSoft holds the learned label logits
// (N, K): the label distribution of image i is softmax(YSoft[i]).
type tm struct {
	imageState
	buf      *Buffer
	model    nn.Model[float32]
	each     *data.DSA
	lr       float32
	lrVel    float32
	labelVel *tensor.Tensor[float32]
}

func (t *tm) Init(_ context.Context, real *data.Dataset) error {
	if err := t.init(real); err != nil {
		return err
	}
	tc := t.cfg.TM
	if tc.Buffer == "" {
		return fmt.Errorf("distill: %s needs a trajectory buffer: train one with `fedsim distill buffer`, then pass --buffer DIR (Config.TM.Buffer)", t.cfg.Method)
	}
	buf, err := OpenBuffer(tc.Buffer)
	if err != nil {
		return err
	}
	if buf.Experts() == 0 {
		return fmt.Errorf("distill: trajectory buffer %s has no finished expert yet", tc.Buffer)
	}
	if err := buf.CheckModel(t.cfg.Model, real.ImageShape(), real.Classes, real.Mean, real.Std); err != nil {
		return err
	}
	if need := tc.MaxStartEpoch - 1 + tc.ExpertEpochs; need > buf.Epochs() {
		return fmt.Errorf("distill: %s: start epochs up to %d plus %d expert epochs need trajectories of %d epochs; the buffer %s has %d (train a longer buffer or lower --max-start-epoch / --expert-epochs)",
			t.cfg.Method, tc.MaxStartEpoch-1, tc.ExpertEpochs, need, tc.Buffer, buf.Epochs())
	}
	t.buf = buf
	if t.model, err = nn.New[float32](t.cfg.Model, real.ImageShape(), real.Classes, tensor.NewRNG(0, 0)); err != nil {
		return fmt.Errorf("distill: %w", err)
	}
	if tm, ok := t.model.(nn.Trainable); ok {
		tm.SetTraining(true) // student_net.train() in the reference
	}
	if t.shared != nil {
		t.each = &data.DSA{Strategy: t.shared.Strategy, Params: data.DefaultDSAParams()}
		t.shared = nil
	}
	t.lr = float32(tc.LRInit)
	if tc.Labels == LabelsSoft {
		if err := t.initSoftLabels(); err != nil {
			return err
		}
		t.labelVel = tensor.New[float32](t.syn.YSoft.Shape...)
	}
	return nil
}

// initSoftLabels sets the label logits to the logits of the first
// expert's final network on the initial images (TESLA's soft labels).
func (t *tm) initSoftLabels() error {
	ps, err := t.buf.Params(0, t.buf.Epochs())
	if err != nil {
		return err
	}
	tp := ag.NewTape[float32]()
	defer tp.Release()
	var logits *tensor.Tensor[float32]
	tp.NoGrad(func() {
		vs := make([]*ag.Var[float32], len(ps))
		for i, p := range ps {
			vs[i] = tp.Const(p)
		}
		l := t.model.Forward(tp.Const(t.syn.X), vs)
		if tp.Err() == nil {
			logits = l.Value.Clone()
		}
	})
	if err := tp.Err(); err != nil {
		return fmt.Errorf("distill: soft labels: %w", err)
	}
	t.syn.YSoft = logits
	return nil
}

func (t *tm) Step(ctx context.Context, it int) (float64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("distill: iteration %d: %w", it, err)
	}
	tc := t.cfg.TM
	rng := iterRNG(t.cfg.Seed, it)
	e := rng.IntN(t.buf.Experts())
	start := rng.IntN(tc.MaxStartEpoch)
	theta0, err := t.buf.Params(e, start)
	if err != nil {
		return 0, err
	}
	target, err := t.buf.Params(e, start+tc.ExpertEpochs)
	if err != nil {
		return 0, err
	}
	task := &TrajectoryTask[float32]{Model: t.model, Target: target, Denom: ParamDistance(theta0, target), Y: t.syn.Y, SoftY: t.syn.YSoft}
	perturb(theta0, tc.StartNoise, rng)
	task.Start = theta0
	task.Batches, task.Augs = StudentBatches(rng, t.syn.X.Shape, tc.BatchSyn, tc.SynSteps, t.each)
	var g TrajectoryGrad[float32]
	if t.cfg.Method == MethodTESLA {
		g, err = AdjointMatchGrad(task, t.syn.X, float64(t.lr), tc.FixedAdjoint)
	} else {
		g, err = UnrolledMatchGrad(task, t.syn.X, float64(t.lr))
	}
	if err != nil {
		return 0, fmt.Errorf("distill: %s iteration %d (expert %d, start epoch %d): %w", t.cfg.Method, it, e, start, err)
	}
	if math.IsNaN(g.LR) || math.IsInf(g.LR, 0) {
		return g.Loss, fmt.Errorf("%w: iteration %d: the step-size gradient is %v", ErrDiverged, it, g.LR)
	}
	if g.SoftY != nil && tensor.FirstNonFinite(g.SoftY.Data) >= 0 {
		return g.Loss, fmt.Errorf("%w: iteration %d: the soft-label gradient is not finite", ErrDiverged, it)
	}
	copy(t.grad.Data, g.X.Data)
	if err := t.update(it, g.Loss); err != nil {
		return g.Loss, err
	}
	mu := float32(t.cfg.Momentum)
	t.lrVel = mu*t.lrVel + float32(g.LR)
	t.lr -= float32(tc.LRLR) * t.lrVel
	if g.SoftY != nil {
		lr := float32(tc.LRLabel)
		for k, v := range g.SoftY.Data {
			t.labelVel.Data[k] = mu*t.labelVel.Data[k] + v
			t.syn.YSoft.Data[k] -= lr * t.labelVel.Data[k]
		}
	}
	return g.Loss, nil
}

// StepSize returns the current learned student step size α.
func (t *tm) StepSize() float64 { return float64(t.lr) }

func (t *tm) Checkpoint(next int) *Checkpoint {
	c := t.imageState.Checkpoint(next)
	st := &TMState{LR: t.lr, LRVelocity: t.lrVel}
	if t.labelVel != nil {
		st.LabelVelocity = append([]float32(nil), t.labelVel.Data...)
	}
	c.Config.TMState = st
	return c
}

func (t *tm) Restore(c *Checkpoint) error {
	if t.syn == nil {
		return errors.New("distill: Restore before Init")
	}
	st := c.Config.TMState
	if st == nil {
		return errors.New("distill: the checkpoint has no trajectory-matching state (step size); it was not written by mtt, ftd or tesla")
	}
	plain := *c
	plain.Config.TMState = nil
	if err := t.imageState.Restore(&plain); err != nil {
		return err
	}
	if (c.Syn.YSoft != nil) != (t.labelVel != nil) {
		return errors.New("distill: the checkpoint's soft labels do not match this run's label mode")
	}
	if t.labelVel != nil {
		if !equalShape(c.Syn.YSoft.Shape, t.labelVel.Shape) || len(st.LabelVelocity) != len(t.labelVel.Data) {
			return fmt.Errorf("distill: checkpoint soft labels %v with %d momenta, this run's %v", c.Syn.YSoft.Shape, len(st.LabelVelocity), t.labelVel.Shape)
		}
		copy(t.labelVel.Data, st.LabelVelocity)
	}
	if math.IsNaN(float64(st.LR)) || math.IsInf(float64(st.LR), 0) || math.IsNaN(float64(st.LRVelocity)) || math.IsInf(float64(st.LRVelocity), 0) {
		return errors.New("distill: the checkpoint's step size is not finite")
	}
	t.lr, t.lrVel = st.LR, st.LRVelocity
	return nil
}
