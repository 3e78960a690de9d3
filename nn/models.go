package nn

import (
	"fmt"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/tensor"
)

// MLPConfig describes the DC authors' MLP: flatten, then fully connected
// layers of the Hidden widths with ReLU, then a linear classifier.
type MLPConfig struct {
	InChannels, Height, Width int
	Classes                   int
	Hidden                    []int // default [128, 128]
}

// MLP is the DC/DSA authors' MLP (flatten → 128 → 128 → classes, ReLU).
// Its parameters are fc_1.weight (128, C·H·W), fc_1.bias, fc_2.weight,
// fc_2.bias, fc_3.weight (classes, 128), fc_3.bias — fc_k for k = 1 …
// len(Hidden)+1. The reference code sizes fc_1 for 28×28×1 or 32×32×3
// inputs; here it takes the given C·H·W. Embed returns the last hidden
// layer's activations.
type MLP[T Float] struct {
	base[T]
	layers []linear
}

var _ Embedder[float32] = (*MLP[float32])(nil)

// NewMLP builds an MLP with PyTorch's default initialisation drawn from rng.
func NewMLP[T Float](cfg MLPConfig, rng *tensor.RNG) (*MLP[T], error) {
	b, err := newBase[T]("MLP", cfg.InChannels, cfg.Height, cfg.Width, cfg.Classes)
	if err != nil {
		return nil, err
	}
	hidden := cfg.Hidden
	if hidden == nil {
		hidden = []int{128, 128}
	}
	m := &MLP[T]{base: b}
	in := cfg.InChannels * cfg.Height * cfg.Width
	for i, h := range append(hidden, cfg.Classes) {
		if h <= 0 {
			return nil, fmt.Errorf("nn: MLP hidden width %d must be positive", h)
		}
		m.layers = append(m.layers, m.newLinear(rng, fmt.Sprintf("fc_%d", i+1), in, h))
		in = h
	}
	return m, nil
}

// Embed returns the last hidden layer's activations (N, Hidden[last]); with
// no hidden layers, the flattened input.
func (m *MLP[T]) Embed(x *ag.Var[T], ps []*ag.Var[T]) *ag.Var[T] {
	if !m.check(x, ps) {
		return x
	}
	h := ag.Flatten(x)
	for _, l := range m.layers[:len(m.layers)-1] {
		h = ag.ReLU(applyLinear(l, h, ps))
	}
	return h
}

// Forward returns the logits (N, classes) of x (N, C, H, W).
func (m *MLP[T]) Forward(x *ag.Var[T], ps []*ag.Var[T]) *ag.Var[T] {
	e := m.Embed(x, ps)
	if x.Tape().Err() != nil {
		return e
	}
	return applyLinear(m.layers[len(m.layers)-1], e, ps)
}

// LeNetConfig gives LeNet's input shape and class count.
type LeNetConfig struct {
	InChannels, Height, Width int
	Classes                   int
}

// LeNet is the DC/DSA authors' LeNet-5: conv 5×5 (6) → ReLU → max-pool 2 →
// conv 5×5 (16) → ReLU → max-pool 2 → fc 120 → ReLU → fc 84 → ReLU → fc.
// Parameters: features.0.weight (6, C, 5, 5), features.0.bias,
// features.3.weight (16, 6, 5, 5), features.3.bias, fc_1 (120, 16·h·w),
// fc_2 (84, 120), fc_3 (classes, 84), each .weight then .bias. The first
// convolution pads by 2 for 28×28 inputs (the reference code: for
// one-channel inputs) and by 0 otherwise, so MNIST and CIFAR both reach the
// classifier as 16×5×5. Embed returns the 84 features before fc_3.
type LeNet[T Float] struct {
	base[T]
	c1, c2        conv
	fc1, fc2, fc3 linear
}

var _ Embedder[float32] = (*LeNet[float32])(nil)

// NewLeNet builds a LeNet with PyTorch's default initialisation.
func NewLeNet[T Float](cfg LeNetConfig, rng *tensor.RNG) (*LeNet[T], error) {
	b, err := newBase[T]("LeNet", cfg.InChannels, cfg.Height, cfg.Width, cfg.Classes)
	if err != nil {
		return nil, err
	}
	m := &LeNet[T]{base: b}
	pad := 0
	if cfg.Height == 28 && cfg.Width == 28 {
		pad = 2
	}
	h, w := cfg.Height, cfg.Width
	m.c1 = m.newConv(rng, "features.0", cfg.InChannels, 6, 5, 1, pad, true)
	h, w = convOut(h, w, 5, 1, pad)
	h, w = h/2, w/2
	m.c2 = m.newConv(rng, "features.3", 6, 16, 5, 1, 0, true)
	h, w = convOut(h, w, 5, 1, 0)
	h, w = h/2, w/2
	if h <= 0 || w <= 0 {
		return nil, fmt.Errorf("nn: LeNet needs inputs of at least 16×16 (28×28 are padded), got %d×%d", cfg.Height, cfg.Width)
	}
	m.fc1 = m.newLinear(rng, "fc_1", 16*h*w, 120)
	m.fc2 = m.newLinear(rng, "fc_2", 120, 84)
	m.fc3 = m.newLinear(rng, "fc_3", 84, cfg.Classes)
	return m, nil
}

// Embed returns the 84 features (N, 84) that feed the classifier.
func (m *LeNet[T]) Embed(x *ag.Var[T], ps []*ag.Var[T]) *ag.Var[T] {
	if !m.check(x, ps) {
		return x
	}
	h := ag.MaxPool2D(ag.ReLU(applyConv(m.c1, x, ps)), 2, 2, 0)
	h = ag.MaxPool2D(ag.ReLU(applyConv(m.c2, h, ps)), 2, 2, 0)
	h = ag.ReLU(applyLinear(m.fc1, ag.Flatten(h), ps))
	return ag.ReLU(applyLinear(m.fc2, h, ps))
}

// Forward returns the logits (N, classes) of x (N, C, H, W).
func (m *LeNet[T]) Forward(x *ag.Var[T], ps []*ag.Var[T]) *ag.Var[T] {
	e := m.Embed(x, ps)
	if x.Tape().Err() != nil {
		return e
	}
	return applyLinear(m.fc3, e, ps)
}

// AlexNetConfig describes the DC authors' small-image AlexNet.
type AlexNetConfig struct {
	InChannels, Height, Width int
	Classes                   int
	// Channels of the five convolutions; default [128, 192, 256, 192, 192].
	Channels []int
}

// AlexNet is the DC/DSA authors' AlexNet for 28×28 and 32×32 images:
//
//	conv 5×5 (128, pad 2; pad 4 for 28×28) → ReLU → max-pool 2
//	conv 5×5 (192, pad 2) → ReLU → max-pool 2
//	conv 3×3 (256, pad 1) → ReLU → conv 3×3 (192, pad 1) → ReLU
//	conv 3×3 (192, pad 1) → ReLU → max-pool 2 → fc (classes)
//
// Parameters: features.{0,3,6,8,10}.weight and .bias, then fc.weight
// (classes, 192·4·4 for 28×28 and 32×32) and fc.bias. The reference code
// pads the first convolution by 4 for one-channel inputs; here for 28×28
// ones. Embed returns the flattened features.
type AlexNet[T Float] struct {
	base[T]
	convs []conv
	fc    linear
	feat  int
}

var _ Embedder[float32] = (*AlexNet[float32])(nil)

// NewAlexNet builds an AlexNet with PyTorch's default initialisation.
func NewAlexNet[T Float](cfg AlexNetConfig, rng *tensor.RNG) (*AlexNet[T], error) {
	b, err := newBase[T]("AlexNet", cfg.InChannels, cfg.Height, cfg.Width, cfg.Classes)
	if err != nil {
		return nil, err
	}
	ch := cfg.Channels
	if ch == nil {
		ch = []int{128, 192, 256, 192, 192}
	}
	if len(ch) != 5 {
		return nil, fmt.Errorf("nn: AlexNet has 5 convolutions, got %d channel counts", len(ch))
	}
	for _, c := range ch {
		if c <= 0 {
			return nil, fmt.Errorf("nn: AlexNet channel counts %v must be positive", ch)
		}
	}
	m := &AlexNet[T]{base: b}
	pad0 := 2
	if cfg.Height == 28 && cfg.Width == 28 {
		pad0 = 4
	}
	idx := []int{0, 3, 6, 8, 10}
	ks := []int{5, 5, 3, 3, 3}
	pads := []int{pad0, 2, 1, 1, 1}
	h, w, c := cfg.Height, cfg.Width, cfg.InChannels
	for i := range 5 {
		m.convs = append(m.convs, m.newConv(rng, fmt.Sprintf("features.%d", idx[i]), c, ch[i], ks[i], 1, pads[i], true))
		h, w = convOut(h, w, ks[i], 1, pads[i])
		if i == 0 || i == 1 || i == 4 {
			h, w = h/2, w/2
		}
		if h <= 0 || w <= 0 {
			return nil, fmt.Errorf("nn: AlexNet needs inputs of at least 8×8, got %d×%d", cfg.Height, cfg.Width)
		}
		c = ch[i]
	}
	m.feat = c * h * w
	m.fc = m.newLinear(rng, "fc", m.feat, cfg.Classes)
	return m, nil
}

// FeatureSize returns the length of an embedding.
func (m *AlexNet[T]) FeatureSize() int { return m.feat }

// Embed returns the flattened features (N, FeatureSize).
func (m *AlexNet[T]) Embed(x *ag.Var[T], ps []*ag.Var[T]) *ag.Var[T] {
	if !m.check(x, ps) {
		return x
	}
	h := x
	for i, c := range m.convs {
		h = ag.ReLU(applyConv(c, h, ps))
		if i == 0 || i == 1 || i == 4 {
			h = ag.MaxPool2D(h, 2, 2, 0)
		}
	}
	return ag.Flatten(h)
}

// Forward returns the logits (N, classes) of x (N, C, H, W).
func (m *AlexNet[T]) Forward(x *ag.Var[T], ps []*ag.Var[T]) *ag.Var[T] {
	e := m.Embed(x, ps)
	if x.Tape().Err() != nil {
		return e
	}
	return applyLinear(m.fc, e, ps)
}
