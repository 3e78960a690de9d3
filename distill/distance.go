// Package distill is fedsim's dataset-distillation core.
//
// A Distiller (New) runs one method of the survey (Methods lists them) on a
// real data set: the coreset baselines (random real images, herding and
// k-center greedy in a trained ConvNet's feature space), gradient matching
// (DC, DSA, with DCC's and IDC's options), distribution matching (DM,
// CAFE), trajectory matching (MTT, FTD, TESLA), kernel and
// meta-learning methods (KIP, RFAD, FRePo, DD, SLDD, LD), factorized sets
// (LinBa, IDC, HaBa, KFS) and generative ones (GTN, IT-GAN); DM, DC and DSA
// also have differentially private variants. Its state can be saved
// between iterations (Checkpoint) and a run continued exactly (Restore; Run
// does both), because every random draw of iteration it derives from
// (seed, it).
//
// The result is a SyntheticSet, written as synthetic.npz (DESIGN.md's
// contract) and drawn as a PNG grid; Evaluate applies the papers'
// evaluation protocol to it.
package distill

import (
	ag "github.com/fedsim/fedsim/autograd"
)

// cosineEps is the DC authors' constant in the denominator of the layer-wise
// cosine distance.
const cosineEps = 1e-6

// LayerwiseGradDistance is the gradient-matching distance of DC (survey eq.
// 22–23): for every parameter of two or more dimensions, reshaped to
// (out-channels, rest), the sum over output channels of
// 1 − <gS, gT> / (‖gS‖‖gT‖ + 1e-6). One-dimensional parameters (biases,
// norm scales) contribute nothing, as in the reference code. gS and gT hold
// one gradient per parameter, in the same order and shapes.
func LayerwiseGradDistance[T ag.Float](gS, gT []*ag.Var[T]) *ag.Var[T] {
	return sumOverRows(gS, gT, func(s2, t2 *ag.Var[T]) *ag.Var[T] {
		return ag.AddScalar(ag.Neg(rowCosine(s2, t2)), 1)
	})
}

// rowCosine returns <s_i, t_i> / (‖s_i‖‖t_i‖ + 1e-6) for each row i.
func rowCosine[T ag.Float](s2, t2 *ag.Var[T]) *ag.Var[T] {
	dot := ag.SumAxes(ag.Mul(s2, t2), []int{1}, false)
	ns := ag.Sqrt(ag.SumAxes(ag.Square(s2), []int{1}, false))
	nt := ag.Sqrt(ag.SumAxes(ag.Square(t2), []int{1}, false))
	return ag.Div(dot, ag.AddScalar(ag.Mul(ns, nt), cosineEps))
}

// sumOverRows is the frame the DC-family distances share: every parameter
// of two or more dimensions is reshaped to (out-channels, rest), perRow
// gives one distance per output channel, and the distances are summed over
// channels and parameters; one-dimensional parameters contribute nothing.
func sumOverRows[T ag.Float](gS, gT []*ag.Var[T], perRow func(s2, t2 *ag.Var[T]) *ag.Var[T]) *ag.Var[T] {
	var total *ag.Var[T]
	for i, s := range gS {
		shape := s.Shape()
		if len(shape) <= 1 {
			continue
		}
		rows := shape[0]
		d := ag.Sum(perRow(ag.Reshape(s, rows, -1), ag.Reshape(gT[i], rows, -1)))
		if total == nil {
			total = d
		} else {
			total = ag.Add(total, d)
		}
	}
	if total == nil && len(gS) > 0 {
		return gS[0].Tape().Scalar(0)
	}
	return total
}
