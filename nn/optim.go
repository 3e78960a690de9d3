package nn

import (
	"fmt"

	"github.com/fedsim/fedsim/tensor"
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

// Step updates params in place from grads (same order and shapes). It
// returns an error naming the parameter if the shapes disagree.
func (o *SGD[T]) Step(params, grads []*tensor.Tensor[T]) error {
	if len(params) != len(grads) {
		return fmt.Errorf("nn: SGD got %d parameters and %d gradients", len(params), len(grads))
	}
	if o.Momentum != 0 && o.velocity == nil {
		o.velocity = make([]*tensor.Tensor[T], len(params))
	}
	lr, mu, wd := T(o.LR), T(o.Momentum), T(o.WeightDecay)
	for i, p := range params {
		g := grads[i]
		if len(g.Data) != len(p.Data) {
			return fmt.Errorf("nn: SGD parameter %d has shape %v, gradient %v", i, p.Shape, g.Shape)
		}
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
