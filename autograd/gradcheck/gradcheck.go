// Package gradcheck verifies autograd's derivatives against central finite
// differences in float64, the way PyTorch's gradcheck and gradgradcheck do.
//
// Every differentiable operation in fedsim has a test that calls Check (first
// derivatives) and CheckSecond (derivatives of the gradient, as gradient
// matching and trajectory matching use them). Choose evaluation points away
// from kinks (ReLU at 0, max-pool ties): finite differences are meaningless
// there.
package gradcheck

import (
	"fmt"
	"math"

	"github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/tensor"
)

// Func builds a differentiable computation of xs on tp and returns its
// output (any shape).
type Func func(tp *autograd.Tape[float64], xs []*autograd.Var[float64]) *autograd.Var[float64]

// Options sets the finite-difference step and tolerances; zero values take
// the defaults (PyTorch's: eps 1e-6, atol 1e-5, rtol 1e-3).
type Options struct {
	Eps, Atol, Rtol float64
	Seed            uint64 // seed of the random output projection
}

func (o Options) withDefaults() Options {
	if o.Eps == 0 {
		o.Eps = 1e-6
	}
	if o.Atol == 0 {
		o.Atol = 1e-5
	}
	if o.Rtol == 0 {
		o.Rtol = 1e-3
	}
	return o
}

// scalarize returns <r, f(xs)> for a fixed random r, so one backward pass
// checks every output direction at once.
func scalarize(f Func, seed uint64) Func {
	return func(tp *autograd.Tape[float64], xs []*autograd.Var[float64]) *autograd.Var[float64] {
		y := f(tp, xs)
		if tp.Err() != nil {
			return y
		}
		r := tp.Alloc(y.Shape()...)
		tensor.FillNormal(tensor.NewRNG(seed, 7), r, 0, 1)
		return autograd.Sum(autograd.Mul(y, tp.Const(r)))
	}
}

func eval(f Func, inputs []*tensor.Tensor[float64]) (float64, error) {
	tp := autograd.NewTape[float64]()
	defer tp.Release()
	xs := make([]*autograd.Var[float64], len(inputs))
	for i, in := range inputs {
		xs[i] = tp.Const(in)
	}
	y := f(tp, xs)
	if err := tp.Err(); err != nil {
		return 0, err
	}
	return y.Value.Item(), nil
}

// Check compares the analytical gradient of f at inputs with central
// differences. It returns an error naming the first input element that
// disagrees, or the tape's error.
func Check(f Func, inputs []*tensor.Tensor[float64], opt Options) error {
	opt = opt.withDefaults()
	g := scalarize(f, opt.Seed)

	tp := autograd.NewTape[float64]()
	defer tp.Release()
	xs := make([]*autograd.Var[float64], len(inputs))
	for i, in := range inputs {
		xs[i] = tp.Param(in)
	}
	y := g(tp, xs)
	if err := tp.Err(); err != nil {
		return err
	}
	grads, err := tp.Grad([]*autograd.Var[float64]{y}, nil, xs, false)
	if err != nil {
		return err
	}
	for i, in := range inputs {
		for j := range in.Data {
			orig := in.Data[j]
			in.Data[j] = orig + opt.Eps
			fp, err := eval(g, inputs)
			if err != nil {
				return err
			}
			in.Data[j] = orig - opt.Eps
			fm, err := eval(g, inputs)
			in.Data[j] = orig
			if err != nil {
				return err
			}
			num := (fp - fm) / (2 * opt.Eps)
			ana := grads[i].Value.Data[j]
			if math.IsNaN(ana) || math.Abs(ana-num) > opt.Atol+opt.Rtol*math.Abs(num) {
				return fmt.Errorf("gradcheck: input %d (shape %v) element %d: analytical %.10g, numerical %.10g", i, in.Shape, j, ana, num)
			}
		}
	}
	return nil
}

// CheckSecond checks the derivatives of f's gradient: it runs Check on
// xs ↦ Σ_i <u_i, ∂<r, f(xs)>/∂x_i> for fixed random u_i, with the inner
// gradient built by Grad with createGraph, as gradgradcheck does.
func CheckSecond(f Func, inputs []*tensor.Tensor[float64], opt Options) error {
	opt = opt.withDefaults()
	g := scalarize(f, opt.Seed)
	gradFn := func(tp *autograd.Tape[float64], xs []*autograd.Var[float64]) *autograd.Var[float64] {
		// Re-wrap the inputs as parameters so the inner gradient exists even
		// when the outer call passed them as constants.
		ps := make([]*autograd.Var[float64], len(xs))
		for i, x := range xs {
			if x.RequiresGrad() {
				ps[i] = x
			} else {
				ps[i] = tp.Param(x.Value)
			}
		}
		y := g(tp, ps)
		grads, err := tp.Grad([]*autograd.Var[float64]{y}, nil, ps, true)
		if err != nil {
			tp.Fail(err)
			return y
		}
		var total *autograd.Var[float64]
		for i, gi := range grads {
			u := tp.Alloc(gi.Shape()...)
			tensor.FillNormal(tensor.NewRNG(opt.Seed, uint64(100+i)), u, 0, 1)
			term := autograd.Sum(autograd.Mul(gi, tp.Const(u)))
			if total == nil {
				total = term
			} else {
				total = autograd.Add(total, term)
			}
		}
		return total
	}
	return Check(gradFn, inputs, opt)
}

// Random returns a float64 tensor of the given shape with N(0,1) entries,
// seeded, for test inputs.
func Random(seed uint64, shape ...int) *tensor.Tensor[float64] {
	t := tensor.New[float64](shape...)
	tensor.FillNormal(tensor.NewRNG(seed, 1), t, 0, 1)
	return t
}
