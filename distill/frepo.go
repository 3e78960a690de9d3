package distill

import (
	"fmt"
	"math"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/distill/kernel"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// frepoPool is FRePo's model pool (Zhou et al. 2022; survey eq. 17–18):
// KRR.Models networks of Config.Model, each trained online on the
// synthetic set (one SGD step, lr LRNet, momentum 0.9, per iteration in
// which it was used) and re-initialised after KRR.MaxAge steps. Their
// starting ages are staggered over [0, MaxAge) so the pool always holds
// networks at different stages of training, which is what makes the
// feature kernels diverse. Iteration it uses network it mod Models: its
// features h_θ (flattened, scaled by 1/√F) define the kernel of the
// last-layer KRR, whose MSE on the targets is the loss (eq. 17); then the
// network takes its step on the updated set (eq. 18).
type frepoPool struct {
	cfg     Config
	shape   []int
	classes int
	models  []nn.Embedder[float32]
	opts    []*nn.SGD[float32]
	ages    []int
}

func newFRePoPool(cfg Config, real *data.Dataset) (*frepoPool, error) {
	p := &frepoPool{cfg: cfg, shape: real.ImageShape(), classes: real.Classes}
	for i := range cfg.KRR.Models {
		m, err := p.fresh(0, i)
		if err != nil {
			return nil, err
		}
		p.models = append(p.models, m)
		p.opts = append(p.opts, &nn.SGD[float32]{LR: cfg.LRNet, Momentum: 0.9})
		p.ages = append(p.ages, i*cfg.KRR.MaxAge/cfg.KRR.Models)
	}
	return p, nil
}

// fresh returns network i initialised for iteration it (its own stream).
func (p *frepoPool) fresh(it, i int) (nn.Embedder[float32], error) {
	rng := tensor.NewRNG(p.cfg.Seed, 1<<40+uint64(it)*1024+uint64(i))
	m, err := nn.New[float32](p.cfg.Model, p.shape, p.classes, rng)
	if err != nil {
		return nil, fmt.Errorf("distill: frepo: %w", err)
	}
	e, ok := m.(nn.Embedder[float32])
	if !ok {
		return nil, fmt.Errorf("distill: frepo needs a model that exposes its features; %q does not (use a ConvNet)", p.cfg.Model)
	}
	if t, ok := m.(nn.Trainable); ok {
		t.SetTraining(true)
	}
	return e, nil
}

// lossGrad returns eq. 17's loss for the network of iteration it and its
// gradients with respect to the support images and labels.
func (p *frepoPool) lossGrad(it int, xs, ys, xt, yt *tensor.Tensor[float32]) (kernel.Result[float32], error) {
	var res kernel.Result[float32]
	net := p.models[it%len(p.models)]
	tp := ag.NewTape[float32]()
	defer tp.Release()
	ps := nn.BindConst(tp, net)
	xsv, yv := tp.Param(xs), tp.Param(ys)
	var ft *tensor.Tensor[float32]
	tp.NoGrad(func() { ft = embedChunks(tp, net, ps, xt, 256) })
	fs := net.Embed(xsv, ps)
	if err := tp.Err(); err != nil || ft == nil {
		return res, err
	}
	scale := float32(1 / math.Sqrt(float64(fs.Value.Shape[1])))
	phiS, phiT := ag.Scale(fs, scale), ag.Scale(tp.Const(ft), scale)
	pred := kernel.Predict(ag.MatMul(phiT, phiS, false, true), ag.MatMul(phiS, phiS, false, true), yv, p.cfg.KRR.Reg)
	loss := kernel.MSELoss(pred, tp.Const(yt))
	gs, err := tp.Grad([]*ag.Var[float32]{loss}, nil, []*ag.Var[float32]{xsv, yv}, false)
	if err != nil {
		return res, err
	}
	res.Loss = float64(loss.Value.Item())
	res.GradX, res.GradY = gs[0].Value.Clone(), gs[1].Value.Clone()
	return res, nil
}

// trainStep takes the online step of iteration it's network on the
// synthetic set: cross entropy against the hard labels y, or against soft
// (N, K) target distributions when labels are learned.
func (p *frepoPool) trainStep(it int, xs *tensor.Tensor[float32], y []int, soft *tensor.Tensor[float32]) error {
	i := it % len(p.models)
	net := p.models[i]
	tp := ag.NewTape[float32]()
	defer tp.Release()
	ps := nn.Bind(tp, net)
	logits := net.Forward(tp.Const(xs), ps)
	var loss *ag.Var[float32]
	if soft != nil {
		loss = ag.CrossEntropySoft(logits, tp.Const(soft))
	} else {
		loss = ag.CrossEntropy(logits, y)
	}
	gs, err := tp.Grad([]*ag.Var[float32]{loss}, nil, ps, false)
	if err != nil {
		return err
	}
	grads := make([]*tensor.Tensor[float32], len(gs))
	for j, g := range gs {
		grads[j] = g.Value
	}
	if err := p.opts[i].Step(net.Params(), grads); err != nil {
		return err
	}
	p.ages[i]++
	if p.ages[i] >= p.cfg.KRR.MaxAge {
		m, err := p.fresh(it+1, i)
		if err != nil {
			return err
		}
		p.models[i], p.ages[i] = m, 0
		p.opts[i].Reset()
	}
	return nil
}

// embedChunks returns net's features (N, F) of x, computed chunk images
// at a time on tp (call it with recording off). It returns nil if the
// tape fails (tp.Err says why).
func embedChunks(tp *ag.Tape[float32], net nn.Embedder[float32], ps []*ag.Var[float32], x *tensor.Tensor[float32], chunk int) *tensor.Tensor[float32] {
	n := x.Shape[0]
	sz := len(x.Data) / n
	var out *tensor.Tensor[float32]
	for lo := 0; lo < n; lo += chunk {
		hi := min(n, lo+chunk)
		v := tp.Const(&tensor.Tensor[float32]{Shape: append([]int{hi - lo}, x.Shape[1:]...), Data: x.Data[lo*sz : hi*sz]})
		f := net.Embed(v, ps).Value
		if tp.Err() != nil {
			return nil
		}
		if out == nil {
			out = tensor.New[float32](n, f.Shape[1])
		}
		copy(out.Data[lo*f.Shape[1]:], f.Data)
	}
	return out
}
