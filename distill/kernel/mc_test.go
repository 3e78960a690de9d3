package kernel

import (
	"math"
	"testing"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/autograd/gradcheck"
	"github.com/fedsim/fedsim/tensor"
)

// wideNet is a finite-width network of architecture a in the NTK
// parameterisation, with N(0, 1) parameters, for Monte-Carlo estimates of
// the closed-form kernels.
type wideNet struct {
	a      Arch
	width  int
	params []*tensor.Tensor[float64]
}

func newWideNet(a Arch, inShape []int, width int, seed uint64) *wideNet {
	rng := tensor.NewRNG(seed, 99)
	w := &wideNet{a: a, width: width}
	add := func(shape ...int) {
		p := tensor.New[float64](shape...)
		tensor.FillNormal(rng, p, 0, 1)
		w.params = append(w.params, p)
	}
	in := inShape[0]
	feat := width
	if a.Conv {
		feat = width * inShape[1] * inShape[2]
	} else {
		in = sizeFrom(inShape, 0)
	}
	for range a.Depth {
		if a.Conv {
			add(width, in, 3, 3)
		} else {
			add(width, in)
		}
		add(width)
		in = width
	}
	add(1, feat)
	add(1)
	return w
}

// forward returns the last hidden layer's features (n, F) and the output
// (n, 1).
func (w *wideNet) forward(x *ag.Var[float64], ps []*ag.Var[float64]) (h, f *ag.Var[float64]) {
	h = x
	n := x.Value.Shape[0]
	if !w.a.Conv {
		h = ag.Reshape(x, n, -1)
	}
	sb := math.Sqrt(w.a.BVar)
	for l := range w.a.Depth {
		wt, b := ps[2*l], ps[2*l+1]
		if w.a.Conv {
			fan := wt.Value.Shape[1] * 9
			z := ag.Conv2D(h, ag.Scale(wt, math.Sqrt(w.a.WVar/float64(fan))), ag.Scale(b, sb), tensor.ConvParams{StrideH: 1, StrideW: 1, PadH: 1, PadW: 1})
			h = ag.ReLU(z)
		} else {
			fan := wt.Value.Shape[1]
			z := ag.Add(ag.MatMul(h, ag.Scale(wt, math.Sqrt(w.a.WVar/float64(fan))), false, true), ag.Reshape(ag.Scale(b, sb), 1, -1))
			h = ag.ReLU(z)
		}
	}
	h = ag.Reshape(h, n, -1)
	wo, bo := ps[len(ps)-2], ps[len(ps)-1]
	fan := wo.Value.Shape[1]
	f = ag.Add(ag.MatMul(h, ag.Scale(wo, math.Sqrt(w.a.WVar/float64(fan))), false, true), ag.Reshape(ag.Scale(bo, sb), 1, 1))
	return h, f
}

// estimate returns the Monte-Carlo NNGP (WVar·⟨h(x), h(y)⟩/F + BVar, the
// readout's expectation given the features) and the empirical NTK
// Σ_θ ∂f(x)/∂θ·∂f(y)/∂θ of one network on the rows of x.
func (w *wideNet) estimate(t *testing.T, x *tensor.Tensor[float64]) (nngp, ntk []float64) {
	n := x.Shape[0]
	tp := ag.NewTape[float64]()
	defer tp.Release()
	ps := make([]*ag.Var[float64], len(w.params))
	for i, p := range w.params {
		ps[i] = tp.Param(p)
	}
	h, f := w.forward(tp.Const(x), ps)
	if err := tp.Err(); err != nil {
		t.Fatal(err)
	}
	feat := h.Value.Shape[1]
	nngp = make([]float64, n*n)
	for i := range n {
		for j := range n {
			var s float64
			for k := range feat {
				s += h.Value.Data[i*feat+k] * h.Value.Data[j*feat+k]
			}
			nngp[i*n+j] = w.a.WVar*s/float64(feat) + w.a.BVar
		}
	}
	jac := make([][]float64, n)
	for i := range n {
		seed := tp.Alloc(n, 1)
		seed.Data[i] = 1
		gs, err := tp.Grad([]*ag.Var[float64]{f}, []*ag.Var[float64]{tp.Const(seed)}, ps, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range gs {
			jac[i] = append(jac[i], g.Value.Data...)
		}
	}
	ntk = make([]float64, n*n)
	for i := range n {
		for j := range n {
			var s float64
			for k, v := range jac[i] {
				s += v * jac[j][k]
			}
			ntk[i*n+j] = s
		}
	}
	return nngp, ntk
}

// TestKernelMonteCarlo compares the closed-form kernels with averages over
// wide random networks. The tolerance (8% of the mean diagonal) is above
// the observed Monte-Carlo error at these widths (2–5%) and far below the
// error of a wrong recursion (a factor ½ or a missing layer term changes
// entries by 30–100%).
func TestKernelMonteCarlo(t *testing.T) {
	cases := []struct {
		a     Arch
		shape []int
		width int
		nets  int
	}{
		{Arch{Depth: 1, WVar: 2, BVar: 0.01}, []int{10}, 4096, 4},
		{Arch{Depth: 3, WVar: 1.5, BVar: 0.1}, []int{10}, 1024, 4},
		{Arch{Conv: true, Depth: 2, WVar: 2, BVar: 0.05}, []int{2, 5, 5}, 192, 3},
	}
	for _, c := range cases {
		x := gradcheck.Random(21, append([]int{4}, c.shape...)...)
		n := 4
		mcNNGP, mcNTK := make([]float64, n*n), make([]float64, n*n)
		for s := range c.nets {
			g, k := newWideNet(c.a, c.shape, c.width, uint64(s)).estimate(t, x)
			for i := range g {
				mcNNGP[i] += g[i] / float64(c.nets)
				mcNTK[i] += k[i] / float64(c.nets)
			}
		}
		for _, ntk := range []bool{false, true} {
			a := c.a
			a.NTK = ntk
			tp := ag.NewTape[float64]()
			k := Kernel(a, tp.Const(x), tp.Const(x))
			if err := tp.Err(); err != nil {
				t.Fatal(err)
			}
			mc := mcNNGP
			if ntk {
				mc = mcNTK
			}
			var scale, worst float64
			for i := range n {
				scale += k.Value.Data[i*n+i] / float64(n)
			}
			for i, v := range k.Value.Data {
				worst = max(worst, math.Abs(v-mc[i]))
			}
			t.Logf("%s: closed form %.4f…, Monte Carlo %.4f…, max |Δ| / mean diagonal = %.3f", a, k.Value.Data[:2], mc[:2], worst/scale)
			if worst > 0.08*scale {
				t.Errorf("%s: closed form %v\nMonte Carlo %v\nmax difference %.3g > 8%% of the mean diagonal %.3g", a, k.Value.Data, mc, worst, scale)
			}
			tp.Release()
		}
	}
}
