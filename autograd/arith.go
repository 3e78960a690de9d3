package autograd

import (
	"slices"

	"github.com/fedsim/fedsim/tensor"
)

// Add returns a + b with NumPy broadcasting.
func Add[T Float](a, b *Var[T]) *Var[T] { return binary("Add", tensor.OpAdd, a, b) }

// Sub returns a − b with NumPy broadcasting.
func Sub[T Float](a, b *Var[T]) *Var[T] { return binary("Sub", tensor.OpSub, a, b) }

// Mul returns a ⊙ b with NumPy broadcasting.
func Mul[T Float](a, b *Var[T]) *Var[T] { return binary("Mul", tensor.OpMul, a, b) }

// Div returns a / b with NumPy broadcasting.
func Div[T Float](a, b *Var[T]) *Var[T] { return binary("Div", tensor.OpDiv, a, b) }

func binary[T Float](name string, op tensor.BinaryOp, a, b *Var[T]) *Var[T] {
	tp, ok := tapeOf(name, a, b)
	if !ok {
		return tp.placeholder()
	}
	shape, err := tensor.BroadcastShape(a.Value.Shape, b.Value.Shape)
	if err != nil {
		tp.Failf("%s: shapes %v and %v do not broadcast", name, a.Value.Shape, b.Value.Shape)
		return tp.placeholder()
	}
	out := tp.AllocUninit(shape...)
	tensor.Binary(op, out, a.Value, b.Value)
	var res *Var[T]
	res = tp.Record(out, []*Var[T]{a, b}, func(g *Var[T], needs []bool) []*Var[T] {
		var ga, gb *Var[T]
		switch op {
		case tensor.OpAdd:
			if needs[0] {
				ga = SumTo(g, a.Value.Shape)
			}
			if needs[1] {
				gb = SumTo(g, b.Value.Shape)
			}
		case tensor.OpSub:
			if needs[0] {
				ga = SumTo(g, a.Value.Shape)
			}
			if needs[1] {
				gb = SumTo(Neg(g), b.Value.Shape)
			}
		case tensor.OpMul:
			if needs[0] {
				ga = SumTo(Mul(g, b), a.Value.Shape)
			}
			if needs[1] {
				gb = SumTo(Mul(g, a), b.Value.Shape)
			}
		case tensor.OpDiv:
			if needs[0] {
				ga = SumTo(Div(g, b), a.Value.Shape)
			}
			if needs[1] {
				// d(a/b)/db = −(a/b)/b
				gb = SumTo(Neg(Div(Mul(g, res), b)), b.Value.Shape)
			}
		}
		return []*Var[T]{ga, gb}
	})
	return res
}

func unary[T Float](name string, op tensor.UnaryOp, a *Var[T], backward func(g, out *Var[T]) *Var[T]) *Var[T] {
	tp, ok := tapeOf(name, a)
	if !ok {
		return tp.placeholder()
	}
	out := tp.AllocUninit(a.Value.Shape...)
	tensor.Unary(op, out, a.Value)
	var res *Var[T]
	res = tp.Record(out, []*Var[T]{a}, func(g *Var[T], needs []bool) []*Var[T] {
		return []*Var[T]{backward(g, res)}
	})
	return res
}

// Neg returns −a.
func Neg[T Float](a *Var[T]) *Var[T] {
	return unary("Neg", tensor.OpNeg, a, func(g, _ *Var[T]) *Var[T] { return Neg(g) })
}

// Exp returns eᵃ element-wise.
func Exp[T Float](a *Var[T]) *Var[T] {
	return unary("Exp", tensor.OpExp, a, func(g, out *Var[T]) *Var[T] { return Mul(g, out) })
}

// Log returns ln a element-wise.
func Log[T Float](a *Var[T]) *Var[T] {
	return unary("Log", tensor.OpLog, a, func(g, _ *Var[T]) *Var[T] { return Div(g, a) })
}

// Sqrt returns √a element-wise.
func Sqrt[T Float](a *Var[T]) *Var[T] {
	return unary("Sqrt", tensor.OpSqrt, a, func(g, out *Var[T]) *Var[T] { return Scale(Div(g, out), 0.5) })
}

// Rsqrt returns 1/√a element-wise.
func Rsqrt[T Float](a *Var[T]) *Var[T] {
	return unary("Rsqrt", tensor.OpRsqrt, a, func(g, out *Var[T]) *Var[T] {
		// d a^{-1/2} = −½ a^{-3/2} = −½ out³
		return Mul(g, Scale(Mul(out, Square(out)), -0.5))
	})
}

// Square returns a² element-wise.
func Square[T Float](a *Var[T]) *Var[T] {
	return unary("Square", tensor.OpSquare, a, func(g, _ *Var[T]) *Var[T] { return Mul(g, Scale(a, 2)) })
}

// Tanh returns tanh a element-wise.
func Tanh[T Float](a *Var[T]) *Var[T] {
	return unary("Tanh", tensor.OpTanh, a, func(g, out *Var[T]) *Var[T] {
		return Mul(g, AddScalar(Neg(Square(out)), 1))
	})
}

// Sigmoid returns 1/(1+e⁻ᵃ) element-wise.
func Sigmoid[T Float](a *Var[T]) *Var[T] {
	return unary("Sigmoid", tensor.OpSigmoid, a, func(g, out *Var[T]) *Var[T] {
		return Mul(g, Mul(out, AddScalar(Neg(out), 1)))
	})
}

// Abs returns |a| element-wise (gradient sign(a), 0 at 0).
func Abs[T Float](a *Var[T]) *Var[T] {
	return unary("Abs", tensor.OpAbs, a, func(g, _ *Var[T]) *Var[T] {
		tp := a.tape
		s := tp.AllocUninit(a.Value.Shape...)
		tensor.Unary(tensor.OpSign, s, a.Value)
		return Mul(g, tp.Const(s))
	})
}

// Scale returns s·a for a constant s.
func Scale[T Float](a *Var[T], s T) *Var[T] { return affine("Scale", a, s, 0) }

// AddScalar returns a + c for a constant c.
func AddScalar[T Float](a *Var[T], c T) *Var[T] { return affine("AddScalar", a, 1, c) }

func affine[T Float](name string, a *Var[T], s, c T) *Var[T] {
	tp, ok := tapeOf(name, a)
	if !ok {
		return tp.placeholder()
	}
	out := tp.AllocUninit(a.Value.Shape...)
	tensor.Affine(out, a.Value, s, c)
	return tp.Record(out, []*Var[T]{a}, func(g *Var[T], needs []bool) []*Var[T] {
		return []*Var[T]{Scale(g, s)}
	})
}

// SumTo sums a over the dimensions in which shape broadcasts to a's shape,
// returning a variable of the given shape (the adjoint of BroadcastTo).
func SumTo[T Float](a *Var[T], shape []int) *Var[T] {
	tp, ok := tapeOf("SumTo", a)
	if !ok {
		return tp.placeholder()
	}
	if slices.Equal(a.Value.Shape, shape) {
		return a
	}
	bs, err := tensor.BroadcastShape(shape, a.Value.Shape)
	if err != nil || !slices.Equal(bs, a.Value.Shape) {
		tp.Failf("SumTo: cannot reduce shape %v to %v", a.Value.Shape, shape)
		return tp.placeholder()
	}
	out := tp.AllocUninit(shape...)
	tensor.SumTo(out, a.Value)
	return tp.Record(out, []*Var[T]{a}, func(g *Var[T], needs []bool) []*Var[T] {
		return []*Var[T]{BroadcastTo(g, a.Value.Shape)}
	})
}

// BroadcastTo broadcasts a to shape (NumPy rules).
func BroadcastTo[T Float](a *Var[T], shape []int) *Var[T] {
	tp, ok := tapeOf("BroadcastTo", a)
	if !ok {
		return tp.placeholder()
	}
	if slices.Equal(a.Value.Shape, shape) {
		return a
	}
	bs, err := tensor.BroadcastShape(a.Value.Shape, shape)
	if err != nil || !slices.Equal(bs, shape) {
		tp.Failf("BroadcastTo: cannot broadcast shape %v to %v", a.Value.Shape, shape)
		return tp.placeholder()
	}
	out := tp.AllocUninit(shape...)
	tensor.BroadcastTo(out, a.Value)
	return tp.Record(out, []*Var[T]{a}, func(g *Var[T], needs []bool) []*Var[T] {
		return []*Var[T]{SumTo(g, a.Value.Shape)}
	})
}

// Sum returns the sum of all elements as a scalar.
func Sum[T Float](a *Var[T]) *Var[T] { return SumTo(a, []int{}) }

// Mean returns the mean of all elements as a scalar.
func Mean[T Float](a *Var[T]) *Var[T] {
	n := max(1, a.Value.Len())
	return Scale(Sum(a), 1/T(n))
}

// SumAxes sums a over the given axes (negative axes count from the end).
// With keepDims the reduced axes stay as size 1; otherwise they are removed.
func SumAxes[T Float](a *Var[T], axes []int, keepDims bool) *Var[T] {
	tp, ok := tapeOf("SumAxes", a)
	if !ok {
		return tp.placeholder()
	}
	rank := len(a.Value.Shape)
	reduced := make([]bool, rank)
	for _, ax := range axes {
		if ax < -rank || ax >= rank {
			tp.Failf("SumAxes: axis %d out of range for shape %v", ax, a.Value.Shape)
			return tp.placeholder()
		}
		reduced[(ax+rank)%rank] = true
	}
	keep := slices.Clone(a.Value.Shape)
	var squeezed []int
	for i, r := range reduced {
		if r {
			keep[i] = 1
		} else {
			squeezed = append(squeezed, keep[i])
		}
	}
	s := SumTo(a, keep)
	if keepDims {
		return s
	}
	return Reshape(s, squeezed...)
}

// MeanAxes averages a over the given axes (see SumAxes).
func MeanAxes[T Float](a *Var[T], axes []int, keepDims bool) *Var[T] {
	n := 1
	for _, ax := range axes {
		if ax < 0 {
			ax += len(a.Value.Shape)
		}
		if ax >= 0 && ax < len(a.Value.Shape) {
			n *= a.Value.Shape[ax]
		}
	}
	return Scale(SumAxes(a, axes, keepDims), 1/T(max(n, 1)))
}

// Reshape returns a with a new shape of the same size. One dimension may be
// −1 and is then inferred. The result shares a's data.
func Reshape[T Float](a *Var[T], shape ...int) *Var[T] {
	tp, ok := tapeOf("Reshape", a)
	if !ok {
		return tp.placeholder()
	}
	shape = slices.Clone(shape)
	infer, known := -1, 1
	for i, d := range shape {
		switch {
		case d == -1 && infer < 0:
			infer = i
		case d < 0:
			tp.Failf("Reshape: invalid target shape %v", shape)
			return tp.placeholder()
		default:
			known *= d
		}
	}
	if infer >= 0 && known > 0 {
		shape[infer] = a.Value.Len() / known
	}
	if tensor.Size(shape) != a.Value.Len() {
		tp.Failf("Reshape: cannot reshape %v (%d values) to %v", a.Value.Shape, a.Value.Len(), shape)
		return tp.placeholder()
	}
	if slices.Equal(shape, a.Value.Shape) {
		return a
	}
	out := &tensor.Tensor[T]{Shape: shape, Data: a.Value.Data}
	return tp.Record(out, []*Var[T]{a}, func(g *Var[T], needs []bool) []*Var[T] {
		return []*Var[T]{Reshape(g, a.Value.Shape...)}
	})
}

// Flatten reshapes a (N, …) to (N, rest).
func Flatten[T Float](a *Var[T]) *Var[T] {
	if len(a.Value.Shape) == 0 {
		return Reshape(a, 1, 1)
	}
	return Reshape(a, a.Value.Shape[0], -1)
}

// MatMul returns op(a)·op(b) for rank-2 variables, op transposing when the
// flag is set.
func MatMul[T Float](a, b *Var[T], transA, transB bool) *Var[T] {
	tp, ok := tapeOf("MatMul", a, b)
	if !ok {
		return tp.placeholder()
	}
	if a.Value.Rank() != 2 || b.Value.Rank() != 2 {
		tp.Failf("MatMul: needs rank-2 operands, got %v and %v", a.Value.Shape, b.Value.Shape)
		return tp.placeholder()
	}
	m, k := a.Value.Shape[0], a.Value.Shape[1]
	if transA {
		m, k = k, m
	}
	kb, n := b.Value.Shape[0], b.Value.Shape[1]
	if transB {
		kb, n = n, kb
	}
	if k != kb {
		tp.Failf("MatMul: inner dimensions differ: %v (transposed=%v) · %v (transposed=%v)", a.Value.Shape, transA, b.Value.Shape, transB)
		return tp.placeholder()
	}
	out := tp.AllocUninit(m, n)
	tensor.MatMul(out, a.Value, b.Value, transA, transB)
	return tp.Record(out, []*Var[T]{a, b}, func(g *Var[T], needs []bool) []*Var[T] {
		var ga, gb *Var[T]
		switch {
		case !transA && !transB: // C = A B
			if needs[0] {
				ga = MatMul(g, b, false, true)
			}
			if needs[1] {
				gb = MatMul(a, g, true, false)
			}
		case transA && !transB: // C = Aᵀ B
			if needs[0] {
				ga = MatMul(b, g, false, true)
			}
			if needs[1] {
				gb = MatMul(a, g, false, false)
			}
		case !transA && transB: // C = A Bᵀ
			if needs[0] {
				ga = MatMul(g, b, false, false)
			}
			if needs[1] {
				gb = MatMul(g, a, true, false)
			}
		default: // C = Aᵀ Bᵀ
			if needs[0] {
				ga = MatMul(b, g, true, true)
			}
			if needs[1] {
				gb = MatMul(g, a, true, true)
			}
		}
		return []*Var[T]{ga, gb}
	})
}
