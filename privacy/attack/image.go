package attack

import (
	"fmt"
	"math"
)

// PSNR returns the peak signal-to-noise ratio 10·log10(R²/MSE) in dB of x
// against the reference ref (same length), R the data range (1 for pixels
// in [0, 1]); +Inf when they are equal.
func PSNR(x, ref []float64, dataRange float64) (float64, error) {
	if len(x) != len(ref) || len(x) == 0 || !(dataRange > 0) {
		return 0, fmt.Errorf("attack: PSNR of %d values against %d, range %g: want equal non-empty lengths and a positive range", len(x), len(ref), dataRange)
	}
	var mse float64
	for i := range x {
		d := x[i] - ref[i]
		mse += d * d
	}
	mse /= float64(len(x))
	if mse == 0 {
		return math.Inf(1), nil
	}
	return 10 * math.Log10(dataRange*dataRange/mse), nil
}

// SSIM constants (Wang et al. 2004): an 11×11 Gaussian window of σ 1.5,
// K1 = 0.01, K2 = 0.03.
const (
	ssimWin   = 11
	ssimSigma = 1.5
	ssimK1    = 0.01
	ssimK2    = 0.03
)

var ssimWeights = func() []float64 {
	w := make([]float64, ssimWin*ssimWin)
	var s float64
	c := float64(ssimWin-1) / 2
	for i := range ssimWin {
		for j := range ssimWin {
			v := math.Exp(-((float64(i)-c)*(float64(i)-c) + (float64(j)-c)*(float64(j)-c)) / (2 * ssimSigma * ssimSigma))
			w[i*ssimWin+j] = v
			s += v
		}
	}
	for i := range w {
		w[i] /= s
	}
	return w
}()

// SSIM returns the mean structural similarity of two images of c channels
// of h×w values each (channel-major, as a (C, H, W) tensor's data) with
// data range R: the Gaussian-windowed SSIM of Wang et al. (2004) averaged
// over every window position inside the image and over the channels.
// Images smaller than the 11×11 window use one window covering the whole
// image with uniform weights.
func SSIM(x, y []float64, c, h, w int, dataRange float64) (float64, error) {
	if c < 1 || h < 1 || w < 1 || len(x) != c*h*w || len(y) != c*h*w || !(dataRange > 0) {
		return 0, fmt.Errorf("attack: SSIM of %d and %d values as %d×%d×%d images, range %g", len(x), len(y), c, h, w, dataRange)
	}
	g := newSSIMGeom(c, h, w, dataRange)
	return g.ssim(x, g.stats(x), y, g.stats(y)), nil
}

// ssimGeom is the window layout of one image size; stats holds an
// image's windowed means and variances, so that comparing one image with
// many (NearestReal) computes only the cross terms per pair.
type ssimGeom struct {
	c, h, w, win int
	weights      []float64 // win×win, sum 1 (nil: one uniform window)
	c1, c2       float64
	pos          [][2]int // window origins
}

func newSSIMGeom(c, h, w int, dataRange float64) *ssimGeom {
	g := &ssimGeom{c: c, h: h, w: w, win: ssimWin, weights: ssimWeights,
		c1: (ssimK1 * dataRange) * (ssimK1 * dataRange), c2: (ssimK2 * dataRange) * (ssimK2 * dataRange)}
	if h < ssimWin || w < ssimWin {
		g.win, g.weights = 0, nil
		g.pos = [][2]int{{0, 0}}
		return g
	}
	for i := 0; i+ssimWin <= h; i++ {
		for j := 0; j+ssimWin <= w; j++ {
			g.pos = append(g.pos, [2]int{i, j})
		}
	}
	return g
}

// window calls f(k, weight) for every pixel index k of window p of channel
// ch.
func (g *ssimGeom) window(ch int, p [2]int, f func(k int, wt float64)) {
	wh, ww, wts := g.win, g.win, g.weights
	if wts == nil {
		wh, ww = g.h, g.w
	}
	base := ch * g.h * g.w
	u := 1 / float64(wh*ww)
	for a := range wh {
		for b := range ww {
			wt := u
			if wts != nil {
				wt = wts[a*ww+b]
			}
			f(base+(p[0]+a)*g.w+p[1]+b, wt)
		}
	}
}

// cross is the weighted covariance of x and y over window p of channel
// ch (the hot loop of NearestReal, written out without closures).
func (g *ssimGeom) cross(ch int, p [2]int, x, y []float64, mx, my float64) float64 {
	base := ch * g.h * g.w
	var cov float64
	if g.weights == nil {
		for k := base; k < base+g.h*g.w; k++ {
			cov += (x[k] - mx) * (y[k] - my)
		}
		return cov / float64(g.h*g.w)
	}
	for a := range g.win {
		row := base + (p[0]+a)*g.w + p[1]
		wts := g.weights[a*g.win : (a+1)*g.win]
		xs, ys := x[row:row+g.win], y[row:row+g.win]
		for b, wt := range wts {
			cov += wt * (xs[b] - mx) * (ys[b] - my)
		}
	}
	return cov
}

// stats returns, per channel and window, the weighted mean and variance.
func (g *ssimGeom) stats(x []float64) [][2]float64 {
	out := make([][2]float64, 0, g.c*len(g.pos))
	for ch := range g.c {
		for _, p := range g.pos {
			var m, m2 float64
			g.window(ch, p, func(k int, wt float64) { m += wt * x[k] })
			g.window(ch, p, func(k int, wt float64) { d := x[k] - m; m2 += wt * d * d })
			out = append(out, [2]float64{m, m2})
		}
	}
	return out
}

func (g *ssimGeom) ssim(x []float64, sx [][2]float64, y []float64, sy [][2]float64) float64 {
	var total float64
	i := 0
	for ch := range g.c {
		for _, p := range g.pos {
			mx, my := sx[i][0], sy[i][0]
			cov := g.cross(ch, p, x, y, mx, my)
			total += (2*mx*my + g.c1) * (2*cov + g.c2) / ((mx*mx + my*my + g.c1) * (sx[i][1] + sy[i][1] + g.c2))
			i++
		}
	}
	return total / float64(i)
}

// Nearest is, for one synthetic image, its most similar real image.
type Nearest struct {
	Index int     `json:"index"` // in the real set
	SSIM  float64 `json:"ssim"`
}

// NearestReal returns, for every synthetic image, the real image of the
// same label with the highest SSIM: the leakage measure of a released
// synthetic set (an SSIM near 1 means a real image was copied). Images are
// (C, H, W) in pixel space with range dataRange.
func NearestReal(syn [][]float64, synY []int, real [][]float64, realY []int, c, h, w int, dataRange float64) ([]Nearest, error) {
	if len(syn) != len(synY) || len(real) != len(realY) {
		return nil, fmt.Errorf("attack: %d synthetic images with %d labels, %d real with %d", len(syn), len(synY), len(real), len(realY))
	}
	if c < 1 || h < 1 || w < 1 || !(dataRange > 0) {
		return nil, fmt.Errorf("attack: nearest real image of %d×%d×%d images, range %g", c, h, w, dataRange)
	}
	g := newSSIMGeom(c, h, w, dataRange)
	check := func(kind string, i int, v []float64) error {
		if len(v) != c*h*w {
			return fmt.Errorf("attack: %s image %d has %d values, want %d×%d×%d", kind, i, len(v), c, h, w)
		}
		return nil
	}
	realStats := make([][][2]float64, len(real))
	for j, r := range real {
		if err := check("real", j, r); err != nil {
			return nil, err
		}
		realStats[j] = g.stats(r)
	}
	out := make([]Nearest, len(syn))
	for i, s := range syn {
		if err := check("synthetic", i, s); err != nil {
			return nil, err
		}
		ss := g.stats(s)
		out[i] = Nearest{Index: -1, SSIM: math.Inf(-1)}
		for j, r := range real {
			if realY[j] != synY[i] {
				continue
			}
			if v := g.ssim(s, ss, r, realStats[j]); v > out[i].SSIM {
				out[i] = Nearest{Index: j, SSIM: v}
			}
		}
		if out[i].Index < 0 {
			return nil, fmt.Errorf("attack: synthetic image %d has label %d, which no real image has", i, synY[i])
		}
	}
	return out, nil
}
