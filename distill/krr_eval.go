package distill

import (
	"context"
	"fmt"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/distill/kernel"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// EvalKRR is the name of KIP's own evaluation among the evaluation models
// (`--eval-models krr`): kernel ridge regression on the synthetic set.
const EvalKRR = "krr"

// EvaluateKRR returns the test accuracy of kernel ridge regression on the
// synthetic set, the evaluation of KIP's papers (Nguyen et al.): every
// test image is classified by the argmax of
//
//	ŷ_t = K_ts (K_ss + λ·tr(K_ss)/n · I)⁻¹ Y_s
//
// with the kernel of krr (its zero fields: KIP's defaults, the depth-3
// fully connected NTK) and Y_s the set's soft labels turned back into
// regression targets, or its hard labels as centred one-hot rows. It
// computes in float64, test images chunk at a time (0: 500). syn and test
// must be in the same space (both whitened or neither).
func EvaluateKRR(ctx context.Context, krr KRRConfig, syn *SyntheticSet, test *data.Dataset, chunk int) (float64, error) {
	cfg := Config{Method: MethodKIP, KRR: krr}.part2Defaults()
	if err := syn.Validate(); err != nil {
		return 0, err
	}
	k := syn.Classes
	if k == 0 {
		k = test.Classes
	}
	if test.Len() == 0 || !equalShape(syn.ImageShape(), test.ImageShape()) || k != test.Classes {
		return 0, fmt.Errorf("distill: krr evaluation: %d synthetic images %v of %d classes against %d test images %v of %d classes",
			syn.Len(), syn.ImageShape(), k, test.Len(), test.ImageShape(), test.Classes)
	}
	if chunk <= 0 {
		chunk = 500
	}
	arch := (&krrDistiller{cfg: cfg}).arch()
	n := syn.Len()
	ys := tensor.New[float64](n, k)
	if syn.YSoft != nil {
		s := float64(labelLogitScale(k))
		for i, v := range syn.YSoft.Data {
			ys.Data[i] = float64(v) / s
		}
	} else {
		copy(ys.Data, kernel.CenteredOneHot[float64](syn.Y, k))
	}
	tp := ag.NewTape[float64]()
	defer tp.Release()
	xs := tp.Const(toFloat64(syn.X))
	kss := kernel.Kernel(arch, xs, xs)
	if err := tp.Err(); err != nil {
		return 0, fmt.Errorf("distill: krr evaluation: %w", err)
	}
	// α = (K_ss + λI)⁻¹ Y_s once (Predict with an identity K_ts).
	eye := tensor.New[float64](n, n)
	for i := range n {
		eye.Data[i*n+i] = 1
	}
	alpha := kernel.Predict(tp.Const(eye), kss, tp.Const(ys), cfg.KRR.Reg)
	if err := tp.Err(); err != nil {
		return 0, fmt.Errorf("distill: krr evaluation: %w", err)
	}
	sz := tensor.Size(test.ImageShape())
	correct := 0
	for lo := 0; lo < test.Len(); lo += chunk {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		hi := min(test.Len(), lo+chunk)
		xt := &tensor.Tensor[float32]{Shape: append([]int{hi - lo}, test.ImageShape()...), Data: test.X.Data[lo*sz : hi*sz]}
		tc := ag.NewTape[float64]()
		pred := ag.MatMul(kernel.Kernel(arch, tc.Const(toFloat64(xt)), tc.Const(xs.Value)), tc.Const(alpha.Value), false, false)
		if err := tc.Err(); err != nil {
			tc.Release()
			return 0, fmt.Errorf("distill: krr evaluation: %w", err)
		}
		correct += nn.CountCorrect(pred.Value, test.Y[lo:hi])
		tc.Release()
	}
	return float64(correct) / float64(test.Len()), nil
}

func toFloat64(x *tensor.Tensor[float32]) *tensor.Tensor[float64] {
	out := tensor.New[float64](x.Shape...)
	for i, v := range x.Data {
		out.Data[i] = float64(v)
	}
	return out
}
