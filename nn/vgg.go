package nn

import (
	"fmt"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/tensor"
)

// VGGConfig describes VGG-11 as the DC/DSA authors use it on small images.
type VGGConfig struct {
	InChannels, Height, Width int
	Classes                   int
	// Norm is batchnorm (default: the reference code's VGG11BN) or
	// instancenorm (its VGG11).
	Norm string
	// NetWidth is the first block's channel count (default 64); the blocks
	// have NetWidth × [1, 2, 4, 4, 8, 8, 8, 8] channels.
	NetWidth int
}

// vgg11 is the VGG-11 configuration in units of NetWidth; 0 is a max-pool.
var vgg11 = []int{1, 0, 2, 0, 4, 4, 0, 8, 8, 0, 8, 8, 0}

// VGG is VGG-11 as in the DC/DSA authors' networks.py: eight blocks of
// [conv 3×3 (pad 1) → norm → ReLU] with 2×2 max-pools after blocks 1, 2, 4,
// 6 and 8, then one linear layer ("classifier"). The first convolution pads
// by 3 for 28×28 inputs (the reference code: for one-channel inputs), so
// both MNIST and CIFAR reach the classifier as 512×1×1.
//
// Parameter names follow the reference nn.Sequential: features.{k}.weight
// and .bias for the convolutions (k = 0, 4, 8, 11, 15, 18, 22, 25) and the
// norms (k+1), then classifier.weight and classifier.bias. With batch norm
// the buffers are features.{k+1}.running_mean and .running_var. Embed
// returns the flattened features.
type VGG[T Float] struct {
	base[T]
	cfg   VGGConfig
	convs []conv
	norms []norm
	pool  []bool // max-pool after block i
	fc    linear
	feat  int
}

var _ Embedder[float32] = (*VGG[float32])(nil)

// NewVGG11 builds a VGG-11 with PyTorch's default initialisation.
func NewVGG11[T Float](cfg VGGConfig, rng *tensor.RNG) (*VGG[T], error) {
	if cfg.Norm == "" {
		cfg.Norm = NormBatch
	}
	if cfg.NetWidth == 0 {
		cfg.NetWidth = 64
	}
	b, err := newBase[T]("VGG11", cfg.InChannels, cfg.Height, cfg.Width, cfg.Classes)
	if err != nil {
		return nil, err
	}
	if cfg.Norm != NormBatch && cfg.Norm != NormInstance {
		return nil, fmt.Errorf("nn: VGG11 norm %q is not supported (use %s or %s)", cfg.Norm, NormBatch, NormInstance)
	}
	if cfg.NetWidth < 0 {
		return nil, fmt.Errorf("nn: VGG11 width %d must be positive", cfg.NetWidth)
	}
	m := &VGG[T]{base: b, cfg: cfg}
	h, w, c := cfg.Height, cfg.Width, cfg.InChannels
	for k, u := range vgg11 {
		if u == 0 {
			m.pool[len(m.pool)-1] = true
			h, w = h/2, w/2
			if h <= 0 || w <= 0 {
				return nil, fmt.Errorf("nn: VGG11 needs inputs of at least 32×32 (28×28 are padded), got %d×%d", cfg.Height, cfg.Width)
			}
			continue
		}
		// Module index in the reference nn.Sequential: three modules per
		// block, one per pool.
		pad := 1
		if len(m.convs) == 0 && cfg.Height == 28 && cfg.Width == 28 {
			pad = 3
		}
		out := u * cfg.NetWidth
		m.convs = append(m.convs, m.newConv(rng, fmt.Sprintf("features.%d", moduleIndex(k)), c, out, 3, 1, pad, true))
		h, w = convOut(h, w, 3, 1, pad)
		n, err := m.newNorm(cfg.Norm, fmt.Sprintf("features.%d", moduleIndex(k)+1), out, h, w)
		if err != nil {
			return nil, err
		}
		m.norms = append(m.norms, n)
		m.pool = append(m.pool, false)
		c = out
	}
	m.feat = c * h * w
	m.fc = m.newLinear(rng, "classifier", m.feat, cfg.Classes)
	return m, nil
}

// moduleIndex is the nn.Sequential index of entry k of vgg11.
func moduleIndex(k int) int {
	i := 0
	for _, u := range vgg11[:k] {
		if u == 0 {
			i++
		} else {
			i += 3
		}
	}
	return i
}

// FeatureSize returns the length of an embedding.
func (m *VGG[T]) FeatureSize() int { return m.feat }

// Embed returns the flattened features (N, FeatureSize).
func (m *VGG[T]) Embed(x *ag.Var[T], ps []*ag.Var[T]) *ag.Var[T] {
	if !m.check(x, ps) {
		return x
	}
	h := x
	for i, c := range m.convs {
		h = ag.ReLU(m.applyNorm(m.norms[i], applyConv(c, h, ps), ps))
		if m.pool[i] {
			h = ag.MaxPool2D(h, 2, 2, 0)
		}
	}
	return ag.Flatten(h)
}

// Forward returns the logits (N, classes) of x (N, C, H, W).
func (m *VGG[T]) Forward(x *ag.Var[T], ps []*ag.Var[T]) *ag.Var[T] {
	e := m.Embed(x, ps)
	if x.Tape().Err() != nil {
		return e
	}
	return applyLinear(m.fc, e, ps)
}
