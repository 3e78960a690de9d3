package distill

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// MetaTask is one meta-gradient problem of the BPTT methods (survey eq.
// 8–13): from the starting parameters Start, Steps full-batch SGD steps
// of Model on the synthetic images X with step size η (and heavy-ball
// momentum β, Deng & Russakovsky's eq. 12–13: m ← β·m + g, θ ← θ − η·m,
// m₀ = 0), then the cross entropy of the result on the real batch (RealX,
// RealY). The synthetic labels are the hard labels Y or, if Logits (N, K)
// is set, the soft targets softmax(Logits) (SLDD, LD).
type MetaTask[T tensor.Float] struct {
	Model      nn.Model[T]
	Start      []*tensor.Tensor[T]
	X          *tensor.Tensor[T]
	Y          []int
	Logits     *tensor.Tensor[T]
	Steps      int
	Momentum   float64
	RealX      *tensor.Tensor[T]
	RealY      []int
	WantX      bool // compute ∂L/∂X (dd, sldd; not ld)
	WantLogits bool // compute ∂L/∂Logits (sldd, ld)
	// Segment bounds memory for long unrolls: when 0 < Segment < Steps the
	// unroll is first run without a graph, keeping (θ, m) every Segment
	// steps, and the meta-gradient is then back-propagated one segment at
	// a time, each recomputed on its own tape from its stored start
	// (gradient checkpointing). The result is the same exact gradient;
	// memory is one segment's graph instead of Steps', for one extra
	// forward unroll.
	Segment int
}

// MetaGrad is the meta-loss and its gradients.
type MetaGrad[T tensor.Float] struct {
	Loss   float64
	X      *tensor.Tensor[T] // nil unless WantX
	Logits *tensor.Tensor[T] // nil unless WantLogits
	LogLR  float64           // ∂L/∂log η
}

// metaLeaves are the meta-parameters on one tape.
type metaLeaves[T tensor.Float] struct {
	xs, lv, logEta, eta *ag.Var[T]
}

func (task *MetaTask[T]) leaves(tp *ag.Tape[T], logLR float64) metaLeaves[T] {
	var l metaLeaves[T]
	l.xs = tp.Const(task.X)
	if task.WantX {
		l.xs = tp.Param(task.X)
	}
	if task.Logits != nil {
		l.lv = tp.Const(task.Logits)
		if task.WantLogits {
			l.lv = tp.Param(task.Logits)
		}
	}
	l.logEta = tp.Param(tensor.Scalar(T(logLR)))
	l.eta = ag.Exp(l.logEta)
	return l
}

// wrt lists the leaves whose gradients are wanted: log η, then X, then the
// logits.
func (task *MetaTask[T]) wrt(l metaLeaves[T]) []*ag.Var[T] {
	w := []*ag.Var[T]{l.logEta}
	if task.WantX {
		w = append(w, l.xs)
	}
	if task.WantLogits && l.lv != nil {
		w = append(w, l.lv)
	}
	return w
}

// unroll records steps inner steps from (ps, ms) on their tape (ms nil:
// zero momentum) and returns the final parameters and momenta. With
// createGraph the inner gradients are differentiable (BPTT).
func (task *MetaTask[T]) unroll(l metaLeaves[T], ps, ms []*ag.Var[T], steps int, createGraph bool) ([]*ag.Var[T], []*ag.Var[T], error) {
	tp := l.eta.Tape()
	for k := range steps {
		logits := task.Model.Forward(l.xs, ps)
		var loss *ag.Var[T]
		if l.lv != nil {
			loss = ag.CrossEntropySoft(logits, ag.Softmax(l.lv))
		} else {
			loss = ag.CrossEntropy(logits, task.Y)
		}
		gs, err := tp.Grad([]*ag.Var[T]{loss}, nil, ps, createGraph)
		if err != nil {
			return nil, nil, fmt.Errorf("distill: inner step %d: %w", k, err)
		}
		next := make([]*ag.Var[T], len(ps))
		nm := make([]*ag.Var[T], len(ps))
		for j := range ps {
			nm[j] = gs[j]
			if ms != nil && task.Momentum != 0 {
				nm[j] = ag.Add(ag.Scale(ms[j], T(task.Momentum)), gs[j])
			}
			next[j] = ag.Sub(ps[j], ag.Mul(l.eta, nm[j]))
		}
		ps, ms = next, nm
	}
	return ps, ms, nil
}

// DDMetaGrad returns the meta-loss of task at step size η = exp(logLR)
// and its exact gradients: every inner gradient is recorded with
// createGraph, so the meta-gradient includes the Hessian-vector products
// of eq. 9. Without Segment, memory grows with Steps × one double-backward
// graph of the synthetic set.
func DDMetaGrad[T tensor.Float](task MetaTask[T], logLR float64) (MetaGrad[T], error) {
	var out MetaGrad[T]
	if task.Model == nil || task.X == nil || task.RealX == nil || len(task.Start) != len(task.Model.Params()) {
		return out, errors.New("distill: DDMetaGrad needs a model, its starting parameters, synthetic images and a real batch")
	}
	if task.Steps < 1 || task.Segment < 0 {
		return out, fmt.Errorf("distill: DDMetaGrad: %d unrolled steps and segment %d: want at least 1 step and a segment ≥ 0", task.Steps, task.Segment)
	}
	if !(task.Momentum >= 0 && task.Momentum < 1) {
		return out, fmt.Errorf("distill: DDMetaGrad: momentum %g must be in [0, 1)", task.Momentum)
	}
	if task.X.Rank() < 2 || task.RealX.Rank() != task.X.Rank() || len(task.RealY) != task.RealX.Shape[0] {
		return out, fmt.Errorf("distill: DDMetaGrad: synthetic images %v, real images %v with %d labels: want batches of the same rank ≥ 2 and one label per real image", task.X.Shape, task.RealX.Shape, len(task.RealY))
	}
	n := task.X.Shape[0]
	if len(task.Y) != n || (task.Logits != nil && (task.Logits.Rank() != 2 || task.Logits.Shape[0] != n)) {
		return out, fmt.Errorf("distill: DDMetaGrad: %d synthetic images but %d labels", n, len(task.Y))
	}
	if task.Segment > 0 && task.Segment < task.Steps {
		return segmentedMetaGrad(task, logLR)
	}
	tp := ag.NewTape[T]()
	defer tp.Release()
	l := task.leaves(tp, logLR)
	ps := make([]*ag.Var[T], len(task.Start))
	for i, p := range task.Start {
		ps[i] = tp.Param(p)
	}
	ps, _, err := task.unroll(l, ps, nil, task.Steps, true)
	if err != nil {
		return out, err
	}
	loss := ag.CrossEntropy(task.Model.Forward(tp.Const(task.RealX), ps), task.RealY)
	gs, err := tp.Grad([]*ag.Var[T]{loss}, nil, task.wrt(l), false)
	if err != nil {
		return out, fmt.Errorf("distill: meta-gradient: %w", err)
	}
	out.Loss = float64(loss.Value.Item())
	task.collect(&out, gs)
	return out, nil
}

// collect adds the leaf gradients gs (in wrt's order) to out.
func (task *MetaTask[T]) collect(out *MetaGrad[T], gs []*ag.Var[T]) {
	out.LogLR += float64(gs[0].Value.Item())
	add := func(dst **tensor.Tensor[T], g *ag.Var[T]) {
		if *dst == nil {
			*dst = g.Value.Clone()
			return
		}
		for i, v := range g.Value.Data {
			(*dst).Data[i] += v
		}
	}
	i := 1
	if task.WantX {
		add(&out.X, gs[i])
		i++
	}
	if task.WantLogits && task.Logits != nil {
		add(&out.Logits, gs[i])
	}
}

// segmentedMetaGrad is DDMetaGrad with gradient checkpointing (see
// MetaTask.Segment).
func segmentedMetaGrad[T tensor.Float](task MetaTask[T], logLR float64) (MetaGrad[T], error) {
	var out MetaGrad[T]
	clones := func(vs []*ag.Var[T]) []*tensor.Tensor[T] {
		if vs == nil {
			return nil
		}
		c := make([]*tensor.Tensor[T], len(vs))
		for i, v := range vs {
			c[i] = v.Value.Clone()
		}
		return c
	}
	params := func(tp *ag.Tape[T], ts []*tensor.Tensor[T]) []*ag.Var[T] {
		if ts == nil {
			return nil
		}
		vs := make([]*ag.Var[T], len(ts))
		for i, t := range ts {
			vs[i] = tp.Param(t)
		}
		return vs
	}
	carry := task.Momentum != 0 // momenta are state only with β ≠ 0
	// Forward without a graph, keeping every segment's start.
	type state struct{ theta, mom []*tensor.Tensor[T] }
	starts := []state{{theta: task.Start}}
	cur := starts[0]
	var bounds []int
	for a := 0; a < task.Steps; a += task.Segment {
		b := min(task.Steps, a+task.Segment)
		bounds = append(bounds, a)
		tp := ag.NewTape[T]()
		l := task.leaves(tp, logLR)
		ps, ms, err := task.unroll(l, params(tp, cur.theta), params(tp, cur.mom), b-a, false)
		if err != nil {
			tp.Release()
			return out, err
		}
		cur = state{theta: clones(ps)}
		if carry {
			cur.mom = clones(ms)
		}
		starts = append(starts, cur)
		tp.Release()
	}
	// The outer loss at θ_T and its adjoint.
	tp := ag.NewTape[T]()
	final := params(tp, cur.theta)
	loss := ag.CrossEntropy(task.Model.Forward(tp.Const(task.RealX), final), task.RealY)
	gs, err := tp.Grad([]*ag.Var[T]{loss}, nil, final, false)
	if err != nil {
		tp.Release()
		return out, fmt.Errorf("distill: meta-gradient: %w", err)
	}
	out.Loss = float64(loss.Value.Item())
	aTheta := clones(gs)
	var aMom []*tensor.Tensor[T]
	tp.Release()
	// Back-propagate segment by segment, last first.
	for s := len(bounds) - 1; s >= 0; s-- {
		a := bounds[s]
		b := min(task.Steps, a+task.Segment)
		tp := ag.NewTape[T]()
		l := task.leaves(tp, logLR)
		ps0, ms0 := params(tp, starts[s].theta), params(tp, starts[s].mom)
		ps, ms, err := task.unroll(l, ps0, ms0, b-a, true)
		if err != nil {
			tp.Release()
			return out, err
		}
		outputs, seeds := slices.Clone(ps), make([]*ag.Var[T], 0, 2*len(ps))
		for _, t := range aTheta {
			seeds = append(seeds, tp.Const(t))
		}
		if aMom != nil {
			outputs = append(outputs, ms...)
			for _, t := range aMom {
				seeds = append(seeds, tp.Const(t))
			}
		}
		wrt := append(task.wrt(l), ps0...)
		if ms0 != nil {
			wrt = append(wrt, ms0...)
		}
		gs, err := tp.Grad(outputs, seeds, wrt, false)
		if err != nil {
			tp.Release()
			return out, fmt.Errorf("distill: meta-gradient of steps %d–%d: %w", a, b, err)
		}
		nl := len(task.wrt(l))
		task.collect(&out, gs[:nl])
		aTheta = clones(gs[nl : nl+len(ps0)])
		aMom = nil
		if ms0 != nil {
			aMom = clones(gs[nl+len(ps0):])
		}
		tp.Release()
	}
	return out, nil
}

// metaDistiller runs dd (images and step size learned, hard labels),
// sldd (images, soft label logits and step size) and ld (label logits and
// step size; the images stay the initial real ones). Every iteration
// draws a fresh network (Config.Model) and a class-balanced real batch
// of BatchReal images per class, unrolls Meta.Steps SGD steps (with
// Meta.Momentum, back-propagated Meta.Segment steps at a time if set) and
// takes one Adam step on each learned quantity.
//
// Checkpoints keep the set, the labels (y_soft) and the step size (in
// Config.TMState.LR, the field trajectory matching uses for its learned
// step size) but not the Adam moments: a resumed run is close to, not
// identical with, an uninterrupted one.
type metaDistiller struct {
	cfg              Config
	real             *data.Dataset
	byClass          [][]int
	x                *tensor.Tensor[float32]
	y                []int
	logits           *tensor.Tensor[float32] // sldd, ld
	logLR            *tensor.Tensor[float32]
	optX, optY, optη *nn.Adam[float32]
	lin              *linba // linba's factors; d.x is their decoding
}

func newMeta(cfg Config) *metaDistiller { return &metaDistiller{cfg: cfg} }

func (d *metaDistiller) Config() Config  { return d.cfg }
func (d *metaDistiller) Iterative() bool { return true }

// StepSize returns the learned inner step size η.
func (d *metaDistiller) StepSize() float64 { return math.Exp(float64(d.logLR.Data[0])) }

func (d *metaDistiller) Init(_ context.Context, real *data.Dataset) error {
	if err := d.cfg.checkData(real); err != nil {
		return err
	}
	d.real = real
	d.byClass = real.ClassIndices()
	rng := tensor.NewRNG(d.cfg.Seed, streamInit)
	var syn *SyntheticSet
	if d.cfg.Init == InitReal || d.cfg.Method == MethodLD {
		syn = randomReal(real, d.byClass, d.cfg.IPC, rng)
	} else {
		syn = noiseSet(real, d.cfg.IPC, rng)
	}
	d.x, d.y = syn.X, syn.Y
	if d.cfg.Method == MethodLinBa {
		l, err := newLinba(d.cfg, real, rng)
		if err != nil {
			return err
		}
		d.lin = l
		d.x, d.y = l.decode()
	}
	if d.cfg.Method != MethodDD && d.cfg.Method != MethodLinBa {
		k := real.Classes
		d.logits = tensor.New[float32](len(d.y), k)
		s := labelLogitScale(k)
		for i, l := range d.y {
			for j := range k {
				d.logits.Data[i*k+j] = -s / float32(k)
			}
			d.logits.Data[i*k+l] += s
		}
	}
	d.logLR = tensor.Scalar(float32(math.Log(d.cfg.Meta.LRInit)))
	d.optX = nn.NewAdam[float32](d.cfg.LRImg)
	d.optY = nn.NewAdam[float32](d.cfg.Meta.LRLabel)
	d.optη = nn.NewAdam[float32](d.cfg.Meta.LRLR)
	return nil
}

func (d *metaDistiller) Step(ctx context.Context, it int) (float64, error) {
	if d.x == nil {
		return 0, errors.New("distill: Step before Init")
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("distill: iteration %d: %w", it, err)
	}
	m, rng, err := iterNet(d.cfg, d.real, it)
	if err != nil {
		return 0, err
	}
	var pick []int
	for _, idx := range d.byClass {
		perm := rng.Perm(len(idx))
		for i := range min(d.cfg.BatchReal, len(idx)) {
			pick = append(pick, idx[perm[i]])
		}
	}
	xr, yr := d.real.Batch(pick)
	task := MetaTask[float32]{Model: m, Start: m.Params(), X: d.x, Y: d.y, Logits: d.logits, Steps: d.cfg.Meta.Steps,
		Momentum: d.cfg.Meta.Momentum, Segment: d.cfg.Meta.Segment, RealX: xr, RealY: yr, WantX: d.cfg.Method != MethodLD, WantLogits: d.logits != nil}
	g, err := DDMetaGrad(task, float64(d.logLR.Data[0]))
	if err != nil {
		return 0, fmt.Errorf("distill: %s iteration %d: %w", d.cfg.Method, it, err)
	}
	if math.IsNaN(g.Loss) || math.IsInf(g.Loss, 0) || math.IsNaN(g.LogLR) || math.IsInf(g.LogLR, 0) {
		return g.Loss, fmt.Errorf("%w: %s iteration %d: loss %v, step-size gradient %v (lower --lr-img or the initial step size)", ErrDiverged, d.cfg.Method, it, g.Loss, g.LogLR)
	}
	for _, t := range []*tensor.Tensor[float32]{g.X, g.Logits} {
		if t == nil {
			continue
		}
		if i := tensor.FirstNonFinite(t.Data); i >= 0 {
			return g.Loss, fmt.Errorf("%w: %s iteration %d: a meta-gradient is not finite (%v)", ErrDiverged, d.cfg.Method, it, t.Data[i])
		}
	}
	if d.lin != nil {
		if err := d.lin.step(g.X); err != nil {
			return g.Loss, err
		}
		d.x, _ = d.lin.decode()
	} else if g.X != nil {
		if err := d.optX.Step([]*tensor.Tensor[float32]{d.x}, []*tensor.Tensor[float32]{g.X}); err != nil {
			return g.Loss, fmt.Errorf("distill: %w", err)
		}
	}
	if g.Logits != nil {
		if err := d.optY.Step([]*tensor.Tensor[float32]{d.logits}, []*tensor.Tensor[float32]{g.Logits}); err != nil {
			return g.Loss, fmt.Errorf("distill: %w", err)
		}
	}
	if err := d.optη.Step([]*tensor.Tensor[float32]{d.logLR}, []*tensor.Tensor[float32]{tensor.Scalar(float32(g.LogLR))}); err != nil {
		return g.Loss, fmt.Errorf("distill: %w", err)
	}
	return g.Loss, nil
}

func (d *metaDistiller) Synthetic() *SyntheticSet {
	if d.x == nil {
		return nil
	}
	s := &SyntheticSet{X: d.x.Clone(), Y: slices.Clone(d.y), Mean: slices.Clone(d.real.Mean), Std: slices.Clone(d.real.Std), Classes: d.real.Classes}
	if d.logits != nil {
		s.YSoft = d.logits.Clone()
	}
	return s
}

func (d *metaDistiller) Checkpoint(next int) *Checkpoint {
	c := &Checkpoint{Config: d.cfg, Next: next, Syn: d.Synthetic()}
	c.Config.TMState = &TMState{LR: float32(d.StepSize())}
	if d.lin != nil {
		c.Velocity = d.lin.pack()
	}
	return c
}

func (d *metaDistiller) Restore(c *Checkpoint) error {
	if d.x == nil {
		return errors.New("distill: Restore before Init")
	}
	if c == nil || c.Syn == nil || c.Syn.X == nil {
		return errors.New("distill: Restore: the checkpoint has no synthetic set")
	}
	st := c.Config.TMState
	if st == nil || !(st.LR > 0) || math.IsInf(float64(st.LR), 0) {
		return fmt.Errorf("distill: the checkpoint has no positive finite step size; it was not written by %s", d.cfg.Method)
	}
	plain := *c
	plain.Config.TMState = nil
	if err := plain.matches(d.cfg); err != nil {
		return err
	}
	if !equalShape(c.Syn.X.Shape, d.x.Shape) || !slices.Equal(c.Syn.Y, d.y) {
		return fmt.Errorf("distill: checkpoint set has shape %v and labels %v, this run's %v and %v", c.Syn.X.Shape, c.Syn.Y, d.x.Shape, d.y)
	}
	if (c.Syn.YSoft != nil) != (d.logits != nil) || (d.logits != nil && !equalShape(c.Syn.YSoft.Shape, d.logits.Shape)) {
		return errors.New("distill: the checkpoint's soft labels do not match this run's method")
	}
	if d.lin != nil {
		if err := d.lin.unpack(c.Velocity); err != nil {
			return err
		}
		d.x, _ = d.lin.decode()
	} else {
		d.x.CopyFrom(c.Syn.X)
	}
	if d.logits != nil {
		d.logits.CopyFrom(c.Syn.YSoft)
	}
	d.logLR.Data[0] = float32(math.Log(float64(st.LR)))
	return nil
}
