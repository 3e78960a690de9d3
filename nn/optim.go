package nn

import (
	"fmt"
	"math"
	"slices"

	"github.com/fedsim/fedsim/tensor"
)

// Optimizer updates parameters in place from their gradients.
type Optimizer[T Float] interface {
	// Step updates params from grads (same order and shapes).
	Step(params, grads []*tensor.Tensor[T]) error
	// SetLR sets the learning rate (schedules call it once per epoch).
	SetLR(lr float64)
	// LearningRate returns the current learning rate.
	LearningRate() float64
}

var (
	_ Optimizer[float32] = (*SGD[float32])(nil)
	_ Optimizer[float32] = (*Adam[float32])(nil)
)

// SGD is stochastic gradient descent with PyTorch's semantics for momentum,
// dampening-free heavy ball or Nesterov, and L2 weight decay:
//
//	g ← g + wd·p;  v ← μ·v + g;  p ← p − lr·(Nesterov ? g + μ·v : v)
type SGD[T Float] struct {
	LR, Momentum, WeightDecay float64
	Nesterov                  bool
	velocity                  []*tensor.Tensor[T]
}

// SetLR sets the learning rate; the momentum buffers are kept.
func (o *SGD[T]) SetLR(lr float64) { o.LR = lr }

// LearningRate returns the learning rate.
func (o *SGD[T]) LearningRate() float64 { return o.LR }

// Reset forgets the momentum buffers (the next step starts afresh, as a new
// torch.optim.SGD would).
func (o *SGD[T]) Reset() { o.velocity = nil }

// Step updates params in place from grads (same order and shapes). It
// returns an error naming the parameter if the shapes disagree.
func (o *SGD[T]) Step(params, grads []*tensor.Tensor[T]) error {
	if err := checkStep("SGD", params, grads); err != nil {
		return err
	}
	if o.Momentum != 0 && len(o.velocity) != len(params) {
		o.velocity = make([]*tensor.Tensor[T], len(params))
	}
	lr, mu, wd := T(o.LR), T(o.Momentum), T(o.WeightDecay)
	for i, p := range params {
		g := grads[i]
		if mu == 0 {
			for j, gv := range g.Data {
				p.Data[j] -= lr * (gv + wd*p.Data[j])
			}
			continue
		}
		v := o.velocity[i]
		if v == nil {
			// PyTorch initialises the buffer with the first gradient.
			v = tensor.New[T](p.Shape...)
			for j, gv := range g.Data {
				v.Data[j] = gv + wd*p.Data[j]
			}
			o.velocity[i] = v
		} else {
			for j, gv := range g.Data {
				v.Data[j] = mu*v.Data[j] + gv + wd*p.Data[j]
			}
		}
		if o.Nesterov {
			for j, gv := range g.Data {
				p.Data[j] -= lr * (gv + wd*p.Data[j] + mu*v.Data[j])
			}
		} else {
			for j, vv := range v.Data {
				p.Data[j] -= lr * vv
			}
		}
	}
	return nil
}

// checkStep validates an optimizer step's arguments before anything is
// updated, so a bad call leaves the parameters untouched.
func checkStep[T Float](opt string, params, grads []*tensor.Tensor[T]) error {
	if len(params) != len(grads) {
		return fmt.Errorf("nn: %s got %d parameters and %d gradients", opt, len(params), len(grads))
	}
	for i, p := range params {
		if p == nil || grads[i] == nil {
			return fmt.Errorf("nn: %s parameter %d or its gradient is nil", opt, i)
		}
		if len(grads[i].Data) != len(p.Data) {
			return fmt.Errorf("nn: %s parameter %d has shape %v, gradient %v", opt, i, p.Shape, grads[i].Shape)
		}
	}
	return nil
}

// Adam is torch.optim.Adam (and AdamW with Decoupled): with t the step
// count, g the gradient and p the parameter,
//
//	Adam:  g ← g + wd·p            AdamW: p ← p·(1 − lr·wd)
//	m ← β₁·m + (1−β₁)·g;  v ← β₂·v + (1−β₂)·g²
//	p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)
//
// Use NewAdam for PyTorch's defaults (β₁ 0.9, β₂ 0.999, ε 1e-8); zero
// fields are taken literally.
type Adam[T Float] struct {
	LR, Beta1, Beta2, Eps, WeightDecay float64
	Decoupled                          bool // AdamW: decoupled weight decay
	t                                  int
	m, v                               []*tensor.Tensor[T]
}

// NewAdam returns Adam with learning rate lr and PyTorch's defaults.
func NewAdam[T Float](lr float64) *Adam[T] {
	return &Adam[T]{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}
}

// NewAdamW returns AdamW with learning rate lr, weight decay wd and
// PyTorch's other defaults.
func NewAdamW[T Float](lr, wd float64) *Adam[T] {
	return &Adam[T]{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: wd, Decoupled: true}
}

// SetLR sets the learning rate; the moment estimates are kept.
func (o *Adam[T]) SetLR(lr float64) { o.LR = lr }

// LearningRate returns the learning rate.
func (o *Adam[T]) LearningRate() float64 { return o.LR }

// Steps returns the number of steps taken.
func (o *Adam[T]) Steps() int { return o.t }

// AdamState is Adam's step count and moment estimates (one M and V per
// parameter, nil before the first step): with the parameters, what a
// checkpoint needs to continue an optimisation bit for bit.
type AdamState[T Float] struct {
	Steps int
	M, V  []*tensor.Tensor[T]
}

// State returns a copy of o's state.
func (o *Adam[T]) State() AdamState[T] {
	s := AdamState[T]{Steps: o.t, M: make([]*tensor.Tensor[T], len(o.m)), V: make([]*tensor.Tensor[T], len(o.v))}
	for i := range o.m {
		if o.m[i] != nil {
			s.M[i], s.V[i] = o.m[i].Clone(), o.v[i].Clone()
		}
	}
	return s
}

// SetState replaces o's state with a copy of s (from State, or read back
// from a checkpoint). It returns an error, leaving o as it was, if s does
// not hold a state Adam could have reached: a negative step count, M and
// V of different lengths or shapes, moments without steps, a negative or
// non-finite moment.
func (o *Adam[T]) SetState(s AdamState[T]) error {
	if s.Steps < 0 {
		return fmt.Errorf("nn: Adam state with %d steps: want ≥ 0", s.Steps)
	}
	if len(s.M) != len(s.V) {
		return fmt.Errorf("nn: Adam state with %d first and %d second moments: want one of each per parameter", len(s.M), len(s.V))
	}
	if s.Steps == 0 && len(s.M) > 0 {
		return fmt.Errorf("nn: Adam state with moments for %d parameters but no step", len(s.M))
	}
	m, v := make([]*tensor.Tensor[T], len(s.M)), make([]*tensor.Tensor[T], len(s.V))
	for i := range s.M {
		if s.M[i] == nil || s.V[i] == nil || !slices.Equal(s.M[i].Shape, s.V[i].Shape) || len(s.M[i].Data) != len(s.V[i].Data) {
			return fmt.Errorf("nn: Adam state, parameter %d: the moments are missing or have different shapes", i)
		}
		if j := tensor.FirstNonFinite(s.M[i].Data); j >= 0 {
			return fmt.Errorf("nn: Adam state, parameter %d: first moment %d is %v", i, j, s.M[i].Data[j])
		}
		for j, x := range s.V[i].Data {
			if !(x >= 0) || math.IsInf(float64(x), 1) {
				return fmt.Errorf("nn: Adam state, parameter %d: second moment %d is %v, want finite and ≥ 0", i, j, x)
			}
		}
		m[i], v[i] = s.M[i].Clone(), s.V[i].Clone()
	}
	o.t, o.m, o.v = s.Steps, m, v
	return nil
}

// Step updates params in place from grads (same order and shapes). It
// returns an error naming the parameter if the shapes disagree.
func (o *Adam[T]) Step(params, grads []*tensor.Tensor[T]) error {
	if err := checkStep("Adam", params, grads); err != nil {
		return err
	}
	if len(o.m) != len(params) {
		o.m = make([]*tensor.Tensor[T], len(params))
		o.v = make([]*tensor.Tensor[T], len(params))
		o.t = 0
	}
	o.t++
	b1, b2 := o.Beta1, o.Beta2
	bc1 := 1 - math.Pow(b1, float64(o.t))
	bc2 := math.Sqrt(1 - math.Pow(b2, float64(o.t)))
	step := o.LR / bc1
	decay := 1 - o.LR*o.WeightDecay
	for i, p := range params {
		g := grads[i]
		if o.m[i] == nil || len(o.m[i].Data) != len(p.Data) {
			o.m[i] = tensor.New[T](p.Shape...)
			o.v[i] = tensor.New[T](p.Shape...)
		}
		m, v := o.m[i].Data, o.v[i].Data
		for j, gj := range g.Data {
			pj := float64(p.Data[j])
			gv := float64(gj)
			if o.WeightDecay != 0 {
				if o.Decoupled {
					pj *= decay
				} else {
					gv += o.WeightDecay * pj
				}
			}
			mj := b1*float64(m[j]) + (1-b1)*gv
			vj := b2*float64(v[j]) + (1-b2)*gv*gv
			m[j], v[j] = T(mj), T(vj)
			p.Data[j] = T(pj - step*mj/(math.Sqrt(vj)/bc2+o.Eps))
		}
	}
	return nil
}

// Schedule gives the learning rate of each epoch.
type Schedule interface {
	// LR returns the learning rate of epoch (0-based) of epochs, for the
	// base rate base.
	LR(base float64, epoch, epochs int) float64
}

// ConstantLR keeps the base rate.
type ConstantLR struct{}

// LR returns base.
func (ConstantLR) LR(base float64, _, _ int) float64 { return base }

// StepLR multiplies the rate by Gamma at each milestone epoch
// (torch.optim.lr_scheduler.MultiStepLR stepped once per epoch): epoch e
// trains with base·Gamma^k, k the number of milestones ≤ e.
type StepLR struct {
	Milestones []int
	Gamma      float64
}

// LR returns the rate of the epoch.
func (s StepLR) LR(base float64, epoch, _ int) float64 {
	for _, m := range s.Milestones {
		if epoch >= m {
			base *= s.Gamma
		}
	}
	return base
}

// HalfwayDecay is the DC/DSA/DM evaluation schedule: ×0.1 from epoch
// epochs/2 on. (The reference code trains epochs+1 epochs and decays after
// epoch epochs/2+1, also resetting the momentum; this keeps the momentum
// and decays at exactly half.)
func HalfwayDecay(epochs int) StepLR {
	return StepLR{Milestones: []int{epochs / 2}, Gamma: 0.1}
}

// CosineLR anneals from the base rate to Min over the run
// (CosineAnnealingLR with T_max = epochs, stepped once per epoch):
// lr = Min + (base − Min)·(1 + cos(π·epoch/epochs))/2.
type CosineLR struct{ Min float64 }

// LR returns the rate of the epoch.
func (s CosineLR) LR(base float64, epoch, epochs int) float64 {
	if epochs <= 0 {
		return base
	}
	return s.Min + (base-s.Min)*(1+math.Cos(math.Pi*float64(epoch)/float64(epochs)))/2
}
