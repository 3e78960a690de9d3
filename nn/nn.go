// Package nn holds fedsim's models and their parameters.
//
// Models are functional: a model owns its parameter tensors, and Forward
// takes the parameters as explicit autograd variables. A training step binds
// the model's own tensors (Bind); trajectory matching and meta-learning bind
// variables computed by unrolled SGD steps instead, and differentiate
// through them. Parameter order is fixed and documented per model, and every
// parameter has a PyTorch-style name, so weights and gradients line up with
// the reference implementations and with files other tools read.
//
// The models are the dataset-distillation literature's (the DC/DSA/DM
// authors' networks.py): ConvNet and its variants, MLP, LeNet, AlexNet,
// VGG-11 and ResNet-18, built by name with New. Batch-norm running
// statistics are buffers (Buffered), not parameters: Forward updates them in
// training mode and uses them in evaluation mode (Trainable.SetTraining).
// Save and Load keep parameters and buffers in .npz files; SGD and Adam
// update parameters; Train and Evaluate run the classic training and test
// loops.
package nn

import (
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
