package kernel

import (
	"fmt"
	"math"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/tensor"
)

// Func computes a kernel matrix (n, m) between two batches on a tape.
type Func[T Float] func(x, y *ag.Var[T]) *ag.Var[T]

// ArchFunc returns the closed-form kernel of a as a Func.
func ArchFunc[T Float](a Arch) Func[T] {
	return func(x, y *ag.Var[T]) *ag.Var[T] { return Kernel(a, x, y) }
}

// Problem is one KRR distillation loss: support images Xs with labels Ys
// (n, k), targets Xt with regression targets Yt (m, k) for the MSE loss or
// class labels Labels for the Platt loss (when Labels is set, Yt is not
// used and LogTau is the log temperature).
type Problem[T Float] struct {
	Kernel Func[T]
	Reg    float64
	Xs, Ys *tensor.Tensor[T]
	Xt, Yt *tensor.Tensor[T]
	Labels []int
	LogTau T
	// Chunk is the number of targets whose kernel rows are built on one
	// tape (0: all at once). The gradient is the same; memory is bounded
	// by one chunk's kernel graph (the convolutional kernel keeps
	// n·chunk·H·W values per intermediate).
	Chunk int
}

// Result holds the loss and its gradients.
type Result[T Float] struct {
	Loss       float64
	GradX      *tensor.Tensor[T] // Xs's shape
	GradY      *tensor.Tensor[T] // Ys's shape
	GradLogTau float64
}

// LossGrad returns the mean loss over the targets (KIP's MSE of eq. 15 or
// RFAD's Platt cross entropy of eq. 16) and its exact gradients with
// respect to Xs, Ys and LogTau. It builds K_ss and α = (K_ss + λI)⁻¹Ys on
// one tape, then each chunk of targets on its own tape with α as a leaf,
// accumulates ∂L/∂Xs (through K_ts) and ∂L/∂α, and finally
// back-propagates ∂L/∂α into Xs and Ys: the chain rule split at α, so the
// result equals the one-tape gradient while only one chunk's graph is
// alive at a time.
func LossGrad[T Float](p Problem[T]) (Result[T], error) {
	var res Result[T]
	if p.Kernel == nil || p.Xs == nil || p.Ys == nil || p.Xt == nil {
		return res, fmt.Errorf("kernel: LossGrad needs a kernel, support images and labels and target images")
	}
	if p.Xs.Rank() < 2 || p.Xt.Rank() != p.Xs.Rank() || p.Xs.Shape[0] == 0 || p.Xt.Shape[0] == 0 {
		return res, fmt.Errorf("kernel: support images %v and targets %v: want non-empty batches of the same rank ≥ 2", p.Xs.Shape, p.Xt.Shape)
	}
	n, m := p.Xs.Shape[0], p.Xt.Shape[0]
	if p.Ys.Rank() != 2 || p.Ys.Shape[0] != n {
		return res, fmt.Errorf("kernel: %d support images but labels of shape %v", n, p.Ys.Shape)
	}
	k := p.Ys.Shape[1]
	if p.Labels != nil {
		if len(p.Labels) != m {
			return res, fmt.Errorf("kernel: %d targets but %d labels", m, len(p.Labels))
		}
		for i, l := range p.Labels {
			if l < 0 || l >= k {
				return res, fmt.Errorf("kernel: target label %d at %d is outside [0, %d)", l, i, k)
			}
		}
	} else if p.Yt == nil || p.Yt.Rank() != 2 || p.Yt.Shape[0] != m || p.Yt.Shape[1] != k {
		return res, fmt.Errorf("kernel: want target labels (%d, %d) for the MSE loss", m, k)
	}
	if !(p.Reg > 0) || math.IsInf(p.Reg, 0) {
		return res, fmt.Errorf("kernel: regularisation %g must be positive (KIP uses 1e-6)", p.Reg)
	}
	chunk := p.Chunk
	if chunk <= 0 || chunk > m {
		chunk = m
	}

	tpA := ag.NewTape[T]()
	defer tpA.Release()
	xs, ys := tpA.Param(p.Xs), tpA.Param(p.Ys)
	kss := p.Kernel(xs, xs)
	if err := tpA.Err(); err != nil {
		return res, err
	}
	nk := kss.Value.Shape[0]
	eye := tpA.Alloc(nk, nk)
	for i := range nk {
		eye.Data[i*nk+i] = 1
	}
	id := tpA.Const(eye)
	trace := ag.Sum(ag.Mul(kss, id))
	alpha := Solve(ag.Add(kss, ag.Mul(id, ag.Scale(trace, T(p.Reg/float64(nk))))), ys)
	if err := tpA.Err(); err != nil {
		return res, err
	}

	res.GradX = tensor.New[T](p.Xs.Shape...)
	gAlpha := tensor.New[T](alpha.Value.Shape...)
	sz := len(p.Xt.Data) / m
	for lo := 0; lo < m; lo += chunk {
		hi := min(m, lo+chunk)
		tp := ag.NewTape[T]()
		xsv, av := tp.Param(p.Xs), tp.Param(alpha.Value)
		xt := tp.Const(&tensor.Tensor[T]{Shape: append([]int{hi - lo}, p.Xt.Shape[1:]...), Data: p.Xt.Data[lo*sz : hi*sz]})
		pred := ag.MatMul(p.Kernel(xt, xsv), av, false, false)
		var loss *ag.Var[T]
		var tau *ag.Var[T]
		scale := T(float64(hi-lo) / float64(m)) // chunk means → overall mean
		if p.Labels != nil {
			tau = tp.Param(tensor.Scalar(p.LogTau))
			loss = ag.Scale(PlattLoss(pred, tau, p.Labels[lo:hi]), scale)
		} else {
			yt := tp.Const(&tensor.Tensor[T]{Shape: []int{hi - lo, k}, Data: p.Yt.Data[lo*k : hi*k]})
			loss = ag.Scale(MSELoss(pred, yt), scale)
		}
		wrt := []*ag.Var[T]{xsv, av}
		if tau != nil {
			wrt = append(wrt, tau)
		}
		gs, err := tp.Grad([]*ag.Var[T]{loss}, nil, wrt, false)
		if err != nil {
			tp.Release()
			return res, err
		}
		res.Loss += float64(loss.Value.Item())
		for i, v := range gs[0].Value.Data {
			res.GradX.Data[i] += v
		}
		for i, v := range gs[1].Value.Data {
			gAlpha.Data[i] += v
		}
		if tau != nil {
			res.GradLogTau += float64(gs[2].Value.Item())
		}
		tp.Release()
	}
	gs, err := tpA.Grad([]*ag.Var[T]{alpha}, []*ag.Var[T]{tpA.Const(gAlpha)}, []*ag.Var[T]{xs, ys}, false)
	if err != nil {
		return res, err
	}
	for i, v := range gs[0].Value.Data {
		res.GradX.Data[i] += v
	}
	res.GradY = gs[1].Value.Clone()
	return res, nil
}
