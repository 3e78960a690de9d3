package nn

import (
	"fmt"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/tensor"
)

// ResNetConfig describes ResNet-18 as the DC/DSA authors use it on small
// images.
type ResNetConfig struct {
	InChannels, Height, Width int
	Classes                   int
	// Norm is batchnorm (default: the reference code's ResNet18BN) or
	// instancenorm (its ResNet18).
	Norm string
	// NetWidth is the stem's channel count (default 64); the four stages have
	// NetWidth × [1, 2, 4, 8] channels.
	NetWidth int
	// Blocks per stage; default [2, 2, 2, 2] (ResNet-18).
	Blocks []int
}

type basicBlock struct {
	conv1, conv2 conv
	bn1, bn2     norm
	short        *conv // projection shortcut, or nil for identity
	shortNorm    norm
}

// ResNet is the DC/DSA authors' small-image ResNet-18: a 3×3 stem (stride
// 1, pad 1, no bias) → norm → ReLU, four stages of two basic blocks (3×3
// convolutions without bias, each followed by a norm; the first block of
// stages 2–4 has stride 2 and a 1×1 projection shortcut with its norm),
// then 4×4 average pooling and a linear classifier. A 32×32 or 28×28 input
// reaches the pooling as 4×4, so the classifier sees 8·NetWidth features.
//
// Parameter names follow the reference module: conv1.weight, bn1.weight,
// bn1.bias, layer{s}.{b}.conv1.weight, .bn1.weight, .bn1.bias,
// .conv2.weight, .bn2.weight, .bn2.bias, [.shortcut.0.weight,
// .shortcut.1.weight, .shortcut.1.bias], …, classifier.weight,
// classifier.bias, in that order. With batch norm each norm also has
// .running_mean and .running_var buffers. Embed returns the pooled
// features.
type ResNet[T Float] struct {
	base[T]
	cfg    ResNetConfig
	stem   conv
	stemBN norm
	blocks []basicBlock
	fc     linear
	feat   int
}

var _ Embedder[float32] = (*ResNet[float32])(nil)

// NewResNet18 builds a ResNet-18 with PyTorch's default initialisation
// (batch-norm scale 1, shift 0).
func NewResNet18[T Float](cfg ResNetConfig, rng *tensor.RNG) (*ResNet[T], error) {
	if cfg.Norm == "" {
		cfg.Norm = NormBatch
	}
	if cfg.NetWidth == 0 {
		cfg.NetWidth = 64
	}
	if cfg.Blocks == nil {
		cfg.Blocks = []int{2, 2, 2, 2}
	}
	b, err := newBase[T]("ResNet18", cfg.InChannels, cfg.Height, cfg.Width, cfg.Classes)
	if err != nil {
		return nil, err
	}
	if cfg.Norm != NormBatch && cfg.Norm != NormInstance {
		return nil, fmt.Errorf("nn: ResNet18 norm %q is not supported (use %s or %s)", cfg.Norm, NormBatch, NormInstance)
	}
	if cfg.NetWidth < 0 || len(cfg.Blocks) != 4 {
		return nil, fmt.Errorf("nn: ResNet18 needs a positive width and 4 stages, got width %d and blocks %v", cfg.NetWidth, cfg.Blocks)
	}
	m := &ResNet[T]{base: b, cfg: cfg}
	h, w := cfg.Height, cfg.Width
	m.stem = m.newConv(rng, "conv1", cfg.InChannels, cfg.NetWidth, 3, 1, 1, false)
	if m.stemBN, err = m.newNorm(cfg.Norm, "bn1", cfg.NetWidth, h, w); err != nil {
		return nil, err
	}
	in := cfg.NetWidth
	for s, nb := range cfg.Blocks {
		planes := cfg.NetWidth << s
		for j := range nb {
			stride := 1
			if s > 0 && j == 0 {
				stride = 2
			}
			name := fmt.Sprintf("layer%d.%d", s+1, j)
			var blk basicBlock
			blk.conv1 = m.newConv(rng, name+".conv1", in, planes, 3, stride, 1, false)
			h, w = convOut(h, w, 3, stride, 1)
			if blk.bn1, err = m.newNorm(cfg.Norm, name+".bn1", planes, h, w); err != nil {
				return nil, err
			}
			blk.conv2 = m.newConv(rng, name+".conv2", planes, planes, 3, 1, 1, false)
			if blk.bn2, err = m.newNorm(cfg.Norm, name+".bn2", planes, h, w); err != nil {
				return nil, err
			}
			if stride != 1 || in != planes {
				sc := m.newConv(rng, name+".shortcut.0", in, planes, 1, stride, 0, false)
				blk.short = &sc
				if blk.shortNorm, err = m.newNorm(cfg.Norm, name+".shortcut.1", planes, h, w); err != nil {
					return nil, err
				}
			}
			m.blocks = append(m.blocks, blk)
			in = planes
		}
	}
	h, w = h/4, w/4
	if h <= 0 || w <= 0 {
		return nil, fmt.Errorf("nn: ResNet18 needs inputs of at least 25×25 (4×4 after the stages), got %d×%d", cfg.Height, cfg.Width)
	}
	m.feat = in * h * w
	m.fc = m.newLinear(rng, "classifier", m.feat, cfg.Classes)
	return m, nil
}

// FeatureSize returns the length of an embedding.
func (m *ResNet[T]) FeatureSize() int { return m.feat }

// Embed returns the pooled, flattened features (N, FeatureSize).
func (m *ResNet[T]) Embed(x *ag.Var[T], ps []*ag.Var[T]) *ag.Var[T] {
	if !m.check(x, ps) {
		return x
	}
	h := ag.ReLU(m.applyNorm(m.stemBN, applyConv(m.stem, x, ps), ps))
	for _, b := range m.blocks {
		out := ag.ReLU(m.applyNorm(b.bn1, applyConv(b.conv1, h, ps), ps))
		out = m.applyNorm(b.bn2, applyConv(b.conv2, out, ps), ps)
		short := h
		if b.short != nil {
			short = m.applyNorm(b.shortNorm, applyConv(*b.short, h, ps), ps)
		}
		h = ag.ReLU(ag.Add(out, short))
	}
	return ag.Flatten(ag.AvgPool2D(h, 4, 4, 0))
}

// Forward returns the logits (N, classes) of x (N, C, H, W).
func (m *ResNet[T]) Forward(x *ag.Var[T], ps []*ag.Var[T]) *ag.Var[T] {
	e := m.Embed(x, ps)
	if x.Tape().Err() != nil {
		return e
	}
	return applyLinear(m.fc, e, ps)
}
