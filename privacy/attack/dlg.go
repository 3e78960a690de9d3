package attack

import (
	"fmt"
	"math"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// IDLGLabel recovers the label of a single example from the gradient of
// the cross-entropy with respect to the last layer's weights (classes, d)
// (iDLG, Zhao et al. 2020): row c of that gradient is (p_c − y_c)·h, and
// with non-negative features h (after ReLU) only the true class's row is
// negative, so the label is the row with the smallest sum.
func IDLGLabel[T tensor.Float](lastWeightGrad *tensor.Tensor[T]) (int, error) {
	if lastWeightGrad == nil || lastWeightGrad.Rank() != 2 || lastWeightGrad.Shape[0] < 2 {
		return 0, fmt.Errorf("attack: iDLG needs the (classes, features) gradient of the last linear layer")
	}
	k, d := lastWeightGrad.Shape[0], lastWeightGrad.Shape[1]
	best, bestSum := 0, math.Inf(1)
	for c := range k {
		var s float64
		for _, v := range lastWeightGrad.Data[c*d : (c+1)*d] {
			s += float64(v)
		}
		if s < bestSum {
			best, bestSum = c, s
		}
	}
	return best, nil
}

// Gradient returns ∇θ CE(m(x), y) at m's parameters (the mean over the
// batch), as an honest client would compute it.
func Gradient[T tensor.Float](m nn.Model[T], x *tensor.Tensor[T], y []int) ([]*tensor.Tensor[T], error) {
	tp := ag.NewTape[T]()
	defer tp.Release()
	ps := nn.Bind(tp, m)
	gs, err := tp.Grad([]*ag.Var[T]{ag.CrossEntropy(m.Forward(tp.Const(x), ps), y)}, nil, ps, false)
	if err != nil {
		return nil, fmt.Errorf("attack: %w", err)
	}
	out := make([]*tensor.Tensor[T], len(gs))
	for i, g := range gs {
		out[i] = g.Value.Clone()
	}
	return out, nil
}

// GradientFromUpdate recovers the gradient of a FedAvg client's update
// made of one local SGD step without momentum: g = (before − after)/lr.
func GradientFromUpdate[T tensor.Float](before, after []*tensor.Tensor[T], lr float64) ([]*tensor.Tensor[T], error) {
	if len(before) != len(after) || !(lr > 0) {
		return nil, fmt.Errorf("attack: update of %d tensors against %d, learning rate %g: want matching weights and lr > 0", len(after), len(before), lr)
	}
	out := make([]*tensor.Tensor[T], len(before))
	for i := range before {
		if len(before[i].Data) != len(after[i].Data) {
			return nil, fmt.Errorf("attack: update tensor %d has %d values, the model's %d", i, len(after[i].Data), len(before[i].Data))
		}
		out[i] = tensor.New[T](before[i].Shape...)
		for j := range out[i].Data {
			out[i].Data[j] = T((float64(before[i].Data[j]) - float64(after[i].Data[j])) / lr)
		}
	}
	return out, nil
}

// DLGConfig configures gradient inversion.
type DLGConfig struct {
	// Iters is the number of optimizer iterations (default 300).
	Iters int
	// Optimizer is "lbfgs" (default, as DLG) or "adam".
	Optimizer string
	// LR is Adam's learning rate (default 0.1); L-BFGS uses a line search.
	LR float64
	// Seed draws the dummy images (standard normal) and labels.
	Seed uint64
}

// DLGResult is a reconstruction.
type DLGResult struct {
	X      *tensor.Tensor[float64] // (B, C, H, W), the model's input space
	Labels []int                   // the known labels or the argmax of the learned ones
	Loss   float64                 // final gradient distance Σ‖∇θ − g‖²
	Iters  int
}

// Invert reconstructs a batch of shape (B, C, H, W) from the gradient
// target of m's parameters (Deep Leakage from Gradients, Zhu et al. 2019):
// dummy images — and, when labels is nil, dummy soft labels (DLG) — are
// optimised to minimise Σ_params ‖∇θ CE(m(x'), y') − target‖². The image
// gradient goes through the network's second derivative (the engine's
// exact double backward). Pass the labels from IDLGLabel for iDLG.
func Invert(m nn.Model[float64], target []*tensor.Tensor[float64], shape []int, labels []int, cfg DLGConfig) (*DLGResult, error) {
	if len(shape) != 4 || shape[0] < 1 {
		return nil, fmt.Errorf("attack: dlg: batch shape %v must be (B, C, H, W)", shape)
	}
	ps := m.Params()
	if len(target) != len(ps) {
		return nil, fmt.Errorf("attack: dlg: %d target gradients for %d parameters", len(target), len(ps))
	}
	for i, p := range ps {
		if len(target[i].Data) != len(p.Data) {
			return nil, fmt.Errorf("attack: dlg: target gradient %d has %d values, the parameter %d", i, len(target[i].Data), len(p.Data))
		}
	}
	if labels != nil && len(labels) != shape[0] {
		return nil, fmt.Errorf("attack: dlg: %d labels for a batch of %d", len(labels), shape[0])
	}
	if cfg.Iters == 0 {
		cfg.Iters = 300
	}
	if cfg.LR == 0 {
		cfg.LR = 0.1
	}
	if cfg.Optimizer == "" {
		cfg.Optimizer = "lbfgs"
	}
	if cfg.Iters < 1 || !(cfg.LR > 0) || (cfg.Optimizer != "lbfgs" && cfg.Optimizer != "adam") {
		return nil, fmt.Errorf("attack: dlg: %d iterations, optimizer %q, lr %g: want ≥ 1, lbfgs or adam, lr > 0", cfg.Iters, cfg.Optimizer, cfg.LR)
	}
	if tm, ok := m.(nn.Trainable); ok {
		prev := tm.Training()
		tm.SetTraining(true) // the client's gradient was taken in training mode
		defer tm.SetTraining(prev)
	}
	rng := tensor.NewRNG(cfg.Seed, 0)
	x := tensor.New[float64](shape...)
	tensor.FillNormal(rng, x, 0, 1)
	var classes int
	var ylog *tensor.Tensor[float64]
	if labels == nil {
		tp := ag.NewTape[float64]()
		var out *ag.Var[float64]
		tp.NoGrad(func() { out = m.Forward(tp.Const(x), nn.BindConst(tp, m)) })
		if err := tp.Err(); err != nil {
			tp.Release()
			return nil, fmt.Errorf("attack: dlg: %w", err)
		}
		classes = out.Value.Shape[1]
		tp.Release()
		ylog = tensor.New[float64](shape[0], classes)
		tensor.FillNormal(rng, ylog, 0, 1)
	}
	vars := []*tensor.Tensor[float64]{x}
	if ylog != nil {
		vars = append(vars, ylog)
	}
	// f evaluates the gradient distance and its gradient w.r.t. vars.
	f := func() (float64, []*tensor.Tensor[float64], error) {
		tp := ag.NewTape[float64]()
		defer tp.Release()
		xv := tp.Param(x)
		wrt := []*ag.Var[float64]{xv}
		pv := nn.Bind(tp, m)
		logits := m.Forward(xv, pv)
		var loss *ag.Var[float64]
		if ylog != nil {
			yv := tp.Param(ylog)
			wrt = append(wrt, yv)
			loss = ag.CrossEntropySoft(logits, ag.Softmax(yv))
		} else {
			loss = ag.CrossEntropy(logits, labels)
		}
		gs, err := tp.Grad([]*ag.Var[float64]{loss}, nil, pv, true)
		if err != nil {
			return 0, nil, err
		}
		var d *ag.Var[float64]
		for i, g := range gs {
			t := ag.Sum(ag.Square(ag.Sub(g, tp.Const(target[i]))))
			if d == nil {
				d = t
			} else {
				d = ag.Add(d, t)
			}
		}
		gx, err := tp.Grad([]*ag.Var[float64]{d}, nil, wrt, false)
		if err != nil {
			return 0, nil, err
		}
		out := make([]*tensor.Tensor[float64], len(gx))
		for i, g := range gx {
			out[i] = g.Value.Clone()
		}
		return d.Value.Item(), out, nil
	}
	var (
		loss  float64
		iters int
		err   error
	)
	if cfg.Optimizer == "adam" {
		opt := nn.NewAdam[float64](cfg.LR)
		for iters = 0; iters < cfg.Iters; iters++ {
			var g []*tensor.Tensor[float64]
			loss, g, err = f()
			if err != nil {
				return nil, fmt.Errorf("attack: dlg: %w", err)
			}
			if err := opt.Step(vars, g); err != nil {
				return nil, fmt.Errorf("attack: dlg: %w", err)
			}
		}
		loss, _, err = f()
	} else {
		loss, iters, err = lbfgs(vars, f, cfg.Iters)
	}
	if err != nil {
		return nil, fmt.Errorf("attack: dlg: %w", err)
	}
	res := &DLGResult{X: x, Labels: labels, Loss: loss, Iters: iters}
	if ylog != nil {
		res.Labels = make([]int, shape[0])
		for i := range res.Labels {
			best := 0
			for c := range classes {
				if ylog.Data[i*classes+c] > ylog.Data[i*classes+best] {
					best = c
				}
			}
			res.Labels[i] = best
		}
	}
	return res, nil
}

// lbfgs minimises f over the tensors vars (updated in place) with
// limited-memory BFGS (history 20) and a backtracking Armijo line search,
// for at most iters iterations or until the gradient vanishes. It returns
// the final value and the iterations done.
func lbfgs(vars []*tensor.Tensor[float64], f func() (float64, []*tensor.Tensor[float64], error), iters int) (float64, int, error) {
	const hist = 20
	n := 0
	for _, v := range vars {
		n += len(v.Data)
	}
	get := func() []float64 {
		out := make([]float64, 0, n)
		for _, v := range vars {
			out = append(out, v.Data...)
		}
		return out
	}
	set := func(x []float64) {
		o := 0
		for _, v := range vars {
			copy(v.Data, x[o:o+len(v.Data)])
			o += len(v.Data)
		}
	}
	eval := func() (float64, []float64, error) {
		fx, gs, err := f()
		if err != nil {
			return 0, nil, err
		}
		g := make([]float64, 0, n)
		for _, t := range gs {
			g = append(g, t.Data...)
		}
		return fx, g, nil
	}
	dot := func(a, b []float64) float64 {
		var s float64
		for i := range a {
			s += a[i] * b[i]
		}
		return s
	}
	x := get()
	fx, g, err := eval()
	if err != nil {
		return 0, 0, err
	}
	var ss, ys [][]float64
	var rhos []float64
	it := 0
	for ; it < iters; it++ {
		gn := math.Sqrt(dot(g, g))
		if gn == 0 || math.IsNaN(gn) {
			break
		}
		// two-loop recursion: d = −H g
		q := append([]float64(nil), g...)
		alpha := make([]float64, len(ss))
		for k := len(ss) - 1; k >= 0; k-- {
			alpha[k] = rhos[k] * dot(ss[k], q)
			for i := range q {
				q[i] -= alpha[k] * ys[k][i]
			}
		}
		gamma := 1 / gn // first step of length 1
		if k := len(ss) - 1; k >= 0 {
			gamma = dot(ss[k], ys[k]) / dot(ys[k], ys[k])
		}
		for i := range q {
			q[i] *= gamma
		}
		for k := range ss {
			b := rhos[k] * dot(ys[k], q)
			for i := range q {
				q[i] += ss[k][i] * (alpha[k] - b)
			}
		}
		d := q
		for i := range d {
			d[i] = -d[i]
		}
		slope := dot(g, d)
		if slope >= 0 { // not a descent direction: restart from the gradient
			ss, ys, rhos = nil, nil, nil
			for i := range d {
				d[i] = -g[i] / gn
			}
			slope = -gn
		}
		step := 1.0
		var fn float64
		var gnew, xn []float64
		for ls := 0; ; ls++ {
			xn = make([]float64, n)
			for i := range x {
				xn[i] = x[i] + step*d[i]
			}
			set(xn)
			fn, gnew, err = eval()
			if err != nil {
				return 0, it, err
			}
			if fn <= fx+1e-4*step*slope && !math.IsNaN(fn) {
				break
			}
			if ls == 40 {
				set(x)
				return fx, it, nil // no progress possible
			}
			step /= 2
		}
		s, y := make([]float64, n), make([]float64, n)
		for i := range s {
			s[i], y[i] = xn[i]-x[i], gnew[i]-g[i]
		}
		if sy := dot(s, y); sy > 1e-12*math.Sqrt(dot(s, s)*dot(y, y)) {
			ss, ys, rhos = append(ss, s), append(ys, y), append(rhos, 1/sy)
			if len(ss) > hist {
				ss, ys, rhos = ss[1:], ys[1:], rhos[1:]
			}
		}
		x, fx, g = xn, fn, gnew
	}
	set(x)
	return fx, it, nil
}
