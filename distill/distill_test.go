package distill

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/internal/npz"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

var (
	mnistOnce  sync.Once
	mnistTrain *data.Dataset
	mnistTest  *data.Dataset
	mnistErr   error
)

func loadMNIST(t testing.TB) (train, test *data.Dataset) {
	t.Helper()
	mnistOnce.Do(func() {
		mnistTrain, mnistErr = data.Load("mnist", "train", "")
		if mnistErr == nil {
			mnistTest, mnistErr = data.Load("mnist", "test", "")
		}
	})
	if mnistErr != nil {
		t.Skip(mnistErr)
	}
	return mnistTrain, mnistTest
}

// twoClass returns the first perClass images of digits 0 and 1 of d,
// relabelled 0 and 1, as a two-class data set.
func twoClass(d *data.Dataset, perClass int) *data.Dataset {
	var idx []int
	count := [2]int{}
	for i, l := range d.Y {
		if l < 2 && count[l] < perClass {
			idx = append(idx, i)
			count[l]++
		}
	}
	s := d.Subset(idx)
	s.Classes = 2
	s.ClassNames = nil
	return s
}

func testSet(n, classes int, seed uint64) *SyntheticSet {
	x := tensor.New[float32](n, 1, 6, 5)
	tensor.FillNormal(tensor.NewRNG(seed, 0), x, 0, 1)
	y := make([]int, n)
	for i := range y {
		y[i] = i % classes
	}
	return &SyntheticSet{X: x, Y: y, Mean: []float32{0.1307}, Std: []float32{0.3081}, Classes: classes}
}

func TestSyntheticRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := testSet(6, 3, 1)
	s.YSoft = tensor.New[float32](6, 3)
	tensor.FillUniform(tensor.NewRNG(2, 0), s.YSoft, 0, 1)
	path := filepath.Join(dir, "synthetic.npz")
	if err := s.Save(path); err != nil {
		t.Fatal(err)
	}
	// The file follows the contract: names, dtypes and shapes.
	m, err := npz.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		dtype string
		shape []int
	}{"x": {"float32", []int{6, 1, 6, 5}}, "y": {"int64", []int{6}}, "y_soft": {"float32", []int{6, 3}},
		"mean": {"float32", []int{1}}, "std": {"float32", []int{1}}}
	if len(m) != len(want) {
		t.Fatalf("arrays %v, want %v", keys(m), want)
	}
	for k, w := range want {
		a := m[k]
		if a == nil || a.DType != w.dtype || !slices.Equal(a.Shape, w.shape) {
			t.Errorf("array %s = %+v, want %s %v", k, a, w.dtype, w.shape)
		}
	}
	got, err := ReadSynthetic(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.Classes != 3 || !slices.Equal(got.X.Data, s.X.Data) || !slices.Equal(got.Y, s.Y) ||
		!slices.Equal(got.YSoft.Data, s.YSoft.Data) || !slices.Equal(got.Mean, s.Mean) || !slices.Equal(got.Std, s.Std) {
		t.Fatalf("round trip changed the set: %+v", got)
	}
	// Without soft labels the class count comes from the caller or the labels.
	s.YSoft = nil
	if err := s.Save(path); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadSynthetic(path, 10); err != nil || got.Classes != 10 || got.YSoft != nil {
		t.Fatalf("ReadSynthetic(classes 10) = %+v, %v", got, err)
	}
	if got, err := ReadSynthetic(path, 0); err != nil || got.Classes != 3 {
		t.Fatalf("ReadSynthetic(classes 0) = %+v, %v", got, err)
	}
}

func keys(m map[string]*npz.Array) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestReadSyntheticErrors(t *testing.T) {
	dir := t.TempDir()
	arr := func(name string, shape []int, d any) *npz.Array {
		a, err := npz.New(name, shape, d)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	x := func() *npz.Array { return arr("x", []int{2, 1, 2, 2}, make([]float32, 8)) }
	y := func() *npz.Array { return arr("y", []int{2}, []int64{0, 1}) }
	mean := func() *npz.Array { return arr("mean", []int{1}, []float32{0.5}) }
	std := func() *npz.Array { return arr("std", []int{1}, []float32{0.25}) }
	nanX := make([]float32, 8)
	nanX[5] = float32(math.NaN())
	cases := []struct {
		name    string
		arrays  []*npz.Array
		classes int
		want    string
	}{
		{"missing x", []*npz.Array{y(), mean(), std()}, 2, `no array "x"`},
		{"missing std", []*npz.Array{x(), y(), mean()}, 2, `no array "std"`},
		{"x float64", []*npz.Array{arr("x", []int{2, 1, 2, 2}, make([]float64, 8)), y(), mean(), std()}, 2, `"x" has dtype float64, want float32`},
		{"x rank 3", []*npz.Array{arr("x", []int{2, 2, 2}, make([]float32, 8)), y(), mean(), std()}, 2, `"x" has shape [2 2 2], want rank 4`},
		{"y int32", []*npz.Array{x(), arr("y", []int{2}, []int32{0, 1}), mean(), std()}, 2, `"y" has dtype int32, want int64`},
		{"y too short", []*npz.Array{x(), arr("y", []int{1}, []int64{0}), mean(), std()}, 2, "1 labels for 2 images"},
		{"mean per pixel", []*npz.Array{x(), y(), arr("mean", []int{2}, []float32{0, 0}), std()}, 2, `want (1) for 1 channels`},
		{"NaN pixel", []*npz.Array{arr("x", []int{2, 1, 2, 2}, nanX), y(), mean(), std()}, 2, "image 1 has a non-finite value"},
		{"label out of range", []*npz.Array{x(), arr("y", []int{2}, []int64{0, 7}), mean(), std()}, 2, "label 7 at index 1 is out of range for 2 classes"},
		{"negative label", []*npz.Array{x(), arr("y", []int{2}, []int64{-1, 0}), mean(), std()}, 2, "label -1 at index 0"},
		{"zero std", []*npz.Array{x(), y(), mean(), arr("std", []int{1}, []float32{0})}, 2, "std 0"},
		{"soft labels wrong shape", []*npz.Array{x(), y(), arr("y_soft", []int{2, 3}, make([]float32, 6)), mean(), std()}, 2, "soft labels have shape [2 3]: want (2, 2)"},
		{"soft labels float64", []*npz.Array{x(), y(), arr("y_soft", []int{2, 2}, make([]float64, 4)), mean(), std()}, 2, `"y_soft" is float64`},
	}
	for i, c := range cases {
		path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".npz")
		if err := npz.Write(path, c.arrays); err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		_, err := ReadSynthetic(path, c.classes)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to mention %q", c.name, err, c.want)
		}
	}
	if _, err := ReadSynthetic(filepath.Join(dir, "absent.npz"), 2); err == nil {
		t.Error("a missing file gave no error")
	}
	// Save refuses invalid sets too.
	s := testSet(4, 2, 1)
	s.X.Data[3] = float32(math.Inf(1))
	if err := s.Save(filepath.Join(dir, "bad.npz")); err == nil || !strings.Contains(err.Error(), "non-finite") {
		t.Errorf("Save of an infinite pixel: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	train, _ := loadMNIST(t)
	small := twoClass(train, 5)
	cases := []struct {
		cfg  Config
		want string
	}{
		{Config{Method: "nosuch", IPC: 1}, `unknown method "nosuch"`},
		{Config{Method: "dm", IPC: 0}, "images per class 0"},
		{Config{Method: "dc", IPC: 1, Init: "zeros"}, `initialisation "zeros"`},
		{Config{Method: "dsa", IPC: 1, DSAStrategy: "colour"}, "colour"},
		{Config{Method: "dc", IPC: 1, Match: MatchConfig{Distance: "mse"}}, `"mse" is not implemented`},
	}
	for _, c := range cases {
		if _, err := New(c.cfg, "mnist"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v): %v, want %q", c.cfg, err, c.want)
		}
	}
	for _, m := range Methods() {
		if _, err := New(Config{Method: m, IPC: 6, Model: "convnet-w8", FeatureEpochs: -1}, "mnist"); err == nil || !strings.Contains(err.Error(), "epochs -1") {
			t.Errorf("%s with FeatureEpochs -1: %v", m, err)
		}
		d, err := New(Config{Method: m, IPC: 6, Model: "convnet-w8"}, "mnist")
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Init(context.Background(), small); err == nil || !strings.Contains(err.Error(), "class 0 of mnist has 5 images, fewer than the 6") {
			t.Errorf("%s: IPC above the class size: %v", m, err)
		}
	}
	d, _ := New(Config{Method: "dm", IPC: 1, Model: "transformer"}, "mnist")
	if err := d.Init(context.Background(), small); err == nil || !strings.Contains(err.Error(), `unknown model "transformer"`) {
		t.Errorf("dm with an unknown model: %v", err)
	}
}

func TestCoresets(t *testing.T) {
	train, _ := loadMNIST(t)
	real := twoClass(train, 150)
	run := func(method string, seed uint64) ([][]int, *SyntheticSet) {
		t.Helper()
		d, err := New(Config{Method: method, IPC: 5, Seed: seed, Model: "convnet-w8", FeatureEpochs: 1}, "mnist")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Run(context.Background(), d, real, RunConfig{}); err != nil {
			t.Fatal(err)
		}
		cs := d.(*coreset)
		return cs.Selected(), cs.Synthetic()
	}
	random, _ := run(MethodRandom, 1)
	for _, m := range []string{MethodRandom, MethodHerding, MethodKCenter} {
		sel, syn := run(m, 1)
		if err := syn.Validate(); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(syn.PerClass(), []int{5, 5}) || syn.Len() != 10 {
			t.Fatalf("%s: %v images per class", m, syn.PerClass())
		}
		for c, idx := range sel {
			if len(idx) != 5 {
				t.Fatalf("%s: class %d has %d images", m, c, len(idx))
			}
			seen := map[int]bool{}
			for _, i := range idx {
				if real.Y[i] != c || seen[i] {
					t.Fatalf("%s: class %d got index %d (label %d, repeated %v)", m, c, i, real.Y[i], seen[i])
				}
				seen[i] = true
			}
		}
		again, _ := run(m, 1)
		if !slices.EqualFunc(sel, again, slices.Equal) {
			t.Errorf("%s is not deterministic: %v then %v", m, sel, again)
		}
		if m != MethodRandom && slices.EqualFunc(sel, random, slices.Equal) {
			t.Errorf("%s selected the same images as random: %v", m, sel)
		}
	}
	other, _ := run(MethodRandom, 2)
	if slices.EqualFunc(other, random, slices.Equal) {
		t.Error("random selection does not depend on the seed")
	}
}

func TestHerdingAndKCenterOnKnownPoints(t *testing.T) {
	// Points on a line: 0, 1, 2, 3, 10. Mean 3.2.
	f := []float64{0, 1, 2, 3, 10}
	if got := Herding(f, 5, 2); !slices.Equal(got, []int{3, 2}) {
		// step 1: closest to 3.2 is 3; step 2: (3+x)/2 closest to 3.2 → x = 3.4 → 2 (|2.5−3.2| < |6.5−3.2|)
		t.Errorf("Herding = %v, want [3 2]", got)
	}
	if got := KCenterGreedy(f, 5, 3); !slices.Equal(got, []int{3, 4, 0}) {
		t.Errorf("KCenterGreedy = %v, want [3 4 0]", got)
	}
	dup := []float64{1, 1, 1}
	if got := KCenterGreedy(dup, 3, 3); !slices.Equal(got, []int{0, 1, 2}) {
		t.Errorf("KCenterGreedy on duplicates = %v, want [0 1 2]", got)
	}
}

// fixedDMLoss is the DM objective of the whole two-class set, without
// augmentation, averaged over a few fixed random networks: a stable
// measure of how well syn matches real.
func fixedDMLoss(t *testing.T, real *data.Dataset, syn *SyntheticSet, model string) float64 {
	t.Helper()
	byClass := real.ClassIndices()
	var total float64
	for k := range 3 {
		m, err := nn.New[float32](model, real.ImageShape(), real.Classes, tensor.NewRNG(99, uint64(k)))
		if err != nil {
			t.Fatal(err)
		}
		for c := range real.Classes {
			xr, _ := real.Batch(byClass[c])
			xs := classSlice(syn.X, c, syn.Len()/real.Classes)
			l, err := DMLoss(m.(nn.Embedder[float32]), xr, xs, nil, tensor.New[float32](xs.Shape...))
			if err != nil {
				t.Fatal(err)
			}
			total += l
		}
	}
	return total
}

func TestDMReducesLoss(t *testing.T) {
	train, _ := loadMNIST(t)
	real := twoClass(train, 200)
	const model = "convnet-w32"
	d, err := New(Config{Method: MethodDM, IPC: 1, Seed: 3, Model: model, BatchReal: 64}, "mnist")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Init(context.Background(), real); err != nil {
		t.Fatal(err)
	}
	before := fixedDMLoss(t, real, d.Synthetic(), model)
	for it := range 12 {
		l, err := d.Step(context.Background(), it)
		if err != nil || !(l >= 0) {
			t.Fatalf("iteration %d: loss %v, %v", it, l, err)
		}
	}
	after := fixedDMLoss(t, real, d.Synthetic(), model)
	t.Logf("DM loss on fixed networks: %.4f → %.4f", before, after)
	if !(after < 0.8*before) {
		t.Fatalf("DM did not reduce the loss: %.4f → %.4f", before, after)
	}
}

// The image gradient of a gradient-matching step (through the second
// derivative of the network, and Siamese augmentation) agrees with a
// central finite difference of the loss in float64.
func TestGradMatchGradientFiniteDifference(t *testing.T) {
	rng := tensor.NewRNG(7, 0)
	m, err := nn.NewConvNet[float64](nn.ConvNetConfig{InChannels: 1, Height: 8, Width: 8, Classes: 2, NetWidth: 3, Depth: 2}, rng)
	if err != nil {
		t.Fatal(err)
	}
	real := tensor.New[float64](4, 1, 8, 8)
	tensor.FillNormal(rng, real, 0, 1)
	syn := tensor.New[float64](2, 1, 8, 8)
	tensor.FillNormal(rng, syn, 0, 1)
	dsa := &data.DSA{Strategy: []string{data.DSAColor, data.DSACrop, data.DSAScale, data.DSARotate}, Params: data.DefaultDSAParams()}
	dsa.Params.Mode = data.DSAMultiple
	dsa.Params.Shared = true
	for _, aug := range []*data.Augmentation{nil, dsa.Sample(rng, 4, 8, 8)} {
		for _, labels := range [][]int{{1, 1}, {0, 1}} {
			grad := tensor.New[float64](syn.Shape...)
			loss, err := GradMatchLoss[float64](m, real, []int{1, 1, 1, 1}, syn, labels, aug, MatchConfig{}, grad)
			if err != nil {
				t.Fatal(err)
			}
			lossAt := func(x *tensor.Tensor[float64]) float64 {
				l, err := GradMatchLoss[float64](m, real, []int{1, 1, 1, 1}, x, labels, aug, MatchConfig{}, tensor.New[float64](x.Shape...))
				if err != nil {
					t.Fatal(err)
				}
				return l
			}
			if l := lossAt(syn); l != loss {
				t.Fatalf("loss is not deterministic: %v then %v", loss, l)
			}
			for trial := range 3 {
				v := tensor.New[float64](syn.Shape...)
				tensor.FillNormal(tensor.NewRNG(11, uint64(trial)), v, 0, 1)
				const eps = 1e-6
				plus, minus := syn.Clone(), syn.Clone()
				var analytic float64
				for i := range v.Data {
					plus.Data[i] += eps * v.Data[i]
					minus.Data[i] -= eps * v.Data[i]
					analytic += grad.Data[i] * v.Data[i]
				}
				numeric := (lossAt(plus) - lossAt(minus)) / (2 * eps)
				if math.Abs(numeric-analytic) > 1e-6*math.Max(1, math.Abs(numeric)) {
					t.Errorf("aug %v labels %v trial %d: directional derivative %.10g, finite difference %.10g", aug != nil, labels, trial, analytic, numeric)
				}
			}
		}
	}
}

func TestEvaluate(t *testing.T) {
	train, test := loadMNIST(t)
	real := twoClass(train, 50)
	tst := twoClass(test, 100)
	syn := subsetSet(real, []int{0, 1, 2, 3, 50, 51, 52, 53}) // both classes
	cfg := DefaultEvalConfig("mnist")
	cfg.Model, cfg.Runs, cfg.Epochs = "convnet-w8", 2, 5
	mean, std, accs, err := Evaluate(syn, tst, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("accuracy %.4f ± %.4f %v", mean, std, accs)
	if len(accs) != 2 || accs[0] == accs[1] {
		t.Fatalf("accuracies %v: want two runs with their own seeds", accs)
	}
	for _, a := range accs {
		if a < 0 || a > 1 {
			t.Fatalf("accuracy %v outside [0, 1]", a)
		}
	}
	if m, s := MeanStd(accs); m != mean || s != std || mean < 0.6 {
		t.Fatalf("mean %v std %v (recomputed %v %v): want the two-class task learnt", mean, std, m, s)
	}
	// A set for another data set is refused before training.
	bad := syn.Clone()
	bad.Classes = 10
	if _, _, _, err := Evaluate(bad, tst, cfg); err == nil || !strings.Contains(err.Error(), "10 classes") {
		t.Errorf("class mismatch: %v", err)
	}
	cfg.Model = "transformer"
	if _, _, _, err := Evaluate(syn, tst, cfg); err == nil || !strings.Contains(err.Error(), "transformer") {
		t.Errorf("unknown model: %v", err)
	}
}

// Stopping after a checkpoint and resuming gives exactly the set of an
// uninterrupted run, for DM and for DSA with inner training.
func TestResumeIsDeterministic(t *testing.T) {
	train, _ := loadMNIST(t)
	real := twoClass(train, 40)
	for _, cfg := range []Config{
		{Method: MethodDM, IPC: 2, Seed: 5, Model: "convnet-w8", BatchReal: 16},
		{Method: MethodDSA, IPC: 2, Seed: 5, Model: "convnet-w8", BatchReal: 16, OuterLoop: 2, InnerLoop: 1},
		{Method: MethodDC, IPC: 1, Seed: 5, Model: "convnet-w8", BatchReal: 16},
	} {
		dir := t.TempDir()
		full, err := New(cfg, "mnist")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Run(context.Background(), full, real, RunConfig{Iterations: 4}); err != nil {
			t.Fatal(err)
		}
		ck := filepath.Join(dir, "checkpoint.npz")
		first, _ := New(cfg, "mnist")
		var losses []float64
		if _, err := Run(context.Background(), first, real, RunConfig{Iterations: 2, CheckpointPath: ck, CheckpointEvery: 1,
			AfterStep: func(_ int, l float64) error { losses = append(losses, l); return nil }}); err != nil {
			t.Fatal(err)
		}
		second, _ := New(cfg, "mnist")
		at, err := Run(context.Background(), second, real, RunConfig{Iterations: 4, CheckpointPath: ck, Resume: true,
			AfterStep: func(_ int, l float64) error { losses = append(losses, l); return nil }})
		if err != nil {
			t.Fatal(err)
		}
		if at != 2 || len(losses) != 4 {
			t.Fatalf("%s: resumed at %d with %d losses", cfg.Method, at, len(losses))
		}
		if !slices.Equal(full.Synthetic().X.Data, second.Synthetic().X.Data) {
			t.Fatalf("%s: the resumed run differs from the uninterrupted one", cfg.Method)
		}
		if slices.Equal(full.Synthetic().X.Data, first.Synthetic().X.Data) {
			t.Fatalf("%s: iterations 3 and 4 changed nothing", cfg.Method)
		}
		// The final checkpoint is a valid synthetic.npz too.
		if s, err := ReadSynthetic(ck, 2); err != nil || !slices.Equal(s.X.Data, full.Synthetic().X.Data) {
			t.Fatalf("%s: final checkpoint as a synthetic set: %v", cfg.Method, err)
		}
		// A different configuration cannot resume from it.
		other := cfg
		other.Seed++
		d, _ := New(other, "mnist")
		if _, err := Run(context.Background(), d, real, RunConfig{Iterations: 5, CheckpointPath: ck, Resume: true}); err == nil || !strings.Contains(err.Error(), "different configuration") {
			t.Errorf("%s: resume with another seed: %v", cfg.Method, err)
		}
	}
}

func TestDivergenceKeepsLastCheckpoint(t *testing.T) {
	train, _ := loadMNIST(t)
	real := twoClass(train, 20)
	ck := filepath.Join(t.TempDir(), "checkpoint.npz")
	d, err := New(Config{Method: MethodDM, IPC: 1, Seed: 1, Model: "convnet-w8", BatchReal: 8}, "mnist")
	if err != nil {
		t.Fatal(err)
	}
	// A NaN that appears in the images after iteration 2 (as a blow-up
	// would) makes iteration 3's loss NaN.
	_, err = Run(context.Background(), d, real, RunConfig{Iterations: 50, CheckpointPath: ck, CheckpointEvery: 1,
		AfterStep: func(it int, _ float64) error {
			if it == 1 {
				d.Synthetic().X.Data[3] = float32(math.NaN())
			}
			return nil
		}})
	if !errors.Is(err, ErrDiverged) || !strings.Contains(err.Error(), "iteration 2: ") ||
		!strings.Contains(err.Error(), "last good checkpoint, after 2 iterations") {
		t.Fatalf("error %v: want a divergence at iteration 2 naming the checkpoint", err)
	}
	c, err := LoadCheckpoint(ck)
	if err != nil {
		t.Fatalf("the last checkpoint is unreadable: %v", err)
	}
	if c.Next != 2 {
		t.Fatalf("checkpoint after %d iterations, want 2", c.Next)
	}
	if _, err := New(Config{Method: MethodDM, IPC: 1, LRImg: math.Inf(1)}, "mnist"); err == nil {
		t.Error("an infinite learning rate was accepted")
	}
}

func TestGrid(t *testing.T) {
	s := testSet(6, 3, 1)
	img, err := GridImage(s)
	if err != nil {
		t.Fatal(err)
	}
	// 3 classes × 2 images of 6×5 pixels, upscaled ×10, 2-pixel gutters.
	if b := img.Bounds(); b.Dx() != 2*(50+2)+2 || b.Dy() != 3*(60+2)+2 {
		t.Fatalf("grid is %v", b)
	}
	path := filepath.Join(t.TempDir(), "grid.png")
	if err := WriteGrid(path, s); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Size() == 0 {
		t.Fatalf("grid.png: %v", err)
	}
}

// The evaluation length follows each method's reference code.
func TestDefaultEvalEpochs(t *testing.T) {
	for _, c := range []struct {
		dataset, method string
		want            int
	}{
		{"mnist", "dc", 1000}, {"MNIST", "", 1000}, {"fmnist", "dc", 300}, {"fmnist", "", 300},
		{"fmnist", "dsa", 1000}, {"cifar10", "dm", 1000}, {"fmnist", "mtt", 1000}, {"cifar10", "TESLA", 1000},
		{"fmnist", "ftd", 1000}, {"fmnist", "cafe", 600}, {"cifar10", "random", 300}, {"fmnist", "kip", 300},
	} {
		if got := DefaultEvalEpochs(c.dataset, c.method); got != c.want {
			t.Errorf("DefaultEvalEpochs(%q, %q) = %d, want %d", c.dataset, c.method, got, c.want)
		}
	}
}

// realGradients computes only the gradients the distance reads: the
// one-dimensional parameters' entries are nil and the others equal the
// full backward pass's.
func TestRealGradientsSkipUnmatched(t *testing.T) {
	m, real, y := tinyConvNet64(t, 9), randn64(9, 4, 1, 8, 8), []int{0, 1, 1, 0}
	tp := ag.NewTape[float64]()
	defer tp.Release()
	ps := nn.Bind(tp, m)
	full, err := tp.Grad([]*ag.Var[float64]{ag.CrossEntropy(m.Forward(tp.Const(real), ps), y)}, nil, ps, false)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]*tensor.Tensor[float64], len(full))
	for i, g := range full {
		want[i] = g.Value.Clone()
	}
	tp.Release()
	got, err := realGradients(tp, m, real, y, nil, layerwiseMatched)
	if err != nil {
		t.Fatal(err)
	}
	skipped := 0
	for i, p := range m.Params() {
		switch {
		case len(p.Shape) < 2:
			if got[i] != nil {
				t.Errorf("parameter %d %v: gradient computed, want skipped", i, p.Shape)
			}
			skipped++
		case got[i] == nil:
			t.Errorf("parameter %d %v: gradient skipped", i, p.Shape)
		default:
			for j, v := range got[i].Data {
				if v != want[i].Data[j] {
					t.Fatalf("parameter %d %v entry %d: %g, want %g", i, p.Shape, j, v, want[i].Data[j])
				}
			}
		}
	}
	if skipped == 0 {
		t.Fatal("the ConvNet has no one-dimensional parameter: the test checks nothing")
	}
}
