package nn_test

import (
	"math"
	"strings"
	"testing"

	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// runOpt applies the three gradient steps below to p = [1, 2] and returns p
// after each step.
func runOpt(t *testing.T, opt nn.Optimizer[float64]) [][]float64 {
	t.Helper()
	p := &tensor.Tensor[float64]{Shape: []int{2}, Data: []float64{1, 2}}
	var out [][]float64
	for _, g := range [][]float64{{0.5, -1}, {0.2, 0.3}, {-0.4, 0.1}} {
		gt := &tensor.Tensor[float64]{Shape: []int{2}, Data: g}
		if err := opt.Step([]*tensor.Tensor[float64]{p}, []*tensor.Tensor[float64]{gt}); err != nil {
			t.Fatal(err)
		}
		out = append(out, append([]float64(nil), p.Data...))
	}
	return out
}

func checkTrajectory(t *testing.T, name string, got, want [][]float64) {
	t.Helper()
	for s := range want {
		for j := range want[s] {
			if math.Abs(got[s][j]-want[s][j]) > 1e-12 {
				t.Errorf("%s: step %d element %d = %.15g, want %.15g", name, s+1, j, got[s][j], want[s][j])
			}
		}
	}
}

func TestSGDMatchesPyTorch(t *testing.T) {
	// By hand, lr 0.1, μ 0.9, wd 0.01, step 1: g' = g + wd·p = [0.51, −0.98],
	// v = g', p = p − 0.1·v = [0.949, 2.098]. Step 2: g' = [0.2+0.00949,
	// 0.3+0.02098], v = 0.9·v + g' = [0.66849, −0.56102], p = [0.882151,
	// 2.154102]. Later values are torch.optim.SGD's (float64).
	checkTrajectory(t, "heavy ball", runOpt(t, &nn.SGD[float64]{LR: 0.1, Momentum: 0.9, WeightDecay: 0.01}),
		[][]float64{{0.949, 2.098}, {0.882151, 2.154102}, {0.861104749, 2.192439698}})
	// Nesterov step 1: p − lr·(g' + μ·v) = 1 − 0.1·(0.51 + 0.459) = 0.9031.
	checkTrajectory(t, "nesterov", runOpt(t, &nn.SGD[float64]{LR: 0.1, Momentum: 0.9, WeightDecay: 0.01, Nesterov: true}),
		[][]float64{{0.9031, 2.1862}, {0.82207411, 2.20442622}, {0.842401658191, 2.226608988182}})
	checkTrajectory(t, "plain", runOpt(t, &nn.SGD[float64]{LR: 0.1, WeightDecay: 0.01}),
		[][]float64{{0.949, 2.098}, {0.928051, 2.065902}, {0.967122949, 2.053836098}})
}

func TestAdamMatchesPyTorch(t *testing.T) {
	// By hand, step 1 of Adam (lr 0.1): m = 0.1·g, v = 0.001·g², so
	// m̂ = g, v̂ = g² and p ← p − 0.1·g/(|g| + 1e-8) = 1 − 0.1·(1 − 2e-8) =
	// 0.900000002. Later values are torch.optim.Adam / AdamW's (float64).
	checkTrajectory(t, "adam", runOpt(t, nn.NewAdam[float64](0.1)),
		[][]float64{{0.900000002, 2.099999999}, {0.8101424839029282, 2.1427848575707737}, {0.7925145982082051, 2.169610075211488}})
	wd := nn.NewAdam[float64](0.1)
	wd.WeightDecay = 0.1
	checkTrajectory(t, "adam+wd", runOpt(t, wd),
		[][]float64{{0.9000000016666666, 2.09999999875}, {0.8072814605072346, 2.116477113164346}, {0.7702771947721945, 2.1086252513633714}})
	checkTrajectory(t, "adamw", runOpt(t, nn.NewAdamW[float64](0.1, 0.1)),
		[][]float64{{0.890000002, 2.079999999}, {0.7912424838829282, 2.101984857580774}, {0.7657021733493758, 2.1077902266456805}})
}

func TestAdamStateContinues(t *testing.T) {
	// Three steps at once, and one step, a State/SetState into a fresh
	// Adam, then two more: the same parameters bit for bit (the third
	// step's bias corrections depend on the restored step count).
	want := runOpt(t, nn.NewAdam[float64](0.1))
	grads := [][]float64{{0.5, -1}, {0.2, 0.3}, {-0.4, 0.1}}
	p := &tensor.Tensor[float64]{Shape: []int{2}, Data: []float64{1, 2}}
	step := func(o *nn.Adam[float64], g []float64) {
		t.Helper()
		if err := o.Step([]*tensor.Tensor[float64]{p}, []*tensor.Tensor[float64]{{Shape: []int{2}, Data: g}}); err != nil {
			t.Fatal(err)
		}
	}
	first := nn.NewAdam[float64](0.1)
	step(first, grads[0])
	if s := nn.NewAdam[float64](0.1).State(); s.Steps != 0 || len(s.M) != 0 {
		t.Errorf("a fresh Adam's state is %+v, want no steps and no moments", s)
	}
	st := first.State()
	m1 := append([]float64(nil), st.M[0].Data...)
	step(first, grads[1])
	if st.M[0].Data[0] != m1[0] || st.M[0].Data[1] != m1[1] {
		t.Errorf("State shares its moments with the optimizer: %v became %v after a step", m1, st.M[0].Data)
	}
	second := nn.NewAdam[float64](0.1)
	p.Data = []float64{want[0][0], want[0][1]}
	if err := second.SetState(st); err != nil {
		t.Fatal(err)
	}
	step(second, grads[1])
	step(second, grads[2])
	if p.Data[0] != want[2][0] || p.Data[1] != want[2][1] {
		t.Errorf("restored Adam ends at %v, want %v", p.Data, want[2])
	}
	if second.Steps() != 3 {
		t.Errorf("restored Adam counts %d steps, want 3", second.Steps())
	}

	bad := func(v []float64) nn.AdamState[float64] {
		return nn.AdamState[float64]{Steps: 1, M: []*tensor.Tensor[float64]{{Shape: []int{2}, Data: []float64{0, 0}}},
			V: []*tensor.Tensor[float64]{{Shape: []int{len(v)}, Data: v}}}
	}
	for _, c := range []struct {
		name string
		s    nn.AdamState[float64]
		want string
	}{
		{"negative steps", nn.AdamState[float64]{Steps: -1}, "-1 steps"},
		{"moments without steps", nn.AdamState[float64]{M: bad([]float64{0, 0}).M, V: bad([]float64{0, 0}).V}, "no step"},
		{"unpaired moments", nn.AdamState[float64]{Steps: 1, M: bad([]float64{0, 0}).M}, "1 first and 0 second"},
		{"shapes", bad([]float64{0, 0, 0}), "different shapes"},
		{"negative second moment", bad([]float64{0, -1}), "second moment 1 is -1"},
		{"NaN second moment", bad([]float64{math.NaN(), 0}), "second moment 0 is NaN"},
	} {
		o := nn.NewAdam[float64](0.1)
		if err := o.SetState(c.s); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
		if o.Steps() != 0 {
			t.Errorf("%s: a refused state changed the optimizer", c.name)
		}
	}
}

func TestOptimizerShapeErrors(t *testing.T) {
	p := tensor.New[float32](2, 3)
	g := tensor.New[float32](5)
	for _, opt := range []nn.Optimizer[float32]{&nn.SGD[float32]{LR: 1}, nn.NewAdam[float32](1)} {
		err := opt.Step([]*tensor.Tensor[float32]{p}, []*tensor.Tensor[float32]{g})
		if err == nil || !strings.Contains(err.Error(), "[2 3]") || !strings.Contains(err.Error(), "[5]") {
			t.Errorf("%T: error %v should name both shapes", opt, err)
		}
		if err := opt.Step([]*tensor.Tensor[float32]{p}, nil); err == nil {
			t.Errorf("%T: no error for a missing gradient", opt)
		}
	}
}

func TestSchedules(t *testing.T) {
	s := nn.HalfwayDecay(300)
	for _, c := range []struct {
		epoch int
		want  float64
	}{{0, 0.01}, {149, 0.01}, {150, 0.001}, {299, 0.001}} {
		if got := s.LR(0.01, c.epoch, 300); math.Abs(got-c.want) > 1e-15 {
			t.Errorf("HalfwayDecay epoch %d: %g, want %g", c.epoch, got, c.want)
		}
	}
	ms := nn.StepLR{Milestones: []int{2, 4}, Gamma: 0.5}
	for e, want := range []float64{1, 1, 0.5, 0.5, 0.25} {
		if got := ms.LR(1, e, 5); got != want {
			t.Errorf("StepLR epoch %d: %g, want %g", e, got, want)
		}
	}
	c := nn.CosineLR{Min: 0.1}
	for _, tc := range []struct {
		epoch int
		want  float64
	}{{0, 1}, {5, 0.55}, {10, 0.1}, {2, 0.1 + 0.9*(1+math.Cos(math.Pi/5))/2}} {
		if got := c.LR(1, tc.epoch, 10); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("CosineLR epoch %d: %g, want %g", tc.epoch, got, tc.want)
		}
	}
}
