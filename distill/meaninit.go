package distill

import (
	"fmt"
	"math"
	"slices"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/tensor"
)

// InitMean starts every synthetic image of a class from the class's mean
// image, averaged over MeanInitPool×MeanInitPool blocks and repeated back to
// full size, plus MeanInitJitter·N(0, 1) per pixel so that the images of a
// class differ. With DP the mean is released by the Gaussian mechanism
// (DPConfig.InitClip, DPConfig.InitNoise): a private run may start from a
// blurred, noisy prototype of its classes instead of pure noise, and the
// release is charged to the budget beside the iterations
// (Config.DPInitRelease). The blocks matter under DP: a pooled image is a
// sixteenth of the values with a quarter of the norm, so the same noise
// multiplier puts four times less noise on each value.
const InitMean = "mean"

const (
	// MeanInitPool is the side of the blocks the class mean is averaged
	// over (4: MNIST's 28×28 becomes 7×7).
	MeanInitPool = 4
	// MeanInitJitter is the standard deviation of the per-pixel noise
	// added to each copy of the mean (half the noise start's).
	MeanInitJitter = 0.5
	// DefaultDPInitClip bounds each real image's pooled L2 norm in the
	// private release: a normalized MNIST or Fashion-MNIST image pooled
	// over 4×4 blocks has norm 4–8 (median about 6).
	DefaultDPInitClip = 6
	// DefaultDPInitNoise is the release's noise multiplier: one Gaussian
	// mechanism at σ = 5 costs α/50 of Rényi DP at order α, little beside
	// a few hundred subsampled iterations.
	DefaultDPInitNoise = 5
)

// poolSize returns the pooled height and width of an h×w image (ceil).
func poolSize(h, w int) (int, int) {
	return (h + MeanInitPool - 1) / MeanInitPool, (w + MeanInitPool - 1) / MeanInitPool
}

// poolImage averages img (c×h×w, row-major) over MeanInitPool blocks into
// out (c×ph×pw); edge blocks average the pixels they have.
func poolImage(img []float32, c, h, w int, out []float64) {
	ph, pw := poolSize(h, w)
	clear(out)
	for ch := range c {
		for y := range h {
			for x := range w {
				out[ch*ph*pw+(y/MeanInitPool)*pw+x/MeanInitPool] += float64(img[(ch*h+y)*w+x])
			}
		}
		for by := range ph {
			rows := min(h, (by+1)*MeanInitPool) - by*MeanInitPool
			for bx := range pw {
				cols := min(w, (bx+1)*MeanInitPool) - bx*MeanInitPool
				out[ch*ph*pw+by*pw+bx] /= float64(rows * cols)
			}
		}
	}
}

// ClassMeans returns, for each class c with indices byClass[c] in real, the
// mean of the class's images pooled over MeanInitPool blocks (shape
// c×ph×pw, flattened). With dp non-nil each pooled image is clipped to L2
// norm dp.InitClip and the class sums get N(0, (dp.InitNoise·dp.InitClip)²)
// on every value before they are divided by the class size: one Gaussian
// mechanism of sensitivity InitClip over the vector of all class sums (an
// example is in one class). The class sizes are treated as public, as the
// private iterations' denominators q·n_c are. An empty class gets a zero
// mean (plus noise under DP).
func ClassMeans(real *data.Dataset, byClass [][]int, dp *DPConfig, rng *tensor.RNG) [][]float64 {
	shape := real.ImageShape()
	c, h, w := shape[0], shape[1], shape[2]
	ph, pw := poolSize(h, w)
	d := c * ph * pw
	sz := c * h * w
	clip := math.Inf(1)
	var std float64
	if dp != nil {
		clip, std = dp.InitClip, dp.InitNoise*dp.InitClip
	}
	means := make([][]float64, len(byClass))
	pooled := make([]float64, d)
	for k, idx := range byClass {
		sum := make([]float64, d)
		for _, i := range idx {
			poolImage(real.X.Data[i*sz:(i+1)*sz], c, h, w, pooled)
			s := clipScale(pooled, clip)
			for j, v := range pooled {
				sum[j] += s * v
			}
		}
		AddGaussian(sum, std, rng)
		for j := range sum {
			sum[j] /= float64(max(len(idx), 1))
		}
		means[k] = sum
	}
	return means
}

// clipScale is the factor that brings v to L2 norm at most clip.
func clipScale(v []float64, clip float64) float64 {
	var ss float64
	for _, x := range v {
		ss += x * x
	}
	if n := math.Sqrt(ss); n > clip {
		return clip / n
	}
	return 1
}

// meanSet is InitMean's start: ipc copies of each class's pooled mean
// (ClassMeans), each pixel taking its block's value, plus jitter.
func meanSet(real *data.Dataset, byClass [][]int, ipc int, dp *DPConfig, rng *tensor.RNG) *SyntheticSet {
	shape := real.ImageShape()
	c, h, w := shape[0], shape[1], shape[2]
	ph, pw := poolSize(h, w)
	means := ClassMeans(real, byClass, dp, rng)
	x := tensor.New[float32](real.Classes*ipc, c, h, w)
	tensor.FillNormal(rng, x, 0, MeanInitJitter)
	y := make([]int, 0, real.Classes*ipc)
	sz := c * h * w
	for k := range real.Classes {
		for i := range ipc {
			img := x.Data[(k*ipc+i)*sz : (k*ipc+i+1)*sz]
			for ch := range c {
				for yy := range h {
					for xx := range w {
						img[(ch*h+yy)*w+xx] += float32(means[k][ch*ph*pw+(yy/MeanInitPool)*pw+xx/MeanInitPool])
					}
				}
			}
			y = append(y, k)
		}
	}
	return &SyntheticSet{X: x, Y: y, Mean: slices.Clone(real.Mean), Std: slices.Clone(real.Std), Classes: real.Classes}
}

// DPInitRelease reports whether a run of cfg starts with a private release
// of the class means (InitMean under DP) and its noise multiplier: one
// Gaussian mechanism without subsampling (sampling rate 1), which an
// accountant composes with the DPStepsPerIteration steps of each iteration.
func (cfg Config) DPInitRelease() (sigma float64, ok bool) {
	if cfg.DP == nil || cfg.Init != InitMean {
		return 0, false
	}
	return cfg.DP.InitNoise, true
}

// validateInitRelease checks the private release's settings.
func (c DPConfig) validateInitRelease() error {
	switch {
	case !(c.InitClip > 0) || math.IsInf(c.InitClip, 0):
		return fmt.Errorf("distill: dp: init clipping norm %g must be positive and finite (pooled images have norm about %d)", c.InitClip, DefaultDPInitClip)
	case !(c.InitNoise > 0) || math.IsInf(c.InitNoise, 0):
		return fmt.Errorf("distill: dp: init noise multiplier %g must be positive and finite (without noise the class means are released as they are; %d is the default)", c.InitNoise, DefaultDPInitNoise)
	}
	return nil
}
