package data

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/tensor"
)

// Differentiable Siamese Augmentation (DSA; Zhao & Bilen, ICML 2021), as the
// DC/DSA/DM/MTT reference code implements it (utils.py: DiffAugment,
// ParamDiffAug).
//
// An augmentation is drawn once (DSA.Sample) and then applied (Apply) to
// any number of batches: sample i of every batch gets the parameters drawn
// for position i, so the real and the synthetic batch of a gradient- or
// distribution-matching step are transformed identically (the "Siamese"
// property). Every operation is linear in the images plus, for brightness,
// a constant, so Apply is differentiable with respect to the images to any
// order: each operation's backward rule is its adjoint, written as another
// operation whose own backward rule is the operation again.

// The DSA operation families, as named in strategy strings.
const (
	DSAColor  = "color"  // brightness, saturation, contrast (in that order)
	DSACrop   = "crop"   // random translation with zero padding
	DSACutout = "cutout" // a random square set to zero
	DSAFlip   = "flip"   // horizontal flip
	DSAScale  = "scale"  // independent x and y scaling (bilinear)
	DSARotate = "rotate" // rotation about the centre (bilinear)
)

// DSAOps lists the known operation families in the reference's order.
var DSAOps = []string{DSAColor, DSACrop, DSACutout, DSAFlip, DSAScale, DSARotate}

// Reference strategies: natural images (CIFAR) and digits (MNIST-like data
// sets, which must not be flipped).
const (
	DSAStrategyDefault = "color_crop_cutout_flip_scale_rotate"
	DSAStrategyDigits  = "color_crop_cutout_scale_rotate"
)

// Augmentation modes (ParamDiffAug.aug_mode in the reference).
const (
	// DSASingle draws one family of the strategy uniformly per call and
	// applies it to the whole batch (the reference default, 'S').
	DSASingle = "S"
	// DSAMultiple applies every family of the strategy in order ('M').
	DSAMultiple = "M"
)

// DSAParams are the augmentation magnitudes. The zero value stands for
// DefaultDSAParams (the reference's ParamDiffAug); set every field when
// changing any.
type DSAParams struct {
	Brightness    float64 // x + (u − 0.5)·Brightness
	Saturation    float64 // (x − mean_C x)·(u·Saturation) + mean_C x
	Contrast      float64 // (x − mean_CHW x)·(u + Contrast) + mean_CHW x
	CropRatio     float64 // shifts up to int(size·CropRatio + 0.5) pixels
	CutoutRatio   float64 // square side int(size·CutoutRatio + 0.5)
	FlipProb      float64 // probability of a horizontal flip
	ScaleRatio    float64 // sx, sy uniform in [1/ScaleRatio, ScaleRatio)
	RotateDegrees float64 // angle uniform in [−RotateDegrees, RotateDegrees)
	// Mode is DSASingle (also for "") or DSAMultiple.
	Mode string
	// Shared draws one parameter set and gives it to every sample of the
	// batch, as the reference does when DiffAugment is called with a seed
	// (its Siamese mode: theta[:] = theta[0]). When false, as in the
	// reference's unseeded calls, every sample gets its own parameters.
	Shared bool
}

// DefaultDSAParams returns the reference's parameters (ParamDiffAug).
func DefaultDSAParams() DSAParams {
	return DSAParams{
		Brightness: 1.0, Saturation: 2.0, Contrast: 0.5,
		CropRatio: 0.125, CutoutRatio: 0.5, FlipProb: 0.5,
		ScaleRatio: 1.2, RotateDegrees: 15.0,
		Mode: DSASingle,
	}
}

// Validate reports the first parameter that is out of range.
func (p DSAParams) Validate() error {
	for _, f := range []struct {
		name   string
		v      float64
		lo, hi float64
	}{
		{"Brightness", p.Brightness, 0, math.Inf(1)},
		{"Saturation", p.Saturation, 0, math.Inf(1)},
		{"Contrast", p.Contrast, 0, math.Inf(1)},
		{"CropRatio", p.CropRatio, 0, 1},
		{"CutoutRatio", p.CutoutRatio, 0, 1},
		{"FlipProb", p.FlipProb, 0, 1},
		{"ScaleRatio", p.ScaleRatio, 1, math.Inf(1)},
		{"RotateDegrees", p.RotateDegrees, 0, 180},
	} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) || f.v < f.lo || f.v > f.hi {
			return fmt.Errorf("data: DSA parameter %s = %v is outside [%v, %v]", f.name, f.v, f.lo, f.hi)
		}
	}
	if p.Mode != "" && p.Mode != DSASingle && p.Mode != DSAMultiple {
		return fmt.Errorf("data: DSA mode %q: want %q (one family per call) or %q (all families)", p.Mode, DSASingle, DSAMultiple)
	}
	return nil
}

// DSA is an augmentation policy: a strategy (families from DSAOps) and its
// parameters.
type DSA struct {
	Strategy []string
	Params   DSAParams
}

// NewDSA parses strategy (see ParseDSAStrategy) and pairs it with
// DefaultDSAParams.
func NewDSA(strategy string) (*DSA, error) {
	s, err := ParseDSAStrategy(strategy)
	if err != nil {
		return nil, err
	}
	return &DSA{Strategy: s, Params: DefaultDSAParams()}, nil
}

// ParseDSAStrategy splits a strategy such as "color_crop_cutout_flip_scale_rotate"
// into its families. Names are case-insensitive; "", "none" and "None" mean
// no augmentation (an empty list). Unknown, empty or repeated names are an
// error that names them and the valid ones.
func ParseDSAStrategy(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.EqualFold(s, "none") {
		return []string{}, nil
	}
	var out, unknown []string
	for _, f := range strings.Split(s, "_") {
		name := strings.ToLower(strings.TrimSpace(f))
		switch {
		case name == "":
			return nil, fmt.Errorf("data: DSA strategy %q has an empty operation name (want names joined by '_' from %s)", s, strings.Join(DSAOps, ", "))
		case !slices.Contains(DSAOps, name):
			unknown = append(unknown, fmt.Sprintf("%q", f))
		case slices.Contains(out, name):
			return nil, fmt.Errorf("data: DSA strategy %q names %q twice", s, name)
		default:
			out = append(out, name)
		}
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("data: DSA strategy %q: unknown operation(s) %s; valid operations: %s", s, strings.Join(unknown, ", "), strings.Join(DSAOps, ", "))
	}
	return out, nil
}

// String returns the strategy in the reference's form ("none" if empty).
func (d *DSA) String() string {
	if len(d.Strategy) == 0 {
		return "none"
	}
	return strings.Join(d.Strategy, "_")
}

// Validate checks the strategy and the parameters.
func (d *DSA) Validate() error {
	for i, op := range d.Strategy {
		if !slices.Contains(DSAOps, op) {
			return fmt.Errorf("data: DSA strategy operation %q is unknown; valid operations: %s", op, strings.Join(DSAOps, ", "))
		}
		if slices.Contains(d.Strategy[:i], op) {
			return fmt.Errorf("data: DSA strategy names %q twice", op)
		}
	}
	return d.params().Validate()
}

func (d *DSA) params() DSAParams {
	if d.Params == (DSAParams{}) {
		return DefaultDSAParams()
	}
	return d.Params
}

// ColorParam holds one sample's color coefficients: x ↦ x + Brightness,
// then saturation by the factor Saturation about the channel mean, then
// contrast by the factor Contrast about the image mean.
type ColorParam struct{ Brightness, Saturation, Contrast float64 }

// Offset is a pair of row and column offsets in pixels.
type Offset struct{ H, W int }

// ScaleParam holds one sample's scale factors (the diagonal of the affine
// matrix: sampling coordinates are multiplied by them, so factors above 1
// shrink the content).
type ScaleParam struct{ SX, SY float64 }

// Augmentation is one draw of a DSA policy for a batch of up to N images of
// size H×W. Only the slices of the families in Ops are set; entry i is the
// parameter of sample i. Augmentations may also be built by hand (tests,
// fixed transforms).
type Augmentation struct {
	N, H, W int
	// Ops lists the families to apply, in order.
	Ops []string
	// Color: see ColorParam.
	Color []ColorParam
	// Crop: output pixel (h, w) is input pixel (h+Crop[i].H, w+Crop[i].W),
	// zero outside the image.
	Crop []Offset
	// CutoutSize is the side of the cut-out rectangle (rows, columns) and
	// Cutout[i] its centre: rows Cutout[i].H − CutoutSize.H/2 to
	// Cutout[i].H − CutoutSize.H/2 + CutoutSize.H − 1, clipped to the image
	// (likewise for columns), are set to zero in every channel.
	CutoutSize Offset
	Cutout     []Offset
	// Flip[i] mirrors sample i horizontally.
	Flip []bool
	// Scale and Rotate (angle in radians, anticlockwise) define affine
	// sampling grids (PyTorch affine_grid / grid_sample, align_corners=True,
	// bilinear, zeros padding).
	Scale  []ScaleParam
	Rotate []float64
}

// Sample draws an augmentation for n images of size h×w from rng: in
// DSASingle mode one family of the strategy uniformly, then the parameters
// of the chosen families for each of the n samples (or one set copied to
// all, with Params.Shared). The draw depends only on the RNG's state and the
// arguments. An empty strategy yields an augmentation that changes nothing.
//
// Sample panics if d is invalid (see Validate; NewDSA returns valid
// policies), n is negative, or h or w is less than 1.
func (d *DSA) Sample(rng *tensor.RNG, n, h, w int) *Augmentation {
	if err := d.Validate(); err != nil {
		panic(err)
	}
	if n < 0 || h < 1 || w < 1 {
		panic(fmt.Sprintf("data: DSA Sample for %d images of %d×%d", n, h, w))
	}
	p := d.params()
	a := &Augmentation{N: n, H: h, W: w}
	switch {
	case len(d.Strategy) == 0:
		a.Ops = []string{}
	case p.Mode == DSAMultiple:
		a.Ops = slices.Clone(d.Strategy)
	default:
		a.Ops = []string{d.Strategy[rng.IntN(len(d.Strategy))]}
	}
	draws := n
	if p.Shared {
		draws = min(n, 1)
	}
	for _, op := range a.Ops {
		switch op {
		case DSAColor:
			a.Color = make([]ColorParam, n)
			for i := range draws {
				a.Color[i] = ColorParam{
					Brightness: (rng.Float64() - 0.5) * p.Brightness,
					Saturation: rng.Float64() * p.Saturation,
					Contrast:   rng.Float64() + p.Contrast,
				}
			}
			fillShared(a.Color, draws)
		case DSACrop:
			sh, sw := int(float64(h)*p.CropRatio+0.5), int(float64(w)*p.CropRatio+0.5)
			a.Crop = make([]Offset, n)
			for i := range draws {
				a.Crop[i] = Offset{rng.IntN(2*sh+1) - sh, rng.IntN(2*sw+1) - sw}
			}
			fillShared(a.Crop, draws)
		case DSACutout:
			ch, cw := int(float64(h)*p.CutoutRatio+0.5), int(float64(w)*p.CutoutRatio+0.5)
			a.CutoutSize = Offset{ch, cw}
			a.Cutout = make([]Offset, n)
			for i := range draws {
				// torch.randint(0, size + (1 − cut % 2)): an odd square's
				// centre stays inside the image.
				a.Cutout[i] = Offset{rng.IntN(h + 1 - ch%2), rng.IntN(w + 1 - cw%2)}
			}
			fillShared(a.Cutout, draws)
		case DSAFlip:
			a.Flip = make([]bool, n)
			for i := range draws {
				a.Flip[i] = rng.Float64() < p.FlipProb
			}
			fillShared(a.Flip, draws)
		case DSAScale:
			r := p.ScaleRatio
			a.Scale = make([]ScaleParam, n)
			for i := range draws {
				sx := rng.Float64()*(r-1/r) + 1/r
				sy := rng.Float64()*(r-1/r) + 1/r
				a.Scale[i] = ScaleParam{sx, sy}
			}
			fillShared(a.Scale, draws)
		case DSARotate:
			a.Rotate = make([]float64, n)
			for i := range draws {
				a.Rotate[i] = (rng.Float64() - 0.5) * 2 * p.RotateDegrees / 180 * math.Pi
			}
			fillShared(a.Rotate, draws)
		}
	}
	return a
}

func fillShared[E any](s []E, draws int) {
	if draws == 1 {
		for i := range s {
			s[i] = s[0]
		}
	}
}

// check validates a against a batch of n images of c channels and size
// h×w.
func (a *Augmentation) check(shape []int) error {
	if a == nil {
		return errors.New("data: DSA Apply with a nil augmentation")
	}
	if len(shape) != 4 {
		return fmt.Errorf("data: DSA Apply needs images (N, C, H, W), got shape %v", shape)
	}
	n, h, w := shape[0], shape[2], shape[3]
	if n > a.N || h != a.H || w != a.W {
		return fmt.Errorf("data: DSA augmentation drawn for up to %d images of %d×%d applied to shape %v", a.N, a.H, a.W, shape)
	}
	for _, op := range a.Ops {
		var have int
		switch op {
		case DSAColor:
			have = len(a.Color)
		case DSACrop:
			have = len(a.Crop)
		case DSACutout:
			have = len(a.Cutout)
			if a.CutoutSize.H < 0 || a.CutoutSize.W < 0 {
				return fmt.Errorf("data: DSA cutout size %v is negative", a.CutoutSize)
			}
		case DSAFlip:
			have = len(a.Flip)
		case DSAScale:
			have = len(a.Scale)
		case DSARotate:
			have = len(a.Rotate)
		default:
			return fmt.Errorf("data: DSA augmentation has unknown operation %q; valid operations: %s", op, strings.Join(DSAOps, ", "))
		}
		if have < n {
			return fmt.Errorf("data: DSA augmentation has %d %s parameters for %d images", have, op, n)
		}
	}
	return nil
}

// colorCoefs returns the per-sample coefficients (a, b, c, d) of the fused
// color map y = a·x + b·mean_C(x) + c·mean_CHW(x) + d, and its linear part
// (d = 0). Brightness b₀, saturation s and contrast k compose to
// a = k·s, b = k·(1 − s), c = 1 − k, d = b₀.
func (a *Augmentation) colorCoefs(n int) (full, lin []colorCoef) {
	full = make([]colorCoef, n)
	lin = make([]colorCoef, n)
	for i := range n {
		p := a.Color[i]
		s, k := p.Saturation, p.Contrast
		full[i] = colorCoef{k * s, k * (1 - s), 1 - k, p.Brightness}
		lin[i] = full[i]
		lin[i].d = 0
	}
	return full, lin
}

// cutoutRects returns the zeroed rectangle of each of the first n samples.
func (a *Augmentation) cutoutRects(n int) []rect {
	r := make([]rect, n)
	clamp := func(v, hi int) int { return min(max(v, 0), hi-1) }
	for i := range n {
		if a.CutoutSize.H == 0 || a.CutoutSize.W == 0 {
			continue // empty rectangle
		}
		h0 := a.Cutout[i].H - a.CutoutSize.H/2
		w0 := a.Cutout[i].W - a.CutoutSize.W/2
		// The reference clamps every index of the square, which clips it.
		r[i] = rect{
			h0: clamp(h0, a.H), h1: clamp(h0+a.CutoutSize.H-1, a.H) + 1,
			w0: clamp(w0, a.W), w1: clamp(w0+a.CutoutSize.W-1, a.W) + 1,
		}
	}
	return r
}

// thetas returns the 2×3 affine matrices (row-major) of op for n samples.
func (a *Augmentation) thetas(op string, n int) [][6]float64 {
	th := make([][6]float64, n)
	for i := range n {
		if op == DSAScale {
			th[i] = [6]float64{a.Scale[i].SX, 0, 0, 0, a.Scale[i].SY, 0}
		} else {
			s, c := math.Sincos(a.Rotate[i])
			th[i] = [6]float64{c, -s, 0, s, c, 0}
		}
	}
	return th
}

// Apply applies a to the images x (N, C, H, W) with N ≤ a.N: sample i gets
// the parameters of position i. The result is differentiable with respect to
// x to any order. Errors (a shape that does not fit a, a malformed
// augmentation) are recorded on x's tape, as autograd's operations do.
func Apply[T tensor.Float](a *Augmentation, x *autograd.Var[T]) *autograd.Var[T] {
	tp := x.Tape()
	if tp.Err() != nil {
		return placeholder(tp)
	}
	if err := a.check(x.Value.Shape); err != nil {
		tp.Fail(err)
		return placeholder(tp)
	}
	n, h, w := x.Value.Shape[0], x.Value.Shape[2], x.Value.Shape[3]
	for _, op := range a.Ops {
		switch op {
		case DSAColor:
			full, lin := a.colorCoefs(n)
			x = colorOp(x, full, lin)
		case DSACrop:
			x = translateOp(x, a.Crop[:n], 1)
		case DSACutout:
			x = cutoutOp(x, a.cutoutRects(n))
		case DSAFlip:
			x = flipOp(x, a.Flip[:n])
		case DSAScale, DSARotate:
			grid := tp.AllocUninit(n, h, w, 2)
			AffineGrid(grid, a.thetas(op, n))
			x = GridSample(x, grid)
		}
	}
	return x
}

// ApplyInto writes a applied to x (N, C, H, W; N ≤ a.N) into dst, without
// gradients: evaluation-time augmentation. dst must have x's shape; it may
// be x itself. It returns an error if the shapes do not fit a.
func ApplyInto[T tensor.Float](a *Augmentation, dst, x *tensor.Tensor[T]) error {
	if err := a.check(x.Shape); err != nil {
		return err
	}
	if !tensor.SameShape(dst.Shape, x.Shape) || len(dst.Data) != len(x.Data) {
		return fmt.Errorf("data: DSA ApplyInto destination has shape %v, images %v", dst.Shape, x.Shape)
	}
	n, h, w := x.Shape[0], x.Shape[2], x.Shape[3]
	if len(a.Ops) == 0 || len(x.Data) == 0 {
		if len(a.Ops) == 0 && len(x.Data) > 0 && &dst.Data[0] != &x.Data[0] {
			copy(dst.Data, x.Data)
		}
		return nil
	}
	var temps []*tensor.Tensor[T]
	defer func() {
		for _, t := range temps {
			tensor.Put(t)
		}
	}()
	temp := func() *tensor.Tensor[T] {
		t := tensor.GetUninit[T](x.Shape...)
		temps = append(temps, t)
		return t
	}
	cur := x
	if &dst.Data[0] == &x.Data[0] {
		// Kernels need distinct source and destination.
		cur = temp()
		copy(cur.Data, x.Data)
	}
	var spare [2]*tensor.Tensor[T]
	for k, op := range a.Ops {
		out := dst
		if k < len(a.Ops)-1 {
			// Alternate between two scratch buffers, never writing cur.
			if spare[k%2] == nil || spare[k%2] == cur {
				spare[k%2] = temp()
			}
			out = spare[k%2]
		}
		switch op {
		case DSAColor:
			full, _ := a.colorCoefs(n)
			colorKernel(out, cur, full)
		case DSACrop:
			translateKernel(out, cur, a.Crop[:n], 1)
		case DSACutout:
			cutoutKernel(out, cur, a.cutoutRects(n))
		case DSAFlip:
			flipKernel(out, cur, a.Flip[:n])
		case DSAScale, DSARotate:
			grid := tensor.GetUninit[T](n, h, w, 2)
			AffineGrid(grid, a.thetas(op, n))
			gridSampleKernel(out, cur, grid)
			tensor.Put(grid)
		}
		cur = out
	}
	return nil
}

// Augment draws an augmentation for x (N, C, H, W) from rng and applies it
// in place, without gradients (evaluation-time augmentation, the
// reference's unseeded DiffAugment). It returns an error if d is invalid or
// x is not a batch of images.
func Augment[T tensor.Float](d *DSA, rng *tensor.RNG, x *tensor.Tensor[T]) error {
	if err := d.Validate(); err != nil {
		return err
	}
	if len(x.Shape) != 4 || x.Shape[2] < 1 || x.Shape[3] < 1 {
		return fmt.Errorf("data: DSA Augment needs images (N, C, H, W), got shape %v", x.Shape)
	}
	a := d.Sample(rng, x.Shape[0], x.Shape[2], x.Shape[3])
	return ApplyInto(a, x, x)
}

func placeholder[T tensor.Float](tp *autograd.Tape[T]) *autograd.Var[T] {
	return tp.Const(&tensor.Tensor[T]{Shape: []int{0}})
}

// colorOp applies the fused color map; its backward is the linear part,
// which is self-adjoint (a·I plus multiples of the orthogonal projections
// onto channel means and image means), so it is its own backward rule.
func colorOp[T tensor.Float](x *autograd.Var[T], full, lin []colorCoef) *autograd.Var[T] {
	tp := x.Tape()
	if tp.Err() != nil {
		return placeholder(tp)
	}
	out := tp.AllocUninit(x.Value.Shape...)
	colorKernel(out, x.Value, full)
	return tp.Record(out, []*autograd.Var[T]{x}, func(g *autograd.Var[T], _ []bool) []*autograd.Var[T] {
		return []*autograd.Var[T]{colorOp(g, lin, lin)}
	})
}

// translateOp shifts by sign·shift; its adjoint shifts by −sign·shift.
func translateOp[T tensor.Float](x *autograd.Var[T], shift []Offset, sign int) *autograd.Var[T] {
	tp := x.Tape()
	if tp.Err() != nil {
		return placeholder(tp)
	}
	out := tp.AllocUninit(x.Value.Shape...)
	translateKernel(out, x.Value, shift, sign)
	return tp.Record(out, []*autograd.Var[T]{x}, func(g *autograd.Var[T], _ []bool) []*autograd.Var[T] {
		return []*autograd.Var[T]{translateOp(g, shift, -sign)}
	})
}

// cutoutOp multiplies by a 0/1 mask: self-adjoint.
func cutoutOp[T tensor.Float](x *autograd.Var[T], r []rect) *autograd.Var[T] {
	tp := x.Tape()
	if tp.Err() != nil {
		return placeholder(tp)
	}
	out := tp.AllocUninit(x.Value.Shape...)
	cutoutKernel(out, x.Value, r)
	return tp.Record(out, []*autograd.Var[T]{x}, func(g *autograd.Var[T], _ []bool) []*autograd.Var[T] {
		return []*autograd.Var[T]{cutoutOp(g, r)}
	})
}

// flipOp mirrors selected samples: a symmetric permutation, self-adjoint.
func flipOp[T tensor.Float](x *autograd.Var[T], flip []bool) *autograd.Var[T] {
	tp := x.Tape()
	if tp.Err() != nil {
		return placeholder(tp)
	}
	out := tp.AllocUninit(x.Value.Shape...)
	flipKernel(out, x.Value, flip)
	return tp.Record(out, []*autograd.Var[T]{x}, func(g *autograd.Var[T], _ []bool) []*autograd.Var[T] {
		return []*autograd.Var[T]{flipOp(g, flip)}
	})
}

// GridSample samples x (N, C, H, W) at the points of grid (N, Ho, Wo, 2),
// returning (N, C, Ho, Wo): PyTorch's F.grid_sample with bilinear
// interpolation, zeros padding and align_corners=True. grid[n, i, j] holds
// (x, y) in normalized coordinates: −1 and 1 are the centres of the first
// and last column (x) or row (y). The grid is a constant; the result is
// differentiable with respect to x to any order (the backward rule is
// GridSampleAdjoint, whose backward rule is GridSample); the backward rules
// read grid, so it must not change until the tape is released. Shape
// mismatches are recorded on the tape.
func GridSample[T tensor.Float](x *autograd.Var[T], grid *tensor.Tensor[T]) *autograd.Var[T] {
	tp := x.Tape()
	if tp.Err() != nil {
		return placeholder(tp)
	}
	xs := x.Value.Shape
	if len(xs) != 4 || !gridFits(grid, xs[0]) {
		tp.Failf("GridSample: images %v and grid %v: want (N, C, H, W) and (N, Ho, Wo, 2)", xs, grid.Shape)
		return placeholder(tp)
	}
	h, w := xs[2], xs[3]
	out := tp.AllocUninit(xs[0], xs[1], grid.Shape[1], grid.Shape[2])
	gridSampleKernel(out, x.Value, grid)
	return tp.Record(out, []*autograd.Var[T]{x}, func(g *autograd.Var[T], _ []bool) []*autograd.Var[T] {
		return []*autograd.Var[T]{GridSampleAdjoint(g, grid, h, w)}
	})
}

// GridSampleAdjoint is the adjoint of GridSample for images of size h×w:
// it scatters g (N, C, Ho, Wo) with the bilinear weights of grid
// (N, Ho, Wo, 2) into a zero (N, C, h, w). Its backward rule is GridSample.
// Shape mismatches are recorded on the tape.
func GridSampleAdjoint[T tensor.Float](g *autograd.Var[T], grid *tensor.Tensor[T], h, w int) *autograd.Var[T] {
	tp := g.Tape()
	if tp.Err() != nil {
		return placeholder(tp)
	}
	gs := g.Value.Shape
	if len(gs) != 4 || h < 1 || w < 1 || !gridFits(grid, gs[0]) || grid.Shape[1] != gs[2] || grid.Shape[2] != gs[3] {
		tp.Failf("GridSampleAdjoint: gradient %v, grid %v, image size %d×%d: want (N, C, Ho, Wo) and (N, Ho, Wo, 2)", gs, grid.Shape, h, w)
		return placeholder(tp)
	}
	out := tp.AllocUninit(gs[0], gs[1], h, w)
	gridSampleAdjointKernel(out, g.Value, grid)
	return tp.Record(out, []*autograd.Var[T]{g}, func(gg *autograd.Var[T], _ []bool) []*autograd.Var[T] {
		return []*autograd.Var[T]{GridSample(gg, grid)}
	})
}

func gridFits[T tensor.Float](grid *tensor.Tensor[T], n int) bool {
	s := grid.Shape
	return len(s) == 4 && s[0] == n && s[3] == 2 && len(grid.Data) == tensor.Size(s)
}
