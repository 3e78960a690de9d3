package autograd

import (
	"slices"

	"github.com/fedsim/fedsim/tensor"
)

// CrossEntropy returns the mean over the batch of −log softmax(logits)[n,
// labels[n]] for logits of shape (N, K), as torch.nn.functional.cross_entropy
// does. An empty batch gives 0. A label outside [0, K), or a label count
// other than N, is an error naming it.
func CrossEntropy[T Float](logits *Var[T], labels []int) *Var[T] {
	tp, ok := tapeOf("CrossEntropy", logits)
	if !ok {
		return tp.placeholder()
	}
	sh := logits.Value.Shape
	if len(sh) != 2 {
		tp.Failf("CrossEntropy: logits must be (N, K), got shape %v; flatten them first", sh)
		return tp.placeholder()
	}
	n, k := sh[0], sh[1]
	if len(labels) != n {
		tp.Failf("CrossEntropy: %d labels for logits of shape %v; pass one label per row", len(labels), sh)
		return tp.placeholder()
	}
	onehot := tp.Alloc(n, k)
	for i, l := range labels {
		if l < 0 || l >= k {
			tp.Failf("CrossEntropy: label %d at row %d is out of range [0, %d) for logits of shape %v", l, i, k, sh)
			return tp.placeholder()
		}
		onehot.Data[i*k+l] = 1
	}
	return crossEntropy(tp, "CrossEntropy", logits, tp.Const(onehot))
}

// CrossEntropySoft returns the mean over the batch of −Σ_k targets[n,k]·log
// softmax(logits)[n,k] for logits and targets of shape (N, K): cross entropy
// against soft labels (probability rows). targets may require a gradient
// (learned soft labels); its gradient is −log softmax(logits)/N. Rows of
// targets need not sum to 1: the logits' gradient is
// (softmax·Σ_k targets − targets)/N. An empty batch gives 0.
func CrossEntropySoft[T Float](logits, targets *Var[T]) *Var[T] {
	tp, ok := tapeOf("CrossEntropySoft", logits, targets)
	if !ok {
		return tp.placeholder()
	}
	if len(logits.Value.Shape) != 2 || !slices.Equal(logits.Value.Shape, targets.Value.Shape) {
		tp.Failf("CrossEntropySoft: logits %v and targets %v must both be (N, K)", logits.Value.Shape, targets.Value.Shape)
		return tp.placeholder()
	}
	return crossEntropy(tp, "CrossEntropySoft", logits, targets)
}

func crossEntropy[T Float](tp *Tape[T], name string, logits, targets *Var[T]) *Var[T] {
	n := logits.Value.Shape[0]
	inv := 1 / T(max(n, 1))
	logp := tp.AllocUninit(logits.Value.Shape...)
	out := tp.AllocUninit()
	out.Data[0] = T(tensor.SoftCrossEntropy(logp, logits.Value, targets.Value)) * inv
	return tp.Record(out, []*Var[T]{logits, targets}, func(g *Var[T], needs []bool) []*Var[T] {
		var gl, gt *Var[T]
		if !tp.Recording() {
			var dl, dt *tensor.Tensor[T]
			if needs[0] {
				dl = tp.AllocUninit(logits.Value.Shape...)
				gl = tp.Const(dl)
			}
			if needs[1] {
				dt = tp.AllocUninit(logits.Value.Shape...)
				gt = tp.Const(dt)
			}
			tensor.SoftCrossEntropyBackward(dl, dt, logp, targets.Value, g.Value.Item()*inv)
			return []*Var[T]{gl, gt}
		}
		// The log-probabilities again, as a differentiable function of the
		// logits.
		lp := LogSoftmax(logits)
		sc := Scale(g, inv)
		if needs[0] {
			gl = Mul(Sub(Mul(Exp(lp), SumAxes(targets, []int{-1}, true)), targets), sc)
		}
		if needs[1] {
			gt = Neg(Mul(lp, sc))
		}
		return []*Var[T]{gl, gt}
	})
}

// MSE returns the mean of (a − b)² over all elements (0 for empty inputs).
// a and b must have the same shape.
func MSE[T Float](a, b *Var[T]) *Var[T] {
	tp, ok := tapeOf("MSE", a, b)
	if !ok {
		return tp.placeholder()
	}
	if !slices.Equal(a.Value.Shape, b.Value.Shape) {
		tp.Failf("MSE: shapes %v and %v differ; reshape or broadcast one explicitly", a.Value.Shape, b.Value.Shape)
		return tp.placeholder()
	}
	return Mean(Square(Sub(a, b)))
}
