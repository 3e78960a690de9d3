package distill

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/internal/npz"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// TestITGANGradFiniteDifference checks itgan's gradient with respect to
// the codes — DM loss of a fixed ConvNet (instance norm, pooling) under a
// fixed DSA augmentation plus the regulariser, chained through the frozen
// generator — against central differences in float64.
func TestITGANGradFiniteDifference(t *testing.T) {
	rng := tensor.NewRNG(6, 6)
	shape := []int{1, 8, 8}
	gen := newCondGen[float64](4, 2, []int{6}, shape, []float32{0.1}, []float32{0.3}, rng)
	mm, err := nn.New[float64]("convnet-w4-d1", shape, 2, rng)
	if err != nil {
		t.Fatal(err)
	}
	m := mm.(nn.Embedder[float64])
	const ipc = 2
	labels := classLabels(2, ipc)
	codes := tensor.New[float64](4, 4)
	tensor.FillNormal(rng, codes, 0, 1)
	target := tensor.New[float64](4, 1, 8, 8)
	tensor.FillNormal(rng, target, 0, 1)
	reals := make([]*tensor.Tensor[float64], 2)
	augs := make([]*data.Augmentation, 2)
	strategy, err := data.ParseDSAStrategy("color_crop_cutout")
	if err != nil {
		t.Fatal(err)
	}
	p := data.DefaultDSAParams()
	p.Shared = true
	dsa := &data.DSA{Strategy: strategy, Params: p}
	for c := range reals {
		reals[c] = tensor.New[float64](3, 1, 8, 8)
		tensor.FillNormal(rng, reals[c], 0, 1)
		augs[c] = dsa.Sample(rng, 3, 8, 8)
	}
	loss := func() (float64, *tensor.Tensor[float64]) {
		x, err := gen.generate(codes, labels)
		if err != nil {
			t.Fatal(err)
		}
		l, gx, err := itganLoss(m, reals, augs, x, target, ipc, 0.3)
		if err != nil {
			t.Fatal(err)
		}
		return l, gx
	}
	_, gx := loss()
	gz, _, err := gen.vjp(codes, labels, gx, false)
	if err != nil {
		t.Fatal(err)
	}
	const eps = 1e-6
	for _, j := range []int{0, 5, 10, 15} {
		orig := codes.Data[j]
		codes.Data[j] = orig + eps
		fp, _ := loss()
		codes.Data[j] = orig - eps
		fm, _ := loss()
		codes.Data[j] = orig
		num := (fp - fm) / (2 * eps)
		if math.Abs(gz.Data[j]-num) > 1e-7+1e-4*math.Abs(num) {
			t.Errorf("∂L/∂codes[%d]: gradient %.10g, finite difference %.10g", j, gz.Data[j], num)
		}
	}
	if gz.Data[0] == 0 {
		t.Error("zero gradient: the check would be vacuous")
	}
}

// smallITGAN trains a tiny GAN for one epoch on 120 images.
func smallITGAN() Config {
	return Config{Method: MethodITGAN, IPC: 2, Seed: 13, Model: "convnet-w8-d2", BatchReal: 8,
		ITGAN: ITGANConfig{ZDim: 8, Hidden: []int{16}, DiscHidden: []int{16}, GANEpochs: 1, GANBatch: 32, InvertSteps: 40, Rec: 0.1, OverBudget: true}}
}

// TestITGANResumeAndSeed: interrupted and resumed itgan equals an
// uninterrupted run bit for bit (the GAN is retrained identically from the
// seed in Init); same seed → same set; the inversion brings the images
// closer to their real images than the initial codes; SaveFactors writes
// codes and generator with the charged and the generator's floats.
func TestITGANResumeAndSeed(t *testing.T) {
	train, _ := loadMNIST(t)
	real := twoClass(train, 60)
	cfg := smallITGAN()
	// The generator is charged: without the override the tiny GAN's 14 304
	// floats exceed IPC 2's 3 136, and Init says so before training it.
	within := cfg
	within.ITGAN.OverBudget = false
	if d, err := New(within, "mnist"); err != nil {
		t.Fatal(err)
	} else if err := d.Init(context.Background(), real); err == nil || !strings.Contains(err.Error(), "--itgan-over-budget") || !strings.Contains(err.Error(), "14336 floats") {
		t.Errorf("itgan over its budget: %v", err)
	}
	d := checkResume(t, cfg, real).(*itgan)

	noInv := cfg
	noInv.ITGAN.InvertSteps = -1 // validated: must be rejected
	if _, err := New(noInv, "mnist"); err == nil || !strings.Contains(err.Error(), "--itgan-invert-steps") {
		t.Errorf("negative inversion steps: %v", err)
	}
	mse := func(x, y *tensor.Tensor[float32]) float64 {
		var s float64
		for i, v := range x.Data {
			s += float64(v-y.Data[i]) * float64(v-y.Data[i])
		}
		return s / float64(len(x.Data))
	}
	// Codes as drawn before inversion: same stream as Init.
	rng := tensor.NewRNG(cfg.Seed, streamInit)
	_ = randomReal(real, real.ClassIndices(), cfg.IPC, rng)
	z0 := tensor.New[float32](d.codes.Shape...)
	tensor.FillNormal(rng, z0, 0, 1)
	x0, err := d.gen.generate(z0, d.y)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := New(cfg, "mnist")
	if err := e.Init(context.Background(), real); err != nil {
		t.Fatal(err)
	}
	inv := e.(*itgan)
	before, after := mse(x0, inv.target), mse(inv.x, inv.target)
	t.Logf("reconstruction MSE: random codes %.4f, inverted %.4f", before, after)
	if !(after < before) {
		t.Errorf("the inversion did not reduce the reconstruction error: %.4f → %.4f", before, after)
	}

	path := filepath.Join(t.TempDir(), "factors.npz")
	if err := d.SaveFactors(path); err != nil {
		t.Fatal(err)
	}
	m, err := npz.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if f := m["floats"].Data.([]int64)[0]; f != int64(len(d.codes.Data)+d.gen.floats()) || m["codes"].Size() != len(d.codes.Data) {
		t.Errorf("factors.npz: floats %d, codes %d", f, m["codes"].Size())
	}
	var genFloats int
	for name, a := range m {
		if strings.HasPrefix(name, "gen_") && name != "gen_floats" {
			genFloats += a.Size()
		}
	}
	if g := m["gen_floats"].Data.([]int64)[0]; g != int64(genFloats) || genFloats != d.GeneratorFloats() {
		t.Errorf("factors.npz: gen_floats %d, generator arrays %d, GeneratorFloats %d", g, genFloats, d.GeneratorFloats())
	}
}
