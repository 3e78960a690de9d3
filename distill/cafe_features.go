package distill

import (
	"fmt"
	"slices"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// ConvNetLayers is what ConvNetFeatures returns: the per-layer features of
// a ConvNet forward pass.
type ConvNetLayers[T tensor.Float] struct {
	// Blocks[i] is block i's activation output (N, W, H_i, W_i), after
	// conv → norm → activation and before the pooling: the features CAFE's
	// reference code matches at its intermediate layers.
	Blocks []*ag.Var[T]
	// Embed is the flattened output of the last block after pooling
	// (N, FeatureSize), as nn.ConvNet.Embed returns it.
	Embed *ag.Var[T]
	// Logits is the classifier's output (N, classes), as nn.ConvNet.Forward
	// returns it.
	Logits *ag.Var[T]
}

// ConvNetFeatures replays m's forward pass on x with the parameters ps (one
// variable per m.Params entry) layer by layer and returns the intermediate
// features. The logits equal m.Forward(x, ps) exactly; nn.ConvNet has no
// API for its intermediate activations, so the blocks are rebuilt here from
// its configuration and its parameter names (conv{i}.weight, conv{i}.bias,
// norm{i}.weight, norm{i}.bias, …, fc.weight, fc.bias), with the same
// autograd operations (the first convolution pads by 3 for 28×28 inputs).
// Batch norm uses the batch statistics and does not update the running
// statistics (CAFE runs its networks in training mode; Forward in training
// mode would also update them). Errors are recorded on x's tape.
func ConvNetFeatures[T tensor.Float](m *nn.ConvNet[T], x *ag.Var[T], ps []*ag.Var[T]) ConvNetLayers[T] {
	tp := x.Tape()
	var out ConvNetLayers[T]
	fail := func(err error) ConvNetLayers[T] {
		tp.Fail(err)
		p := tp.Scalar(0)
		return ConvNetLayers[T]{Embed: p, Logits: p}
	}
	if tp.Err() != nil {
		return fail(tp.Err())
	}
	names := m.ParamNames()
	params := m.Params()
	if len(ps) != len(params) {
		return fail(fmt.Errorf("distill: ConvNet has %d parameters, got %d variables", len(params), len(ps)))
	}
	for i, p := range ps {
		if p == nil || !tensor.SameShape(p.Shape(), params[i].Shape) {
			return fail(fmt.Errorf("distill: ConvNet parameter %s: variable does not have shape %v", names[i], params[i].Shape))
		}
	}
	cfg := m.Config()
	if x.Value.Rank() != 4 || !slices.Equal(x.Shape()[1:], []int{cfg.InChannels, cfg.Height, cfg.Width}) {
		return fail(fmt.Errorf("distill: ConvNet expects input (N, %d, %d, %d), got %v", cfg.InChannels, cfg.Height, cfg.Width, x.Shape()))
	}
	param := func(name string) *ag.Var[T] {
		if i := slices.Index(names, name); i >= 0 {
			return ps[i]
		}
		return nil
	}
	h := x
	for i := range cfg.Depth {
		pad := 1
		if i == 0 && cfg.Height == 28 && cfg.Width == 28 {
			pad = 3
		}
		w, b := param(fmt.Sprintf("conv%d.weight", i)), param(fmt.Sprintf("conv%d.bias", i))
		if w == nil {
			return fail(fmt.Errorf("distill: ConvNet has no parameter conv%d.weight", i))
		}
		h = ag.Conv2D(h, w, b, tensor.ConvParams{StrideH: 1, StrideW: 1, PadH: pad, PadW: pad})
		g, bt := param(fmt.Sprintf("norm%d.weight", i)), param(fmt.Sprintf("norm%d.bias", i))
		switch cfg.Norm {
		case nn.NormInstance:
			h = ag.GroupNorm(h, h.Shape()[1], g, bt, nn.NormEps)
		case nn.NormGroup:
			h = ag.GroupNorm(h, 4, g, bt, nn.NormEps)
		case nn.NormLayer:
			h = ag.LayerNorm(h, slices.Clone(h.Shape()[1:]), g, bt, nn.NormEps)
		case nn.NormBatch:
			h, _, _ = ag.BatchNorm2D(h, g, bt, nn.NormEps)
		case nn.NormNone:
		default:
			return fail(fmt.Errorf("distill: ConvNet norm %q is not supported", cfg.Norm))
		}
		switch cfg.Act {
		case nn.ActReLU, "":
			h = ag.ReLU(h)
		case nn.ActLeakyReLU:
			h = ag.LeakyReLU(h, 0.01)
		case nn.ActSigmoid:
			h = ag.Sigmoid(h)
		default:
			return fail(fmt.Errorf("distill: ConvNet activation %q is not supported", cfg.Act))
		}
		out.Blocks = append(out.Blocks, h)
		switch cfg.Pool {
		case nn.PoolAvg:
			h = ag.AvgPool2D(h, 2, 2, 0)
		case nn.PoolMax:
			h = ag.MaxPool2D(h, 2, 2, 0)
		}
	}
	out.Embed = ag.Flatten(h)
	w, b := param("fc.weight"), param("fc.bias")
	if w == nil || b == nil {
		return fail(fmt.Errorf("distill: ConvNet has no parameters fc.weight and fc.bias"))
	}
	out.Logits = ag.Add(ag.MatMul(out.Embed, w, false, true), b)
	if err := tp.Err(); err != nil {
		return fail(err)
	}
	return out
}
