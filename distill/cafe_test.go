package distill

import (
	"context"
	"math"
	"os"
	"slices"
	"testing"
	"time"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// ConvNetFeatures replays nn.ConvNet's forward pass exactly (same bits),
// for every norm, activation and pooling, 28×28 and 32×32 inputs.
func TestConvNetFeaturesMatchesForward(t *testing.T) {
	for _, cfg := range []nn.ConvNetConfig{
		{InChannels: 1, Height: 28, Width: 28, Classes: 10, NetWidth: 8},
		{InChannels: 3, Height: 32, Width: 32, Classes: 10, NetWidth: 8, Depth: 2, Norm: nn.NormGroup},
		{InChannels: 1, Height: 28, Width: 28, Classes: 3, NetWidth: 4, Norm: nn.NormLayer, Act: nn.ActLeakyReLU},
		{InChannels: 1, Height: 28, Width: 28, Classes: 3, NetWidth: 4, Norm: nn.NormBatch, Pool: nn.PoolMax},
		{InChannels: 1, Height: 16, Width: 16, Classes: 3, NetWidth: 4, Norm: nn.NormNone, Act: nn.ActSigmoid, Pool: nn.PoolNone, Depth: 2},
	} {
		m, err := nn.NewConvNet[float32](cfg, tensor.NewRNG(1, 0))
		if err != nil {
			t.Fatal(err)
		}
		x := tensor.New[float32](5, cfg.InChannels, cfg.Height, cfg.Width)
		tensor.FillNormal(tensor.NewRNG(2, 0), x, 0, 1)
		tp := ag.NewTape[float32]()
		want := m.Forward(tp.Const(x), nn.BindConst(tp, m)).Value.Clone()
		wantEmb := m.Embed(tp.Const(x), nn.BindConst(tp, m)).Value.Clone()
		f := ConvNetFeatures(m, tp.Const(x), nn.BindConst(tp, m))
		if err := tp.Err(); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(f.Logits.Value.Data, want.Data) || !slices.Equal(f.Logits.Shape(), want.Shape) {
			t.Errorf("%+v: logits differ from Forward", cfg)
		}
		if !slices.Equal(f.Embed.Value.Data, wantEmb.Data) {
			t.Errorf("%+v: features differ from Embed", cfg)
		}
		depth := m.Config().Depth
		if len(f.Blocks) != depth || f.Blocks[0].Shape()[1] != m.Config().NetWidth {
			t.Errorf("%+v: %d blocks of shape %v", cfg, len(f.Blocks), f.Blocks[0].Shape())
		}
		if cfg.Height == 28 && f.Blocks[0].Shape()[2] != 32 {
			t.Errorf("28×28 input: first block is %v, want 32×32 maps", f.Blocks[0].Shape())
		}
		tp.Release()
	}
}

func cafeGroups(seed uint64) (real, syn []*tensor.Tensor[float64]) {
	real = []*tensor.Tensor[float64]{randn64(seed, 4, 1, 8, 8), randn64(seed+1, 3, 1, 8, 8)}
	syn = []*tensor.Tensor[float64]{randn64(seed+2, 2, 1, 8, 8), randn64(seed+3, 2, 1, 8, 8)}
	return
}

// CAFE's image gradient agrees with finite differences in float64 on a
// tiny ConvNet, with and without Siamese augmentation, for the reference
// weights and for equal weights with a large discrimination weight.
func TestCAFEGradientFiniteDifference(t *testing.T) {
	m := tinyConvNet64(t, 5)
	real, syn := cafeGroups(20)
	dsa := &data.DSA{Strategy: []string{data.DSAColor, data.DSACrop, data.DSAScale, data.DSARotate}, Params: data.DefaultDSAParams()}
	dsa.Params.Mode = data.DSAMultiple
	dsa.Params.Shared = true
	rng := tensor.NewRNG(3, 0)
	for _, opt := range []CAFEOptions{{}, {LayerWeights: []float64{1, 1, 1}, Beta: 0.5}} {
		for _, augs := range [][]*data.Augmentation{nil, {dsa.Sample(rng, 4, 8, 8), dsa.Sample(rng, 4, 8, 8)}} {
			grads := []*tensor.Tensor[float64]{tensor.New[float64](syn[0].Shape...), tensor.New[float64](syn[1].Shape...)}
			loss, err := CAFELoss(m, real, syn, augs, opt, grads)
			if err != nil {
				t.Fatal(err)
			}
			if !(loss > 0) {
				t.Fatalf("loss %v", loss)
			}
			checkDirectional(t, "cafe", syn, grads, func(x []*tensor.Tensor[float64]) float64 {
				g2 := []*tensor.Tensor[float64]{tensor.New[float64](x[0].Shape...), tensor.New[float64](x[1].Shape...)}
				l, err := CAFELoss(m, real, x, augs, opt, g2)
				if err != nil {
					t.Fatal(err)
				}
				return l
			})
		}
	}
}

// The discrimination term is β·Σ_i CE(real_i · centresᵀ, y_i): with all
// layer weights 0 the loss equals it computed directly.
func TestCAFEDiscriminationTerm(t *testing.T) {
	m := tinyConvNet64(t, 6)
	real, syn := cafeGroups(30)
	grads := []*tensor.Tensor[float64]{tensor.New[float64](syn[0].Shape...), tensor.New[float64](syn[1].Shape...)}
	loss, err := CAFELoss(m, real, syn, nil, CAFEOptions{LayerWeights: []float64{0, 0, 0}, Beta: 2}, grads)
	if err != nil {
		t.Fatal(err)
	}
	tp := ag.NewTape[float64]()
	defer tp.Release()
	emb := func(x *tensor.Tensor[float64]) *tensor.Tensor[float64] {
		return m.Embed(tp.Const(x), nn.BindConst(tp, m)).Value
	}
	var want float64
	c0, c1 := emb(syn[0]), emb(syn[1])
	d := c0.Shape[1]
	centre := func(e *tensor.Tensor[float64]) []float64 {
		c := make([]float64, d)
		for i := range e.Shape[0] {
			for j := range d {
				c[j] += e.Data[i*d+j] / float64(e.Shape[0])
			}
		}
		return c
	}
	cs := [][]float64{centre(c0), centre(c1)}
	for g, r := range real {
		e := emb(r)
		for i := range e.Shape[0] {
			var logits [2]float64
			for c := range 2 {
				for j := range d {
					logits[c] += e.Data[i*d+j] * cs[c][j]
				}
			}
			mx := max(logits[0], logits[1])
			lse := mx + logn(expn(logits[0]-mx)+expn(logits[1]-mx))
			want += 2 * (lse - logits[g])
		}
	}
	if d := loss - want; d > 1e-9*want || d < -1e-9*want {
		t.Fatalf("loss %.12g, direct %.12g", loss, want)
	}
}

// CAFE lowers its loss, measured on fixed networks and fixed real
// batches, within a few iterations on a small MNIST slice.
func TestCAFEReducesLoss(t *testing.T) {
	train, _ := loadMNIST(t)
	real := twoClass(train, 200)
	cfg := Config{Method: MethodCAFE, IPC: 1, Seed: 3, Model: "convnet-w8", BatchReal: 64, Init: InitNoise}.Defaults("mnist")
	d := newCAFE(cfg)
	if err := d.Init(context.Background(), real); err != nil {
		t.Fatal(err)
	}
	fixed := func() float64 {
		var total float64
		for k := range 3 {
			m, err := nn.New[float32](cfg.Model, real.ImageShape(), real.Classes, tensor.NewRNG(99, uint64(k)))
			if err != nil {
				t.Fatal(err)
			}
			byClass := real.ClassIndices()
			rs, ss, gs := make([]*tensor.Tensor[float32], 2), make([]*tensor.Tensor[float32], 2), make([]*tensor.Tensor[float32], 2)
			for c := range 2 {
				rs[c], _ = real.Batch(byClass[c][:64])
				ss[c] = classSlice(d.Synthetic().X, c, cfg.IPC)
				gs[c] = tensor.New[float32](ss[c].Shape...)
			}
			l, err := CAFELoss(m.(*nn.ConvNet[float32]), rs, ss, nil, CAFEOptions{}, gs)
			if err != nil {
				t.Fatal(err)
			}
			total += l
		}
		return total
	}
	before := fixed()
	var losses []float64
	for it := range 5 {
		l, err := d.Step(context.Background(), it)
		if err != nil || !(l > 0) {
			t.Fatalf("iteration %d: loss %v, %v", it, l, err)
		}
		losses = append(losses, l)
	}
	after := fixed()
	t.Logf("CAFE loss on fixed networks: %.4f → %.4f (step losses %.4g)", before, after, losses)
	if !(after < 0.8*before) {
		t.Fatalf("CAFE did not reduce the loss: %.4f → %.4f", before, after)
	}
}

// Time per CAFE iteration on MNIST with the reference ConvNet (width
// 128); set FEDSIM_CAFE_TIMING=1 to run it (it takes a minute or more).
func TestCAFETiming(t *testing.T) {
	if os.Getenv("FEDSIM_CAFE_TIMING") == "" {
		t.Skip("set FEDSIM_CAFE_TIMING=1")
	}
	train, _ := loadMNIST(t)
	for _, c := range []struct {
		ipc      int
		strategy string
	}{{1, "none"}, {1, data.DSAStrategyDigits}, {10, "none"}} {
		{
			ipc, strategy := c.ipc, c.strategy
			cfg := Config{Method: MethodCAFE, IPC: ipc, Seed: 1, DSAStrategy: strategy}.Defaults("mnist")
			d := newCAFE(cfg)
			if err := d.Init(context.Background(), train); err != nil {
				t.Fatal(err)
			}
			for it := range 2 {
				start := time.Now()
				l, err := d.Step(context.Background(), it)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("IPC %d dsa %s (outer %d, inner %d): iteration %d %.1fs loss %.4g", ipc, strategy, cfg.OuterLoop, cfg.InnerLoop, it, time.Since(start).Seconds(), l)
			}
		}
	}
}

func expn(x float64) float64 { return math.Exp(x) }
func logn(x float64) float64 { return math.Log(x) }
