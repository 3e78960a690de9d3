package distill

import (
	"fmt"
	"math"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// TrajectoryTask is the fixed part of one trajectory-matching meta-step
// (survey eq. 30): the student starts at Start, takes one SGD step
//
//	θ_{i+1} = θ_i − α ∇θ ℓ(θ_i; A_i(X[Batches[i]]))
//
// per batch, and the loss is ‖θ_N − Target‖² / Denom, with Denom =
// ‖θ*_t − θ*_{t+M}‖² computed from the expert's own start (so FTD's noise
// does not change it). ℓ is the cross-entropy against the hard labels Y,
// or, if SoftY is set, against softmax(SoftY) (learnable label logits).
type TrajectoryTask[T tensor.Float] struct {
	Model   nn.Model[T]
	Start   []*tensor.Tensor[T]
	Target  []*tensor.Tensor[T]
	Denom   float64
	Batches [][]int
	// Augs holds one augmentation per step (nil, or nil entries: none).
	Augs  []*data.Augmentation
	Y     []int
	SoftY *tensor.Tensor[T]
}

// TrajectoryGrad is a meta-step's loss and its gradients with respect to
// the synthetic images, the step size α and (if soft) the label logits.
type TrajectoryGrad[T tensor.Float] struct {
	Loss  float64
	X     *tensor.Tensor[T]
	LR    float64
	SoftY *tensor.Tensor[T]
}

func (task *TrajectoryTask[T]) check(x *tensor.Tensor[T]) error {
	ps := task.Model.Params()
	if len(task.Start) != len(ps) || len(task.Target) != len(ps) {
		return fmt.Errorf("distill: trajectory task has %d start and %d target tensors for a model with %d", len(task.Start), len(task.Target), len(ps))
	}
	for i, p := range ps {
		if !tensor.SameShape(task.Start[i].Shape, p.Shape) || !tensor.SameShape(task.Target[i].Shape, p.Shape) {
			return fmt.Errorf("distill: trajectory task parameter %d has shapes %v and %v, the model %v", i, task.Start[i].Shape, task.Target[i].Shape, p.Shape)
		}
	}
	if !(task.Denom > 0) {
		return fmt.Errorf("distill: the expert did not move between the start and target epochs (distance %g)", task.Denom)
	}
	if x.Rank() != 4 || len(task.Y) != x.Shape[0] {
		return fmt.Errorf("distill: %d labels for images of shape %v", len(task.Y), x.Shape)
	}
	if task.Augs != nil && len(task.Augs) != len(task.Batches) {
		return fmt.Errorf("distill: %d augmentations for %d steps", len(task.Augs), len(task.Batches))
	}
	if task.SoftY != nil && (task.SoftY.Rank() != 2 || task.SoftY.Shape[0] != x.Shape[0]) {
		return fmt.Errorf("distill: soft labels of shape %v for %d images", task.SoftY.Shape, x.Shape[0])
	}
	return nil
}

// stepLoss is ℓ(θ; A_i(xb)) for batch step i with rows idx.
func (task *TrajectoryTask[T]) stepLoss(i int, xb *ag.Var[T], idx []int, ps []*ag.Var[T], soft *ag.Var[T]) *ag.Var[T] {
	x := xb
	if task.Augs != nil && task.Augs[i] != nil {
		x = data.Apply(task.Augs[i], x)
	}
	logits := task.Model.Forward(x, ps)
	if soft != nil {
		return ag.CrossEntropySoft(logits, ag.Softmax(ag.IndexRows(soft, idx)))
	}
	y := make([]int, len(idx))
	for k, j := range idx {
		y[k] = task.Y[j]
	}
	return ag.CrossEntropy(logits, y)
}

// UnrolledMatchGrad is MTT's meta-gradient: the N student steps are
// recorded on one tape with createGraph, so the whole unroll is
// differentiated exactly (backpropagation through time). Memory grows
// with N × the graph of one double-backward step.
func UnrolledMatchGrad[T tensor.Float](task *TrajectoryTask[T], x *tensor.Tensor[T], lr float64) (TrajectoryGrad[T], error) {
	if err := task.check(x); err != nil {
		return TrajectoryGrad[T]{}, err
	}
	tp := ag.NewTape[T]()
	defer tp.Release()
	xs := tp.Param(x)
	lrT := tensor.New[T]()
	lrT.Data[0] = T(lr)
	lv := tp.Param(lrT)
	var sv *ag.Var[T]
	if task.SoftY != nil {
		sv = tp.Param(task.SoftY)
	}
	ps := make([]*ag.Var[T], len(task.Start))
	for i, p := range task.Start {
		ps[i] = tp.Param(p)
	}
	for i, idx := range task.Batches {
		l := task.stepLoss(i, ag.IndexRows(xs, idx), idx, ps, sv)
		gs, err := tp.Grad([]*ag.Var[T]{l}, nil, ps, true)
		if err != nil {
			return TrajectoryGrad[T]{}, fmt.Errorf("distill: student step %d: %w", i, err)
		}
		for j := range ps {
			ps[j] = ag.Sub(ps[j], ag.Mul(lv, gs[j]))
		}
	}
	var dist *ag.Var[T]
	for j, p := range ps {
		s := ag.Sum(ag.Square(ag.Sub(p, tp.Const(task.Target[j]))))
		if dist == nil {
			dist = s
		} else {
			dist = ag.Add(dist, s)
		}
	}
	loss := ag.Scale(dist, T(1/task.Denom))
	wrt := []*ag.Var[T]{xs, lv}
	if sv != nil {
		wrt = append(wrt, sv)
	}
	gs, err := tp.Grad([]*ag.Var[T]{loss}, nil, wrt, false)
	if err != nil {
		return TrajectoryGrad[T]{}, fmt.Errorf("distill: meta-gradient: %w", err)
	}
	out := TrajectoryGrad[T]{Loss: float64(loss.Value.Item()), X: gs[0].Value.Clone(), LR: float64(gs[1].Value.Item())}
	if sv != nil {
		out.SoftY = gs[2].Value.Clone()
	}
	return out, nil
}

// AdjointMatchGrad is TESLA's constant-memory meta-gradient. A forward
// pass runs the N student steps without a graph and keeps only the
// parameters θ_0 … θ_N (N+1 parameter vectors). Then, with the adjoint
// λ_N = ∂L/∂θ_N = 2(θ_N − θ*)/D, it walks back: step i is recomputed on a
// fresh tape, its gradient g_i = ∇θ ℓ(θ_i; X_i) built with a graph, and
// one vector-Jacobian product of g_i with the seed λ_{i+1} gives at once
//
//	∂L/∂X_i += −α (∂g_i/∂X_i)ᵀ λ_{i+1}
//	∂L/∂α   += −⟨g_i, λ_{i+1}⟩
//	λ_i      = λ_{i+1} − α H_i λ_{i+1}      (H_i = ∂g_i/∂θ_i)
//
// (and the same for soft labels as for X). This is reverse-mode
// differentiation of θ_{i+1} = θ_i − α g_i(θ_i, X_i) with recomputation,
// so it equals UnrolledMatchGrad up to rounding; memory is one step's
// graph. The TESLA paper's pass keeps λ_i = λ_N for every step (the loss is
// linear in Σ g_i, so its gradient through each g_i alone is −α λ_N), which
// drops the H_i terms — how earlier batches move the parameters later
// steps see; fixed = true selects that first-order variant.
func AdjointMatchGrad[T tensor.Float](task *TrajectoryTask[T], x *tensor.Tensor[T], lr float64, fixed bool) (TrajectoryGrad[T], error) {
	if err := task.check(x); err != nil {
		return TrajectoryGrad[T]{}, err
	}
	alpha := T(lr)
	n := len(task.Batches)
	thetas := make([][]*tensor.Tensor[T], n+1)
	cur := make([]*tensor.Tensor[T], len(task.Start))
	for j, p := range task.Start {
		cur[j] = p.Clone()
	}
	tp := ag.NewTape[T]()
	defer tp.Release()
	for i, idx := range task.Batches {
		thetas[i] = cur
		xb, _ := rowsOf(x, idx)
		var sv *ag.Var[T]
		if task.SoftY != nil {
			sv = tp.Const(task.SoftY)
		}
		ps := make([]*ag.Var[T], len(cur))
		for j, p := range cur {
			ps[j] = tp.Param(p)
		}
		l := task.stepLoss(i, tp.Const(xb), idx, ps, sv)
		gs, err := tp.Grad([]*ag.Var[T]{l}, nil, ps, false)
		if err != nil {
			return TrajectoryGrad[T]{}, fmt.Errorf("distill: student step %d: %w", i, err)
		}
		next := make([]*tensor.Tensor[T], len(cur))
		for j, p := range cur {
			q := tensor.New[T](p.Shape...)
			g := gs[j].Value.Data
			for k, v := range p.Data {
				d := alpha * g[k]
				q.Data[k] = v - d
			}
			next[j] = q
		}
		tp.Release()
		cur = next
	}
	thetas[n] = cur

	out := TrajectoryGrad[T]{X: tensor.New[T](x.Shape...)}
	lam := make([]*tensor.Tensor[T], len(cur))
	var dist float64
	for j, p := range cur {
		lam[j] = tensor.New[T](p.Shape...)
		for k, v := range p.Data {
			d := float64(v) - float64(task.Target[j].Data[k])
			dist += d * d
			lam[j].Data[k] = T(2 * d / task.Denom)
		}
	}
	out.Loss = dist / task.Denom
	if task.SoftY != nil {
		out.SoftY = tensor.New[T](task.SoftY.Shape...)
	}
	sz := x.Shape[1] * x.Shape[2] * x.Shape[3]
	for i := n - 1; i >= 0; i-- {
		idx := task.Batches[i]
		xbT, _ := rowsOf(x, idx)
		xb := tp.Param(xbT)
		var sv *ag.Var[T]
		if task.SoftY != nil {
			sv = tp.Param(task.SoftY)
		}
		ps := make([]*ag.Var[T], len(thetas[i]))
		for j, p := range thetas[i] {
			ps[j] = tp.Param(p)
		}
		l := task.stepLoss(i, xb, idx, ps, sv)
		gs, err := tp.Grad([]*ag.Var[T]{l}, nil, ps, true)
		if err != nil {
			return TrajectoryGrad[T]{}, fmt.Errorf("distill: recomputed student step %d: %w", i, err)
		}
		seeds := make([]*ag.Var[T], len(gs))
		for j, g := range gs {
			var dot float64
			for k, v := range g.Value.Data {
				dot += float64(v) * float64(lam[j].Data[k])
			}
			out.LR -= dot
			seeds[j] = tp.Const(lam[j])
		}
		wrt := append([]*ag.Var[T]{xb}, ps...)
		if sv != nil {
			wrt = append(wrt, sv)
		}
		vs, err := tp.Grad(gs, seeds, wrt, false)
		if err != nil {
			return TrajectoryGrad[T]{}, fmt.Errorf("distill: vector-Jacobian product of step %d: %w", i, err)
		}
		gx := vs[0].Value.Data
		for k, r := range idx {
			dst := out.X.Data[r*sz : (r+1)*sz]
			for q, v := range gx[k*sz : (k+1)*sz] {
				dst[q] -= alpha * v
			}
		}
		if sv != nil {
			for k, v := range vs[len(vs)-1].Value.Data {
				out.SoftY.Data[k] -= alpha * v
			}
		}
		if !fixed {
			for j := range lam {
				h := vs[1+j].Value.Data
				for k := range lam[j].Data {
					lam[j].Data[k] -= alpha * h[k]
				}
			}
		}
		tp.Release()
		thetas[i+1] = nil
	}
	return out, nil
}

// rowsOf copies rows idx of x into a new tensor.
func rowsOf[T tensor.Float](x *tensor.Tensor[T], idx []int) (*tensor.Tensor[T], int) {
	sz := x.Shape[1] * x.Shape[2] * x.Shape[3]
	out := tensor.New[T](len(idx), x.Shape[1], x.Shape[2], x.Shape[3])
	for k, r := range idx {
		copy(out.Data[k*sz:(k+1)*sz], x.Data[r*sz:(r+1)*sz])
	}
	return out, sz
}

// StudentBatches draws a student's steps minibatches of the synthetic
// images of shape xShape (N, C, H, W), as MTT's distill.py does: a fresh
// permutation is cut into batches of batchSize (0 or more than N: all)
// and used up from its end before the next is drawn; with each set, every
// batch gets a per-sample DSA augmentation (else augs is nil). Draws come
// from rng in a fixed order.
func StudentBatches(rng *tensor.RNG, xShape []int, batchSize, steps int, each *data.DSA) (batches [][]int, augs []*data.Augmentation) {
	n, h, w := xShape[0], xShape[2], xShape[3]
	if batchSize <= 0 || batchSize > n {
		batchSize = n
	}
	var chunks [][]int
	for range steps {
		if len(chunks) == 0 {
			perm := rng.Perm(n)
			for lo := 0; lo < n; lo += batchSize {
				chunks = append(chunks, perm[lo:min(n, lo+batchSize)])
			}
		}
		b := chunks[len(chunks)-1]
		chunks = chunks[:len(chunks)-1]
		batches = append(batches, b)
		if each != nil {
			augs = append(augs, each.Sample(rng, len(b), h, w))
		}
	}
	return batches, augs
}

// ParamDistance returns ‖a − b‖² in float64 over paired tensors (it
// panics if a tensor pair differs in size).
func ParamDistance[T tensor.Float](a, b []*tensor.Tensor[T]) float64 {
	var s float64
	for j := range a {
		for k, v := range a[j].Data {
			d := float64(v) - float64(b[j].Data[k])
			s += d * d
		}
	}
	return s
}

// perturb adds Gaussian noise of standard deviation sigma·rms(p) to every
// tensor p (FTD's noisy start).
func perturb[T tensor.Float](ps []*tensor.Tensor[T], sigma float64, rng *tensor.RNG) {
	if sigma == 0 {
		return
	}
	for _, p := range ps {
		var ss float64
		for _, v := range p.Data {
			ss += float64(v) * float64(v)
		}
		sd := sigma * math.Sqrt(ss/float64(max(len(p.Data), 1)))
		for k := range p.Data {
			p.Data[k] += T(sd * rng.NormFloat64())
		}
	}
}
