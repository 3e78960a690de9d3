package autograd_test

import (
	"strings"
	"testing"

	"github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/autograd/gradcheck"
	"github.com/fedsim/fedsim/tensor"
)

// distinctInput returns a tensor whose values are a shuffled arithmetic
// sequence with step 0.05: no ties, and every pair of values is far apart
// compared with the finite-difference step, so max pooling never switches
// its argmax during a gradient check.
func distinctInput(seed uint64, shape ...int) *tensor.Tensor[float64] {
	t := tensor.New[float64](shape...)
	r := tensor.NewRNG(seed, 9)
	perm := r.Perm(len(t.Data))
	for i, p := range perm {
		t.Data[i] = 0.05*float64(p) - 0.025*float64(len(t.Data))
	}
	return t
}

var poolTestCases = []struct {
	name           string
	k, stride, pad int
	shape          []int
}{
	{"k2s2", 2, 2, 0, []int{2, 2, 4, 6}},
	{"k2s2odd", 2, 2, 0, []int{1, 2, 5, 3}},
	{"k3s2p1", 3, 2, 1, []int{2, 1, 5, 6}},
	{"k3s1p1", 3, 1, 1, []int{1, 2, 4, 3}},
	{"k2s1", 2, 1, 0, []int{1, 2, 3, 4}},
}

func TestAvgPool2DGrad(t *testing.T) {
	for _, pc := range poolTestCases {
		k, s, p := pc.k, pc.stride, pc.pad
		checkFirstSecond(t, pc.name, func(tp *autograd.Tape[float64], xs cvars) *autograd.Var[float64] {
			return autograd.Square(autograd.AvgPool2D(xs[0], k, s, p))
		}, gradcheck.Random(1, pc.shape...))
		out, err := tensor.PoolOutShape(pc.shape, k, s, p)
		if err != nil {
			t.Fatal(err)
		}
		h, w := pc.shape[2], pc.shape[3]
		checkFirstSecond(t, pc.name+"/backward", func(tp *autograd.Tape[float64], xs cvars) *autograd.Var[float64] {
			return autograd.Square(autograd.AvgPool2DBackward(xs[0], k, s, p, h, w))
		}, gradcheck.Random(2, out...))
	}
}

func TestMaxPool2DGrad(t *testing.T) {
	for _, pc := range poolTestCases {
		k, s, p := pc.k, pc.stride, pc.pad
		x := distinctInput(3, pc.shape...)
		checkFirstSecond(t, pc.name, func(tp *autograd.Tape[float64], xs cvars) *autograd.Var[float64] {
			return autograd.MaxPool2D(xs[0], k, s, p)
		}, x)
		// Square after the pooling makes the gradient depend on x through
		// the gather, so the second-order check exercises scatter ↔ gather.
		checkFirstSecond(t, pc.name+"/square", func(tp *autograd.Tape[float64], xs cvars) *autograd.Var[float64] {
			return autograd.Square(autograd.MaxPool2D(autograd.Tanh(xs[0]), k, s, p))
		}, x)
	}
}

// TestConvNetSecondOrder checks a conv → ReLU-free → max-pool → conv stack
// to second order, as gradient matching differentiates it.
func TestConvNetSecondOrder(t *testing.T) {
	p := tensor.ConvParams{StrideH: 1, StrideW: 1, PadH: 1, PadW: 1}
	x := distinctInput(4, 1, 2, 4, 4)
	w1, w2 := gradcheck.Random(5, 2, 2, 3, 3), gradcheck.Random(6, 2, 2, 3, 3)
	checkFirstSecond(t, "convnet", func(tp *autograd.Tape[float64], xs cvars) *autograd.Var[float64] {
		h := autograd.MaxPool2D(autograd.Tanh(autograd.Conv2D(xs[0], xs[1], nil, p)), 2, 2, 0)
		return autograd.AvgPool2D(autograd.Conv2D(h, xs[2], nil, p), 2, 2, 0)
	}, x, w1, w2)
}

func TestPoolErrors(t *testing.T) {
	for _, tc := range []struct {
		name           string
		shape          []int
		k, stride, pad int
		want           string
	}{
		{"rank", []int{2, 4, 4}, 2, 2, 0, "[2 4 4]"},
		{"window", []int{1, 1, 3, 3}, 5, 1, 0, "does not fit"},
		{"stride", []int{1, 1, 4, 4}, 2, 0, 0, "stride"},
		{"pad", []int{1, 1, 4, 4}, 2, 2, 2, "padding"},
	} {
		for _, op := range []string{"AvgPool2D", "MaxPool2D"} {
			tp := autograd.NewTape[float32]()
			x := tp.Param(tensor.New[float32](tc.shape...))
			if op == "AvgPool2D" {
				autograd.AvgPool2D(x, tc.k, tc.stride, tc.pad)
			} else {
				autograd.MaxPool2D(x, tc.k, tc.stride, tc.pad)
			}
			err := tp.Err()
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), op) {
				t.Errorf("%s %s: error %v, want one mentioning %s and %q", op, tc.name, err, op, tc.want)
			}
			tp.Release()
		}
	}
}

// TestMaxPool2DFloat32 runs the float32 path through a released and reused
// tape, so the argmax scratch taken from the buffer pool is exercised.
func TestMaxPool2DFloat32(t *testing.T) {
	x64 := distinctInput(7, 2, 3, 6, 6)
	x := tensor.New[float32](x64.Shape...)
	for i, v := range x64.Data {
		x.Data[i] = float32(v)
	}
	tp := autograd.NewTape[float32]()
	for range 3 {
		xv := tp.Param(x)
		y := autograd.MaxPool2D(xv, 2, 2, 0)
		l := autograd.Sum(autograd.Square(y))
		gs, err := tp.Grad([]*autograd.Var[float32]{l}, nil, []*autograd.Var[float32]{xv}, false)
		if err != nil {
			t.Fatal(err)
		}
		nz := 0
		for i, g := range gs[0].Value.Data {
			if g != 0 {
				nz++
				if g != 2*x.Data[i] {
					t.Fatalf("gradient %d: %v, want %v", i, g, 2*x.Data[i])
				}
			}
		}
		if nz != y.Value.Len() {
			t.Fatalf("%d non-zero gradients, want %d", nz, y.Value.Len())
		}
		tp.Release()
	}
}
