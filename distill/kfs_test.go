package distill

import (
	"context"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/internal/npz"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// The gradients of kfs's loss with respect to the codes and every decoder
// weight (through the decoders' upsampling, convs, ReLU and skip path, DSA
// and the network's embedding, with the contrastive term on) agree with
// central finite differences in float64.
func TestKFSGradientFiniteDifference(t *testing.T) {
	rng := tensor.NewRNG(3, 0)
	m, err := nn.NewConvNet[float64](nn.ConvNetConfig{InChannels: 1, Height: 8, Width: 8, Classes: 3, NetWidth: 3, Depth: 2}, rng)
	if err != nil {
		t.Fatal(err)
	}
	// Codes of 2 channels (the skip path slices channel 0) at 4×4, one
	// upsampling to 8×8, decoders of width 3.
	lay := kfsLayout{classes: 3, codes: 2, decoders: 2, c: 1, h: 8, w: 8, cz: 2, hz: 4, wz: 4, width: 3, ups: 1}
	codes := tensor.New[float64](lay.codes, lay.cz, lay.hz, lay.wz)
	tensor.FillNormal(rng, codes, 0, 1)
	decs := make([][]*tensor.Tensor[float64], lay.decoders)
	for k := range decs {
		for _, s := range lay.decoderShapes() {
			p := tensor.New[float64](s...)
			tensor.FillNormal(rng, p, 0, 0.5)
			decs[k] = append(decs[k], p)
		}
	}
	real := tensor.New[float64](5, 1, 8, 8)
	tensor.FillNormal(rng, real, 0, 1)
	dsa := &data.DSA{Strategy: []string{data.DSAColor, data.DSACrop, data.DSAScale, data.DSARotate}, Params: data.DefaultDSAParams()}
	dsa.Params.Mode = data.DSAMultiple
	dsa.Params.Shared = true
	aug := dsa.Sample(rng, 5, 8, 8)
	target, err := embedConst(m, real, aug, true)
	if err != nil {
		t.Fatal(err)
	}
	others := []*tensor.Tensor[float64]{target, target.Clone(), target.Clone()}
	tensor.FillNormal(rng, others[0], 0, 1)
	tensor.FillNormal(rng, others[2], 0, 1)
	protos := kfsPrototypes(others)
	for _, contrast := range []float64{0, 0.5} {
		loss, gz, gd, err := kfsLoss(m, target, protos, 1, codes, decs, lay.ups, lay.c, aug, contrast, 0.1)
		if err != nil {
			t.Fatal(err)
		}
		lossAt := func() float64 {
			l, _, _, err := kfsLoss(m, target, protos, 1, codes, decs, lay.ups, lay.c, aug, contrast, 0.1)
			if err != nil {
				t.Fatal(err)
			}
			return l
		}
		if l := lossAt(); l != loss {
			t.Fatalf("loss is not deterministic: %v then %v", loss, l)
		}
		// Every factor tensor and its analytic gradient.
		params := []*tensor.Tensor[float64]{codes}
		grads := []*tensor.Tensor[float64]{gz}
		for k := range decs {
			params = append(params, decs[k]...)
			grads = append(grads, gd[k]...)
		}
		for trial := range 2 {
			const eps = 1e-6
			dirs := make([]*tensor.Tensor[float64], len(params))
			var analytic float64
			for i, p := range params {
				dirs[i] = tensor.New[float64](p.Shape...)
				tensor.FillNormal(tensor.NewRNG(11, uint64(10*trial+i)), dirs[i], 0, 1)
				for j, v := range dirs[i].Data {
					analytic += grads[i].Data[j] * v
				}
			}
			move := func(s float64) {
				for i, p := range params {
					for j, v := range dirs[i].Data {
						p.Data[j] += s * v
					}
				}
			}
			move(eps)
			plus := lossAt()
			move(-2 * eps)
			minus := lossAt()
			move(eps)
			numeric := (plus - minus) / (2 * eps)
			if math.Abs(numeric-analytic) > 1e-6*math.Max(1, math.Abs(numeric)) {
				t.Errorf("contrast %g trial %d: directional derivative %.10g, finite difference %.10g", contrast, trial, analytic, numeric)
			}
		}
		// Element-wise on a few entries of each kind of tensor.
		for i, p := range params {
			for _, j := range []int{0, len(p.Data) / 2, len(p.Data) - 1} {
				const eps = 1e-6
				orig := p.Data[j]
				p.Data[j] = orig + eps
				plus := lossAt()
				p.Data[j] = orig - eps
				minus := lossAt()
				p.Data[j] = orig
				num := (plus - minus) / (2 * eps)
				if ana := grads[i].Data[j]; math.Abs(num-ana) > 1e-6*math.Max(1, math.Abs(num)) {
					t.Errorf("contrast %g tensor %d %v element %d: gradient %.10g, finite difference %.10g", contrast, i, p.Shape, j, ana, num)
				}
			}
		}
	}
}

// The decoder's upsampling is nearest-neighbour and, with zero conv
// weights, a decoded image is its code's first channel upsampled (the
// skip path).
func TestKFSDecodeSkipPath(t *testing.T) {
	lay := kfsLayout{classes: 1, codes: 1, decoders: 1, c: 1, h: 8, w: 4, cz: 2, hz: 2, wz: 1, width: 2, ups: 2}
	z := tensor.New[float64](1, 2, 2, 1)
	copy(z.Data, []float64{1, 2, 5, 7})
	tp := ag.NewTape[float64]()
	defer tp.Release()
	var ps []*ag.Var[float64]
	for _, s := range lay.decoderShapes() {
		ps = append(ps, tp.Const(tensor.New[float64](s...)))
	}
	x := kfsDecode(tp.Const(z), ps, lay.ups, lay.c)
	if err := tp.Err(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(x.Value.Shape, []int{1, 1, 8, 4}) {
		t.Fatalf("decoded shape %v, want [1 1 8 4]", x.Value.Shape)
	}
	for r := range 8 {
		for q := range 4 {
			want := 1.0
			if r >= 4 {
				want = 2
			}
			if got := x.Value.Data[r*4+q]; got != want {
				t.Fatalf("pixel (%d, %d) = %v, want %v", r, q, got, want)
			}
		}
	}
}

// The layout charges every stored float and fits the budget of IPC plain
// images per class; oversized settings fail with an error that names the
// values and the flag; bad settings fail in New.
func TestKFSBudget(t *testing.T) {
	shape := []int{1, 28, 28}
	cfg := Config{Method: MethodKFS, IPC: 1}.Defaults("mnist")
	l, err := kfsResolve(cfg, 10, shape)
	if err != nil {
		t.Fatal(err)
	}
	// 8 decoders of (8·1·9+8) + (1·8·9+1) = 153 floats; codes 1×14×14.
	if l.decoderFloats() != 153 || l.codeFloats() != 196 || l.codes != 3 || l.perClass() != 24 || l.floats() != 7104 || l.floats() > 7840 {
		t.Fatalf("IPC 1 layout %+v: decoder %d, code %d, floats %d", l, l.decoderFloats(), l.codeFloats(), l.floats())
	}
	cfg.IPC = 10
	if l, err = kfsResolve(cfg, 10, shape); err != nil || l.codes != 39 || l.floats() > 78400 {
		t.Fatalf("IPC 10: %+v, %v", l, err)
	}
	for _, c := range []struct {
		k    KFSConfig
		want string
	}{
		{KFSConfig{Codes: 4}, "--kfs-codes"},
		{KFSConfig{Decoders: 52}, "--kfs-decoders"},
		{KFSConfig{Decoders: 1, Codes: 1, Downsample: 1, MaxFloats: 100000}, "too little to be worth factorizing"},
		{KFSConfig{CodeChannels: 1, Width: 8, Decoders: 8, BatchCodes: 5}, "--kfs-batch-codes"},
	} {
		cfg := Config{Method: MethodKFS, IPC: 1, KFS: c.k}.Defaults("mnist")
		if _, err := kfsResolve(cfg, 10, shape); err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "distill: kfs:") {
			t.Errorf("%+v: %v; want an error naming %s", c.k, err, c.want)
		}
	}
	over := Config{Method: MethodKFS, IPC: 1, KFS: KFSConfig{Codes: 4, MaxFloats: 10000}}.Defaults("mnist")
	if l, err := kfsResolve(over, 10, shape); err != nil || l.floats() != 4*10*196+8*153 {
		t.Errorf("explicit budget: %+v, %v", l, err)
	}
	for _, k := range []KFSConfig{{Downsample: 3}, {LRCode: -1}, {Contrast: math.Inf(1)}, {Width: -2}} {
		if _, err := New(Config{Method: MethodKFS, IPC: 1, KFS: k}, "mnist"); err == nil || !strings.HasPrefix(err.Error(), "distill: kfs:") {
			t.Errorf("%+v: %v; want a distill: kfs: error", k, err)
		}
	}
	if _, err := New(Config{Method: MethodKFS, IPC: 1, DP: &DPConfig{}}, "mnist"); err == nil {
		t.Error("kfs with DP: no error")
	}
}

// kfsFixedLoss is the DM part of kfs's loss summed over the classes for a
// fixed network and real batch (the draws of iteration 10⁶).
func kfsFixedLoss(t *testing.T, d *kfs) float64 {
	t.Helper()
	rng := iterRNG(d.cfg.Seed, 1_000_000)
	net, err := nn.New[float32](d.cfg.Model, d.real.ImageShape(), d.real.Classes, rng)
	if err != nil {
		t.Fatal(err)
	}
	emb := net.(nn.Embedder[float32])
	var total float64
	for c := range d.lay.classes {
		xr, _ := d.realBatch(c, rng)
		target, err := embedConst(emb, xr, nil, true)
		if err != nil {
			t.Fatal(err)
		}
		l, _, _, err := kfsLoss(emb, target, nil, c, d.classCodes(c), d.decs, d.lay.ups, d.lay.c, nil, 0, 1)
		if err != nil {
			t.Fatal(err)
		}
		total += l
	}
	return total
}

// A kfs run reduces its loss on fixed draws, is reproducible from its
// seed, and a run interrupted, saved to a file and resumed ends with
// exactly the same factors and images as an uninterrupted one; the
// factors file holds what the budget charges.
func TestKFSRunResumeReproducible(t *testing.T) {
	train, _ := loadMNIST(t)
	real := twoClass(train, 40)
	cfg := Config{Method: MethodKFS, IPC: 1, Seed: 9, Model: "convnet-w8-d2", BatchReal: 16,
		KFS: KFSConfig{Decoders: 3, Width: 4, Contrast: 0.1, BatchCodes: 2, LRCode: 0.05, LRDecoder: 0.01}}
	const iters = 6
	run := func(stopAt int, path string) *kfs {
		d, err := New(cfg, "mnist")
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Init(context.Background(), real); err != nil {
			t.Fatal(err)
		}
		start := 0
		if path != "" {
			ck, err := LoadCheckpoint(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Restore(ck); err != nil {
				t.Fatal(err)
			}
			start = ck.Next
		}
		for it := start; it < stopAt; it++ {
			if _, err := d.Step(context.Background(), it); err != nil {
				t.Fatal(err)
			}
		}
		return d.(*kfs)
	}
	a := run(iters, "")
	codes, decoders, perClass, floats := a.Layout()
	if codes != 3 || decoders != 3 || perClass != 9 || floats > 2*784 || a.Synthetic().X.Shape[0] != 18 {
		t.Fatalf("layout: %d codes, %d decoders, %d images per class, %d floats, images %v", codes, decoders, perClass, floats, a.Synthetic().X.Shape)
	}
	if err := a.Synthetic().Validate(); err != nil {
		t.Fatal(err)
	}
	if y := a.Synthetic().Y; y[0] != 0 || y[8] != 0 || y[9] != 1 || y[17] != 1 {
		t.Fatalf("labels %v: want class-major", y)
	}
	b := run(iters, "")
	if !slices.Equal(a.Synthetic().X.Data, b.Synthetic().X.Data) {
		t.Fatal("the same seed gave different sets")
	}
	path := filepath.Join(t.TempDir(), "ck.npz")
	half := run(iters/2, "")
	if err := half.Checkpoint(iters / 2).Save(path); err != nil {
		t.Fatal(err)
	}
	r := run(iters, path)
	if !slices.Equal(a.Synthetic().X.Data, r.Synthetic().X.Data) || !slices.Equal(a.codes.Data, r.codes.Data) || !slices.Equal(a.m, r.m) || !slices.Equal(a.v, r.v) {
		t.Fatal("a resumed run differs from an uninterrupted one")
	}
	for k := range a.decs {
		for j := range a.decs[k] {
			if !slices.Equal(a.decs[k][j].Data, r.decs[k][j].Data) {
				t.Fatalf("decoder %d tensor %d differs after resuming", k, j)
			}
		}
	}
	other := cfg
	other.KFS.Decoders = 2
	o, _ := New(other, "mnist")
	if err := o.Init(context.Background(), real); err != nil {
		t.Fatal(err)
	}
	ck, _ := LoadCheckpoint(path)
	if err := o.Restore(ck); err == nil {
		t.Error("a checkpoint of another configuration was restored")
	}

	fresh := run(0, "")
	before, after := kfsFixedLoss(t, fresh), kfsFixedLoss(t, a)
	t.Logf("kfs: DM loss on fixed draws %.4f → %.4f after %d iterations", before, after, iters)
	if !(after < before) {
		t.Errorf("kfs did not reduce the loss: %.4f → %.4f", before, after)
	}

	fp := filepath.Join(t.TempDir(), "factors.npz")
	if err := a.SaveFactors(fp); err != nil {
		t.Fatal(err)
	}
	arrs, err := npz.Read(fp)
	if err != nil {
		t.Fatal(err)
	}
	stored := 0
	for name, arr := range arrs {
		if name != "floats" && name != "budget" {
			stored += arr.Size()
		}
	}
	if got := arrs["floats"].Data.([]int64)[0]; int(got) != floats || stored != floats || !slices.Equal(arrs["codes"].Shape, []int{2, 3, 1, 14, 14}) {
		t.Errorf("factors.npz: floats %d, arrays hold %d, codes %v; want %d and [2 3 1 14 14]", got, stored, arrs["codes"].Shape, floats)
	}
}

// Codes start as 2×2 average pools of real images of their class (the
// paper's initialisation from real data), or from noise with Init noise.
func TestKFSInitCodes(t *testing.T) {
	train, _ := loadMNIST(t)
	real := twoClass(train, 40)
	for _, init := range []string{InitReal, InitNoise} {
		d, err := New(Config{Method: MethodKFS, IPC: 1, Seed: 2, Model: "convnet-w8-d2", Init: init, KFS: KFSConfig{Decoders: 3, Width: 4}}, "mnist")
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Init(context.Background(), real); err != nil {
			t.Fatal(err)
		}
		k := d.(*kfs)
		byClass := real.ClassIndices()
		for c := range 2 {
			z := k.classCodes(c)
			for i := range k.lay.codes {
				code := z.Data[i*196 : (i+1)*196]
				found := false
				for _, j := range byClass[c] {
					x, _ := real.Batch([]int{j})
					match := true
					for p, v := range code {
						r, q := p/14, p%14
						s := x.Data[2*r*28+2*q] + x.Data[2*r*28+2*q+1] + x.Data[(2*r+1)*28+2*q] + x.Data[(2*r+1)*28+2*q+1]
						if math.Abs(float64(v-s/4)) > 1e-5 {
							match = false
							break
						}
					}
					if match {
						found = true
						break
					}
				}
				if found != (init == InitReal) {
					t.Errorf("init %s: class %d code %d is a pooled real image of its class: %v", init, c, i, found)
				}
			}
		}
	}
}
