package distill

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

func TestValidateMatch(t *testing.T) {
	for _, m := range []MatchConfig{{}, {Distance: DistanceLayerwise}, {Distance: DistanceMagnitude}, {ClassSum: true}, {Distance: DistanceMagnitude, ClassSum: true}} {
		if err := ValidateMatch(m); err != nil {
			t.Errorf("ValidateMatch(%+v) = %v", m, err)
		}
	}
	if err := ValidateMatch(MatchConfig{Distance: "mse"}); err == nil || !strings.Contains(err.Error(), `"mse" is not implemented`) {
		t.Errorf("unknown distance: %v", err)
	}
}

// Both distances on two small gradients, against values worked out by
// hand: a (2, 3) weight gradient and a bias gradient (ignored).
func TestGradDistancesHandComputed(t *testing.T) {
	tp := ag.NewTape[float64]()
	defer tp.Release()
	mk := func(shape []int, v ...float64) *ag.Var[float64] {
		x, err := tensor.FromSlice(v, shape...)
		if err != nil {
			t.Fatal(err)
		}
		return tp.Const(x)
	}
	// Rows A1 = (1,2,2), A2 = (0,3,4); B1 = (2,1,2), B2 = (0,0,5).
	// <A1,B1> = 8, ‖A1‖ = ‖B1‖ = 3, ‖A1−B1‖ = √2;
	// <A2,B2> = 20, ‖A2‖ = ‖B2‖ = 5, ‖A2−B2‖ = √10.
	gS := []*ag.Var[float64]{mk([]int{2, 3}, 1, 2, 2, 0, 3, 4), mk([]int{2}, 7, -7)}
	gT := []*ag.Var[float64]{mk([]int{2, 3}, 2, 1, 2, 0, 0, 5), mk([]int{2}, 1, 1)}
	cosTerms := (1 - 8/(9+1e-6)) + (1 - 20/(25+1e-6))
	want := map[string]float64{
		DistanceLayerwise: cosTerms,                                            // 0.3111112…
		DistanceMagnitude: cosTerms + math.Sqrt(2+1e-12) + math.Sqrt(10+1e-12), // 4.8876025…
	}
	for name, w := range want {
		d, err := gradDistance(MatchConfig{Distance: name}, gS, gT)
		if err != nil {
			t.Fatal(err)
		}
		if got := d.Value.Item(); math.Abs(got-w) > 1e-12 {
			t.Errorf("%s: distance %.15g, want %.15g", name, got, w)
		}
	}
	if math.Abs(want[DistanceMagnitude]-4.887602464) > 1e-8 {
		t.Errorf("hand value %.10g", want[DistanceMagnitude])
	}
	// A conv-shaped gradient (out, in, kh, kw) is reshaped to (out, rest).
	c1 := mk([]int{2, 1, 1, 3}, 1, 2, 2, 0, 3, 4)
	c2 := mk([]int{2, 1, 1, 3}, 2, 1, 2, 0, 0, 5)
	d := MagnitudeGradDistance([]*ag.Var[float64]{c1}, []*ag.Var[float64]{c2})
	if math.Abs(d.Value.Item()-want[DistanceMagnitude]) > 1e-12 {
		t.Errorf("conv-shaped: %v, want %v", d.Value.Item(), want[DistanceMagnitude])
	}
}

func tinyConvNet64(t *testing.T, seed uint64) *nn.ConvNet[float64] {
	t.Helper()
	m, err := nn.NewConvNet[float64](nn.ConvNetConfig{InChannels: 1, Height: 8, Width: 8, Classes: 2, NetWidth: 3, Depth: 2}, tensor.NewRNG(seed, 0))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func randn64(seed uint64, shape ...int) *tensor.Tensor[float64] {
	x := tensor.New[float64](shape...)
	tensor.FillNormal(tensor.NewRNG(seed, 3), x, 0, 1)
	return x
}

// checkDirectional compares <grad, v> with a central difference of loss
// along v for three random directions.
func checkDirectional(t *testing.T, name string, xs []*tensor.Tensor[float64], grads []*tensor.Tensor[float64], loss func([]*tensor.Tensor[float64]) float64) {
	t.Helper()
	for trial := range 3 {
		const eps = 1e-6
		var analytic float64
		plus, minus := make([]*tensor.Tensor[float64], len(xs)), make([]*tensor.Tensor[float64], len(xs))
		for g, x := range xs {
			v := randn64(uint64(100*trial+g), x.Shape...)
			plus[g], minus[g] = x.Clone(), x.Clone()
			for i := range v.Data {
				plus[g].Data[i] += eps * v.Data[i]
				minus[g].Data[i] -= eps * v.Data[i]
				analytic += grads[g].Data[i] * v.Data[i]
			}
		}
		numeric := (loss(plus) - loss(minus)) / (2 * eps)
		if math.Abs(numeric-analytic) > 1e-6*math.Max(1, math.Abs(numeric)) {
			t.Errorf("%s trial %d: directional derivative %.10g, finite difference %.10g", name, trial, analytic, numeric)
		}
	}
}

// The magnitude-aware distance's image gradient (second order through the
// network) agrees with finite differences, per class (GradMatchLoss) and
// for DCC's class sum (GradMatchLossSum), with and without Siamese
// augmentation.
func TestMatchOptionsGradientFiniteDifference(t *testing.T) {
	m := tinyConvNet64(t, 7)
	real := []*tensor.Tensor[float64]{randn64(1, 4, 1, 8, 8), randn64(2, 3, 1, 8, 8)}
	realY := [][]int{{0, 0, 0, 0}, {1, 1, 1}}
	syn := []*tensor.Tensor[float64]{randn64(3, 2, 1, 8, 8), randn64(4, 2, 1, 8, 8)}
	synY := [][]int{{0, 0}, {1, 1}}
	dsa := &data.DSA{Strategy: []string{data.DSAColor, data.DSACrop, data.DSAScale, data.DSARotate}, Params: data.DefaultDSAParams()}
	dsa.Params.Mode = data.DSAMultiple
	dsa.Params.Shared = true
	rng := tensor.NewRNG(9, 0)
	augSets := [][]*data.Augmentation{nil, {dsa.Sample(rng, 4, 8, 8), dsa.Sample(rng, 4, 8, 8)}}
	for _, match := range []MatchConfig{{Distance: DistanceMagnitude}, {Distance: DistanceMagnitude, ClassSum: true}, {Distance: DistanceLayerwise, ClassSum: true}} {
		for ai, augs := range augSets {
			name := match.Distance
			if match.ClassSum {
				name += "+classsum"
			}
			if ai > 0 {
				name += "+dsa"
			}
			if !match.ClassSum {
				var aug *data.Augmentation
				if augs != nil {
					aug = augs[0]
				}
				grad := tensor.New[float64](syn[0].Shape...)
				if _, err := GradMatchLoss[float64](m, real[0], realY[0], syn[0], synY[0], aug, match, grad); err != nil {
					t.Fatal(err)
				}
				checkDirectional(t, name, syn[:1], []*tensor.Tensor[float64]{grad}, func(x []*tensor.Tensor[float64]) float64 {
					l, err := GradMatchLoss[float64](m, real[0], realY[0], x[0], synY[0], aug, match, tensor.New[float64](x[0].Shape...))
					if err != nil {
						t.Fatal(err)
					}
					return l
				})
				continue
			}
			grads := []*tensor.Tensor[float64]{tensor.New[float64](syn[0].Shape...), tensor.New[float64](syn[1].Shape...)}
			loss, err := GradMatchLossSum[float64](m, real, realY, syn, synY, augs, match, grads)
			if err != nil {
				t.Fatal(err)
			}
			// The value is D(Σ_c g_S,c, Σ_c g_T,c) computed independently.
			if want := classSumByHand(t, m, real, realY, syn, synY, augs, match); math.Abs(loss-want) > 1e-12*math.Max(1, want) {
				t.Errorf("%s: loss %.15g, independent %.15g", name, loss, want)
			}
			checkDirectional(t, name, syn, grads, func(x []*tensor.Tensor[float64]) float64 {
				g2 := []*tensor.Tensor[float64]{tensor.New[float64](x[0].Shape...), tensor.New[float64](x[1].Shape...)}
				l, err := GradMatchLossSum[float64](m, real, realY, x, synY, augs, match, g2)
				if err != nil {
					t.Fatal(err)
				}
				return l
			})
		}
	}
}

// classSumByHand sums per-class parameter gradients one class at a time
// and evaluates the distance on the sums.
func classSumByHand(t *testing.T, m nn.Model[float64], real []*tensor.Tensor[float64], realY [][]int, syn []*tensor.Tensor[float64], synY [][]int, augs []*data.Augmentation, match MatchConfig) float64 {
	t.Helper()
	sum := func(xs []*tensor.Tensor[float64], ys [][]int) []*tensor.Tensor[float64] {
		var total []*tensor.Tensor[float64]
		for g := range xs {
			tp := ag.NewTape[float64]()
			x := tp.Const(xs[g])
			if augs != nil {
				x = data.Apply(augs[g], x)
			}
			ps := nn.Bind(tp, m)
			gr, err := tp.Grad([]*ag.Var[float64]{ag.CrossEntropy(m.Forward(x, ps), ys[g])}, nil, ps, false)
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range gr {
				if g == 0 {
					total = append(total, v.Value.Clone())
				} else {
					for j := range v.Value.Data {
						total[i].Data[j] += v.Value.Data[j]
					}
				}
			}
			tp.Release()
		}
		return total
	}
	sS, sT := sum(syn, synY), sum(real, realY)
	tp := ag.NewTape[float64]()
	defer tp.Release()
	vs, vt := make([]*ag.Var[float64], len(sS)), make([]*ag.Var[float64], len(sT))
	for i := range sS {
		vs[i], vt[i] = tp.Const(sS[i]), tp.Const(sT[i])
	}
	d, err := gradDistance(match, vs, vt)
	if err != nil {
		t.Fatal(err)
	}
	return d.Value.Item()
}

// DC with the class sum, the magnitude-aware distance and the inner loop
// on real data runs, is deterministic, and moves the images.
func TestGMOptionsRun(t *testing.T) {
	train, _ := loadMNIST(t)
	real := twoClass(train, 40)
	for _, opt := range []struct {
		match     MatchConfig
		innerReal bool
	}{
		{MatchConfig{Distance: DistanceMagnitude, ClassSum: true}, false},
		{MatchConfig{Distance: DistanceMagnitude}, true},
		{MatchConfig{ClassSum: true}, true},
	} {
		cfg := Config{Method: MethodDSA, IPC: 2, Seed: 4, Model: "convnet-w8", BatchReal: 16, OuterLoop: 2, InnerLoop: 2, Match: opt.match}.Defaults("mnist")
		if err := ValidateMatch(cfg.Match); err != nil {
			t.Fatal(err)
		}
		run := func() (*SyntheticSet, []float64) {
			d := newGM(cfg, GMOptions{InnerReal: opt.innerReal})
			if err := d.Init(context.Background(), real); err != nil {
				t.Fatal(err)
			}
			var losses []float64
			for it := range 2 {
				l, err := d.Step(context.Background(), it)
				if err != nil || math.IsNaN(l) || l < 0 {
					t.Fatalf("%+v: iteration %d: loss %v, %v", opt, it, l, err)
				}
				losses = append(losses, l)
			}
			return d.Synthetic().Clone(), losses
		}
		s1, l1 := run()
		s2, l2 := run()
		if !slices.Equal(l1, l2) || !slices.Equal(s1.X.Data, s2.X.Data) {
			t.Errorf("%+v: not deterministic: %v vs %v", opt, l1, l2)
		}
		init := newGM(cfg, GMOptions{})
		if err := init.Init(context.Background(), real); err != nil {
			t.Fatal(err)
		}
		if slices.Equal(init.Synthetic().X.Data, s1.X.Data) {
			t.Errorf("%+v: images did not move", opt)
		}
		t.Logf("%+v inner-real %v: losses %v", opt.match, opt.innerReal, l1)
	}
}
