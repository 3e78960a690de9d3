package distill

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/internal/npz"
	"github.com/fedsim/fedsim/internal/parallel"
	"github.com/fedsim/fedsim/tensor"
)

// DefaultZCAReg is the regularisation of ZCA whitening that MTT, FTD,
// TESLA and KIP use (kornia.enhance.ZCAWhitening(eps=0.1)).
const DefaultZCAReg = 0.1

// ZCA is ZCA whitening as MTT and KIP apply it (kornia's ZCAWhitening with
// eps 0.1, unbiased covariance, compute_inv): fitted on the training
// images with pixel values in [0, 1] (MTT whitens ToTensor images, not
// normalized ones), it maps an image p (flattened, D = C·H·W values) to
//
//	w = (p − μ) · (Σ + εI)^{-1/2}
//
// and back with p = w · (Σ + εI)^{1/2} + μ, where μ and Σ are the mean and
// the covariance (divided by N − 1) of the training images. The whitened
// training set has covariance Σ(Σ + εI)^{-1}: the identity up to the
// regularisation.
//
// fedsim's images are normalized per channel ((p − PixelMean)/PixelStd,
// data.Dataset); Whiten and Unwhiten take and return normalized images, so
// the transform composes with the rest of the pipeline:
//
//   - distillation in ZCA space: distill on z.Dataset(train) (the whitened
//     training set; its Mean and Std stay the normalization constants);
//   - export: z.ExportSet(syn) maps the synthetic images back to the
//     normalized space, so synthetic.npz keeps DESIGN.md's contract (x in
//     the normalized space, mean and std undo the normalization; the PNG
//     grid and other tools need nothing else), and z.Save writes the
//     transform next to it (zca.npz);
//   - evaluation as MTT does it (networks trained and tested on whitened
//     images): EvalConfig.ZCA = z whitens the synthetic set and the test
//     set before training. The round trip whitened → normalized → whitened
//     is exact up to float32 rounding (relative 1e-5 or so).
type ZCA struct {
	// Eps is the regularisation ε.
	Eps float64
	// Shape is the image shape (C, H, W) the transform applies to.
	Shape []int
	// PixelMean and PixelStd are the per-channel normalization constants of
	// the images Whiten takes and Unwhiten returns.
	PixelMean, PixelStd []float32
	// Mean (D) is the per-value mean μ of the training images in pixel
	// space.
	Mean []float32
	// Transform is (Σ + εI)^{-1/2} and Inverse is (Σ + εI)^{1/2}, both
	// symmetric (D, D).
	Transform, Inverse *tensor.Tensor[float32]
}

// FitZCA fits ZCA whitening with regularisation eps (≤ 0: DefaultZCAReg)
// on the images of d, in pixel space (d's normalization undone). The
// covariance is accumulated in float64 from float32 products of blocks of
// images; the matrix square roots come from a scaled coupled Newton–Schulz
// iteration (matrix products only, so it runs on the tuned float32 GEMM;
// products known to be symmetric compute half the blocks). Measured on a
// 2-core machine shared with other jobs (load ≈ 9): 2.5 s for MNIST
// (60 000 × 784); about 33 s at CIFAR-10's D = 3072, nearly all of it the
// ~10 square-root iterations (3072³ products), not the covariance.
func FitZCA(d *data.Dataset, eps float64) (*ZCA, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	if eps <= 0 {
		eps = DefaultZCAReg
	}
	n := d.Len()
	if n < 2 {
		return nil, fmt.Errorf("distill: ZCA needs at least 2 images, %s has %d", d.Name, n)
	}
	shape := d.ImageShape()
	dim := shape[0] * shape[1] * shape[2]
	plane := shape[1] * shape[2]
	toPixels := func(dst, src []float32) { // one image
		for c := range shape[0] {
			m, s := d.Mean[c], d.Std[c]
			for j := c * plane; j < (c+1)*plane; j++ {
				dst[j] = src[j]*s + m
			}
		}
	}
	// Mean in float64.
	mean64 := make([]float64, dim)
	img := make([]float32, dim)
	for i := range n {
		toPixels(img, d.X.Data[i*dim:(i+1)*dim])
		for j, v := range img {
			mean64[j] += float64(v)
		}
	}
	mean := make([]float32, dim)
	for j := range mean64 {
		mean64[j] /= float64(n)
		mean[j] = float32(mean64[j])
	}
	// Covariance: float32 GEMM per block of images, summed in float64.
	const block = 1024
	buf := make([]float32, block*dim)
	part := make([]float32, dim*dim)
	cov := make([]float64, dim*dim)
	for lo := 0; lo < n; lo += block {
		hi := min(n, lo+block)
		for i := lo; i < hi; i++ {
			row := buf[(i-lo)*dim : (i-lo+1)*dim]
			toPixels(row, d.X.Data[i*dim:(i+1)*dim])
			for j := range row {
				row[j] = float32(float64(row[j]) - mean64[j])
			}
		}
		symGemm(true, dim, hi-lo, buf, dim, buf, dim, part)
		parallel.For(dim, 16, func(a, b int) {
			for r := a; r < b; r++ {
				for j, v := range part[r*dim : (r+1)*dim] {
					cov[r*dim+j] += float64(v)
				}
			}
		})
	}
	inv := 1 / float64(n-1)
	for i := range cov {
		cov[i] *= inv
	}
	for i := range dim {
		cov[i*dim+i] += eps
	}
	tr, isr, err := sqrtPair(cov, dim, eps)
	if err != nil {
		return nil, err
	}
	return &ZCA{Eps: eps, Shape: shape, PixelMean: slices.Clone(d.Mean), PixelStd: slices.Clone(d.Std), Mean: mean, Transform: isr, Inverse: tr}, nil
}

// sqrtPair returns A^{1/2} and A^{-1/2} of a symmetric positive definite
// A (dim×dim, row-major float64) whose eigenvalues are at least lmin, by
// the coupled Newton–Schulz iteration Y ← Y·T, Z ← T·Z with
// T = (α/2)(3I − α²·Z·Y) on A/c (c = ‖A‖_F ≥ λ_max, so the eigenvalues'
// square roots lie in [l, 1] with l = sqrt(lmin/c)). α is Chen & Chow's
// scaling sqrt(3/(1 + l + l²)), which maps [l, 1] into [l', 1] with l'
// ≈ 2.6 l for small l instead of 1.5 l, so about 10 iterations (30
// products) reach float32 precision for a condition number of 10⁴.
// Y → (A/c)^{1/2} and Z → (A/c)^{-1/2}; both stay polynomials in A, so
// they are symmetrised after every step against rounding drift.
func sqrtPair(a []float64, dim int, lmin float64) (sqrtA, invSqrtA *tensor.Tensor[float32], err error) {
	var fro float64
	for _, v := range a {
		fro += v * v
	}
	c := math.Sqrt(fro)
	if !(c > 0) || math.IsInf(c, 0) {
		return nil, nil, fmt.Errorf("distill: ZCA covariance has norm %v", c)
	}
	y := tensor.New[float32](dim, dim)
	for i, v := range a {
		y.Data[i] = float32(v / c)
	}
	z := tensor.New[float32](dim, dim)
	for i := range dim {
		z.Data[i*dim+i] = 1
	}
	p := tensor.New[float32](dim, dim)
	ny := tensor.New[float32](dim, dim)
	nz := tensor.New[float32](dim, dim)
	l := math.Sqrt(0.9 * lmin / c) // margin for rounding in the covariance
	polish := 0
	for iter := 0; ; iter++ {
		if iter > 100 {
			return nil, nil, errors.New("distill: ZCA square root did not converge")
		}
		alpha := math.Sqrt(3 / (1 + l + l*l))
		tensor.MatMul(p, z, y, false, false)
		s1, s2 := float32(1.5*alpha), float32(-alpha*alpha*alpha/2)
		parallel.For(dim, 64, func(lo, hi int) {
			for r := lo; r < hi; r++ {
				row := p.Data[r*dim : (r+1)*dim]
				for j := range row {
					row[j] *= s2
				}
				row[r] += s1
			}
		})
		symGemm(false, dim, dim, y.Data, dim, p.Data, dim, ny.Data)
		symGemm(false, dim, dim, p.Data, dim, z.Data, dim, nz.Data)
		y, ny = ny, y
		z, nz = nz, z
		l = alpha / 2 * l * (3 - alpha*alpha*l*l)
		if 1-l < 1e-7 {
			polish++
			if polish > 2 {
				break
			}
		}
	}
	// Check: Z·Y = I.
	tensor.MatMul(p, z, y, false, false)
	var worst float64
	for r := range dim {
		for j := range dim {
			want := 0.0
			if r == j {
				want = 1
			}
			worst = max(worst, math.Abs(float64(p.Data[r*dim+j])-want))
		}
	}
	if !(worst < 1e-2) {
		return nil, nil, fmt.Errorf("distill: ZCA square root is inaccurate (max |Z·Y − I| = %.3g)", worst)
	}
	sc := float32(math.Sqrt(c))
	for i := range y.Data {
		y.Data[i] *= sc
		z.Data[i] /= sc
	}
	return y, z, nil
}

// symGemm computes c = op(a)·b (n×n, row-major; op(a) is n×k, b is k×n)
// for a product known to be symmetric: it computes the blocks on and
// above the diagonal with the tuned GEMM (about half the work) and mirrors
// them, so the result is exactly symmetric. op(a) is aᵀ (a is k×n) when
// transA is set.
func symGemm(transA bool, n, k int, a []float32, lda int, b []float32, ldb int, c []float32) {
	const bs = 256
	for r0 := 0; r0 < n; r0 += bs {
		r1 := min(n, r0+bs)
		var ap []float32
		if transA {
			ap = a[r0:]
		} else {
			ap = a[r0*lda:]
		}
		tensor.Gemm(transA, false, r1-r0, n-r0, k, 1, ap, lda, b[r0:], ldb, 0, c[r0*n+r0:], n)
	}
	parallel.For(n, 64, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			for j := 0; j < i; j++ {
				c[i*n+j] = c[j*n+i]
			}
		}
	})
}

// dim returns D = C·H·W.
func (z *ZCA) dim() int { return z.Shape[0] * z.Shape[1] * z.Shape[2] }

func (z *ZCA) check(x *tensor.Tensor[float32], mean, std []float32) error {
	if x == nil || x.Rank() != 4 || !slices.Equal(x.Shape[1:], z.Shape) {
		var shape []int
		if x != nil {
			shape = x.Shape
		}
		return fmt.Errorf("distill: ZCA applies to images (N, %d, %d, %d), got %v", z.Shape[0], z.Shape[1], z.Shape[2], shape)
	}
	for c := range z.PixelMean {
		if c >= len(mean) || c >= len(std) || math.Abs(float64(mean[c]-z.PixelMean[c])) > 1e-4 || math.Abs(float64(std[c]-z.PixelStd[c])) > 1e-4 {
			return fmt.Errorf("distill: images normalized with mean %v std %v, but the ZCA transform was fitted with mean %v std %v", mean, std, z.PixelMean, z.PixelStd)
		}
	}
	return nil
}

// Whiten maps normalized images x (N, C, H, W) to ZCA space.
func (z *ZCA) Whiten(x *tensor.Tensor[float32]) *tensor.Tensor[float32] {
	n, d := x.Shape[0], z.dim()
	plane := z.Shape[1] * z.Shape[2]
	centred := make([]float32, len(x.Data))
	parallel.For(n, 16, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			for c := range z.Shape[0] {
				m, s := z.PixelMean[c], z.PixelStd[c]
				for j := c * plane; j < (c+1)*plane; j++ {
					centred[i*d+j] = x.Data[i*d+j]*s + m - z.Mean[j]
				}
			}
		}
	})
	out := tensor.New[float32](x.Shape...)
	tensor.Gemm(false, false, n, d, d, 1, centred, d, z.Transform.Data, d, 0, out.Data, d)
	return out
}

// Unwhiten maps images in ZCA space (N, C, H, W) back to normalized images.
func (z *ZCA) Unwhiten(w *tensor.Tensor[float32]) *tensor.Tensor[float32] {
	n, d := w.Shape[0], z.dim()
	plane := z.Shape[1] * z.Shape[2]
	out := tensor.New[float32](w.Shape...)
	tensor.Gemm(false, false, n, d, d, 1, w.Data, d, z.Inverse.Data, d, 0, out.Data, d)
	parallel.For(n, 16, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			for c := range z.Shape[0] {
				m, s := z.PixelMean[c], z.PixelStd[c]
				for j := c * plane; j < (c+1)*plane; j++ {
					out.Data[i*d+j] = (out.Data[i*d+j] + z.Mean[j] - m) / s
				}
			}
		}
	})
	return out
}

// Dataset returns a copy of d with whitened images (labels, classes, names
// and the normalization constants Mean and Std unchanged).
func (z *ZCA) Dataset(d *data.Dataset) (*data.Dataset, error) {
	if err := z.check(d.X, d.Mean, d.Std); err != nil {
		return nil, err
	}
	out := *d
	out.X = z.Whiten(d.X)
	return &out, nil
}

// ExportSet returns a copy of a synthetic set distilled in ZCA space with
// its images mapped back to the normalized space (synthetic.npz's
// contract).
func (z *ZCA) ExportSet(s *SyntheticSet) (*SyntheticSet, error) {
	if err := z.check(s.X, s.Mean, s.Std); err != nil {
		return nil, err
	}
	out := s.Clone()
	out.X = z.Unwhiten(s.X)
	return out, nil
}

// ImportSet returns a copy of a synthetic set in the normalized space
// (as read from synthetic.npz) with its images whitened.
func (z *ZCA) ImportSet(s *SyntheticSet) (*SyntheticSet, error) {
	if err := z.check(s.X, s.Mean, s.Std); err != nil {
		return nil, err
	}
	out := s.Clone()
	out.X = z.Whiten(s.X)
	return out, nil
}

// Save writes the transform to path (atomically) as an .npz file: eps
// float64 (1), shape int64 (3), pixel_mean and pixel_std float32 (C),
// mean float32 (D), transform and inverse float32 (D, D).
func (z *ZCA) Save(path string) error {
	shape := make([]int64, len(z.Shape))
	for i, v := range z.Shape {
		shape[i] = int64(v)
	}
	d := z.dim()
	var arrays []*npz.Array
	for _, a := range []struct {
		name  string
		shape []int
		data  any
	}{
		{"eps", []int{1}, []float64{z.Eps}},
		{"shape", []int{len(shape)}, shape},
		{"pixel_mean", []int{len(z.PixelMean)}, slices.Clone(z.PixelMean)},
		{"pixel_std", []int{len(z.PixelStd)}, slices.Clone(z.PixelStd)},
		{"mean", []int{d}, slices.Clone(z.Mean)},
		{"transform", []int{d, d}, z.Transform.Data},
		{"inverse", []int{d, d}, z.Inverse.Data},
	} {
		arr, err := npz.New(a.name, a.shape, a.data)
		if err != nil {
			return fmt.Errorf("distill: ZCA: %w", err)
		}
		arrays = append(arrays, arr)
	}
	if err := npz.Write(path, arrays); err != nil {
		return fmt.Errorf("distill: writing ZCA transform: %w", err)
	}
	return nil
}

// ReadZCA reads a transform written by Save.
func ReadZCA(path string) (*ZCA, error) {
	m, err := npz.Read(path)
	if err != nil {
		return nil, fmt.Errorf("distill: reading ZCA transform: %w", err)
	}
	bad := func(format string, args ...any) (*ZCA, error) {
		return nil, fmt.Errorf("distill: ZCA transform %s: "+format, append([]any{path}, args...)...)
	}
	get := func(name, dtype string, shape ...int) *npz.Array {
		a := m[name]
		if a == nil || a.DType != dtype || (shape != nil && !slices.Equal(a.Shape, shape)) {
			return nil
		}
		return a
	}
	sa := get("shape", "int64", 3)
	if sa == nil {
		return bad("no int64 array \"shape\" of 3 values")
	}
	z := &ZCA{}
	for _, v := range sa.Data.([]int64) {
		if v <= 0 || v > 1<<16 {
			return bad("image shape %v", sa.Data)
		}
		z.Shape = append(z.Shape, int(v))
	}
	c, d := z.Shape[0], z.dim()
	ea := get("eps", "float64", 1)
	pm, ps := get("pixel_mean", "float32", c), get("pixel_std", "float32", c)
	ma := get("mean", "float32", d)
	ta, ia := get("transform", "float32", d, d), get("inverse", "float32", d, d)
	if ea == nil || pm == nil || ps == nil || ma == nil || ta == nil || ia == nil {
		return bad("want eps float64 (1), pixel_mean and pixel_std float32 (%d), mean float32 (%d), transform and inverse float32 (%d, %d)", c, d, d, d)
	}
	z.Eps = ea.Data.([]float64)[0]
	z.PixelMean, z.PixelStd, z.Mean = pm.Data.([]float32), ps.Data.([]float32), ma.Data.([]float32)
	z.Transform, _ = tensor.FromSlice(ta.Data.([]float32), d, d)
	z.Inverse, _ = tensor.FromSlice(ia.Data.([]float32), d, d)
	for _, v := range [][]float32{z.PixelMean, z.PixelStd, z.Mean, z.Transform.Data, z.Inverse.Data} {
		if i := tensor.FirstNonFinite(v); i >= 0 {
			return bad("non-finite value")
		}
	}
	return z, nil
}
