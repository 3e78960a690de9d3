package distill

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/tensor"
)

// poolImage averages 4×4 blocks; a 5×6 image's edge blocks average the
// pixels they have (worked by hand: pixel value = 10·row + column).
func TestPoolImage(t *testing.T) {
	const h, w = 5, 6
	img := make([]float32, h*w)
	for y := range h {
		for x := range w {
			img[y*w+x] = float32(10*y + x)
		}
	}
	out := make([]float64, 4)
	poolImage(img, 1, h, w, out)
	// rows 0–3 × cols 0–3: mean row 1.5, mean col 1.5 → 16.5;
	// rows 0–3 × cols 4–5: 15 + 4.5 = 19.5; row 4 × cols 0–3: 41.5; row 4 × cols 4–5: 44.5
	want := []float64{16.5, 19.5, 41.5, 44.5}
	for i := range want {
		if math.Abs(out[i]-want[i]) > 1e-12 {
			t.Fatalf("pooled %v, want %v", out, want)
		}
	}
}

// meanData is n 1×8×8 images per class of 2 classes: class c's images are
// c+1 plus noise, and the first image of class 1 is huge (norm far past any
// clip).
func meanData(n int) *data.Dataset {
	x := tensor.New[float32](2*n, 1, 8, 8)
	tensor.FillNormal(tensor.NewRNG(3, 0), x, 0, 0.3)
	y := make([]int, 2*n)
	for i := range y {
		y[i] = i / n
		for j := range 64 {
			x.Data[i*64+j] += float32(y[i] + 1)
		}
	}
	for j := range 64 {
		x.Data[n*64+j] = 1000
	}
	return &data.Dataset{Name: "mnist", X: x, Y: y, Classes: 2, Mean: []float32{0}, Std: []float32{1}}
}

// Without DP ClassMeans is the exact mean of the pooled images; with DP
// each pooled image is clipped (the huge image moves class 1's mean by at
// most C/n) and the means get noise of std σC/n, measured over many draws.
func TestClassMeans(t *testing.T) {
	const n = 50
	real := meanData(n)
	byClass := real.ClassIndices()
	exact := ClassMeans(real, byClass, nil, tensor.NewRNG(1, 0))
	pooled := make([]float64, 4)
	for c := range 2 {
		want := make([]float64, 4)
		for _, i := range byClass[c] {
			poolImage(real.X.Data[i*64:(i+1)*64], 1, 8, 8, pooled)
			for j, v := range pooled {
				want[j] += v / n
			}
		}
		for j := range want {
			if math.Abs(exact[c][j]-want[j]) > 1e-9 {
				t.Fatalf("class %d pooled mean %v, want %v", c, exact[c], want)
			}
		}
	}
	// Clipping alone (σ = 0 is refused by validateInitRelease, but
	// ClassMeans takes it): C = 5 is past the other images' pooled norms
	// (about 4 in class 1), and the huge image adds C/(2n) per value.
	const clip = 5.0
	clipped := ClassMeans(real, byClass, &DPConfig{InitClip: clip}, tensor.NewRNG(1, 0))
	for j := range 4 {
		if want := (exact[1][j]*n - 1000 + clip/2) / n; math.Abs(clipped[1][j]-want) > 1e-9 {
			t.Fatalf("class 1 clipped mean %v: the huge image was not clipped to %g (want %g)", clipped[1], clip, want)
		}
	}
	const sigma = 2.0
	var ss float64
	var count int
	for seed := range uint64(2000) {
		noisy := ClassMeans(real, byClass, &DPConfig{InitClip: clip, InitNoise: sigma}, tensor.NewRNG(seed, 0))
		for c := range 2 {
			for j := range 4 {
				d := noisy[c][j] - clipped[c][j]
				ss += d * d
				count++
			}
		}
	}
	if got, want := math.Sqrt(ss/float64(count)), sigma*clip/n; math.Abs(got/want-1) > 0.03 {
		t.Fatalf("noise std on the means %.5f, want σC/n = %.5f ± 3%%", got, want)
	}
}

// InitMean starts each class's images from its pooled mean plus jitter of
// std MeanInitJitter; a private run accepts it, charges one release and
// fills the release's defaults; other methods and bad settings are refused.
func TestInitMean(t *testing.T) {
	const n, ipc = 50, 20
	real := meanData(n)
	d, err := New(Config{Method: MethodDM, IPC: ipc, Seed: 2, Model: "convnet-w4", Init: InitMean}, "mnist")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Init(context.Background(), real); err != nil {
		t.Fatal(err)
	}
	syn := d.Synthetic()
	means := ClassMeans(real, real.ClassIndices(), nil, nil)
	var ss float64
	for i, c := range syn.Y {
		if c != i/ipc {
			t.Fatalf("label %d of image %d, want %d", c, i, i/ipc)
		}
		for p := range 64 {
			block := (p/8/MeanInitPool)*2 + (p%8)/MeanInitPool
			e := float64(syn.X.Data[i*64+p]) - means[c][block]
			ss += e * e
		}
	}
	if got := math.Sqrt(ss / float64(len(syn.X.Data))); math.Abs(got/MeanInitJitter-1) > 0.05 {
		t.Fatalf("images minus their class mean have std %.4f, want the jitter %g ± 5%%", got, MeanInitJitter)
	}
	dp := &DPConfig{SampleRate: 0.5, Clip: 1, Noise: 1}
	p, err := New(Config{Method: MethodDM, IPC: 1, Init: InitMean, DP: dp}, "mnist")
	if err != nil {
		t.Fatal(err)
	}
	cfg := p.Config()
	if sigma, ok := cfg.DPInitRelease(); !ok || sigma != DefaultDPInitNoise || cfg.DP.InitClip != DefaultDPInitClip {
		t.Fatalf("private mean start: release σ %g (%v), clip %g; want the defaults %d, %d", sigma, ok, cfg.DP.InitClip, DefaultDPInitNoise, DefaultDPInitClip)
	}
	if dp.InitNoise != 0 {
		t.Fatal("New changed the caller's DP settings")
	}
	if _, ok := (Config{Method: MethodDM, Init: InitNoise, DP: dp}).DPInitRelease(); ok {
		t.Fatal("a start from noise releases nothing")
	}
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Method: MethodGTN, IPC: 1, Init: InitMean}, "for dm, dc and dsa"},
		{Config{Method: MethodDM, IPC: 1, Init: "median"}, "want real, noise or mean"},
		{Config{Method: MethodDM, IPC: 1, Init: InitMean, DP: &DPConfig{SampleRate: 0.5, Clip: 1, Noise: 1, InitClip: -1}}, "init clipping norm -1"},
		{Config{Method: MethodDM, IPC: 1, Init: InitMean, DP: &DPConfig{SampleRate: 0.5, Clip: 1, Noise: 1, InitNoise: math.Inf(1)}}, "init noise multiplier"},
	} {
		if _, err := New(c.cfg, "mnist"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one containing %q", c.cfg, err, c.want)
		}
	}
}
