package nn_test

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/internal/npz"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// testdata/models.npz is written by testdata/make_models.py: PyTorch
// (float64) versions of the DC authors' networks with small widths.
func referenceModel(t *testing.T, c string) nn.Model[float64] {
	rng := tensor.NewRNG(1, 1)
	var m nn.Model[float64]
	var err error
	switch c {
	case "convnet_in_mnist":
		m, err = nn.NewConvNet[float64](nn.ConvNetConfig{InChannels: 1, Height: 28, Width: 28, Classes: 5, NetWidth: 4}, rng)
	case "convnet_bn_cifar":
		m, err = nn.NewConvNet[float64](nn.ConvNetConfig{InChannels: 3, Height: 32, Width: 32, Classes: 5, NetWidth: 4, Norm: "batchnorm"}, rng)
	case "convnet_ln_mnist":
		m, err = nn.NewConvNet[float64](nn.ConvNetConfig{InChannels: 1, Height: 28, Width: 28, Classes: 5, NetWidth: 4, Depth: 2, Norm: "layernorm"}, rng)
	case "convnet_gn_cifar":
		m, err = nn.NewConvNet[float64](nn.ConvNetConfig{InChannels: 3, Height: 16, Width: 16, Classes: 5, NetWidth: 8, Depth: 2, Norm: "groupnorm", Act: "leakyrelu", Pool: "maxpooling"}, rng)
	case "convnet_nn_cifar":
		m, err = nn.NewConvNet[float64](nn.ConvNetConfig{InChannels: 3, Height: 8, Width: 8, Classes: 5, NetWidth: 4, Depth: 2, Norm: "none", Act: "sigmoid", Pool: "none"}, rng)
	case "mlp":
		m, err = nn.NewMLP[float64](nn.MLPConfig{InChannels: 3, Height: 8, Width: 8, Classes: 5, Hidden: []int{16, 12}}, rng)
	case "lenet_cifar":
		m, err = nn.NewLeNet[float64](nn.LeNetConfig{InChannels: 3, Height: 16, Width: 16, Classes: 5}, rng)
	case "alexnet_mnist":
		m, err = nn.NewAlexNet[float64](nn.AlexNetConfig{InChannels: 1, Height: 28, Width: 28, Classes: 5, Channels: []int{4, 5, 6, 5, 4}}, rng)
	case "vgg11_bn_cifar":
		m, err = nn.NewVGG11[float64](nn.VGGConfig{InChannels: 3, Height: 32, Width: 32, Classes: 5, NetWidth: 2}, rng)
	case "vgg11_in_mnist":
		m, err = nn.NewVGG11[float64](nn.VGGConfig{InChannels: 1, Height: 28, Width: 28, Classes: 5, NetWidth: 2, Norm: "instancenorm"}, rng)
	case "resnet18_bn_cifar":
		m, err = nn.NewResNet18[float64](nn.ResNetConfig{InChannels: 3, Height: 32, Width: 32, Classes: 5, NetWidth: 2}, rng)
	case "resnet18_in_mnist":
		m, err = nn.NewResNet18[float64](nn.ResNetConfig{InChannels: 1, Height: 28, Width: 28, Classes: 5, NetWidth: 2, Norm: "instancenorm"}, rng)
	default:
		t.Fatalf("no Go model for fixture case %q", c)
	}
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestModelsMatchPyTorch(t *testing.T) {
	fx, err := npz.Read("testdata/models.npz")
	if err != nil {
		t.Fatalf("reading the PyTorch fixture (make it with /usr/bin/python3 nn/testdata/make_models.py): %v", err)
	}
	get := func(t *testing.T, key string) *tensor.Tensor[float64] {
		t.Helper()
		a, ok := fx[key]
		if !ok {
			t.Fatalf("fixture has no %q", key)
		}
		v, err := a.Float64()
		if err != nil {
			t.Fatal(err)
		}
		return &tensor.Tensor[float64]{Shape: slices.Clone(a.Shape), Data: slices.Clone(v)}
	}
	strs := func(key string) []string {
		s := string(fx[key].Data.([]uint8))
		if s == "" {
			return nil
		}
		return strings.Split(s, "\n")
	}
	check := func(t *testing.T, what string, got, want *tensor.Tensor[float64], floor float64) {
		t.Helper()
		if !slices.Equal(got.Shape, want.Shape) {
			t.Fatalf("%s: shape %v, PyTorch %v", what, got.Shape, want.Shape)
		}
		var diff, scale float64
		for i := range want.Data {
			diff = math.Max(diff, math.Abs(got.Data[i]-want.Data[i]))
			scale = math.Max(scale, math.Abs(want.Data[i]))
		}
		if e := diff / math.Max(scale, floor); !(e <= 1e-5) {
			t.Errorf("%s: relative error %.3g", what, e)
		}
	}
	var cases []string
	for k := range fx {
		if c, ok := strings.CutSuffix(k, "/param_names"); ok {
			cases = append(cases, c)
		}
	}
	slices.Sort(cases)
	if len(cases) < 12 {
		t.Fatalf("fixture has %d cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c, func(t *testing.T) {
			m := referenceModel(t, c)
			names, bufNames := strs(c+"/param_names"), strs(c+"/buffer_names")
			if !strings.HasPrefix(c, "convnet") && !slices.Equal(m.ParamNames(), names) {
				t.Errorf("parameter names\n%v\nPyTorch\n%v", m.ParamNames(), names)
			}
			if len(m.Params()) != len(names) {
				t.Fatalf("%d parameters, PyTorch %d", len(m.Params()), len(names))
			}
			bm := m.(nn.Buffered[float64])
			if len(bm.Buffers()) != len(bufNames) {
				t.Fatalf("buffers %v, PyTorch %v", bm.BufferNames(), bufNames)
			}
			if !strings.HasPrefix(c, "convnet") && !slices.Equal(bm.BufferNames(), bufNames) {
				t.Errorf("buffer names %v, PyTorch %v", bm.BufferNames(), bufNames)
			}
			for i, p := range m.Params() {
				want := get(t, fmt.Sprintf("%s/param/%d", c, i))
				if !slices.Equal(p.Shape, want.Shape) {
					t.Fatalf("%s: shape %v, PyTorch %v", m.ParamNames()[i], p.Shape, want.Shape)
				}
				p.CopyFrom(want)
			}
			for i, b := range bm.Buffers() {
				b.CopyFrom(get(t, fmt.Sprintf("%s/buffer_before/%d", c, i)))
			}
			x := get(t, c+"/x")
			yv, _ := fx[c+"/y"].Ints()

			m.(nn.Trainable).SetTraining(true)
			tp := ag.NewTape[float64]()
			defer tp.Release()
			ps := nn.Bind(tp, m)
			logits := m.Forward(tp.Const(x), ps)
			loss := ag.CrossEntropy(logits, yv)
			gs, err := tp.Grad([]*ag.Var[float64]{loss}, nil, ps, false)
			if err != nil {
				t.Fatal(err)
			}
			check(t, "training-mode logits", logits.Value, get(t, c+"/logits_train"), 0)
			check(t, "loss", loss.Value, get(t, c+"/loss"), 0)
			var gscale float64
			for i := range gs {
				for _, v := range get(t, fmt.Sprintf("%s/grad/%d", c, i)).Data {
					gscale = math.Max(gscale, math.Abs(v))
				}
			}
			for i, g := range gs {
				check(t, "d loss/d "+m.ParamNames()[i], g.Value, get(t, fmt.Sprintf("%s/grad/%d", c, i)), gscale)
			}
			for i, b := range bm.Buffers() {
				check(t, bm.BufferNames()[i]+" after the pass", b, get(t, fmt.Sprintf("%s/buffer_after/%d", c, i)), 0)
			}
			m.(nn.Trainable).SetTraining(false)
			tp2 := ag.NewTape[float64]()
			defer tp2.Release()
			check(t, "evaluation-mode logits", m.Forward(tp2.Const(x), nn.BindConst(tp2, m)).Value, get(t, c+"/logits_eval"), 0)
			if err := tp2.Err(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
