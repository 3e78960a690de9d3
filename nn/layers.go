package nn

import (
	"fmt"
	"slices"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/tensor"
)

// Buffered is a model with state that is not a parameter: batch norm's
// running statistics. Buffers are updated by Forward in training mode, read
// in evaluation mode, and saved and loaded with the weights.
type Buffered[T Float] interface {
	// Buffers returns the state tensors in a fixed order (possibly none).
	Buffers() []*tensor.Tensor[T]
	// BufferNames returns the PyTorch-style name of each buffer
	// (norm0.running_mean, …).
	BufferNames() []string
}

// Trainable is a model whose forward pass differs between training and
// evaluation (batch norm: batch statistics and running-statistic updates
// versus running statistics). Every model of this package implements it;
// models start in training mode, as in PyTorch.
type Trainable interface {
	SetTraining(on bool)
	Training() bool
}

// BatchNormMomentum and NormEps are PyTorch's defaults, used by every
// normalisation layer of this package.
const (
	BatchNormMomentum = 0.1
	NormEps           = 1e-5
)

// base holds what every model of this package shares: named parameters,
// named buffers, the input shape and the train/eval flag.
type base[T Float] struct {
	kind     string // model name for errors: "ConvNet"
	inShape  []int  // C, H, W
	classes  int
	params   []*tensor.Tensor[T]
	names    []string
	buffers  []*tensor.Tensor[T]
	bufNames []string
	eval     bool // zero value: training mode
}

func newBase[T Float](kind string, c, h, w, classes int) (base[T], error) {
	if c <= 0 || h <= 0 || w <= 0 || classes <= 0 {
		return base[T]{}, fmt.Errorf("nn: %s needs a positive input shape and class count, got %d×%d×%d and %d classes", kind, c, h, w, classes)
	}
	return base[T]{kind: kind, inShape: []int{c, h, w}, classes: classes}, nil
}

// Params returns the parameter tensors in the model's fixed order.
func (b *base[T]) Params() []*tensor.Tensor[T] { return b.params }

// ParamNames returns the PyTorch-style parameter names, in Params order.
func (b *base[T]) ParamNames() []string { return slices.Clone(b.names) }

// Buffers returns the state tensors (batch-norm running statistics), in
// BufferNames order; none for models without batch norm.
func (b *base[T]) Buffers() []*tensor.Tensor[T] { return b.buffers }

// BufferNames returns the buffer names.
func (b *base[T]) BufferNames() []string { return slices.Clone(b.bufNames) }

// SetTraining selects training mode (on) or evaluation mode. It matters
// only for batch norm: in training mode Forward normalises with the batch
// statistics and updates the running statistics (momentum 0.1, unbiased
// variance, as PyTorch); in evaluation mode it uses the running statistics
// and changes nothing. A model in training mode with batch norm must not
// run Forward concurrently.
func (b *base[T]) SetTraining(on bool) { b.eval = !on }

// Training reports whether the model is in training mode.
func (b *base[T]) Training() bool { return !b.eval }

// InputShape returns the (C, H, W) shape the model takes.
func (b *base[T]) InputShape() []int { return slices.Clone(b.inShape) }

// Classes returns the number of classes (logits per sample).
func (b *base[T]) Classes() int { return b.classes }

func (b *base[T]) addParam(name string, t *tensor.Tensor[T]) int {
	b.names = append(b.names, name)
	b.params = append(b.params, t)
	return len(b.params) - 1
}

func (b *base[T]) addBuffer(name string, t *tensor.Tensor[T]) int {
	b.bufNames = append(b.bufNames, name)
	b.buffers = append(b.buffers, t)
	return len(b.buffers) - 1
}

// check validates the parameter variables and the input x (N, C, H, W),
// recording an error on x's tape if they do not fit.
func (b *base[T]) check(x *ag.Var[T], ps []*ag.Var[T]) bool {
	tp := x.Tape()
	if tp.Err() != nil {
		return false
	}
	if len(ps) != len(b.params) {
		tp.Fail(fmt.Errorf("nn: %s has %d parameters, got %d variables", b.kind, len(b.params), len(ps)))
		return false
	}
	for i, p := range ps {
		if p == nil {
			tp.Fail(fmt.Errorf("nn: %s parameter %s is a nil variable", b.kind, b.names[i]))
			return false
		}
		if !tensor.SameShape(p.Shape(), b.params[i].Shape) {
			tp.Fail(fmt.Errorf("nn: %s parameter %s has shape %v, got %v", b.kind, b.names[i], b.params[i].Shape, p.Shape()))
			return false
		}
	}
	if x.Value.Rank() != 4 || !slices.Equal(x.Shape()[1:], b.inShape) {
		tp.Fail(fmt.Errorf("nn: %s expects input (N, %d, %d, %d), got %v", b.kind, b.inShape[0], b.inShape[1], b.inShape[2], x.Shape()))
		return false
	}
	return true
}

// linear is a fully connected layer y = x·Wᵀ + b, W (out, in).
type linear struct{ w, b int }

func (b *base[T]) newLinear(rng *tensor.RNG, name string, in, out int) linear {
	w := tensor.New[T](out, in)
	tensor.KaimingUniform(rng, w, in)
	bias := tensor.New[T](out)
	tensor.KaimingUniform(rng, bias, in)
	return linear{w: b.addParam(name+".weight", w), b: b.addParam(name+".bias", bias)}
}

func applyLinear[T Float](l linear, x *ag.Var[T], ps []*ag.Var[T]) *ag.Var[T] {
	return ag.Add(ag.MatMul(x, ps[l.w], false, true), ps[l.b])
}

// conv is a 2-D convolution; b < 0 means no bias.
type conv struct {
	w, b int
	p    tensor.ConvParams
}

func (b *base[T]) newConv(rng *tensor.RNG, name string, cin, cout, k, stride, pad int, bias bool) conv {
	fanIn := cin * k * k
	w := tensor.New[T](cout, cin, k, k)
	tensor.KaimingUniform(rng, w, fanIn)
	c := conv{w: b.addParam(name+".weight", w), b: -1, p: tensor.ConvParams{StrideH: stride, StrideW: stride, PadH: pad, PadW: pad}}
	if bias {
		bt := tensor.New[T](cout)
		tensor.KaimingUniform(rng, bt, fanIn)
		c.b = b.addParam(name+".bias", bt)
	}
	return c
}

func applyConv[T Float](c conv, x *ag.Var[T], ps []*ag.Var[T]) *ag.Var[T] {
	var bias *ag.Var[T]
	if c.b >= 0 {
		bias = ps[c.b]
	}
	return ag.Conv2D(x, ps[c.w], bias, c.p)
}

// convOut returns the spatial output size of a k×k convolution.
func convOut(h, w, k, stride, pad int) (int, int) {
	return (h+2*pad-k)/stride + 1, (w+2*pad-k)/stride + 1
}

// Normalisation kinds (the DC ConvNet's net_norm values).
const (
	NormInstance = "instancenorm" // GroupNorm(C, C), affine
	NormBatch    = "batchnorm"    // BatchNorm2d(C), affine, running statistics
	NormLayer    = "layernorm"    // LayerNorm([C, H, W]), elementwise affine
	NormGroup    = "groupnorm"    // GroupNorm(4, C), affine
	NormNone     = "none"
)

// norm is an affine normalisation layer. For batch norm rm and rv index the
// running mean and variance buffers.
type norm struct {
	kind   string
	g, b   int
	rm, rv int
	groups int
	shape  []int // layer norm's normalized shape
}

// newNorm adds a normalisation of c channels of h×w maps; kind "none"
// returns a layer that does nothing.
func (b *base[T]) newNorm(kind, name string, c, h, w int) (norm, error) {
	n := norm{kind: kind, g: -1, b: -1, rm: -1, rv: -1}
	var shape []int
	switch kind {
	case NormNone:
		return n, nil
	case NormInstance:
		n.groups, shape = c, []int{c}
	case NormGroup:
		if c%4 != 0 {
			return n, fmt.Errorf("nn: %s: groupnorm uses 4 groups, which do not divide %d channels", b.kind, c)
		}
		n.groups, shape = 4, []int{c}
	case NormBatch:
		shape = []int{c}
	case NormLayer:
		n.shape = []int{c, h, w}
		shape = n.shape
	default:
		return n, fmt.Errorf("nn: %s: unknown norm %q (use %s, %s, %s, %s or %s)", b.kind, kind, NormInstance, NormBatch, NormLayer, NormGroup, NormNone)
	}
	g := tensor.New[T](shape...)
	g.Fill(1)
	n.g = b.addParam(name+".weight", g)
	n.b = b.addParam(name+".bias", tensor.New[T](shape...))
	if kind == NormBatch {
		rv := tensor.New[T](c)
		rv.Fill(1)
		n.rm = b.addBuffer(name+".running_mean", tensor.New[T](c))
		n.rv = b.addBuffer(name+".running_var", rv)
	}
	return n, nil
}

func (b *base[T]) applyNorm(n norm, x *ag.Var[T], ps []*ag.Var[T]) *ag.Var[T] {
	switch n.kind {
	case NormInstance, NormGroup:
		return ag.GroupNorm(x, n.groups, ps[n.g], ps[n.b], NormEps)
	case NormLayer:
		return ag.LayerNorm(x, n.shape, ps[n.g], ps[n.b], NormEps)
	case NormBatch:
		return b.batchNorm(n, x, ps[n.g], ps[n.b])
	}
	return x
}

// batchNorm is batch norm in the model's mode; in training mode it updates
// the running statistics as PyTorch does:
//
//	running ← (1 − momentum)·running + momentum·batch statistic
//
// with the unbiased batch variance.
func (b *base[T]) batchNorm(n norm, x, gamma, beta *ag.Var[T]) *ag.Var[T] {
	tp := x.Tape()
	if tp.Err() != nil {
		return x
	}
	rm, rv := b.buffers[n.rm], b.buffers[n.rv]
	if b.eval {
		return ag.BatchNorm2DEval(x, gamma, beta, rm, rv, NormEps)
	}
	if sh := x.Shape(); len(sh) >= 2 && tensor.Size(sh)/max(sh[1], 1) <= 1 {
		tp.Fail(fmt.Errorf("nn: %s: batch norm in training mode needs more than one value per channel, got input %v (use a larger batch or evaluation mode)", b.kind, sh))
		return x
	}
	y, mean, vu := ag.BatchNorm2D(x, gamma, beta, NormEps)
	if tp.Err() != nil || mean == nil {
		return y
	}
	const m = BatchNormMomentum
	for i := range rm.Data {
		rm.Data[i] = T((1-m)*float64(rm.Data[i]) + m*float64(mean.Data[i]))
		rv.Data[i] = T((1-m)*float64(rv.Data[i]) + m*float64(vu.Data[i]))
	}
	return y
}

// Activation kinds (the DC ConvNet's net_act values).
const (
	ActReLU      = "relu"
	ActLeakyReLU = "leakyrelu" // slope 0.01
	ActSigmoid   = "sigmoid"
)

func checkAct(kind, act string) error {
	switch act {
	case ActReLU, ActLeakyReLU, ActSigmoid:
		return nil
	}
	return fmt.Errorf("nn: %s: unknown activation %q (use %s, %s or %s)", kind, act, ActReLU, ActLeakyReLU, ActSigmoid)
}

func applyAct[T Float](act string, x *ag.Var[T]) *ag.Var[T] {
	switch act {
	case ActLeakyReLU:
		return ag.LeakyReLU(x, 0.01)
	case ActSigmoid:
		return ag.Sigmoid(x)
	}
	return ag.ReLU(x)
}

// applyActPoolAfterLayer applies the activation and the pooling to an x that
// only a convolution or a normalisation has produced and nothing else reads:
// ReLU then runs in x's buffer (those operations' backward rules never read
// their output), which saves one activation-sized buffer per block, and
// ReLU with 2×2 average pooling is one fused pass.
func applyActPoolAfterLayer[T Float](act, pool string, x *ag.Var[T]) *ag.Var[T] {
	if act != ActReLU && act != "" {
		return applyPool(pool, applyAct(act, x))
	}
	if s := x.Shape(); pool == PoolAvg && len(s) == 4 && s[2]%2 == 0 && s[3]%2 == 0 {
		return ag.ReLUAvgPool2x2InPlace(x)
	}
	return applyPool(pool, ag.ReLUInPlace(x))
}

// Pooling kinds (the DC ConvNet's net_pooling values): 2×2, stride 2.
const (
	PoolAvg  = "avgpooling"
	PoolMax  = "maxpooling"
	PoolNone = "none"
)

func applyPool[T Float](pool string, x *ag.Var[T]) *ag.Var[T] {
	switch pool {
	case PoolAvg:
		return ag.AvgPool2D(x, 2, 2, 0)
	case PoolMax:
		return ag.MaxPool2D(x, 2, 2, 0)
	}
	return x
}
