package distill

import (
	"math"
	"testing"

	"github.com/fedsim/fedsim/tensor"
)

// TestGenVJPFiniteDifference checks the generator's chain rule
// (condGen.vjp: ∂⟨s, G(z)⟩ with respect to the codes and every weight
// tensor, through weight normalisation, leaky ReLU and the tanh output)
// against central differences in float64.
func TestGenVJPFiniteDifference(t *testing.T) {
	rng := tensor.NewRNG(3, 3)
	shape := []int{1, 3, 4}
	g := newCondGen[float64](5, 3, []int{6, 4}, shape, []float32{0.2}, []float32{0.4}, rng)
	labels := []int{0, 2, 1, 2}
	z := tensor.New[float64](4, 5)
	tensor.FillNormal(rng, z, 0, 1)
	seed := tensor.New[float64](4, 1, 3, 4)
	tensor.FillNormal(rng, seed, 0, 1)
	obj := func() float64 {
		x, err := g.generate(z, labels)
		if err != nil {
			t.Fatal(err)
		}
		var s float64
		for i, v := range x.Data {
			s += v * seed.Data[i]
		}
		return s
	}
	gz, gp, err := g.vjp(z, labels, seed, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(gp) != len(g.params()) {
		t.Fatalf("%d parameter gradients for %d parameters", len(gp), len(g.params()))
	}
	const eps = 1e-6
	check := func(name string, data []float64, ana []float64) {
		for _, j := range []int{0, len(data) / 2, len(data) - 1} {
			orig := data[j]
			data[j] = orig + eps
			fp := obj()
			data[j] = orig - eps
			fm := obj()
			data[j] = orig
			num := (fp - fm) / (2 * eps)
			if math.Abs(ana[j]-num) > 1e-7+1e-5*math.Abs(num) {
				t.Errorf("%s[%d]: chain rule %.10g, finite difference %.10g", name, j, ana[j], num)
			}
		}
	}
	check("∂/∂z", z.Data, gz.Data)
	for i, p := range g.params() {
		check("∂/∂θ"+itoa(i), p.Data, gp[i].Data)
	}
	x, _ := g.generate(z, labels)
	lo, hi := (0-0.2)/0.4, (1-0.2)/0.4
	for _, v := range x.Data {
		if v < lo-1e-9 || v > hi+1e-9 {
			t.Fatalf("generated value %v outside the pixel range [%v, %v]", v, lo, hi)
		}
	}
}

// TestGenAdamStatePacking: genAdam's state survives packState and
// unpackState exactly (a resumed optimiser takes the same steps as an
// uninterrupted one), and bad states and gradients are errors.
func TestGenAdamStatePacking(t *testing.T) {
	rng := tensor.NewRNG(1, 2)
	p := tensor.New[float32](3, 4)
	tensor.FillNormal(rng, p, 0, 1)
	q := p.Clone()
	a := newGenAdam([]float64{0.1}, 0.9, []*tensor.Tensor[float32]{p})
	b := newGenAdam([]float64{0.1}, 0.9, []*tensor.Tensor[float32]{q})
	grad := func(s int) *tensor.Tensor[float32] {
		g := tensor.New[float32](3, 4)
		tensor.FillNormal(tensor.NewRNG(7, uint64(s)), g, 0, 1)
		return g
	}
	for s := range 3 {
		if err := a.step([]*tensor.Tensor[float32]{p}, []*tensor.Tensor[float32]{grad(s)}); err != nil {
			t.Fatal(err)
		}
		if err := b.step([]*tensor.Tensor[float32]{q}, []*tensor.Tensor[float32]{grad(s)}); err != nil {
			t.Fatal(err)
		}
	}
	blob := packState(a.t, append([]*tensor.Tensor[float32]{p}, a.tensors()...))
	c := newGenAdam([]float64{0.1}, 0.9, []*tensor.Tensor[float32]{tensor.New[float32](3, 4)})
	r := tensor.New[float32](3, 4)
	n, err := unpackState(blob, append([]*tensor.Tensor[float32]{r}, c.tensors()...))
	if err != nil {
		t.Fatal(err)
	}
	c.t = n
	for s := 3; s < 6; s++ {
		_ = b.step([]*tensor.Tensor[float32]{q}, []*tensor.Tensor[float32]{grad(s)})
		_ = c.step([]*tensor.Tensor[float32]{r}, []*tensor.Tensor[float32]{grad(s)})
	}
	for i := range q.Data {
		if q.Data[i] != r.Data[i] {
			t.Fatalf("value %d after resuming: %v, uninterrupted %v", i, r.Data[i], q.Data[i])
		}
	}
	if _, err := unpackState(blob[:len(blob)-4], append([]*tensor.Tensor[float32]{r}, c.tensors()...)); err == nil {
		t.Error("a truncated state: no error")
	}
	bad := tensor.New[float32](3, 4)
	bad.Data[0] = float32(math.NaN())
	if err := c.step([]*tensor.Tensor[float32]{r}, []*tensor.Tensor[float32]{bad}); err == nil {
		t.Error("a NaN gradient: no error")
	}
}
