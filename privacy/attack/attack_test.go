package attack

import (
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

// AUC and TPR at low FPR against values worked by hand.
func TestROCHandWorked(t *testing.T) {
	// members 0.9, 0.7, 0.6; non-members 0.8, 0.5, 0.4: of the 9 pairs the
	// member wins 3 + 2 + 2 = 7.
	scores := []float64{0.9, 0.8, 0.7, 0.6, 0.5, 0.4}
	member := []bool{true, false, true, true, false, false}
	auc, err := AUC(scores, member)
	if err != nil || !near(auc, 7.0/9, 1e-12) {
		t.Fatalf("AUC %v (%v), want 7/9", auc, err)
	}
	r, _ := Curve(scores, member)
	// thresholds from the top: (0,1/3) (1/3,1/3) (1/3,2/3) (1/3,1) (2/3,1) (1,1)
	if got := r.TPRAt(0); !near(got, 1.0/3, 1e-12) {
		t.Fatalf("TPR at FPR 0: %v, want 1/3", got)
	}
	if got := r.TPRAt(0.34); !near(got, 1, 1e-12) {
		t.Fatalf("TPR at FPR 0.34: %v, want 1", got)
	}
	// A tie counts one half: member 1 against non-members 1 and 0.
	auc, _ = AUC([]float64{1, 1, 0}, []bool{true, false, false})
	if !near(auc, 0.75, 1e-12) {
		t.Fatalf("AUC with a tie %v, want 0.75", auc)
	}
	// Reversed scores give 1 − AUC.
	neg := make([]float64, len(scores))
	for i, s := range scores {
		neg[i] = -s
	}
	if auc, _ = AUC(neg, member); !near(auc, 2.0/9, 1e-12) {
		t.Fatalf("reversed AUC %v, want 2/9", auc)
	}
	for _, bad := range [][]bool{{true, true, true, true, true, true}, {true}} {
		if _, err := AUC(scores, bad); err == nil {
			t.Fatalf("membership %v: no error", bad)
		}
	}
}

func TestBootstrapInterval(t *testing.T) {
	rng := tensor.NewRNG(1, 0)
	var scores []float64
	var member []bool
	for i := range 400 {
		m := i%2 == 0
		s := rng.NormFloat64()
		if m {
			s += 1
		}
		scores, member = append(scores, s), append(member, m)
	}
	rep, err := Evaluate(scores, member, 200, 7)
	if err != nil {
		t.Fatal(err)
	}
	// Two unit Gaussians one apart: AUC = Φ(1/√2) ≈ 0.760.
	if !(rep.AUC.Lo <= rep.AUC.Value && rep.AUC.Value <= rep.AUC.Hi) || !(rep.AUC.Lo < 0.76 && 0.76 < rep.AUC.Hi) || rep.AUC.Hi-rep.AUC.Lo > 0.15 {
		t.Fatalf("AUC %v: want an interval around 0.76", rep.AUC)
	}
	if !(rep.TPR1.Lo <= rep.TPR1.Hi) || rep.Members != 200 || rep.NonMembers != 200 {
		t.Fatalf("report %+v", rep)
	}
	path := filepath.Join(t.TempDir(), "roc.png")
	if err := PlotROC(path, "test", []NamedCurve{{Name: "gauss", Curve: rep.Curve}}); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Size() < 1000 {
		t.Fatalf("ROC plot: %v", err)
	}
}

// LiRA uses per-example distributions: when every example has its own
// offset, a global threshold on the confidence is weak while the online
// and offline likelihood ratios are strong.
func TestLiRAOnGaussians(t *testing.T) {
	rng := tensor.NewRNG(3, 0)
	const n, k = 400, 32
	offset := make([]float64, n)
	for i := range offset {
		offset[i] = 10 * (rng.Float64() - 0.5)
	}
	draw := func(i int, in bool) float64 {
		v := offset[i] + 0.5*rng.NormFloat64()
		if in {
			v += 1.5
		}
		return v
	}
	sh := &Shadows{}
	for range k {
		conf, in := make([]float64, n), make([]bool, n)
		for i := range n {
			in[i] = rng.IntN(2) == 0
			conf[i] = draw(i, in[i])
		}
		if err := sh.Add(conf, in); err != nil {
			t.Fatal(err)
		}
	}
	target, member := make([]float64, n), make([]bool, n)
	for i := range n {
		member[i] = i%2 == 0
		target[i] = draw(i, member[i])
	}
	base, _ := AUC(target, member)
	for _, opt := range []LiRAOptions{{}, {Offline: true}, {GlobalVariance: true}, {Offline: true, GlobalVariance: true}} {
		s, err := LiRA(target, sh, opt)
		if err != nil {
			t.Fatal(err)
		}
		auc, _ := AUC(s, member)
		t.Logf("%+v: LiRA AUC %.3f, global threshold %.3f", opt, auc, base)
		if !(auc > 0.9 && auc > base+0.2) {
			t.Fatalf("%+v: LiRA AUC %.3f, global threshold %.3f", opt, auc, base)
		}
	}
	if _, err := LiRA(target[:3], sh, LiRAOptions{}); err == nil {
		t.Fatal("mismatched lengths: no error")
	}
}

var (
	mnistOnce   sync.Once
	mnistTrain  *data.Dataset
	mnistTest   *data.Dataset
	mnistLoadEr error
)

func loadMNIST(t *testing.T) (*data.Dataset, *data.Dataset) {
	t.Helper()
	mnistOnce.Do(func() {
		mnistTrain, mnistLoadEr = data.Load("mnist", "train", "")
		if mnistLoadEr == nil {
			mnistTest, mnistLoadEr = data.Load("mnist", "test", "")
		}
	})
	if mnistLoadEr != nil {
		t.Skip(mnistLoadEr)
	}
	return mnistTrain, mnistTest
}

// The loss-threshold attack finds the members of a model overfit to 64
// MNIST images (AUC clearly above chance) and is at chance when both sides
// are unseen data.
func TestLossThresholdMIA(t *testing.T) {
	train, test := loadMNIST(t)
	members := train.Slice(64)
	m, err := nn.New[float32]("mlp", members.ImageShape(), 10, tensor.NewRNG(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	tc := nn.TrainConfig[float32]{Epochs: 60, BatchSize: 16, LR: 0.05, Momentum: 0.9, Seed: 1}
	if err := nn.Train(m, members, tc, nil); err != nil {
		t.Fatal(err)
	}
	score := func(d *data.Dataset) []float64 {
		o, err := Query(m, d.X, d.Y, 0)
		if err != nil {
			t.Fatal(err)
		}
		return LossScores(o)
	}
	nonTest := test.Slice(64)
	unseen := train.Subset(seq(1000, 1064))
	in, out, other := score(members), score(nonTest), score(unseen)
	label := func(a, b []float64) ([]float64, []bool) {
		s := append(append([]float64(nil), a...), b...)
		m := make([]bool, len(s))
		for i := range a {
			m[i] = true
		}
		return s, m
	}
	auc, _ := AUC(label(in, out))
	chance, _ := AUC(label(other, out))
	t.Logf("loss-threshold AUC: overfit members %.3f, unseen vs unseen %.3f", auc, chance)
	if !(auc > 0.8) {
		t.Fatalf("AUC on an overfit model %.3f, want > 0.8", auc)
	}
	if !(math.Abs(chance-0.5) < 0.15) {
		t.Fatalf("AUC on independent data %.3f, want ≈ 0.5", chance)
	}
}

func seq(lo, hi int) []int {
	s := make([]int, 0, hi-lo)
	for i := lo; i < hi; i++ {
		s = append(s, i)
	}
	return s
}

// DLG with the iDLG label recovers one MNIST image from one gradient of a
// small MLP to PSNR > 30 dB (pixel range 1).
func TestDLGRecoversImage(t *testing.T) {
	train, _ := loadMNIST(t)
	img := train.Subset([]int{7})
	m, err := nn.NewMLP[float64](nn.MLPConfig{InChannels: 1, Height: 28, Width: 28, Classes: 10, Hidden: []int{32}}, tensor.NewRNG(5, 0))
	if err != nil {
		t.Fatal(err)
	}
	x := tensor.New[float64](img.X.Shape...)
	for i, v := range img.X.Data {
		x.Data[i] = float64(v)
	}
	g, err := Gradient[float64](m, x, img.Y)
	if err != nil {
		t.Fatal(err)
	}
	label, err := IDLGLabel(g[2]) // fc_2.weight (classes, 32)
	if err != nil || label != img.Y[0] {
		t.Fatalf("iDLG label %d (%v), true %d", label, err, img.Y[0])
	}
	res, err := Invert(m, g, x.Shape, []int{label}, DLGConfig{Iters: 200, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	pix := func(v []float64) []float64 {
		out := make([]float64, len(v))
		for i, a := range v {
			out[i] = math.Min(1, math.Max(0, a*float64(img.Std[0])+float64(img.Mean[0])))
		}
		return out
	}
	psnr, _ := PSNR(pix(res.X.Data), pix(x.Data), 1)
	ssim, _ := SSIM(pix(res.X.Data), pix(x.Data), 1, 28, 28, 1)
	t.Logf("DLG: %d iterations, gradient distance %.3g, PSNR %.1f dB, SSIM %.4f", res.Iters, res.Loss, psnr, ssim)
	if !(psnr > 30) {
		t.Fatalf("PSNR %.1f dB, want > 30", psnr)
	}
}

func TestPSNRAndSSIMHandWorked(t *testing.T) {
	zero, tenth := make([]float64, 16), make([]float64, 16)
	for i := range tenth {
		tenth[i] = 0.1
	}
	if p, _ := PSNR(zero, tenth, 1); !near(p, 20, 1e-9) {
		t.Fatalf("PSNR %v, want 20 dB (MSE 0.01)", p)
	}
	a, b := make([]float64, 16), make([]float64, 16)
	for i := range a {
		a[i], b[i] = 0.2, 0.4
	}
	// constant 4×4 images (one uniform window): (2ab + C1)/(a² + b² + C1)
	want := (2*0.2*0.4 + 1e-4) / (0.04 + 0.16 + 1e-4)
	if s, _ := SSIM(a, b, 1, 4, 4, 1); !near(s, want, 1e-12) {
		t.Fatalf("SSIM %v, want %v", s, want)
	}
	rng := tensor.NewRNG(2, 0)
	x, y := make([]float64, 28*28), make([]float64, 28*28)
	for i := range x {
		x[i] = rng.Float64()
		y[i] = 1 - x[i]
	}
	if s, _ := SSIM(x, x, 1, 28, 28, 1); !near(s, 1, 1e-12) {
		t.Fatalf("SSIM(x, x) = %v", s)
	}
	if s, _ := SSIM(x, y, 1, 28, 28, 1); !(s < 0) {
		t.Fatalf("SSIM of an image and its negative %v, want < 0", s)
	}
	nr, err := NearestReal([][]float64{x}, []int{1}, [][]float64{y, x, x}, []int{1, 0, 1}, 1, 28, 28, 1)
	if err != nil || nr[0].Index != 2 || !near(nr[0].SSIM, 1, 1e-12) {
		t.Fatalf("nearest real %+v (%v): want index 2 with SSIM 1", nr, err)
	}
}

// Every example is IN for exactly ⌊k/2⌋ shadows.
func TestShadowMasks(t *testing.T) {
	for _, k := range []int{2, 5, 16} {
		masks := ShadowMasks(100, k, 4)
		for i := range 100 {
			in := 0
			for j := range k {
				if masks[j][i] {
					in++
				}
			}
			if in != k/2 {
				t.Fatalf("k = %d: example %d is IN for %d shadows, want %d", k, i, in, k/2)
			}
		}
	}
}
