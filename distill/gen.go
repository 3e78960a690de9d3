package distill

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/internal/npz"
	"github.com/fedsim/fedsim/tensor"
)

// This file holds what the generator-based methods of survey §5 (gtn.go,
// itgan.go) share: a small conditional MLP generator, the same MLP as a
// conditional discriminator (IT-GAN's GAN), an Adam whose state can be
// saved exactly, and the binary packing that carries that state inside a
// checkpoint.

// wnMLP is a multi-layer perceptron with weight-normalised linear layers
// (Salimans & Kingma: W = g·V/‖V‖ per output unit) and leaky-ReLU (slope
// 0.2) between them. Its input is a code z (N, zdim) concatenated with the
// one-hot label (N, classes). GTN (Such et al.) found weight
// normalisation necessary for stable meta-gradients through the
// generator, and it steadies GAN training too.
//
// Parameters, per layer l (in → out): V_l (in, out), g_l (1, out), b_l
// (1, out), in this order; every one of them is a stored float.
type wnMLP[T tensor.Float] struct {
	zdim, classes int
	sizes         []int // in, hidden…, out
	params        []*tensor.Tensor[T]
}

// newWNMLP returns an MLP zdim+classes → hidden… → out whose initial
// weights equal PyTorch's default (Kaiming-uniform) linear layers: V is
// drawn as those weights and g set to V's column norms. The final layer's
// weights are scaled by lastScale.
func newWNMLP[T tensor.Float](zdim, classes int, hidden []int, out int, lastScale float64, rng *tensor.RNG) *wnMLP[T] {
	m := &wnMLP[T]{zdim: zdim, classes: classes, sizes: append(append([]int{zdim + classes}, hidden...), out)}
	for l := 0; l+1 < len(m.sizes); l++ {
		in, o := m.sizes[l], m.sizes[l+1]
		v := tensor.New[T](in, o)
		tensor.KaimingUniform(rng, v, in)
		b := tensor.New[T](1, o)
		tensor.KaimingUniform(rng, b, in)
		if l+2 == len(m.sizes) {
			for i := range v.Data {
				v.Data[i] *= T(lastScale)
			}
		}
		g := tensor.New[T](1, o)
		for j := range o {
			var s float64
			for i := range in {
				s += float64(v.Data[i*o+j]) * float64(v.Data[i*o+j])
			}
			g.Data[j] = T(math.Sqrt(s))
		}
		m.params = append(m.params, v, g, b)
	}
	return m
}

// floats returns the number of stored floats.
func (m *wnMLP[T]) floats() int {
	n := 0
	for _, p := range m.params {
		n += len(p.Data)
	}
	return n
}

// forward returns the output (N, out) for codes z (N, zdim) and labels,
// with the parameters ps (one variable per m.params entry).
func (m *wnMLP[T]) forward(z *ag.Var[T], labels []int, ps []*ag.Var[T]) *ag.Var[T] {
	tp := z.Tape()
	n := z.Value.Shape[0]
	oh := tp.Alloc(n, m.classes)
	for i, l := range labels {
		oh.Data[i*m.classes+l] = 1
	}
	h := ag.Concat(1, z, tp.Const(oh))
	for l := 0; 3*l < len(ps); l++ {
		v, g, b := ps[3*l], ps[3*l+1], ps[3*l+2]
		norm := ag.Sqrt(ag.AddScalar(ag.SumAxes(ag.Square(v), []int{0}, true), 1e-12))
		w := ag.Mul(v, ag.Div(g, norm))
		h = ag.Add(ag.MatMul(h, w, false, false), b)
		if 3*l+3 < len(ps) {
			h = ag.LeakyReLU(h, 0.2)
		}
	}
	return h
}

// condGen is the conditional generator G(z, y) of gtn and itgan: a wnMLP
// from code z and one-hot label y to C·H·W values, squashed by tanh onto
// the range of valid pixels in the normalized space, [(0−μ)/σ, (1−μ)/σ]
// per channel, so every output is an image the data set could hold. It is
// an MLP, not a deconvolutional network: at MNIST size an MLP is what fits
// GTN's float budget (see gtnSize), and MLP GANs model MNIST well.
type condGen[T tensor.Float] struct {
	net       *wnMLP[T]
	shape     []int             // (C, H, W)
	mid, half *tensor.Tensor[T] // (1, D): centre and half-width of the pixel range
}

// newCondGen returns a generator for images of the given shape and
// per-channel normalisation.
func newCondGen[T tensor.Float](zdim, classes int, hidden []int, shape []int, mean, std []float32, rng *tensor.RNG) *condGen[T] {
	dim := shape[0] * shape[1] * shape[2]
	g := &condGen[T]{net: newWNMLP[T](zdim, classes, hidden, dim, 1, rng), shape: slices.Clone(shape),
		mid: tensor.New[T](1, dim), half: tensor.New[T](1, dim)}
	per := shape[1] * shape[2]
	for c := range shape[0] {
		lo, hi := (0-float64(mean[c]))/float64(std[c]), (1-float64(mean[c]))/float64(std[c])
		for p := range per {
			g.mid.Data[c*per+p] = T((lo + hi) / 2)
			g.half.Data[c*per+p] = T((hi - lo) / 2)
		}
	}
	return g
}

func (g *condGen[T]) params() []*tensor.Tensor[T] { return g.net.params }
func (g *condGen[T]) floats() int                 { return g.net.floats() }
func (g *condGen[T]) zdim() int                   { return g.net.zdim }

// describe names the architecture, for errors and reports.
func (g *condGen[T]) describe() string {
	s := make([]string, len(g.net.sizes))
	for i, n := range g.net.sizes {
		s[i] = fmt.Sprint(n)
	}
	return fmt.Sprintf("MLP %d+%d → %s", g.net.zdim, g.net.classes, strings.Join(s[1:], " → "))
}

// forward returns G(z, labels) as (N, C, H, W) on z's tape.
func (g *condGen[T]) forward(z *ag.Var[T], labels []int, ps []*ag.Var[T]) *ag.Var[T] {
	tp := z.Tape()
	a := ag.Tanh(g.net.forward(z, labels, ps))
	x := ag.Add(tp.Const(g.mid), ag.Mul(tp.Const(g.half), a))
	return ag.Reshape(x, append([]int{z.Value.Shape[0]}, g.shape...)...)
}

// generate returns G(z, labels) without a graph.
func (g *condGen[T]) generate(z *tensor.Tensor[T], labels []int) (*tensor.Tensor[T], error) {
	tp := ag.NewTape[T]()
	defer tp.Release()
	var out *tensor.Tensor[T]
	tp.NoGrad(func() {
		ps := make([]*ag.Var[T], len(g.params()))
		for i, p := range g.params() {
			ps[i] = tp.Const(p)
		}
		x := g.forward(tp.Const(z), labels, ps)
		if tp.Err() == nil {
			out = x.Value.Clone()
		}
	})
	if err := tp.Err(); err != nil {
		return nil, fmt.Errorf("distill: generator: %w", err)
	}
	return out, nil
}

// vjp is the chain rule through the generator: given ∂L/∂x for the images
// x = G(z, labels), it returns ∂L/∂z and ∂L/∂θ_G (in params() order; nil
// unless wantParams). It is one reverse pass through the generator, seeded
// with gx: the methods compute ∂L/∂x however they like (through an
// unrolled inner loop, through DM) and never need a second derivative of G.
func (g *condGen[T]) vjp(z *tensor.Tensor[T], labels []int, gx *tensor.Tensor[T], wantParams bool) (gz *tensor.Tensor[T], gp []*tensor.Tensor[T], err error) {
	tp := ag.NewTape[T]()
	defer tp.Release()
	zv := tp.Param(z)
	ps := make([]*ag.Var[T], len(g.params()))
	for i, p := range g.params() {
		if wantParams {
			ps[i] = tp.Param(p)
		} else {
			ps[i] = tp.Const(p)
		}
	}
	x := g.forward(zv, labels, ps)
	wrt := []*ag.Var[T]{zv}
	if wantParams {
		wrt = append(wrt, ps...)
	}
	gs, err := tp.Grad([]*ag.Var[T]{x}, []*ag.Var[T]{tp.Const(gx)}, wrt, false)
	if err != nil {
		return nil, nil, fmt.Errorf("distill: generator backward: %w", err)
	}
	gz = gs[0].Value.Clone()
	for _, v := range gs[1:] {
		gp = append(gp, v.Value.Clone())
	}
	return gz, gp, nil
}

// classLabels returns ipc labels of every class, class-major.
func classLabels(classes, ipc int) []int {
	y := make([]int, 0, classes*ipc)
	for c := range classes {
		for range ipc {
			y = append(y, c)
		}
	}
	return y
}

// genAdam is Adam (PyTorch's update, as nn.Adam) over a fixed list of
// parameter tensors, with its moments and step count exposed so that a
// checkpoint can carry them and a resumed run continue bit for bit
// (nn.Adam keeps them private).
type genAdam struct {
	lrs               []float64 // one learning rate per tensor
	beta1, beta2, eps float64
	t                 int
	m, v              []*tensor.Tensor[float32]
}

// newGenAdam returns Adam over params with learning rate lrs[i] for
// params[i], β₁ beta1, β₂ 0.999 and ε 1e-8.
func newGenAdam(lrs []float64, beta1 float64, params []*tensor.Tensor[float32]) *genAdam {
	a := &genAdam{lrs: lrs, beta1: beta1, beta2: 0.999, eps: 1e-8}
	for _, p := range params {
		a.m = append(a.m, tensor.New[float32](p.Shape...))
		a.v = append(a.v, tensor.New[float32](p.Shape...))
	}
	return a
}

// step updates params in place from grads (same order and shapes as at
// construction).
func (a *genAdam) step(params, grads []*tensor.Tensor[float32]) error {
	if len(params) != len(a.m) || len(grads) != len(a.m) {
		return fmt.Errorf("distill: Adam over %d tensors got %d parameters and %d gradients", len(a.m), len(params), len(grads))
	}
	for i, g := range grads {
		if len(g.Data) != len(a.m[i].Data) || len(params[i].Data) != len(a.m[i].Data) {
			return fmt.Errorf("distill: Adam tensor %d has %d values, its gradient %d", i, len(params[i].Data), len(g.Data))
		}
		if j := tensor.FirstNonFinite(g.Data); j >= 0 {
			return fmt.Errorf("%w: gradient tensor %d has a non-finite value (%v)", ErrDiverged, i, g.Data[j])
		}
	}
	a.t++
	bc1 := 1 - math.Pow(a.beta1, float64(a.t))
	bc2 := math.Sqrt(1 - math.Pow(a.beta2, float64(a.t)))
	for i, p := range params {
		step := a.lrs[i] / bc1
		m, v := a.m[i].Data, a.v[i].Data
		for j, gj := range grads[i].Data {
			gv := float64(gj)
			mj := a.beta1*float64(m[j]) + (1-a.beta1)*gv
			vj := a.beta2*float64(v[j]) + (1-a.beta2)*gv*gv
			m[j], v[j] = float32(mj), float32(vj)
			p.Data[j] = float32(float64(p.Data[j]) - step*mj/(math.Sqrt(vj)/bc2+a.eps))
		}
	}
	return nil
}

// tensors returns the moment tensors (m…, then v…), for packing.
func (a *genAdam) tensors() []*tensor.Tensor[float32] { return append(slices.Clone(a.m), a.v...) }

// packState serialises a step count and tensors' values (little-endian
// float32, in order) into bytes: the optimiser state that rides in a
// checkpoint's configuration (Checkpoint has no slot for it; see
// GTNConfig.State).
func packState(t int, ts []*tensor.Tensor[float32]) []byte {
	n := 8
	for _, x := range ts {
		n += 4 * len(x.Data)
	}
	b := make([]byte, 0, n)
	b = binary.LittleEndian.AppendUint64(b, uint64(t))
	for _, x := range ts {
		for _, v := range x.Data {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
	}
	return b
}

// unpackState reverses packState into ts (which fix the expected sizes)
// and returns the step count.
func unpackState(b []byte, ts []*tensor.Tensor[float32]) (int, error) {
	n := 8
	for _, x := range ts {
		n += 4 * len(x.Data)
	}
	if len(b) != n {
		return 0, fmt.Errorf("distill: the checkpoint's optimiser state has %d bytes, this run's needs %d", len(b), n)
	}
	t := int(binary.LittleEndian.Uint64(b))
	off := 8
	for _, x := range ts {
		for i := range x.Data {
			x.Data[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[off:]))
			off += 4
		}
	}
	return t, nil
}

// writeArrays writes named float32 tensors and int64 scalars to an .npz
// file atomically.
func writeArrays(path, what string, tensors []namedTensor, ints map[string]int64) error {
	var arrays []*npz.Array
	for _, t := range tensors {
		a, err := npz.New(t.name, slices.Clone(t.shape), slices.Clone(t.data))
		if err != nil {
			return fmt.Errorf("distill: %s: %w", what, err)
		}
		arrays = append(arrays, a)
	}
	keys := make([]string, 0, len(ints))
	for k := range ints {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		a, err := npz.New(k, []int{1}, []int64{ints[k]})
		if err != nil {
			return fmt.Errorf("distill: %s: %w", what, err)
		}
		arrays = append(arrays, a)
	}
	if err := npz.Write(path, arrays); err != nil {
		return fmt.Errorf("distill: writing %s: %w", what, err)
	}
	return nil
}

type namedTensor struct {
	name  string
	shape []int
	data  []float32
}

// genArrays returns the generator's parameters as named arrays
// (gen_l<i>_v, _g, _b).
func genArrays(g *condGen[float32]) []namedTensor {
	var out []namedTensor
	for i, p := range g.params() {
		name := fmt.Sprintf("gen_l%d_%s", i/3, [3]string{"v", "g", "b"}[i%3])
		out = append(out, namedTensor{name, p.Shape, p.Data})
	}
	return out
}
