package distill

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/tensor"
)

// correlatedSet returns n images of shape (c, h, w) whose values are
// correlated (smoothed noise plus a per-image offset), normalized with the
// given constants.
func correlatedSet(t *testing.T, n, c, h, w int, seed uint64) *data.Dataset {
	t.Helper()
	rng := tensor.NewRNG(seed, 0)
	x := tensor.New[float32](n, c, h, w)
	noise := tensor.New[float32](n, c, h, w)
	tensor.FillNormal(rng, noise, 0, 1)
	off := tensor.New[float32](n)
	tensor.FillNormal(rng, off, 0, 1)
	for i := range n {
		for ch := range c {
			for y := range h {
				for xx := range w {
					var s float32
					for dy := -1; dy <= 1; dy++ {
						for dx := -1; dx <= 1; dx++ {
							yy, xz := (y+dy+h)%h, (xx+dx+w)%w
							s += noise.Data[((i*c+ch)*h+yy)*w+xz]
						}
					}
					x.Data[((i*c+ch)*h+y)*w+xx] = 0.3*s + 0.8*off.Data[i] + float32(ch)
				}
			}
		}
	}
	mean, std := make([]float32, c), make([]float32, c)
	for ch := range c {
		mean[ch], std[ch] = 0.2+0.1*float32(ch), 0.5
	}
	y := make([]int, n)
	d, err := data.New("test", x, y, 1, mean, std, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// pixelCov returns the unbiased covariance (float64) of rows of x (N, D).
func pixelCov(x []float32, n, d int) []float64 {
	mean := make([]float64, d)
	for i := range n {
		for j := range d {
			mean[j] += float64(x[i*d+j])
		}
	}
	for j := range mean {
		mean[j] /= float64(n)
	}
	cov := make([]float64, d*d)
	for i := range n {
		for a := range d {
			va := float64(x[i*d+a]) - mean[a]
			for b := range d {
				cov[a*d+b] += va * (float64(x[i*d+b]) - mean[b])
			}
		}
	}
	for k := range cov {
		cov[k] /= float64(n - 1)
	}
	return cov
}

// The whitened training set has covariance Σ(Σ + εI)⁻¹ = I − ε·W², i.e.
// the identity up to the regularisation; W(Σ + εI)W = I; W·W⁻¹ = I.
func TestZCAWhitens(t *testing.T) {
	d := correlatedSet(t, 600, 2, 3, 4, 1)
	const eps = 0.1
	z, err := FitZCA(d, eps)
	if err != nil {
		t.Fatal(err)
	}
	n, dim := d.Len(), 24
	// Covariance of the pixel images, independently.
	pix := make([]float32, n*dim)
	for i := range n {
		for j := range dim {
			ch := j / 12
			pix[i*dim+j] = d.X.Data[i*dim+j]*d.Std[ch] + d.Mean[ch]
		}
	}
	sigma := pixelCov(pix, n, dim)
	W, Winv := z.Transform.Data, z.Inverse.Data
	at := func(m []float32, i, j int) float64 { return float64(m[i*dim+j]) }
	var worstA, worstInv, worstCov float64
	wd, err := z.Dataset(d)
	if err != nil {
		t.Fatal(err)
	}
	covW := pixelCov(wd.X.Data, n, dim)
	for i := range dim {
		for j := range dim {
			var a, inv, w2 float64
			for k := range dim {
				var ak float64 // ((Σ + εI)W)[k][j]
				for l := range dim {
					s := sigma[k*dim+l]
					if k == l {
						s += eps
					}
					ak += s * at(W, l, j)
				}
				a += at(W, i, k) * ak
				inv += at(W, i, k) * at(Winv, k, j)
				w2 += at(W, i, k) * at(W, k, j)
			}
			id := 0.0
			if i == j {
				id = 1
			}
			worstA = max(worstA, math.Abs(a-id))
			worstInv = max(worstInv, math.Abs(inv-id))
			worstCov = max(worstCov, math.Abs(covW[i*dim+j]-(id-eps*w2)))
		}
	}
	t.Logf("max |W(Σ+εI)W − I| %.2g, |W·W⁻¹ − I| %.2g, |cov(whitened) − (I − εW²)| %.2g", worstA, worstInv, worstCov)
	if worstA > 1e-4 || worstInv > 1e-4 || worstCov > 1e-4 {
		t.Fatal("ZCA is not a whitening with regularisation ε")
	}
	// The whitened mean is zero.
	for j := range dim {
		var m float64
		for i := range n {
			m += float64(wd.X.Data[i*dim+j])
		}
		if math.Abs(m/float64(n)) > 1e-4 {
			t.Fatalf("whitened mean of value %d is %g", j, m/float64(n))
		}
	}
}

// Whiten and Unwhiten invert each other, on training images and on
// arbitrary (synthetic) ones; the transform survives Save and ReadZCA; a
// synthetic set round-trips through ExportSet and ImportSet.
func TestZCAInvertAndSave(t *testing.T) {
	d := correlatedSet(t, 300, 3, 4, 4, 2)
	z, err := FitZCA(d, 0) // default regularisation
	if err != nil {
		t.Fatal(err)
	}
	if z.Eps != DefaultZCAReg {
		t.Fatalf("eps %v", z.Eps)
	}
	other := tensor.New[float32](7, 3, 4, 4)
	tensor.FillNormal(tensor.NewRNG(5, 0), other, 0, 2)
	maxDiff := func(a, b []float32) float64 {
		var w float64
		for i := range a {
			w = max(w, math.Abs(float64(a[i]-b[i])))
		}
		return w
	}
	for _, x := range []*tensor.Tensor[float32]{d.X, other} {
		if e := maxDiff(z.Unwhiten(z.Whiten(x)).Data, x.Data); e > 1e-4 {
			t.Errorf("Unwhiten∘Whiten differs from the identity by %g", e)
		}
		if e := maxDiff(z.Whiten(z.Unwhiten(x)).Data, x.Data); e > 1e-4 {
			t.Errorf("Whiten∘Unwhiten differs from the identity by %g", e)
		}
	}
	path := filepath.Join(t.TempDir(), "zca.npz")
	if err := z.Save(path); err != nil {
		t.Fatal(err)
	}
	r, err := ReadZCA(path)
	if err != nil {
		t.Fatal(err)
	}
	if r.Eps != z.Eps || !slices.Equal(r.Shape, z.Shape) || !slices.Equal(r.Mean, z.Mean) || !slices.Equal(r.Transform.Data, z.Transform.Data) ||
		!slices.Equal(r.Inverse.Data, z.Inverse.Data) || !slices.Equal(r.PixelMean, z.PixelMean) || !slices.Equal(r.PixelStd, z.PixelStd) {
		t.Fatal("ZCA changed in the file")
	}
	syn := &SyntheticSet{X: z.Whiten(other), Y: make([]int, 7), Mean: d.Mean, Std: d.Std, Classes: 1}
	exp, err := z.ExportSet(syn)
	if err != nil {
		t.Fatal(err)
	}
	back, err := r.ImportSet(exp)
	if err != nil {
		t.Fatal(err)
	}
	if e := maxDiff(back.X.Data, syn.X.Data); e > 1e-4 {
		t.Errorf("ExportSet/ImportSet round trip off by %g", e)
	}
	// A set normalized differently is refused.
	bad := syn.Clone()
	bad.Mean = []float32{0, 0, 0}
	if _, err := z.ImportSet(bad); err == nil {
		t.Error("a set with other normalization constants was accepted")
	}
}

// Fitting on the MNIST training set (60 000 × 784) takes seconds.
func TestZCAMNISTRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	train, _ := loadMNIST(t)
	z, err := FitZCA(train, DefaultZCAReg)
	if err != nil {
		t.Fatal(err)
	}
	sub := train.Slice(2000)
	w := z.Whiten(sub.X)
	var e float64
	for i, v := range z.Unwhiten(w).Data {
		e = max(e, math.Abs(float64(v-sub.X.Data[i])))
	}
	if e > 1e-3 {
		t.Errorf("MNIST round trip off by %g", e)
	}
}

// BenchmarkFitZCA times the ZCA fit on the 60 000 MNIST training images
// (784 dimensions); the speed target lives here, not in a timed test:
//
//	go test ./distill/ -run '^$' -bench FitZCA -benchtime 2x
func BenchmarkFitZCA(b *testing.B) {
	train, _ := loadMNIST(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := FitZCA(train, DefaultZCAReg); err != nil {
			b.Fatal(err)
		}
	}
}

// Fitting at CIFAR-10's dimension (3072) on 10 000 and 20 000 smooth
// random images (the covariance's cost grows linearly with the count, the
// square roots' does not); set FEDSIM_ZCA_TIMING=1 to run it.
func TestZCACIFARSizeTime(t *testing.T) {
	if os.Getenv("FEDSIM_ZCA_TIMING") == "" {
		t.Skip("set FEDSIM_ZCA_TIMING=1")
	}
	for _, n := range []int{10000, 20000} {
		d := correlatedSet(t, n, 3, 32, 32, 3)
		start := time.Now()
		if _, err := FitZCA(d, DefaultZCAReg); err != nil {
			t.Fatal(err)
		}
		t.Logf("ZCA fit, %d × 3072: %.2fs", n, time.Since(start).Seconds())
	}
}
