package nn

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/fedsim/fedsim/tensor"
)

// ModelNames lists the names New accepts, in a fixed order.
func ModelNames() []string {
	return []string{"convnet", "convnet-bn", "mlp", "lenet", "alexnet", "vgg11", "vgg11-in", "resnet18", "resnet18-in"}
}

// New builds the model called name for inputs of shape inShape (C, H, W)
// and the given class count, initialised from rng. Names are
// case-insensitive and ignore '-' and '_':
//
//	convnet      ConvNet: width 128, depth 3, instance norm, ReLU, avg-pool
//	convnet-bn   ConvNet with batch norm (the reference code's ConvNetBN)
//	mlp          MLP 128-128
//	lenet        LeNet-5
//	alexnet      AlexNet (small-image)
//	vgg11        VGG-11 with batch norm (the reference code's VGG11BN)
//	vgg11-in     VGG-11 with instance norm (the reference code's VGG11)
//	resnet18     ResNet-18 with batch norm (the reference code's ResNet18BN)
//	resnet18-in  ResNet-18 with instance norm (the reference code's ResNet18)
//
// ConvNet also takes the reference code's variant suffixes, combinable:
// W<n> (width, e.g. ConvNetW32), D<n> (depth, ConvNetD4), BN, LN (layer
// norm), IN, GN (group norm), NN (no norm), AR/AL/AS (ReLU, leaky ReLU,
// sigmoid), AP/MP/NP (average, max, no pooling): "ConvNet_BN",
// "convnet-w64-d4", "ConvNetNP".
func New[T Float](name string, inShape []int, classes int, rng *tensor.RNG) (Model[T], error) {
	if len(inShape) != 3 {
		return nil, fmt.Errorf("nn: model %q: input shape %v must be (C, H, W)", name, inShape)
	}
	c, h, w := inShape[0], inShape[1], inShape[2]
	key := strings.NewReplacer("-", "", "_", "").Replace(strings.ToLower(strings.TrimSpace(name)))
	switch key {
	case "mlp":
		return NewMLP[T](MLPConfig{InChannels: c, Height: h, Width: w, Classes: classes}, rng)
	case "lenet":
		return NewLeNet[T](LeNetConfig{InChannels: c, Height: h, Width: w, Classes: classes}, rng)
	case "alexnet":
		return NewAlexNet[T](AlexNetConfig{InChannels: c, Height: h, Width: w, Classes: classes}, rng)
	case "vgg11", "vgg11bn":
		return NewVGG11[T](VGGConfig{InChannels: c, Height: h, Width: w, Classes: classes, Norm: NormBatch}, rng)
	case "vgg11in":
		return NewVGG11[T](VGGConfig{InChannels: c, Height: h, Width: w, Classes: classes, Norm: NormInstance}, rng)
	case "resnet18", "resnet18bn":
		return NewResNet18[T](ResNetConfig{InChannels: c, Height: h, Width: w, Classes: classes, Norm: NormBatch}, rng)
	case "resnet18in":
		return NewResNet18[T](ResNetConfig{InChannels: c, Height: h, Width: w, Classes: classes, Norm: NormInstance}, rng)
	}
	if rest, ok := strings.CutPrefix(key, "convnet"); ok {
		cfg, err := parseConvNet(rest)
		if err != nil {
			return nil, fmt.Errorf("nn: model %q: %v", name, err)
		}
		cfg.InChannels, cfg.Height, cfg.Width, cfg.Classes = c, h, w, classes
		return NewConvNet[T](cfg, rng)
	}
	return nil, fmt.Errorf("nn: unknown model %q: want one of %s (ConvNet also takes variant suffixes such as W32, D4, BN, LN, GN, NN, AL, AS, MP, NP)", name, strings.Join(ModelNames(), ", "))
}

// parseConvNet reads the reference code's ConvNet variant suffixes.
func parseConvNet(s string) (ConvNetConfig, error) {
	var cfg ConvNetConfig
	tokens := map[string]func(){
		"bn": func() { cfg.Norm = NormBatch },
		"ln": func() { cfg.Norm = NormLayer },
		"in": func() { cfg.Norm = NormInstance },
		"gn": func() { cfg.Norm = NormGroup },
		"nn": func() { cfg.Norm = NormNone },
		"ar": func() { cfg.Act = ActReLU },
		"al": func() { cfg.Act = ActLeakyReLU },
		"as": func() { cfg.Act = ActSigmoid },
		"ap": func() { cfg.Pool = PoolAvg },
		"mp": func() { cfg.Pool = PoolMax },
		"np": func() { cfg.Pool = PoolNone },
	}
	for s != "" {
		if len(s) >= 2 {
			if f, ok := tokens[s[:2]]; ok {
				f()
				s = s[2:]
				continue
			}
		}
		if s[0] == 'w' || s[0] == 'd' {
			j := 1
			for j < len(s) && s[j] >= '0' && s[j] <= '9' {
				j++
			}
			n, err := strconv.Atoi(s[1:j])
			if err == nil && n > 0 {
				if s[0] == 'w' {
					cfg.NetWidth = n
				} else {
					cfg.Depth = n
				}
				s = s[j:]
				continue
			}
		}
		return cfg, fmt.Errorf("unknown ConvNet variant suffix %q (use W<n>, D<n>, BN, LN, IN, GN, NN, AR, AL, AS, AP, MP or NP)", s)
	}
	return cfg, nil
}
