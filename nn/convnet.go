package nn

import (
	"fmt"
	"slices"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/tensor"
)

// ConvNetConfig describes the dataset-distillation literature's ConvNet:
// Depth blocks of [conv 3×3 → norm → activation → pool 2×2], then a linear
// classifier.
type ConvNetConfig struct {
	InChannels, Height, Width int // input shape C×H×W
	Classes                   int
	NetWidth                  int    // channels per block; default 128
	Depth                     int    // blocks; default 3
	Norm                      string // "instancenorm" (default) or "none"
	Pool                      string // "avgpooling" (default) or "none"
}

func (c ConvNetConfig) withDefaults() ConvNetConfig {
	if c.NetWidth == 0 {
		c.NetWidth = 128
	}
	if c.Depth == 0 {
		c.Depth = 3
	}
	if c.Norm == "" {
		c.Norm = "instancenorm"
	}
	if c.Pool == "" {
		c.Pool = "avgpooling"
	}
	return c
}

// ConvNet is the DC/DSA/DM/MTT authors' ConvNet. Its parameters, in order,
// are conv{i}.weight (W, Cin, 3, 3), conv{i}.bias, then with instance norm
// norm{i}.weight and norm{i}.bias (W) for each block i, then fc.weight
// (classes, features) and fc.bias. Instance norm is GroupNorm with one group
// per channel, affine, eps 1e-5. As in the reference code, a 28×28 input is
// treated as 32×32: the first convolution pads by 3, so 4×4×W features reach
// the classifier at depth 3.
type ConvNet[T Float] struct {
	cfg    ConvNetConfig
	params []*tensor.Tensor[T]
	names  []string
	pads   []int
	feat   int
}

var _ Embedder[float32] = (*ConvNet[float32])(nil)

// NewConvNet builds a ConvNet with PyTorch's default initialisation
// (uniform ±1/√fan-in for conv and linear weights and biases; norm scale 1,
// shift 0) drawn from rng.
func NewConvNet[T Float](cfg ConvNetConfig, rng *tensor.RNG) (*ConvNet[T], error) {
	cfg = cfg.withDefaults()
	if cfg.InChannels <= 0 || cfg.Height <= 0 || cfg.Width <= 0 || cfg.Classes <= 0 {
		return nil, fmt.Errorf("nn: ConvNet needs a positive input shape and class count, got %d×%d×%d and %d classes", cfg.InChannels, cfg.Height, cfg.Width, cfg.Classes)
	}
	if cfg.NetWidth <= 0 || cfg.Depth <= 0 {
		return nil, fmt.Errorf("nn: ConvNet width %d and depth %d must be positive", cfg.NetWidth, cfg.Depth)
	}
	switch cfg.Norm {
	case "instancenorm", "none":
	default:
		return nil, fmt.Errorf("nn: ConvNet norm %q is not supported (use instancenorm or none)", cfg.Norm)
	}
	switch cfg.Pool {
	case "avgpooling", "none":
	default:
		return nil, fmt.Errorf("nn: ConvNet pooling %q is not supported (use avgpooling or none)", cfg.Pool)
	}
	m := &ConvNet[T]{cfg: cfg}
	h, w, c := cfg.Height, cfg.Width, cfg.InChannels
	for i := 0; i < cfg.Depth; i++ {
		pad := 1
		if i == 0 && cfg.Height == 28 && cfg.Width == 28 {
			pad = 3
		}
		m.pads = append(m.pads, pad)
		h, w = h+2*pad-2, w+2*pad-2
		fanIn := c * 9
		cw := tensor.New[T](cfg.NetWidth, c, 3, 3)
		tensor.KaimingUniform(rng, cw, fanIn)
		cb := tensor.New[T](cfg.NetWidth)
		tensor.KaimingUniform(rng, cb, fanIn)
		m.add(fmt.Sprintf("conv%d.weight", i), cw)
		m.add(fmt.Sprintf("conv%d.bias", i), cb)
		if cfg.Norm == "instancenorm" {
			g := tensor.New[T](cfg.NetWidth)
			g.Fill(1)
			m.add(fmt.Sprintf("norm%d.weight", i), g)
			m.add(fmt.Sprintf("norm%d.bias", i), tensor.New[T](cfg.NetWidth))
		}
		if cfg.Pool == "avgpooling" {
			h, w = h/2, w/2
		}
		if h <= 0 || w <= 0 {
			return nil, fmt.Errorf("nn: ConvNet of depth %d is too deep for %d×%d inputs", cfg.Depth, cfg.Height, cfg.Width)
		}
		c = cfg.NetWidth
	}
	m.feat = c * h * w
	fw := tensor.New[T](cfg.Classes, m.feat)
	tensor.KaimingUniform(rng, fw, m.feat)
	fb := tensor.New[T](cfg.Classes)
	tensor.KaimingUniform(rng, fb, m.feat)
	m.add("fc.weight", fw)
	m.add("fc.bias", fb)
	return m, nil
}

func (m *ConvNet[T]) add(name string, t *tensor.Tensor[T]) {
	m.names = append(m.names, name)
	m.params = append(m.params, t)
}

// Config returns the model's configuration with defaults filled in.
func (m *ConvNet[T]) Config() ConvNetConfig { return m.cfg }

// Params returns the parameter tensors (see ConvNet for the order).
func (m *ConvNet[T]) Params() []*tensor.Tensor[T] { return m.params }

// ParamNames returns the parameter names.
func (m *ConvNet[T]) ParamNames() []string { return slices.Clone(m.names) }

// FeatureSize returns the length of an embedding.
func (m *ConvNet[T]) FeatureSize() int { return m.feat }

// Embed returns the flattened features (N, FeatureSize) of x (N, C, H, W).
func (m *ConvNet[T]) Embed(x *ag.Var[T], ps []*ag.Var[T]) *ag.Var[T] {
	tp := x.Tape()
	if !checkParams[T](tp, m, ps) {
		return x
	}
	want := []int{m.cfg.InChannels, m.cfg.Height, m.cfg.Width}
	if x.Value.Rank() != 4 || !slices.Equal(x.Shape()[1:], want) {
		tp.Fail(fmt.Errorf("nn: ConvNet expects input (N, %d, %d, %d), got %v", want[0], want[1], want[2], x.Shape()))
		return x
	}
	h := x
	k := 0
	for i := 0; i < m.cfg.Depth; i++ {
		h = ag.Conv2D(h, ps[k], ps[k+1], tensor.ConvParams{StrideH: 1, StrideW: 1, PadH: m.pads[i], PadW: m.pads[i]})
		k += 2
		if m.cfg.Norm == "instancenorm" {
			h = ag.GroupNorm(h, m.cfg.NetWidth, ps[k], ps[k+1], 1e-5)
			k += 2
		}
		h = ag.ReLU(h)
		if m.cfg.Pool == "avgpooling" {
			h = ag.AvgPool2D(h, 2, 2, 0)
		}
	}
	return ag.Flatten(h)
}

// Forward returns the logits (N, classes) of x.
func (m *ConvNet[T]) Forward(x *ag.Var[T], ps []*ag.Var[T]) *ag.Var[T] {
	e := m.Embed(x, ps)
	if x.Tape().Err() != nil {
		return e
	}
	n := len(ps)
	return ag.Add(ag.MatMul(e, ps[n-2], false, true), ps[n-1])
}
