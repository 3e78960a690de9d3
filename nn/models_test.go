package nn_test

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/autograd/gradcheck"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

func randTensor[T tensor.Float](seed uint64, shape ...int) *tensor.Tensor[T] {
	x := tensor.New[T](shape...)
	tensor.FillNormal(tensor.NewRNG(seed, 9), x, 0, 1)
	return x
}

// Parameter counts of the reference (PyTorch) networks on CIFAR-10 and
// MNIST, 10 classes.
var wantParams = map[string][2]int{
	"convnet":     {320010, 317706},
	"convnet-bn":  {320010, 317706},
	"mlp":         {411146, 118282},
	"lenet":       {62006, 61706},
	"alexnet":     {1872202, 1865802},
	"vgg11":       {9231114, 9229962},
	"vgg11-in":    {9231114, 9229962},
	"resnet18":    {11173962, 11172810},
	"resnet18-in": {11173962, 11172810},
}

func TestForwardShapes(t *testing.T) {
	names := append(nn.ModelNames(), "ConvNet_LN", "convnetGN", "convnet-nn", "ConvNetAL", "ConvNetAS", "ConvNetMP", "ConvNetNP", "ConvNetW32", "ConvNetD4", "convnet-w16-d2-bn-mp")
	for _, ds := range []struct {
		name  string
		shape []int
	}{{"cifar", []int{3, 32, 32}}, {"mnist", []int{1, 28, 28}}} {
		for _, name := range names {
			t.Run(ds.name+"/"+name, func(t *testing.T) {
				m, err := nn.New[float32](name, ds.shape, 10, tensor.NewRNG(1, 1))
				if err != nil {
					t.Fatal(err)
				}
				pnames := m.ParamNames()
				if len(pnames) != len(m.Params()) {
					t.Fatalf("%d names for %d parameters", len(pnames), len(m.Params()))
				}
				all := pnames
				if b, ok := m.(nn.Buffered[float32]); ok {
					all = append(slices.Clone(all), b.BufferNames()...)
					if len(b.BufferNames()) != len(b.Buffers()) {
						t.Fatalf("%d buffer names for %d buffers", len(b.BufferNames()), len(b.Buffers()))
					}
					if strings.Contains(name, "bn") || name == "vgg11" || name == "resnet18" || strings.HasSuffix(name, "-bn-mp") {
						if len(b.Buffers()) == 0 {
							t.Errorf("batch-norm model has no buffers")
						}
					} else if len(b.Buffers()) != 0 {
						t.Errorf("model without batch norm has buffers %v", b.BufferNames())
					}
				}
				seen := map[string]bool{}
				for _, n := range all {
					if seen[n] {
						t.Errorf("duplicate name %q", n)
					}
					seen[n] = true
				}
				if want, ok := wantParams[name]; ok {
					k := 0
					if ds.name == "mnist" {
						k = 1
					}
					if got := nn.NumParams(m); got != want[k] {
						t.Errorf("%d parameters, the reference network has %d", got, want[k])
					}
				}
				tp := ag.NewTape[float32]()
				defer tp.Release()
				x := tp.Const(randTensor[float32](2, append([]int{2}, ds.shape...)...))
				ps := nn.Bind(tp, m)
				y := m.Forward(x, ps)
				if err := tp.Err(); err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(y.Shape(), []int{2, 10}) {
					t.Fatalf("logits have shape %v, want [2 10]", y.Shape())
				}
				if tensor.HasNaNOrInf(y.Value.Data) {
					t.Fatalf("non-finite logits %v", y.Value)
				}
				if e, ok := m.(nn.Embedder[float32]); ok {
					f := e.Embed(x, ps)
					if err := tp.Err(); err != nil {
						t.Fatal(err)
					}
					if f.Value.Rank() != 2 || f.Shape()[0] != 2 {
						t.Errorf("embedding has shape %v, want (2, features)", f.Shape())
					}
					if fs, ok := m.(interface{ FeatureSize() int }); ok && f.Shape()[1] != fs.FeatureSize() {
						t.Errorf("embedding has %d features, FeatureSize says %d", f.Shape()[1], fs.FeatureSize())
					}
				} else {
					t.Errorf("%T is not an Embedder", m)
				}
				// A wrong input shape is an error naming it, not a panic.
				tp2 := ag.NewTape[float32]()
				m.Forward(tp2.Const(tensor.New[float32](2, ds.shape[0]+1, ds.shape[1], ds.shape[2])), nn.Bind(tp2, m))
				if err := tp2.Err(); err == nil || !strings.Contains(err.Error(), "expects input") {
					t.Errorf("wrong input shape: error %v", err)
				}
			})
		}
	}
}

func TestNewErrors(t *testing.T) {
	_, err := nn.New[float32]("transformer", []int{3, 32, 32}, 10, tensor.NewRNG(1, 1))
	if err == nil || !strings.Contains(err.Error(), "resnet18") || !strings.Contains(err.Error(), "convnet-bn") {
		t.Errorf("unknown model: error %v should list the valid names", err)
	}
	if _, err := nn.New[float32]("convnet-xy", []int{3, 32, 32}, 10, tensor.NewRNG(1, 1)); err == nil {
		t.Error("unknown ConvNet suffix accepted")
	}
	if _, err := nn.New[float32]("resnet18", []int{3, 16, 16}, 10, tensor.NewRNG(1, 1)); err == nil {
		t.Error("ResNet-18 accepted a 16×16 input")
	}
	if _, err := nn.NewConvNet[float32](nn.ConvNetConfig{InChannels: 1, Height: 8, Width: 8, Classes: 2, NetWidth: 6, Norm: "groupnorm"}, tensor.NewRNG(1, 1)); err == nil {
		t.Error("groupnorm with 6 channels (4 groups) accepted")
	}
	m, err := nn.New[float32]("ConvNet_W32_D4_BN_MP", []int{3, 32, 32}, 10, tensor.NewRNG(1, 1))
	if err != nil {
		t.Fatal(err)
	}
	cfg := m.(*nn.ConvNet[float32]).Config()
	if cfg.NetWidth != 32 || cfg.Depth != 4 || cfg.Norm != "batchnorm" || cfg.Pool != "maxpooling" || cfg.Act != "relu" {
		t.Errorf("ConvNet_W32_D4_BN_MP parsed as %+v", cfg)
	}
}

// smallModels are float64 models small enough for finite differences, with
// an input shape each.
func smallModels(t *testing.T) map[string]struct {
	m     nn.Model[float64]
	shape []int
} {
	rng := tensor.NewRNG(3, 1)
	out := map[string]struct {
		m     nn.Model[float64]
		shape []int
	}{}
	add := func(name string, m nn.Model[float64], err error, shape ...int) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out[name] = struct {
			m     nn.Model[float64]
			shape []int
		}{m, shape}
	}
	for _, norm := range []string{"instancenorm", "batchnorm", "layernorm", "groupnorm", "none"} {
		for _, act := range []string{"relu", "leakyrelu", "sigmoid"} {
			for _, pool := range []string{"avgpooling", "maxpooling", "none"} {
				if act != "relu" && (norm != "batchnorm" || pool != "avgpooling") {
					continue // activations once, with batch norm
				}
				m, err := nn.NewConvNet[float64](nn.ConvNetConfig{InChannels: 2, Height: 8, Width: 8, Classes: 3, NetWidth: 4, Depth: 2, Norm: norm, Act: act, Pool: pool}, rng)
				add(fmt.Sprintf("convnet-%s-%s-%s", norm, act, pool), m, err, 2, 8, 8)
			}
		}
	}
	mlp, err := nn.NewMLP[float64](nn.MLPConfig{InChannels: 1, Height: 5, Width: 5, Classes: 3, Hidden: []int{6, 5}}, rng)
	add("mlp", mlp, err, 1, 5, 5)
	lenet, err := nn.NewLeNet[float64](nn.LeNetConfig{InChannels: 3, Height: 16, Width: 16, Classes: 3}, rng)
	add("lenet", lenet, err, 3, 16, 16)
	alex, err := nn.NewAlexNet[float64](nn.AlexNetConfig{InChannels: 3, Height: 8, Width: 8, Classes: 3, Channels: []int{4, 5, 6, 5, 4}}, rng)
	add("alexnet", alex, err, 3, 8, 8)
	for _, norm := range []string{"batchnorm", "instancenorm"} {
		vgg, err := nn.NewVGG11[float64](nn.VGGConfig{InChannels: 1, Height: 28, Width: 28, Classes: 3, Norm: norm, NetWidth: 2}, rng)
		add("vgg11-"+norm, vgg, err, 1, 28, 28)
		res, err := nn.NewResNet18[float64](nn.ResNetConfig{InChannels: 3, Height: 32, Width: 32, Classes: 3, Norm: norm, NetWidth: 2}, rng)
		add("resnet18-"+norm, res, err, 3, 32, 32)
	}
	return out
}

// perturbNorms moves norm scales and shifts away from 1 and 0 so that their
// gradients are generic.
func perturbNorms(m nn.Model[float64], seed uint64) {
	rng := tensor.NewRNG(seed, 5)
	for i, n := range m.ParamNames() {
		if strings.Contains(n, "norm") || strings.Contains(n, "bn") || strings.HasPrefix(n, "features.") && m.Params()[i].Rank() == 1 && !strings.HasSuffix(n, "bias") {
			for j := range m.Params()[i].Data {
				m.Params()[i].Data[j] += 0.3 * rng.NormFloat64()
			}
		}
	}
}

// TestModelGradients checks every parameter's gradient (and the input's)
// against central differences of the loss in one random direction per
// tensor, in float64, in training mode (batch statistics for batch norm).
func TestModelGradients(t *testing.T) {
	for name, c := range smallModels(t) {
		t.Run(name, func(t *testing.T) {
			m := c.m
			perturbNorms(m, 4)
			x := randTensor[float64](5, append([]int{4}, c.shape...)...)
			y := []int{0, 1, 2, 1}
			r := randTensor[float64](6, 4, 3)
			loss := func(tp *ag.Tape[float64], xv *ag.Var[float64], ps []*ag.Var[float64]) *ag.Var[float64] {
				logits := m.Forward(xv, ps)
				return ag.Add(ag.CrossEntropy(logits, y), ag.Scale(ag.Sum(ag.Mul(logits, tp.Const(r))), 0.1))
			}
			tp := ag.NewTape[float64]()
			defer tp.Release()
			ps := nn.Bind(tp, m)
			xv := tp.Param(x)
			l := loss(tp, xv, ps)
			gs, err := tp.Grad([]*ag.Var[float64]{l}, nil, append(ps, xv), false)
			if err != nil {
				t.Fatal(err)
			}
			eval := func() float64 {
				tp := ag.NewTape[float64]()
				defer tp.Release()
				v := loss(tp, tp.Const(x), nn.BindConst(tp, m))
				if err := tp.Err(); err != nil {
					t.Fatal(err)
				}
				return v.Value.Item()
			}
			targets := append(slices.Clone(m.Params()), x)
			names := append(m.ParamNames(), "input")
			eps := gradEps
			for i, p := range targets {
				d := randTensor[float64](uint64(100+i), p.Shape...)
				ana := tensor.Dot(gs[i].Value.Data, d.Data)
				orig := slices.Clone(p.Data)
				tensor.Axpy(eps, d.Data, p.Data)
				fp := eval()
				copy(p.Data, orig)
				tensor.Axpy(-eps, d.Data, p.Data)
				fm := eval()
				copy(p.Data, orig)
				num := (fp - fm) / (2 * eps)
				if math.Abs(ana-num) > 1e-6+1e-5*math.Abs(num) || math.IsNaN(ana) {
					t.Errorf("d loss/d %s along a random direction: analytical %.10g, numerical %.10g", names[i], ana, num)
				}
			}
		})
	}
}

// TestConvNetBNSecondOrder runs gradgradcheck on a tiny batch-norm ConvNet:
// gradient matching differentiates the parameter gradient again.
func TestConvNetBNSecondOrder(t *testing.T) {
	m, err := nn.NewConvNet[float64](nn.ConvNetConfig{InChannels: 1, Height: 4, Width: 4, Classes: 2, NetWidth: 2, Depth: 1, Norm: "batchnorm"}, tensor.NewRNG(7, 1))
	if err != nil {
		t.Fatal(err)
	}
	perturbNorms(m, 8)
	np := len(m.Params())
	f := func(tp *ag.Tape[float64], xs []*ag.Var[float64]) *ag.Var[float64] {
		return m.Forward(xs[np], xs[:np])
	}
	inputs := append(slices.Clone(m.Params()), randTensor[float64](9, 3, 1, 4, 4))
	if err := gradcheck.Check(f, inputs, gradcheck.Options{}); err != nil {
		t.Error(err)
	}
	if err := gradcheck.CheckSecond(f, inputs, gradcheck.Options{}); err != nil {
		t.Error(err)
	}
}

var gradEps = 1e-7 // small: a larger step crosses ReLU and max-pool kinks
