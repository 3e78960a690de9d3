package nn

import (
	"fmt"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/tensor"
)

// ConvNetConfig describes the dataset-distillation literature's ConvNet:
// Depth blocks of [conv 3×3 → norm → activation → pool 2×2], then a linear
// classifier. The zero values of NetWidth, Depth, Norm, Act and Pool select
// the defaults (128, 3, instance norm, ReLU, average pooling): the DC/DSA/DM
// authors' "ConvNet".
type ConvNetConfig struct {
	InChannels, Height, Width int // input shape C×H×W
	Classes                   int
	NetWidth                  int    // channels per block; default 128
	Depth                     int    // blocks; default 3
	Norm                      string // instancenorm (default), batchnorm, layernorm, groupnorm or none
	Act                       string // relu (default), leakyrelu or sigmoid
	Pool                      string // avgpooling (default), maxpooling or none
}

func (c ConvNetConfig) withDefaults() ConvNetConfig {
	if c.NetWidth == 0 {
		c.NetWidth = 128
	}
	if c.Depth == 0 {
		c.Depth = 3
	}
	if c.Norm == "" {
		c.Norm = NormInstance
	}
	if c.Act == "" {
		c.Act = ActReLU
	}
	if c.Pool == "" {
		c.Pool = PoolAvg
	}
	return c
}

// ConvNet is the DC/DSA/DM/MTT authors' ConvNet. Its parameters, in order,
// are for each block i conv{i}.weight (W, Cin, 3, 3) and conv{i}.bias (W),
// then, unless Norm is none, norm{i}.weight and norm{i}.bias; then
// fc.weight (classes, features) and fc.bias. The norm parameters have shape
// (W) except for layernorm, whose are (W, H_i, W_i) like nn.LayerNorm over
// [C, H, W] with elementwise affine. With batch norm the buffers are
// norm{i}.running_mean and norm{i}.running_var (W).
//
// The norms are as in the reference code: instancenorm is GroupNorm(W, W),
// groupnorm is GroupNorm(4, W), batchnorm is BatchNorm2d(W), all affine with
// eps 1e-5; leakyrelu has slope 0.01; pooling is 2×2 with stride 2.
//
// As in the reference code a 28×28 input is treated as 32×32: the first
// convolution pads by 3 (so 4×4×W features reach the classifier at depth
// 3). The reference code pads by 3 whenever the input has one channel; the
// two rules agree on MNIST and Fashion-MNIST, and this one also gives the
// intended sizes for one-channel 32×32 inputs.
type ConvNet[T Float] struct {
	base[T]
	cfg   ConvNetConfig
	convs []conv
	norms []norm
	fc    linear
	feat  int
}

var (
	_ Embedder[float32] = (*ConvNet[float32])(nil)
	_ Buffered[float32] = (*ConvNet[float32])(nil)
	_ Trainable         = (*ConvNet[float32])(nil)
)

// NewConvNet builds a ConvNet with PyTorch's default initialisation
// (uniform ±1/√fan-in for conv and linear weights and biases; norm scale 1,
// shift 0; running mean 0 and variance 1) drawn from rng.
func NewConvNet[T Float](cfg ConvNetConfig, rng *tensor.RNG) (*ConvNet[T], error) {
	cfg = cfg.withDefaults()
	b, err := newBase[T]("ConvNet", cfg.InChannels, cfg.Height, cfg.Width, cfg.Classes)
	if err != nil {
		return nil, err
	}
	if cfg.NetWidth <= 0 || cfg.Depth <= 0 {
		return nil, fmt.Errorf("nn: ConvNet width %d and depth %d must be positive", cfg.NetWidth, cfg.Depth)
	}
	if err := checkAct("ConvNet", cfg.Act); err != nil {
		return nil, err
	}
	switch cfg.Pool {
	case PoolAvg, PoolMax, PoolNone:
	default:
		return nil, fmt.Errorf("nn: ConvNet pooling %q is not supported (use %s, %s or %s)", cfg.Pool, PoolAvg, PoolMax, PoolNone)
	}
	m := &ConvNet[T]{base: b, cfg: cfg}
	h, w, c := cfg.Height, cfg.Width, cfg.InChannels
	for i := 0; i < cfg.Depth; i++ {
		pad := 1
		if i == 0 && cfg.Height == 28 && cfg.Width == 28 {
			pad = 3
		}
		m.convs = append(m.convs, m.newConv(rng, fmt.Sprintf("conv%d", i), c, cfg.NetWidth, 3, 1, pad, true))
		h, w = convOut(h, w, 3, 1, pad)
		n, err := m.newNorm(cfg.Norm, fmt.Sprintf("norm%d", i), cfg.NetWidth, h, w)
		if err != nil {
			return nil, err
		}
		m.norms = append(m.norms, n)
		if cfg.Pool != PoolNone {
			h, w = h/2, w/2
		}
		if h <= 0 || w <= 0 {
			return nil, fmt.Errorf("nn: ConvNet of depth %d is too deep for %d×%d inputs", cfg.Depth, cfg.Height, cfg.Width)
		}
		c = cfg.NetWidth
	}
	m.feat = c * h * w
	m.fc = m.newLinear(rng, "fc", m.feat, cfg.Classes)
	return m, nil
}

// Config returns the model's configuration with defaults filled in.
func (m *ConvNet[T]) Config() ConvNetConfig { return m.cfg }

// FeatureSize returns the length of an embedding.
func (m *ConvNet[T]) FeatureSize() int { return m.feat }

// Embed returns the flattened features (N, FeatureSize) of x (N, C, H, W).
func (m *ConvNet[T]) Embed(x *ag.Var[T], ps []*ag.Var[T]) *ag.Var[T] {
	if !m.check(x, ps) {
		return x
	}
	h := x
	for i := range m.convs {
		h = applyConv(m.convs[i], h, ps)
		h = m.applyNorm(m.norms[i], h, ps)
		h = applyActPoolAfterLayer(m.cfg.Act, m.cfg.Pool, h)
	}
	return ag.Flatten(h)
}

// Forward returns the logits (N, classes) of x.
func (m *ConvNet[T]) Forward(x *ag.Var[T], ps []*ag.Var[T]) *ag.Var[T] {
	e := m.Embed(x, ps)
	if x.Tape().Err() != nil {
		return e
	}
	return applyLinear(m.fc, e, ps)
}
