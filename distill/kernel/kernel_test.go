package kernel

import (
	"math"
	"testing"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/autograd/gradcheck"
	"github.com/fedsim/fedsim/tensor"
)

func TestArcFunctionsGradcheck(t *testing.T) {
	c := tensor.New[float64](7)
	copy(c.Data, []float64{-0.95, -0.6, -0.1, 0, 0.3, 0.7, 0.97})
	for name, f := range map[string]func(*ag.Var[float64]) *ag.Var[float64]{"J0": ArcJ0[float64], "J1": ArcJ1[float64]} {
		fn := func(_ *ag.Tape[float64], xs []*ag.Var[float64]) *ag.Var[float64] { return f(xs[0]) }
		if err := gradcheck.Check(fn, []*tensor.Tensor[float64]{c}, gradcheck.Options{}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if err := gradcheck.CheckSecond(fn, []*tensor.Tensor[float64]{c}, gradcheck.Options{Atol: 1e-4}); err != nil {
			t.Errorf("%s second order: %v", name, err)
		}
	}
	// Known values: J1(1) = 1, J1(0) = 1/π, J1(−1) = 0, J0(0) = ½.
	tp := ag.NewTape[float64]()
	defer tp.Release()
	v := tensor.New[float64](3)
	copy(v.Data, []float64{1, 0, -1})
	j1, j0 := ArcJ1(tp.Const(v)), ArcJ0(tp.Const(v))
	for i, want := range []float64{1, 1 / math.Pi, 0} {
		if math.Abs(j1.Value.Data[i]-want) > 1e-15 {
			t.Errorf("J1(%v) = %v, want %v", v.Data[i], j1.Value.Data[i], want)
		}
	}
	if math.Abs(j0.Value.Data[1]-0.5) > 1e-15 || j0.Value.Data[0] != 1 || j0.Value.Data[2] != 0 {
		t.Errorf("J0(1, 0, −1) = %v, want (1, 0.5, 0)", j0.Value.Data)
	}
}

// spd builds A = MᵀM/n + I from M (a differentiable SPD matrix).
func spd(m *ag.Var[float64]) *ag.Var[float64] {
	n := m.Value.Shape[1]
	tp := m.Tape()
	eye := tp.Alloc(n, n)
	for i := range n {
		eye.Data[i*n+i] = 1
	}
	return ag.Add(ag.Scale(ag.MatMul(m, m, true, false), 1/float64(n)), tp.Const(eye))
}

func TestSolve(t *testing.T) {
	m, b := gradcheck.Random(1, 5, 4), gradcheck.Random(2, 4, 3)
	fn := func(_ *ag.Tape[float64], xs []*ag.Var[float64]) *ag.Var[float64] { return Solve(spd(xs[0]), xs[1]) }
	in := []*tensor.Tensor[float64]{m, b}
	if err := gradcheck.Check(fn, in, gradcheck.Options{}); err != nil {
		t.Error(err)
	}
	if err := gradcheck.CheckSecond(fn, in, gradcheck.Options{Atol: 1e-4}); err != nil {
		t.Errorf("second order: %v", err)
	}
	// A·X = B.
	tp := ag.NewTape[float64]()
	defer tp.Release()
	a := spd(tp.Const(m))
	x := Solve(a, tp.Const(b))
	ax := ag.MatMul(a, x, false, false)
	for i, v := range ax.Value.Data {
		if math.Abs(v-b.Data[i]) > 1e-12 {
			t.Fatalf("A·Solve(A, B) − B = %g at %d", v-b.Data[i], i)
		}
	}
	// Not positive definite: an error, not a panic or NaNs.
	bad := tensor.New[float64](2, 2)
	copy(bad.Data, []float64{1, 2, 2, 1})
	Solve(tp.Const(bad), tp.Const(tensor.New[float64](2, 1)))
	if tp.Err() == nil {
		t.Error("Solve of an indefinite matrix: no error")
	}
}

var testArchs = []Arch{
	{Depth: 1, WVar: 2, BVar: 0.01, NTK: false},
	{Depth: 1, WVar: 2, BVar: 0.01, NTK: true},
	{Depth: 3, WVar: 1.5, BVar: 0.1, NTK: true},
	{Conv: true, Depth: 1, WVar: 2, BVar: 0.01, NTK: false},
	{Conv: true, Depth: 2, WVar: 2, BVar: 0.05, NTK: true},
}

// TestKernelGradcheck checks ∂K/∂x against central differences, for a
// cross kernel K(x, y) and a Gram matrix K(x, x) (whose diagonal has c = 1).
func TestKernelGradcheck(t *testing.T) {
	for _, a := range testArchs {
		x, y := gradcheck.Random(3, 3, 2, 4, 4), gradcheck.Random(4, 2, 2, 4, 4)
		cross := func(_ *ag.Tape[float64], xs []*ag.Var[float64]) *ag.Var[float64] { return Kernel(a, xs[0], xs[1]) }
		if err := gradcheck.Check(cross, []*tensor.Tensor[float64]{x, y}, gradcheck.Options{}); err != nil {
			t.Errorf("%s K(x, y): %v", a, err)
		}
		gram := func(_ *ag.Tape[float64], xs []*ag.Var[float64]) *ag.Var[float64] { return Kernel(a, xs[0], xs[0]) }
		if err := gradcheck.Check(gram, []*tensor.Tensor[float64]{x}, gradcheck.Options{}); err != nil {
			t.Errorf("%s K(x, x): %v", a, err)
		}
	}
	// The second derivative of the cross kernel (no c = 1 entries).
	a := testArchs[2]
	x, y := gradcheck.Random(5, 2, 6), gradcheck.Random(6, 2, 6)
	cross := func(_ *ag.Tape[float64], xs []*ag.Var[float64]) *ag.Var[float64] { return Kernel(a, xs[0], xs[1]) }
	if err := gradcheck.CheckSecond(cross, []*tensor.Tensor[float64]{x, y}, gradcheck.Options{Atol: 1e-4}); err != nil {
		t.Errorf("%s second order: %v", a, err)
	}
}

// TestKernelDiagonal checks the closed form of the one-hidden-layer FC
// kernels on the diagonal: Σ0 = WVar·|x|²/d + BVar, NNGP = WVar·Σ0/2 + BVar,
// NTK = Σ0·½·WVar + NNGP.
func TestKernelDiagonal(t *testing.T) {
	x := gradcheck.Random(7, 3, 10)
	tp := ag.NewTape[float64]()
	defer tp.Release()
	for _, ntk := range []bool{false, true} {
		a := Arch{Depth: 1, WVar: 2, BVar: 0.1, NTK: ntk}
		k := Kernel(a, tp.Const(x), tp.Const(x))
		for i := range 3 {
			var s float64
			for _, v := range x.Data[i*10 : (i+1)*10] {
				s += v * v
			}
			s0 := 2*s/10 + 0.1
			want := 2*s0/2 + 0.1
			if ntk {
				want += s0 * 0.5 * 2
			}
			if got := k.Value.Data[i*3+i]; math.Abs(got-want) > 1e-12 {
				t.Errorf("%s K(x%d, x%d) = %v, want %v", a, i, i, got, want)
			}
		}
	}
	if err := tp.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestKernelErrors(t *testing.T) {
	tp := ag.NewTape[float64]()
	defer tp.Release()
	Kernel(Arch{Depth: 0, WVar: 2}, tp.Const(gradcheck.Random(1, 2, 3)), tp.Const(gradcheck.Random(1, 2, 3)))
	if tp.Err() == nil {
		t.Error("depth 0: no error")
	}
	tp2 := ag.NewTape[float64]()
	defer tp2.Release()
	Kernel(DefaultArch(), tp2.Const(gradcheck.Random(1, 2, 3)), tp2.Const(gradcheck.Random(1, 2, 4)))
	if tp2.Err() == nil {
		t.Error("mismatched shapes: no error")
	}
}

// TestKRRLossGradcheck checks the gradients of KIP's and RFAD's losses
// with respect to the support images, the support labels and τ.
func TestKRRLossGradcheck(t *testing.T) {
	a := Arch{Depth: 2, WVar: 2, BVar: 0.01, NTK: true}
	xs, ys := gradcheck.Random(8, 4, 6), gradcheck.Random(9, 4, 3)
	xt := gradcheck.Random(10, 5, 6)
	labels := []int{0, 2, 1, 1, 0}
	yt := tensor.New[float64](5, 3)
	copy(yt.Data, CenteredOneHot[float64](labels, 3))
	logTau := tensor.Scalar(-0.5)
	mse := func(tp *ag.Tape[float64], v []*ag.Var[float64]) *ag.Var[float64] {
		kss := Kernel(a, v[0], v[0])
		kts := Kernel(a, tp.Const(xt), v[0])
		return MSELoss(Predict(kts, kss, v[1], 1e-2), tp.Const(yt))
	}
	if err := gradcheck.Check(mse, []*tensor.Tensor[float64]{xs, ys}, gradcheck.Options{}); err != nil {
		t.Errorf("MSE: %v", err)
	}
	platt := func(tp *ag.Tape[float64], v []*ag.Var[float64]) *ag.Var[float64] {
		kss := Kernel(a, v[0], v[0])
		kts := Kernel(a, tp.Const(xt), v[0])
		return PlattLoss(Predict(kts, kss, v[1], 1e-2), v[2], labels)
	}
	if err := gradcheck.Check(platt, []*tensor.Tensor[float64]{xs, ys, logTau}, gradcheck.Options{}); err != nil {
		t.Errorf("Platt: %v", err)
	}
}

// TestKRRInterpolates: with a tiny ridge, KRR reproduces its own support
// labels.
func TestKRRInterpolates(t *testing.T) {
	tp := ag.NewTape[float64]()
	defer tp.Release()
	xs := tp.Const(gradcheck.Random(11, 6, 8))
	ys := tp.Const(gradcheck.Random(12, 6, 2))
	k := Kernel(DefaultArch(), xs, xs)
	pred := Predict(k, k, ys, 1e-10)
	for i, v := range pred.Value.Data {
		if math.Abs(v-ys.Value.Data[i]) > 1e-6 {
			t.Fatalf("KRR on its own support: %v, want %v (entry %d)", v, ys.Value.Data[i], i)
		}
	}
}

// TestLossGradChunked: the chunked gradient equals the one-tape gradient
// (itself checked against finite differences above), for both losses and
// a convolutional kernel.
func TestLossGradChunked(t *testing.T) {
	a := Arch{Conv: true, Depth: 2, WVar: 2, BVar: 0.01, NTK: true}
	xs, ys := gradcheck.Random(31, 4, 1, 5, 5), gradcheck.Random(32, 4, 3)
	xt := gradcheck.Random(33, 7, 1, 5, 5)
	labels := []int{0, 2, 1, 1, 0, 2, 2}
	yt := tensor.New[float64](7, 3)
	copy(yt.Data, CenteredOneHot[float64](labels, 3))
	for _, platt := range []bool{false, true} {
		p := Problem[float64]{Kernel: ArchFunc[float64](a), Reg: 1e-3, Xs: xs, Ys: ys, Xt: xt, Yt: yt, LogTau: -0.3, Chunk: 3}
		if platt {
			p.Labels = labels
		}
		got, err := LossGrad(p)
		if err != nil {
			t.Fatal(err)
		}
		tp := ag.NewTape[float64]()
		xv, yv, tv := tp.Param(xs), tp.Param(ys), tp.Param(tensor.Scalar(-0.3))
		pred := Predict(Kernel(a, tp.Const(xt), xv), Kernel(a, xv, xv), yv, 1e-3)
		var loss *ag.Var[float64]
		if platt {
			loss = PlattLoss(pred, tv, labels)
		} else {
			loss = MSELoss(pred, tp.Const(yt))
		}
		gs, err := tp.Grad([]*ag.Var[float64]{loss}, nil, []*ag.Var[float64]{xv, yv, tv}, false)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(got.Loss-loss.Value.Item()) > 1e-12 {
			t.Errorf("platt=%v: chunked loss %v, one tape %v", platt, got.Loss, loss.Value.Item())
		}
		for i, g := range []*tensor.Tensor[float64]{got.GradX, got.GradY} {
			for j, v := range g.Data {
				if math.Abs(v-gs[i].Value.Data[j]) > 1e-10 {
					t.Fatalf("platt=%v: gradient %d entry %d: chunked %v, one tape %v", platt, i, j, v, gs[i].Value.Data[j])
				}
			}
		}
		if platt && math.Abs(got.GradLogTau-gs[2].Value.Item()) > 1e-10 {
			t.Errorf("∂/∂logτ: chunked %v, one tape %v", got.GradLogTau, gs[2].Value.Item())
		}
		tp.Release()
	}
	if _, err := LossGrad(Problem[float64]{Kernel: ArchFunc[float64](a), Reg: 0, Xs: xs, Ys: ys, Xt: xt, Yt: yt}); err == nil {
		t.Error("zero regularisation: no error")
	}
}
