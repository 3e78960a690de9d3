// Package nn holds fedsim's models and their parameters.
//
// Models are functional: a model owns its parameter tensors, and Forward
// takes the parameters as explicit autograd variables. A training step binds
// the model's own tensors (Bind); trajectory matching and meta-learning bind
// variables computed by unrolled SGD steps instead, and differentiate
// through them. Parameter order is fixed and documented per model, and every
// parameter has a PyTorch-style name, so weights and gradients line up with
// the reference implementations and with files other tools read.
package nn

import (
	"fmt"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/tensor"
)

// Float is the element type of a model.
type Float = tensor.Float

// Model is a classifier with explicit parameters.
type Model[T Float] interface {
	// Params returns the model's parameter tensors in a fixed order.
	Params() []*tensor.Tensor[T]
	// ParamNames returns the PyTorch-style name of each parameter.
	ParamNames() []string
	// Forward returns the logits (N, classes) of a batch x computed with
	// the given parameters (one variable per Params entry, same shapes).
	Forward(x *ag.Var[T], params []*ag.Var[T]) *ag.Var[T]
}

// Embedder is a model that exposes its penultimate features, as
// distribution matching needs.
type Embedder[T Float] interface {
	Model[T]
	// Embed returns the flattened features that feed the classifier.
	Embed(x *ag.Var[T], params []*ag.Var[T]) *ag.Var[T]
}

// Bind wraps each parameter tensor of m as a variable on tp that gradients
// can be taken with respect to.
func Bind[T Float](tp *ag.Tape[T], m Model[T]) []*ag.Var[T] {
	ps := m.Params()
	vs := make([]*ag.Var[T], len(ps))
	for i, p := range ps {
		vs[i] = tp.Param(p)
	}
	return vs
}

// BindConst wraps each parameter tensor of m as a constant on tp, for
// evaluation or for a fixed network whose inputs are optimised.
func BindConst[T Float](tp *ag.Tape[T], m Model[T]) []*ag.Var[T] {
	ps := m.Params()
	vs := make([]*ag.Var[T], len(ps))
	for i, p := range ps {
		vs[i] = tp.Const(p)
	}
	return vs
}

// NumParams returns the number of scalar parameters of m.
func NumParams[T Float](m Model[T]) int {
	n := 0
	for _, p := range m.Params() {
		n += p.Len()
	}
	return n
}

// checkParams reports whether ps matches m's parameters in count and shape,
// recording an error on the tape otherwise.
func checkParams[T Float](tp *ag.Tape[T], m Model[T], ps []*ag.Var[T]) bool {
	want := m.Params()
	if len(ps) != len(want) {
		tp.Fail(fmt.Errorf("nn: model has %d parameters, got %d variables", len(want), len(ps)))
		return false
	}
	names := m.ParamNames()
	for i, p := range ps {
		if !tensor.SameShape(p.Shape(), want[i].Shape) {
			tp.Fail(fmt.Errorf("nn: parameter %s has shape %v, got %v", names[i], want[i].Shape, p.Shape()))
			return false
		}
	}
	return true
}
