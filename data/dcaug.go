package data

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/fedsim/fedsim/tensor"
)

// DC's own augmentation. Before DSA, the DC reference code trained its
// evaluation models on MNIST with a non-differentiable augmentation
// (utils.py augment, parameters from get_daparam): each image of a batch
// gets one operation, drawn uniformly from the strategy. DSA replaced it;
// it is kept so that a set can be evaluated exactly as the DC paper
// evaluated its MNIST sets (and the coreset baselines it compared with).
const (
	DCAugCrop   = "crop"   // pad by Crop with the batch's channel mean, crop back at a random offset
	DCAugScale  = "scale"  // resize each side by U(1−Scale, 1+Scale) (nearest), centre, zero fill
	DCAugRotate = "rotate" // rotate by a whole number of degrees in [−Rotate, Rotate)
	DCAugNoise  = "noise"  // add Gaussian noise of std Noise
	// DCAugStrategyDigits is the reference's strategy for MNIST.
	DCAugStrategyDigits = "crop_scale_rotate"
)

// DCAugOps lists DC's augmentation operations.
var DCAugOps = []string{DCAugCrop, DCAugScale, DCAugRotate, DCAugNoise}

// DCAug is DC's augmentation with its strategy and parameters.
type DCAug struct {
	Strategy []string
	Crop     int     // padding in pixels; the reference's 4
	Scale    float64 // relative size change; 0.2
	Rotate   int     // degrees; 45
	Noise    float64 // noise std; 0.001
}

// NewDCAug returns DC's augmentation with the reference's parameters
// (crop 4, scale 0.2, rotate 45, noise 0.001) and the operations of
// strategy, joined by '_' (e.g. DCAugStrategyDigits); "" and "none" give
// an augmentation that changes nothing. Unknown or repeated operations
// are an error that names them.
func NewDCAug(strategy string) (*DCAug, error) {
	a := &DCAug{Strategy: []string{}, Crop: 4, Scale: 0.2, Rotate: 45, Noise: 0.001}
	s := strings.TrimSpace(strategy)
	if s == "" || strings.EqualFold(s, "none") {
		return a, nil
	}
	for _, f := range strings.Split(s, "_") {
		op := strings.ToLower(strings.TrimSpace(f))
		switch {
		case !slices.Contains(DCAugOps, op):
			return nil, fmt.Errorf("data: DC augmentation strategy %q: unknown operation %q; valid operations: %s", strategy, f, strings.Join(DCAugOps, ", "))
		case slices.Contains(a.Strategy, op):
			return nil, fmt.Errorf("data: DC augmentation strategy %q names %q twice", strategy, op)
		}
		a.Strategy = append(a.Strategy, op)
	}
	return a, nil
}

// String returns the strategy in the reference's form ("none" if empty).
func (a *DCAug) String() string {
	if len(a.Strategy) == 0 {
		return "none"
	}
	return strings.Join(a.Strategy, "_")
}

// Apply returns an augmented copy of the batch x (N, C, H, W): image i gets
// one operation drawn uniformly from a.Strategy with its parameters, all
// from rng. Like the reference, crop pads with each channel's mean over
// the batch and rotate fills with the mean of those means, both taken
// before any image changes. x is not modified.
//
// Apply panics if x is not 4-D or a's parameters are negative.
func (a *DCAug) Apply(rng *tensor.RNG, x *tensor.Tensor[float32]) *tensor.Tensor[float32] {
	if len(x.Shape) != 4 {
		panic(fmt.Sprintf("data: DC augmentation of a batch of shape %v, want (N, C, H, W)", x.Shape))
	}
	if a.Crop < 0 || a.Scale < 0 || a.Rotate < 0 || a.Noise < 0 {
		panic(fmt.Sprintf("data: DC augmentation parameters crop %d, scale %g, rotate %d, noise %g must not be negative", a.Crop, a.Scale, a.Rotate, a.Noise))
	}
	out := x.Clone()
	if len(a.Strategy) == 0 {
		return out
	}
	n, c, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	mean := make([]float32, c)
	var all float64
	for ch := range c {
		var s float64
		for i := range n {
			for _, v := range x.Data[(i*c+ch)*h*w : (i*c+ch+1)*h*w] {
				s += float64(v)
			}
		}
		mean[ch] = float32(s / float64(n*h*w))
		all += float64(mean[ch])
	}
	fill := float32(all / float64(c))
	size := c * h * w
	for i := range n {
		img := out.Data[i*size : (i+1)*size]
		switch a.Strategy[rng.IntN(len(a.Strategy))] {
		case DCAugCrop:
			if a.Crop > 0 {
				dcCrop(img, c, h, w, a.Crop, mean, rng.IntN(2*a.Crop), rng.IntN(2*a.Crop))
			}
		case DCAugScale:
			sh := int((1 - a.Scale + 2*a.Scale*rng.Float64()) * float64(h))
			sw := int((1 - a.Scale + 2*a.Scale*rng.Float64()) * float64(h)) // the reference scales both by the height
			dcScale(img, c, h, w, max(sh, 1), max(sw, 1))
		case DCAugRotate:
			if a.Rotate > 0 {
				dcRotate(img, c, h, w, float64(rng.IntN(2*a.Rotate)-a.Rotate), fill)
			}
		case DCAugNoise:
			for j := range img {
				img[j] += float32(a.Noise * rng.NormFloat64())
			}
		}
	}
	return out
}

// dcCrop shifts img (c×h×w) in place as the reference's cropfun: the image
// is pasted at (pad, pad) into a canvas padded by pad on every side and
// filled with mean[ch], and the h×w window at (r, col) is kept
// (0 ≤ r, col < 2·pad).
func dcCrop(img []float32, c, h, w, pad int, mean []float32, r, col int) {
	src := slices.Clone(img)
	for ch := range c {
		for y := range h {
			for x := range w {
				sy, sx := y+r-pad, x+col-pad
				v := mean[ch]
				if sy >= 0 && sy < h && sx >= 0 && sx < w {
					v = src[(ch*h+sy)*w+sx]
				}
				img[(ch*h+y)*w+x] = v
			}
		}
	}
}

// dcScale resizes img (c×h×w) in place to sh×sw by nearest-neighbour
// sampling (PyTorch's F.interpolate default: source index
// ⌊dst·(in/out)⌋ in float32), centres it on a zero canvas of side
// max(sh, sw, h, w) and keeps the centred h×w window, as the reference's
// scalefun.
func dcScale(img []float32, c, h, w, sh, sw int) {
	src := slices.Clone(img)
	m := max(sh, sw, h, w)
	r0, c0 := (m-sh)/2, (m-sw)/2 // where the resized image sits on the canvas
	r1, c1 := (m-h)/2, (m-w)/2   // where the kept window starts
	fy, fx := float32(h)/float32(sh), float32(w)/float32(sw)
	for ch := range c {
		for y := range h {
			for x := range w {
				ty, tx := y+r1-r0, x+c1-c0 // position in the resized image
				var v float32
				if ty >= 0 && ty < sh && tx >= 0 && tx < sw {
					sy := min(int(float32(ty)*fy), h-1)
					sx := min(int(float32(tx)*fx), w-1)
					v = src[(ch*h+sy)*w+sx]
				}
				img[(ch*h+y)*w+x] = v
			}
		}
	}
}

// dcRotate rotates img (c×h×w) in place by deg degrees as the reference's
// rotatefun: scipy.ndimage.rotate with reshape (the output grows to hold
// the whole rotated image), filled with fill outside the input, then the
// centred h×w window. One difference: the interpolation is bilinear
// (scipy's order 1) where the reference uses scipy's default cubic
// spline.
func dcRotate(img []float32, c, h, w int, deg float64, fill float32) {
	src := slices.Clone(img)
	rad := deg * math.Pi / 180
	cos, sin := math.Cos(rad), math.Sin(rad)
	// scipy's output plane: the rotated corners' extent, rounded half up.
	oh := int(math.Abs(cos)*float64(h) + math.Abs(sin)*float64(w) + 0.5)
	ow := int(math.Abs(sin)*float64(h) + math.Abs(cos)*float64(w) + 0.5)
	r0, c0 := (oh-h)/2, (ow-w)/2
	ocy, ocx := float64(oh-1)/2, float64(ow-1)/2
	icy, icx := float64(h-1)/2, float64(w-1)/2
	for y := range h {
		for x := range w {
			oy, ox := float64(y+r0)-ocy, float64(x+c0)-ocx
			sy := cos*oy + sin*ox + icy
			sx := -sin*oy + cos*ox + icx
			for ch := range c {
				img[(ch*h+y)*w+x] = bilinear(src[ch*h*w:(ch+1)*h*w], h, w, sy, sx, fill)
			}
		}
	}
}

// bilinear samples plane (h×w) at (y, x); points outside [0, h−1]×[0, w−1]
// take fill (scipy's mode "constant": no interpolation beyond the edges).
func bilinear(plane []float32, h, w int, y, x float64, fill float32) float32 {
	const eps = 1e-9
	if y < -eps || y > float64(h-1)+eps || x < -eps || x > float64(w-1)+eps {
		return fill
	}
	y, x = min(max(y, 0), float64(h-1)), min(max(x, 0), float64(w-1))
	y0, x0 := int(y), int(x)
	y1, x1 := min(y0+1, h-1), min(x0+1, w-1)
	dy, dx := float32(y-float64(y0)), float32(x-float64(x0))
	top := plane[y0*w+x0]*(1-dx) + plane[y0*w+x1]*dx
	bot := plane[y1*w+x0]*(1-dx) + plane[y1*w+x1]*dx
	return top*(1-dy) + bot*dy
}
