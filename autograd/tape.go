// Package autograd is fedsim's define-by-run reverse-mode differentiation,
// exact to any order.
//
// A Tape records every operation on its variables in creation order (a
// Wengert list). Grad walks the tape backwards. Every backward rule is itself
// written with the differentiable operations of this package, so when Grad is
// asked to create a graph the gradients it returns are ordinary variables on
// the same tape and can be differentiated again: gradient matching
// differentiates a parameter gradient with respect to the input images, and
// trajectory matching backpropagates through unrolled SGD steps.
//
// The tape is also the arena of a step: every buffer an operation allocates
// comes from the tensor pool and goes back to it on Release, so a training
// loop that releases its tape each step allocates almost nothing.
//
// Errors are sticky, as in bufio: an operation on mismatched shapes records
// an error naming both shapes and returns a placeholder; every later
// operation on the tape is a no-op, and Err and Grad report the first error.
// Kernels below this package panic on programmer errors; operations here
// check shapes first so that those panics are not reached from the public
// API.
package autograd

import (
	"fmt"

	"github.com/fedsim/fedsim/tensor"
)

// Float is the element type of a tape: float32 for work, float64 for checks.
type Float = tensor.Float

// Tape records operations for reverse-mode differentiation and owns the
// buffers they allocate. A Tape is not safe for concurrent use; run one tape
// per goroutine.
type Tape[T Float] struct {
	nodes  []*node[T]
	nvars  int
	owned  []*tensor.Tensor[T]
	err    error
	noGrad int // >0 while recording is off (NoGrad, or Grad without createGraph)
	// inPlaceAdds counts gradient contributions Grad added in place
	// (liveSet.addInPlace); tests read it.
	inPlaceAdds int
}

// Var is a value on a tape. Vars are created by the tape (Param, Const) or by
// operations.
type Var[T Float] struct {
	Value *tensor.Tensor[T]
	tape  *Tape[T]
	id    int
	// requiresGrad is set for parameters and for results of operations on
	// at least one variable that requires it while recording is on.
	requiresGrad bool
	node         *node[T]
}

// BackwardFunc returns the gradients of an operation's inputs given g, the
// gradient of its output. needs[i] tells whether input i's gradient is
// wanted; a rule may return nil for inputs it was not asked for. Rules must
// be written with this package's operations so that they can be
// differentiated again.
type BackwardFunc[T Float] func(g *Var[T], needs []bool) []*Var[T]

type node[T Float] struct {
	out      *Var[T]
	inputs   []*Var[T]
	backward BackwardFunc[T]
}

// NewTape returns an empty tape.
func NewTape[T Float]() *Tape[T] { return &Tape[T]{} }

// Err returns the first error recorded on the tape.
func (tp *Tape[T]) Err() error { return tp.err }

// Fail records err as the tape's error if it has none yet. Operations call it
// on invalid input; callers may use it for their own checks.
func (tp *Tape[T]) Fail(err error) {
	if tp.err == nil {
		tp.err = err
	}
}

// Failf records a formatted error (prefixed with "autograd: ").
func (tp *Tape[T]) Failf(format string, args ...any) {
	tp.Fail(fmt.Errorf("autograd: "+format, args...))
}

// Release returns every buffer the tape allocated to the pool and empties the
// tape. Vars from the tape must not be used afterwards; values that must
// outlive the tape are copied out first (Var.Value.Clone, or an optimizer
// step). Parameters and constants passed in by the caller are not touched.
func (tp *Tape[T]) Release() {
	for _, t := range tp.owned {
		tensor.Put(t)
	}
	clear(tp.owned)
	tp.owned = tp.owned[:0]
	clear(tp.nodes)
	tp.nodes = tp.nodes[:0]
	tp.nvars = 0
	tp.err = nil
	tp.noGrad = 0
}

// Len returns the number of recorded operations (for tests and tooling).
func (tp *Tape[T]) Len() int { return len(tp.nodes) }

// NoGrad runs f with recording off: operations compute values but record
// nothing, as in evaluation.
func (tp *Tape[T]) NoGrad(f func()) {
	tp.noGrad++
	defer func() { tp.noGrad-- }()
	f()
}

// Recording reports whether operations are being recorded. Backward rules
// may use it to take a fused first-order path when no graph is built.
func (tp *Tape[T]) Recording() bool { return tp.noGrad == 0 }

func (tp *Tape[T]) newVar(t *tensor.Tensor[T], owned, requiresGrad bool) *Var[T] {
	v := &Var[T]{Value: t, tape: tp, id: tp.nvars, requiresGrad: requiresGrad}
	tp.nvars++
	if owned {
		tp.owned = append(tp.owned, t)
	}
	return v
}

// Param wraps t as a leaf that gradients can be taken with respect to. The
// tape does not own t: Release leaves it alone.
func (tp *Tape[T]) Param(t *tensor.Tensor[T]) *Var[T] { return tp.newVar(t, false, true) }

// Const wraps t as a leaf without gradient. The tape does not own t.
func (tp *Tape[T]) Const(t *tensor.Tensor[T]) *Var[T] { return tp.newVar(t, false, false) }

// Scalar returns a constant scalar owned by the tape.
func (tp *Tape[T]) Scalar(v T) *Var[T] {
	t := tensor.GetUninit[T]()
	t.Data[0] = v
	return tp.newVar(t, true, false)
}

// Alloc returns a zero-filled tensor owned by the tape.
func (tp *Tape[T]) Alloc(shape ...int) *tensor.Tensor[T] {
	t := tensor.Get[T](shape...)
	tp.owned = append(tp.owned, t)
	return t
}

// AllocUninit is Alloc without zeroing, for kernels that overwrite their
// destination completely.
func (tp *Tape[T]) AllocUninit(shape ...int) *tensor.Tensor[T] {
	t := tensor.GetUninit[T](shape...)
	tp.owned = append(tp.owned, t)
	return t
}

// Own makes the tape responsible for releasing t (which must come from
// tensor.Get or GetUninit).
func (tp *Tape[T]) Own(t *tensor.Tensor[T]) { tp.owned = append(tp.owned, t) }

// Record makes out (usually allocated with Alloc) the value of a new
// variable computed from inputs. When recording is on and an input requires
// a gradient, the operation goes on the tape with its backward rule.
// Packages that define their own differentiable operations (augmentations,
// fused layers) use Record the way this package's operations do.
func (tp *Tape[T]) Record(out *tensor.Tensor[T], inputs []*Var[T], backward BackwardFunc[T]) *Var[T] {
	req := false
	if tp.noGrad == 0 {
		for _, in := range inputs {
			if in.requiresGrad {
				req = true
				break
			}
		}
	}
	v := tp.newVar(out, false, req)
	if req {
		n := &node[T]{out: v, inputs: inputs, backward: backward}
		v.node = n
		tp.nodes = append(tp.nodes, n)
	}
	return v
}

// placeholder is what operations return on a failed tape.
func (tp *Tape[T]) placeholder() *Var[T] {
	return tp.newVar(&tensor.Tensor[T]{Shape: []int{0}, Data: nil}, false, false)
}

// Tape returns the tape v lives on.
func (v *Var[T]) Tape() *Tape[T] { return v.tape }

// Shape returns the shape of v's value.
func (v *Var[T]) Shape() []int { return v.Value.Shape }

// RequiresGrad reports whether gradients flow to v.
func (v *Var[T]) RequiresGrad() bool { return v.requiresGrad }

// Detach returns v's value as a new constant on the same tape (sharing the
// data): gradients do not flow through it.
func (v *Var[T]) Detach() *Var[T] { return v.tape.newVar(v.Value, false, false) }

// tapeOf returns the tape shared by vs, recording an error and returning
// ok=false if any input is nil, comes from another tape, or the tape has
// already failed.
func tapeOf[T Float](op string, vs ...*Var[T]) (tp *Tape[T], ok bool) {
	for _, v := range vs {
		if v == nil {
			panic("autograd: " + op + ": nil variable")
		}
		if tp == nil {
			tp = v.tape
		} else if v.tape != tp {
			tp.Failf("%s: variables from different tapes", op)
			return tp, false
		}
	}
	return tp, tp.err == nil
}

// Grad returns the gradients of Σ_i <seeds[i], outputs[i]> with respect to
// each of wrt. A nil seeds slice (or nil entry) means ones, so for a scalar
// output Grad returns its plain gradient. A wrt variable the outputs do not
// depend on gets a zero gradient.
//
// With createGraph the backward rules are recorded on the tape, so the
// returned gradients can be differentiated again (Grad may be called on
// them). Without it the gradients are constants.
func (tp *Tape[T]) Grad(outputs, seeds, wrt []*Var[T], createGraph bool) ([]*Var[T], error) {
	if tp.err != nil {
		return nil, tp.err
	}
	if seeds != nil && len(seeds) != len(outputs) {
		return nil, fmt.Errorf("autograd: Grad got %d outputs and %d seeds", len(outputs), len(seeds))
	}
	for i, o := range outputs {
		if o.tape != tp {
			return nil, fmt.Errorf("autograd: Grad output %d is from another tape", i)
		}
	}
	for i, w := range wrt {
		if w.tape != tp {
			return nil, fmt.Errorf("autograd: Grad variable %d is from another tape", i)
		}
	}
	nvars := tp.nvars
	nnodes := len(tp.nodes)

	// needed[id]: the variable depends on some wrt variable. Node order is a
	// topological order, so one forward sweep settles it.
	needed := make([]bool, nvars)
	for _, w := range wrt {
		needed[w.id] = true
	}
	for _, n := range tp.nodes[:nnodes] {
		if needed[n.out.id] {
			continue
		}
		for _, in := range n.inputs {
			if needed[in.id] {
				needed[n.out.id] = true
				break
			}
		}
	}

	if !createGraph {
		tp.noGrad++
		defer func() { tp.noGrad-- }()
	}
	grads := make([]*Var[T], nvars)
	// Without a graph to keep, gradient buffers die as the sweep goes: a
	// node's output gradient once the node is processed, and whatever a rule
	// allocated that no gradient slot refers to. live counts, per buffer,
	// the slots that refer to it (views share their buffer's first element).
	var live *liveSet[T]
	if !createGraph {
		live = &liveSet[T]{tp: tp, from: len(tp.owned), refs: map[*T]int{}, mine: map[*T]int{}}
	}
	store := func(id int, g *Var[T]) {
		old := grads[id]
		if live != nil && live.addInPlace(old, g) {
			return
		}
		grads[id] = accumulate(old, g)
		if live != nil {
			live.ref(grads[id], +1)
			if old != nil {
				live.ref(old, -1)
			}
		}
	}
	for i, o := range outputs {
		if !needed[o.id] {
			continue
		}
		var s *Var[T]
		if seeds != nil && seeds[i] != nil {
			s = seeds[i]
			if !tensor.SameShape(s.Value.Shape, o.Value.Shape) {
				return nil, fmt.Errorf("autograd: Grad seed %d has shape %v, output has %v", i, s.Value.Shape, o.Value.Shape)
			}
		} else {
			t := tp.AllocUninit(o.Value.Shape...)
			t.Fill(1)
			s = tp.newVar(t, false, false)
		}
		store(o.id, s)
	}
	wanted := make([]bool, nvars)
	for _, w := range wrt {
		wanted[w.id] = true
	}

	for i := nnodes - 1; i >= 0; i-- {
		n := tp.nodes[i]
		g := grads[n.out.id]
		if g == nil || !needed[n.out.id] {
			continue
		}
		needs := make([]bool, len(n.inputs))
		want := false
		for j, in := range n.inputs {
			needs[j] = needed[in.id] && in.requiresGrad
			want = want || needs[j]
		}
		if !want {
			continue
		}
		ins := n.backward(g, needs)
		if tp.err != nil {
			return nil, tp.err
		}
		for j, gi := range ins {
			if !needs[j] || gi == nil {
				continue
			}
			in := n.inputs[j]
			if !tensor.SameShape(gi.Value.Shape, in.Value.Shape) {
				return nil, fmt.Errorf("autograd: internal error: backward gave shape %v for an input of shape %v", gi.Value.Shape, in.Value.Shape)
			}
			store(in.id, gi)
		}
		if live != nil {
			if !wanted[n.out.id] {
				live.ref(g, -1)
				grads[n.out.id] = nil
			}
			live.sweep()
		}
	}

	out := make([]*Var[T], len(wrt))
	for i, w := range wrt {
		if g := grads[w.id]; g != nil {
			out[i] = g
		} else {
			out[i] = tp.newVar(tp.Alloc(w.Value.Shape...), false, false)
		}
	}
	return out, tp.err
}

func accumulate[T Float](acc, g *Var[T]) *Var[T] {
	if acc == nil {
		return g
	}
	return Add(acc, g)
}

// liveSet tracks which buffers allocated during a Grad sweep are still
// referred to by a gradient slot, and returns the others to the pool.
type liveSet[T Float] struct {
	tp   *Tape[T]
	from int // tp.owned[from:] were allocated by this sweep
	refs map[*T]int
	// mine maps the first element of each buffer this sweep allocated and
	// kept, as of the last sweep, to the buffer's length.
	mine map[*T]int
}

// addInPlace adds g into acc's buffer when nothing but acc's own gradient
// slot can see that buffer: it was allocated by this sweep (so no caller
// holds it), exactly one slot refers to it, acc covers all of it, and g
// lives elsewhere. It reports whether it did; otherwise the caller
// accumulates into a fresh buffer. Without a graph to record, this saves
// one buffer and one pass of memory per accumulation, and gives the same
// bits: y += 1·x is one rounding of y + x, as Add computes it.
func (l *liveSet[T]) addInPlace(acc, g *Var[T]) bool {
	k := bufKey(acc)
	if k == nil || l.refs[k] != 1 || bufKey(g) == k {
		return false
	}
	n, ok := l.mine[k]
	if !ok || len(acc.Value.Data) != n || len(g.Value.Data) != n {
		return false
	}
	tensor.Axpy(1, g.Value.Data, acc.Value.Data)
	l.tp.inPlaceAdds++
	return true
}

func bufKey[T Float](v *Var[T]) *T {
	if v == nil || len(v.Value.Data) == 0 {
		return nil
	}
	return &v.Value.Data[0]
}

func (l *liveSet[T]) ref(v *Var[T], d int) {
	if k := bufKey(v); k != nil {
		l.refs[k] += d
	}
}

// sweep releases the buffers allocated since l.from that no slot refers to.
func (l *liveSet[T]) sweep() {
	owned := l.tp.owned
	kept := owned[:l.from]
	for _, t := range owned[l.from:] {
		if len(t.Data) == 0 {
			continue
		}
		k := &t.Data[0]
		if l.refs[k] > 0 {
			kept = append(kept, t)
			l.mine[k] = len(t.Data)
			continue
		}
		delete(l.mine, k)
		tensor.Put(t)
	}
	clear(owned[len(kept):])
	l.tp.owned = kept
}
