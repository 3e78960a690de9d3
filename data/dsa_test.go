package data

import (
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/autograd/gradcheck"
	"github.com/fedsim/fedsim/tensor"
)

// ---- float64 references, written after the reference PyTorch code ----

type img4 struct {
	n, c, h, w int
	d          []float64
}

func newImg(shape []int, d []float64) *img4 {
	return &img4{shape[0], shape[1], shape[2], shape[3], d}
}

func (m *img4) at(i, c, y, x int) float64 { return m.d[((i*m.c+c)*m.h+y)*m.w+x] }
func (m *img4) set(i, c, y, x int, v float64) {
	m.d[((i*m.c+c)*m.h+y)*m.w+x] = v
}
func (m *img4) zero() *img4 { return &img4{m.n, m.c, m.h, m.w, make([]float64, len(m.d))} }

// refColor runs rand_brightness, rand_saturation and rand_contrast one
// after the other.
func refColor(x *img4, p []ColorParam) *img4 {
	b := x.zero()
	for i := range x.n {
		for c := range x.c {
			for y := range x.h {
				for q := range x.w {
					b.set(i, c, y, q, x.at(i, c, y, q)+p[i].Brightness)
				}
			}
		}
	}
	s := x.zero()
	for i := range x.n {
		for y := range x.h {
			for q := range x.w {
				var m float64
				for c := range x.c {
					m += b.at(i, c, y, q)
				}
				m /= float64(x.c)
				for c := range x.c {
					s.set(i, c, y, q, (b.at(i, c, y, q)-m)*p[i].Saturation+m)
				}
			}
		}
	}
	out := x.zero()
	for i := range x.n {
		var m float64
		for c := range x.c {
			for y := range x.h {
				for q := range x.w {
					m += s.at(i, c, y, q)
				}
			}
		}
		m /= float64(x.c * x.h * x.w)
		for c := range x.c {
			for y := range x.h {
				for q := range x.w {
					out.set(i, c, y, q, (s.at(i, c, y, q)-m)*p[i].Contrast+m)
				}
			}
		}
	}
	return out
}

func clampInt(v, lo, hi int) int { return min(max(v, lo), hi) }

// refCrop pads by one pixel and gathers at clamped shifted indices, as
// rand_crop does.
func refCrop(x *img4, s []Offset) *img4 {
	out := x.zero()
	pad := func(i, c, y, q int) float64 {
		if y == 0 || q == 0 || y == x.h+1 || q == x.w+1 {
			return 0
		}
		return x.at(i, c, y-1, q-1)
	}
	for i := range x.n {
		for c := range x.c {
			for y := range x.h {
				for q := range x.w {
					gy := clampInt(y+s[i].H+1, 0, x.h+1)
					gx := clampInt(q+s[i].W+1, 0, x.w+1)
					out.set(i, c, y, q, pad(i, c, gy, gx))
				}
			}
		}
	}
	return out
}

// refCutout builds the mask with clamped meshgrid indices, as rand_cutout
// does.
func refCutout(x *img4, size Offset, off []Offset) *img4 {
	out := x.zero()
	for i := range x.n {
		mask := make([]float64, x.h*x.w)
		for j := range mask {
			mask[j] = 1
		}
		for a := range size.H {
			for b := range size.W {
				gy := clampInt(a+off[i].H-size.H/2, 0, x.h-1)
				gx := clampInt(b+off[i].W-size.W/2, 0, x.w-1)
				mask[gy*x.w+gx] = 0
			}
		}
		for c := range x.c {
			for y := range x.h {
				for q := range x.w {
					out.set(i, c, y, q, x.at(i, c, y, q)*mask[y*x.w+q])
				}
			}
		}
	}
	return out
}

func refFlip(x *img4, f []bool) *img4 {
	out := x.zero()
	for i := range x.n {
		for c := range x.c {
			for y := range x.h {
				for q := range x.w {
					src := q
					if f[i] {
						src = x.w - 1 - q
					}
					out.set(i, c, y, q, x.at(i, c, y, src))
				}
			}
		}
	}
	return out
}

func linspace(size int) []float64 {
	if size <= 1 {
		return []float64{0}
	}
	out := make([]float64, size)
	for i := range out {
		out[i] = -1 + 2*float64(i)/float64(size-1)
	}
	return out
}

// refAffine is F.grid_sample(x, F.affine_grid(theta), align_corners=True).
func refAffine(x *img4, theta [][6]float64) *img4 {
	out := x.zero()
	xs, ys := linspace(x.w), linspace(x.h)
	for i := range x.n {
		t := theta[i]
		for y := range x.h {
			for q := range x.w {
				gx := t[0]*xs[q] + t[1]*ys[y] + t[2]
				gy := t[3]*xs[q] + t[4]*ys[y] + t[5]
				ix := (gx + 1) / 2 * float64(x.w-1)
				iy := (gy + 1) / 2 * float64(x.h-1)
				x0, y0 := math.Floor(ix), math.Floor(iy)
				for c := range x.c {
					get := func(yy, xx float64) float64 {
						if yy < 0 || xx < 0 || yy > float64(x.h-1) || xx > float64(x.w-1) {
							return 0
						}
						return x.at(i, c, int(yy), int(xx))
					}
					v := get(y0, x0)*(x0+1-ix)*(y0+1-iy) + get(y0, x0+1)*(ix-x0)*(y0+1-iy) +
						get(y0+1, x0)*(x0+1-ix)*(iy-y0) + get(y0+1, x0+1)*(ix-x0)*(iy-y0)
					out.set(i, c, y, q, v)
				}
			}
		}
	}
	return out
}

// refApply applies a with the references above.
func refApply(a *Augmentation, x *img4) *img4 {
	for _, op := range a.Ops {
		switch op {
		case DSAColor:
			x = refColor(x, a.Color)
		case DSACrop:
			x = refCrop(x, a.Crop)
		case DSACutout:
			x = refCutout(x, a.CutoutSize, a.Cutout)
		case DSAFlip:
			x = refFlip(x, a.Flip)
		case DSAScale:
			th := make([][6]float64, x.n)
			for i := range th {
				th[i] = [6]float64{a.Scale[i].SX, 0, 0, 0, a.Scale[i].SY, 0}
			}
			x = refAffine(x, th)
		case DSARotate:
			// theta = [[cos θ, sin(−θ), 0], [sin θ, cos θ, 0]] (rand_rotate).
			th := make([][6]float64, x.n)
			for i := range th {
				r := a.Rotate[i]
				th[i] = [6]float64{math.Cos(r), math.Sin(-r), 0, math.Sin(r), math.Cos(r), 0}
			}
			x = refAffine(x, th)
		}
	}
	return x
}

// ---- helpers ----

func applyConst[T tensor.Float](t *testing.T, a *Augmentation, x *tensor.Tensor[T]) *tensor.Tensor[T] {
	t.Helper()
	tp := autograd.NewTape[T]()
	defer tp.Release()
	y := Apply(a, tp.Const(x))
	if err := tp.Err(); err != nil {
		t.Fatal(err)
	}
	if tp.Len() != 0 {
		t.Fatalf("Apply on a constant recorded %d operations", tp.Len())
	}
	return y.Value.Clone()
}

func assertClose(t *testing.T, what string, got []float64, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if math.Abs(got[i]-want[i]) > tol*(1+math.Abs(want[i])) || math.IsNaN(got[i]) {
			t.Fatalf("%s: element %d = %.9g, want %.9g", what, i, got[i], want[i])
		}
	}
}

func to64[T tensor.Float](x []T) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

// fixedAug returns a hand-made augmentation of every family for n ≤ 3
// images of h×w, with parameters that make every sample different.
func fixedAug(op string, n, h, w int) *Augmentation {
	a := &Augmentation{N: n, H: h, W: w, Ops: []string{op}}
	a.Color = []ColorParam{{0.3, 1.7, 0.8}, {-0.2, 0.4, 1.3}, {0.1, 0, 0.5}}[:n]
	a.Crop = []Offset{{1, -2}, {-1, 0}, {3, 3}}[:n]
	a.CutoutSize = Offset{(h + 1) / 2, (w + 1) / 2}
	a.Cutout = []Offset{{1, 3}, {0, 0}, {h - 1, 2}}[:n]
	a.Flip = []bool{true, false, true}[:n]
	a.Scale = []ScaleParam{{0.87, 1.13}, {1.19, 0.91}, {1, 1}}[:n]
	a.Rotate = []float64{0.21, -0.24, 0.05}[:n]
	return a
}

func allOpsAug(n, h, w int) *Augmentation {
	a := fixedAug(DSAColor, n, h, w)
	a.Ops = slices.Clone(DSAOps)
	return a
}

// ---- tests ----

func TestDSAOpsMatchReference(t *testing.T) {
	// The last shape is large enough for the kernels to split the batch
	// between workers; its parameters are drawn.
	for _, shape := range [][]int{{3, 1, 7, 6}, {3, 3, 5, 8}, {40, 2, 28, 28}} {
		x := gradcheck.Random(11, shape...)
		ops := append(slices.Clone(DSAOps), "all")
		for _, op := range ops {
			var a *Augmentation
			switch {
			case shape[0] > 3:
				d := &DSA{Strategy: []string{op}, Params: DefaultDSAParams()}
				if op == "all" {
					d.Strategy = DSAOps
				}
				d.Params.Mode = DSAMultiple
				a = d.Sample(tensor.NewRNG(12, 0), shape[0], shape[2], shape[3])
			case op == "all":
				a = allOpsAug(shape[0], shape[2], shape[3])
			default:
				a = fixedAug(op, shape[0], shape[2], shape[3])
			}
			want := refApply(a, newImg(shape, x.Data)).d
			got := applyConst(t, a, x)
			assertClose(t, op+"/float64", got.Data, want, 1e-12)

			x32 := tensor.New[float32](shape...)
			for i, v := range x.Data {
				x32.Data[i] = float32(v)
			}
			got32 := applyConst(t, a, x32)
			// float32 sampling coordinates near 27 px carry ~2e-6 px of
			// rounding, which bilinear sampling turns into ~1e-5 in value.
			assertClose(t, op+"/float32", to64(got32.Data), want, 5e-5)

			// ApplyInto, into a fresh tensor and in place.
			dst := tensor.New[float64](shape...)
			if err := ApplyInto(a, dst, x); err != nil {
				t.Fatal(err)
			}
			assertClose(t, op+"/ApplyInto", dst.Data, want, 1e-12)
			in := x.Clone()
			if err := ApplyInto(a, in, in); err != nil {
				t.Fatal(err)
			}
			assertClose(t, op+"/ApplyInto in place", in.Data, want, 1e-12)
		}
	}
}

func TestDSAHandChecked(t *testing.T) {
	mk := func(h, w int, v ...float64) *tensor.Tensor[float64] {
		x, err := tensor.FromSlice(v, 1, 1, h, w)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	seq := func(h, w int) *tensor.Tensor[float64] {
		x := tensor.New[float64](1, 1, h, w)
		for i := range x.Data {
			x.Data[i] = float64(i + 1)
		}
		return x
	}
	base := func(h, w int, op string) *Augmentation {
		return &Augmentation{N: 1, H: h, W: w, Ops: []string{op}}
	}

	// Flip.
	a := base(2, 3, DSAFlip)
	a.Flip = []bool{true}
	got := applyConst(t, a, mk(2, 3, 1, 2, 3, 4, 5, 6))
	assertClose(t, "flip", got.Data, []float64{3, 2, 1, 6, 5, 4}, 0)

	// Crop by +1 row: row h shows row h+1, the last row is padding.
	a = base(3, 2, DSACrop)
	a.Crop = []Offset{{1, 0}}
	got = applyConst(t, a, mk(3, 2, 1, 2, 3, 4, 5, 6))
	assertClose(t, "crop +1 row", got.Data, []float64{3, 4, 5, 6, 0, 0}, 0)
	a.Crop = []Offset{{0, -1}}
	got = applyConst(t, a, mk(3, 2, 1, 2, 3, 4, 5, 6))
	assertClose(t, "crop -1 column", got.Data, []float64{0, 1, 0, 3, 0, 5}, 0)

	// Cutout: a 2×2 square centred at (2, 3) covers rows 1–2, columns 2–3;
	// one centred at (0, 0) is clipped to the single pixel (0, 0).
	a = base(4, 4, DSACutout)
	a.CutoutSize = Offset{2, 2}
	a.Cutout = []Offset{{2, 3}}
	got = applyConst(t, a, seq(4, 4))
	assertClose(t, "cutout", got.Data, []float64{1, 2, 3, 4, 5, 6, 0, 0, 9, 10, 0, 0, 13, 14, 15, 16}, 0)
	a.Cutout = []Offset{{0, 0}}
	got = applyConst(t, a, seq(4, 4))
	want := seq(4, 4).Data
	want[0] = 0
	assertClose(t, "cutout clipped", got.Data, want, 0)
	// The reference sizes: int(28·0.5 + 0.5) = 14 and int(5·0.5 + 0.5) = 3.
	d, _ := NewDSA("cutout")
	if s := d.Sample(tensor.NewRNG(1, 1), 1, 28, 5).CutoutSize; s != (Offset{14, 3}) {
		t.Fatalf("cutout size for 28×5 is %v, want {14 3}", s)
	}

	// Rotation by 90° with align_corners=True maps pixel centres onto pixel
	// centres: out[h][w] = in[w][W−1−h]; by 180°: in[H−1−h][W−1−w].
	x := seq(5, 5)
	a = base(5, 5, DSARotate)
	a.Rotate = []float64{math.Pi / 2}
	got = applyConst(t, a, x)
	want = make([]float64, 25)
	for h := range 5 {
		for w := range 5 {
			want[h*5+w] = x.Data[w*5+4-h]
		}
	}
	assertClose(t, "rotate 90°", got.Data, want, 1e-9)
	a.Rotate = []float64{math.Pi}
	got = applyConst(t, a, x)
	rev := slices.Clone(x.Data)
	slices.Reverse(rev)
	assertClose(t, "rotate 180°", got.Data, rev, 1e-9)
	// Rotating a symmetric image by 90° leaves it unchanged.
	sym := mk(3, 3, 1, 2, 1, 2, 5, 2, 1, 2, 1)
	a = base(3, 3, DSARotate)
	a.Rotate = []float64{math.Pi / 2}
	assertClose(t, "rotate symmetric", applyConst(t, a, sym).Data, sym.Data, 1e-9)

	// Scale 1 (and rotate 0) is the identity; scale 2 on 5 pixels samples
	// at columns −2, 0, 2, 4, 6 (x' = 2x), the outer two in the padding.
	x = seq(5, 5)
	a = base(5, 5, DSAScale)
	a.Scale = []ScaleParam{{1, 1}}
	assertClose(t, "scale 1", applyConst(t, a, x).Data, x.Data, 1e-12)
	x32 := tensor.New[float32](1, 1, 5, 5)
	for i := range x32.Data {
		x32.Data[i] = float32(i + 1)
	}
	assertClose(t, "scale 1 float32", to64(applyConst(t, a, x32).Data), x.Data, 1e-6)
	a = base(5, 5, DSARotate)
	a.Rotate = []float64{0}
	assertClose(t, "rotate 0", applyConst(t, a, x).Data, x.Data, 1e-12)
	a = base(1, 5, DSAScale)
	a.Scale = []ScaleParam{{2, 1}}
	got = applyConst(t, a, mk(1, 5, 1, 2, 3, 4, 5))
	assertClose(t, "scale 2", got.Data, []float64{0, 1, 3, 5, 0}, 1e-12)
}

func TestDSASampleRanges(t *testing.T) {
	d, err := NewDSA(DSAStrategyDefault)
	if err != nil {
		t.Fatal(err)
	}
	d.Params.Mode = DSAMultiple
	rng := tensor.NewRNG(5, 0)
	n := 2000
	a := d.Sample(rng, n, 28, 32)
	if !slices.Equal(a.Ops, DSAOps) {
		t.Fatalf("M mode ops %v, want %v", a.Ops, DSAOps)
	}
	var flips int
	seenShift := map[int]bool{}
	for i := range n {
		c := a.Color[i]
		if c.Brightness < -0.5 || c.Brightness >= 0.5 || c.Saturation < 0 || c.Saturation >= 2 || c.Contrast < 0.5 || c.Contrast >= 1.5 {
			t.Fatalf("color %+v out of range", c)
		}
		// Both 28 and 32 give int(size·0.125 + 0.5) = 4.
		if s := a.Crop[i]; s.H < -4 || s.H > 4 || s.W < -4 || s.W > 4 {
			t.Fatalf("crop %+v out of range", s)
		}
		seenShift[a.Crop[i].H] = true
		// Even sizes 14 and 16: centre in [0, size].
		if o := a.Cutout[i]; o.H < 0 || o.H > 28 || o.W < 0 || o.W > 32 {
			t.Fatalf("cutout %+v out of range", o)
		}
		if a.Flip[i] {
			flips++
		}
		for _, s := range []float64{a.Scale[i].SX, a.Scale[i].SY} {
			if s < 1/1.2 || s >= 1.2 {
				t.Fatalf("scale %v out of range", s)
			}
		}
		if r := a.Rotate[i]; math.Abs(r) > 15*math.Pi/180 {
			t.Fatalf("angle %v out of range", r)
		}
	}
	if len(seenShift) != 9 {
		t.Fatalf("crop shifts drawn: %v, want all of −4…4", seenShift)
	}
	if a.CutoutSize != (Offset{14, 16}) {
		t.Fatalf("cutout size %v, want {14 16}", a.CutoutSize)
	}
	if flips < n/2-150 || flips > n/2+150 {
		t.Fatalf("%d flips in %d", flips, n)
	}

	// Single mode: one family per draw, each drawn about equally often.
	d.Params.Mode = DSASingle
	count := map[string]int{}
	for range 600 {
		a := d.Sample(rng, 3, 8, 8)
		if len(a.Ops) != 1 {
			t.Fatalf("S mode drew %v", a.Ops)
		}
		count[a.Ops[0]]++
	}
	for _, op := range DSAOps {
		if count[op] < 60 {
			t.Fatalf("S mode family counts %v", count)
		}
	}

	// Shared: one parameter set for the whole batch.
	d.Params.Mode = DSAMultiple
	d.Params.Shared = true
	a = d.Sample(rng, 5, 8, 8)
	for i := range 5 {
		if a.Color[i] != a.Color[0] || a.Crop[i] != a.Crop[0] || a.Cutout[i] != a.Cutout[0] ||
			a.Flip[i] != a.Flip[0] || a.Scale[i] != a.Scale[0] || a.Rotate[i] != a.Rotate[0] {
			t.Fatalf("Shared: sample %d differs from sample 0", i)
		}
	}

	// The zero Params mean the defaults; an empty strategy changes nothing.
	z := &DSA{Strategy: []string{DSAScale}}
	if s := z.Sample(rng, 1, 4, 4).Scale[0].SX; s < 1/1.2 || s >= 1.2 {
		t.Fatalf("zero Params: scale %v", s)
	}
	none, err := NewDSA("none")
	if err != nil {
		t.Fatal(err)
	}
	x := gradcheck.Random(3, 2, 1, 4, 4)
	if got := applyConst(t, none.Sample(rng, 2, 4, 4), x); !slices.Equal(got.Data, x.Data) {
		t.Fatal("empty strategy changed the images")
	}
}

func TestDSASameSeedSameOutput(t *testing.T) {
	d, _ := NewDSA(DSAStrategyDigits)
	x := gradcheck.Random(4, 6, 1, 9, 9)
	var outs [][]float64
	var augs []*Augmentation
	for _, seed := range []uint64{42, 42, 43} {
		rng := tensor.NewRNG(seed, 3)
		for range 5 { // several calls, as a training loop makes
			a := d.Sample(rng, 6, 9, 9)
			augs = append(augs, a)
			outs = append(outs, applyConst(t, a, x).Data)
		}
	}
	for k := range 5 {
		if !reflect.DeepEqual(augs[k], augs[5+k]) || !slices.Equal(outs[k], outs[5+k]) {
			t.Fatalf("call %d: same seed gave different augmentations", k)
		}
	}
	same := 0
	for k := range 5 {
		if reflect.DeepEqual(augs[k], augs[10+k]) {
			same++
		}
	}
	if same == 5 {
		t.Fatal("different seeds gave the same augmentations")
	}
	// Augment (in place) draws the same as Sample + ApplyInto.
	y := x.Clone()
	if err := Augment(d, tensor.NewRNG(42, 3), y); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(y.Data, outs[0]) {
		t.Fatal("Augment differs from Sample + Apply")
	}
}

// TestDSASiamese: one draw applied to a real batch and a smaller synthetic
// batch transforms sample i of both identically.
func TestDSASiamese(t *testing.T) {
	d, _ := NewDSA(DSAStrategyDefault)
	d.Params.Mode = DSAMultiple
	a := d.Sample(tensor.NewRNG(9, 9), 5, 6, 6)
	real := gradcheck.Random(1, 5, 3, 6, 6)
	syn := gradcheck.Random(2, 3, 3, 6, 6)
	copy(syn.Data[:3*36], real.Data[:3*36]) // syn[0] = real[0]
	copy(syn.Data[2*3*36:], real.Data[2*3*36:3*3*36])
	rOut := applyConst(t, a, real)
	sOut := applyConst(t, a, syn)
	for _, i := range []int{0, 2} {
		if !slices.Equal(rOut.Data[i*108:(i+1)*108], sOut.Data[i*108:(i+1)*108]) {
			t.Fatalf("sample %d transformed differently in the two batches", i)
		}
	}
	// Sample 1 of syn got the parameters of position 1 too.
	want := refApply(a, newImg(syn.Shape, syn.Data)).d
	assertClose(t, "syn", sOut.Data, want, 1e-12)
	// Different samples got different parameters.
	if a.Rotate[0] == a.Rotate[1] || a.Color[0] == a.Color[1] {
		t.Fatal("per-sample parameters are equal")
	}
}

func TestDSAGrad(t *testing.T) {
	shape := []int{2, 2, 5, 5}
	ops := append(slices.Clone(DSAOps), "all")
	for _, op := range ops {
		a := fixedAug(op, 2, 5, 5)
		if op == "all" {
			a = allOpsAug(2, 5, 5)
		}
		x := gradcheck.Random(21, shape...)
		lin := func(tp *autograd.Tape[float64], xs []*autograd.Var[float64]) *autograd.Var[float64] {
			return Apply(a, xs[0])
		}
		sq := func(tp *autograd.Tape[float64], xs []*autograd.Var[float64]) *autograd.Var[float64] {
			return autograd.Square(Apply(a, xs[0]))
		}
		if err := gradcheck.Check(lin, []*tensor.Tensor[float64]{x}, gradcheck.Options{}); err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		if err := gradcheck.Check(sq, []*tensor.Tensor[float64]{x}, gradcheck.Options{}); err != nil {
			t.Fatalf("%s square: %v", op, err)
		}
		// The gradient of Square(A x) is Aᵀ(2r ⊙ A x): its derivative goes
		// through the backward rule's own backward rule.
		if err := gradcheck.CheckSecond(sq, []*tensor.Tensor[float64]{x}, gradcheck.Options{}); err != nil {
			t.Fatalf("%s second order: %v", op, err)
		}
		// Third order: differentiate the gradient's gradient once more.
		checkThirdOrder(t, op, a, x)
	}
}

// checkThirdOrder compares d/dx <v, ∇ₓ<u, ∇ₓ f>> for f = Σ r·(Ax)³, built
// with createGraph twice, against finite differences of the second-order
// quantity.
func checkThirdOrder(t *testing.T, op string, a *Augmentation, x *tensor.Tensor[float64]) {
	t.Helper()
	u := gradcheck.Random(31, x.Shape...)
	r := gradcheck.Random(32, x.Shape...)
	f := func(tp *autograd.Tape[float64], xv *autograd.Var[float64]) *autograd.Var[float64] {
		y := Apply(a, xv)
		return autograd.Sum(autograd.Mul(autograd.Mul(y, autograd.Square(y)), tp.Const(r)))
	}
	second := func(tp *autograd.Tape[float64], xs []*autograd.Var[float64]) *autograd.Var[float64] {
		xv := xs[0]
		if !xv.RequiresGrad() {
			xv = tp.Param(xv.Value)
		}
		g, err := tp.Grad([]*autograd.Var[float64]{f(tp, xv)}, nil, []*autograd.Var[float64]{xv}, true)
		if err != nil {
			tp.Fail(err)
			return xv
		}
		return autograd.Sum(autograd.Mul(g[0], tp.Const(u)))
	}
	if err := gradcheck.CheckSecond(second, []*tensor.Tensor[float64]{x}, gradcheck.Options{}); err != nil {
		t.Fatalf("%s third order: %v", op, err)
	}
}

func TestGridSampleAdjoint(t *testing.T) {
	// A general grid (points outside the image included) and an output size
	// different from the input size.
	x := gradcheck.Random(41, 2, 3, 4, 5)
	grid := gradcheck.Random(42, 2, 3, 6, 2)
	for i := range grid.Data {
		grid.Data[i] *= 0.8
	}
	y := gradcheck.Random(43, 2, 3, 3, 6)
	tp := autograd.NewTape[float64]()
	defer tp.Release()
	ax := GridSample(tp.Const(x), grid)
	aty := GridSampleAdjoint(tp.Const(y), grid, 4, 5)
	if err := tp.Err(); err != nil {
		t.Fatal(err)
	}
	lhs, rhs := tensor.Dot(ax.Value.Data, y.Data), tensor.Dot(x.Data, aty.Value.Data)
	if math.Abs(lhs-rhs) > 1e-12*(1+math.Abs(lhs)) {
		t.Fatalf("<Ax, y> = %v, <x, Aᵀy> = %v", lhs, rhs)
	}
	for _, f := range []gradcheck.Func{
		func(tp *autograd.Tape[float64], xs []*autograd.Var[float64]) *autograd.Var[float64] {
			return autograd.Square(GridSample(xs[0], grid))
		},
	} {
		if err := gradcheck.CheckSecond(f, []*tensor.Tensor[float64]{x}, gradcheck.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	adj := func(tp *autograd.Tape[float64], xs []*autograd.Var[float64]) *autograd.Var[float64] {
		return autograd.Square(GridSampleAdjoint(xs[0], grid, 4, 5))
	}
	if err := gradcheck.CheckSecond(adj, []*tensor.Tensor[float64]{y}, gradcheck.Options{}); err != nil {
		t.Fatal(err)
	}
	// Shape errors go on the tape.
	tp2 := autograd.NewTape[float64]()
	GridSample(tp2.Const(x), gradcheck.Random(1, 3, 3, 6, 2))
	if err := tp2.Err(); err == nil || !strings.Contains(err.Error(), "GridSample") {
		t.Fatalf("bad grid: error %v", err)
	}
}

func TestDSAOtherAdjoints(t *testing.T) {
	// <A x, y> = <x, Aᵀ y> for every linear part, via Grad.
	for _, op := range DSAOps {
		a := fixedAug(op, 3, 6, 7)
		x := gradcheck.Random(51, 3, 2, 6, 7)
		y := gradcheck.Random(52, 3, 2, 6, 7)
		tp := autograd.NewTape[float64]()
		xv := tp.Param(x)
		out := Apply(a, xv)
		g, err := tp.Grad([]*autograd.Var[float64]{out}, []*autograd.Var[float64]{tp.Const(y)}, []*autograd.Var[float64]{xv}, false)
		if err != nil {
			t.Fatal(err)
		}
		zero := tensor.New[float64](x.Shape...)
		b := applyConst(t, a, zero) // the constant part (brightness)
		lhs := tensor.Dot(out.Value.Data, y.Data) - tensor.Dot(b.Data, y.Data)
		rhs := tensor.Dot(x.Data, g[0].Value.Data)
		if math.Abs(lhs-rhs) > 1e-12*(1+math.Abs(lhs)) {
			t.Fatalf("%s: <Ax, y> = %v, <x, Aᵀy> = %v", op, lhs, rhs)
		}
		tp.Release()
	}
}

func TestParseDSAStrategy(t *testing.T) {
	got, err := ParseDSAStrategy(DSAStrategyDefault)
	if err != nil || !slices.Equal(got, DSAOps) {
		t.Fatalf("default strategy: %v, %v", got, err)
	}
	got, err = ParseDSAStrategy(" Color_CROP_cutout_scale_rotate ")
	if err != nil || !slices.Equal(got, []string{"color", "crop", "cutout", "scale", "rotate"}) {
		t.Fatalf("digits strategy: %v, %v", got, err)
	}
	for _, s := range []string{"", "none", "None"} {
		if got, err := ParseDSAStrategy(s); err != nil || len(got) != 0 {
			t.Fatalf("%q: %v, %v", s, got, err)
		}
	}
	for _, c := range []struct {
		s    string
		want []string
	}{
		{"color_crp_fip", []string{`"crp"`, `"fip"`, "color, crop, cutout, flip, scale, rotate"}},
		{"color__crop", []string{"empty"}},
		{"flip_flip", []string{"twice", "flip"}},
	} {
		_, err := ParseDSAStrategy(c.s)
		if err == nil {
			t.Fatalf("%q accepted", c.s)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) || !strings.HasPrefix(err.Error(), "data: ") {
				t.Fatalf("%q: error %q does not mention %s", c.s, err, w)
			}
		}
	}
	if _, err := NewDSA("rotate_zoom"); err == nil || !strings.Contains(err.Error(), "zoom") {
		t.Fatalf("NewDSA error %v", err)
	}
	d, _ := NewDSA(DSAStrategyDigits)
	if d.String() != DSAStrategyDigits {
		t.Fatalf("String() = %q", d.String())
	}
	bad := []func(p *DSAParams){
		func(p *DSAParams) { p.FlipProb = 1.5 },
		func(p *DSAParams) { p.ScaleRatio = 0.5 },
		func(p *DSAParams) { p.Brightness = math.NaN() },
		func(p *DSAParams) { p.Mode = "X" },
	}
	for i, f := range bad {
		p := DefaultDSAParams()
		f(&p)
		if (&DSA{Strategy: []string{"flip"}, Params: p}).Validate() == nil {
			t.Fatalf("bad params %d accepted", i)
		}
	}
	if (&DSA{Strategy: []string{"blur"}}).Validate() == nil {
		t.Fatal("unknown op accepted by Validate")
	}
}

func TestDSAApplyErrors(t *testing.T) {
	a := fixedAug(DSACrop, 2, 5, 5)
	for _, shape := range [][]int{{3, 1, 5, 5}, {2, 1, 5, 4}, {2, 5, 5}} {
		tp := autograd.NewTape[float32]()
		out := Apply(a, tp.Const(tensor.New[float32](shape...)))
		if tp.Err() == nil || !strings.HasPrefix(tp.Err().Error(), "data: ") {
			t.Fatalf("shape %v: error %v", shape, tp.Err())
		}
		// The tape stays failed: later operations are no-ops.
		Apply(a, out)
		if err := ApplyInto(a, tensor.New[float32](shape...), tensor.New[float32](shape...)); err == nil {
			t.Fatalf("ApplyInto accepted shape %v", shape)
		}
	}
	short := &Augmentation{N: 2, H: 5, W: 5, Ops: []string{DSAFlip}, Flip: []bool{true}}
	tp := autograd.NewTape[float32]()
	Apply(short, tp.Const(tensor.New[float32](2, 1, 5, 5)))
	if tp.Err() == nil {
		t.Fatal("too few parameters accepted")
	}
	// Fewer images than drawn for is fine.
	tp = autograd.NewTape[float32]()
	Apply(a, tp.Const(tensor.New[float32](1, 1, 5, 5)))
	if tp.Err() != nil {
		t.Fatal(tp.Err())
	}
	if err := ApplyInto(a, tensor.New[float32](2, 1, 5, 5), tensor.New[float32](1, 1, 5, 5)); err == nil {
		t.Fatal("ApplyInto accepted a destination of another shape")
	}
}

// ---- benchmarks ----

func benchInput(n int) *tensor.Tensor[float32] {
	x := tensor.New[float32](n, 1, 28, 28)
	tensor.FillNormal(tensor.NewRNG(1, 1), x, 0, 1)
	return x
}

// BenchmarkDSAApply times Apply (forward, recorded on a tape) on a
// (256, 1, 28, 28) float32 batch, one family at a time.
func BenchmarkDSAApply(b *testing.B) {
	x := benchInput(256)
	d := &DSA{Params: DefaultDSAParams()}
	for _, op := range DSAOps {
		d.Strategy = []string{op}
		a := d.Sample(tensor.NewRNG(2, 2), 256, 28, 28)
		b.Run(op, func(b *testing.B) {
			tp := autograd.NewTape[float32]()
			for b.Loop() {
				Apply(a, tp.Param(x))
				tp.Release()
			}
		})
	}
}

// BenchmarkDSAApplyGrad times Apply plus its backward pass.
func BenchmarkDSAApplyGrad(b *testing.B) {
	x := benchInput(256)
	d := &DSA{Params: DefaultDSAParams()}
	for _, op := range DSAOps {
		d.Strategy = []string{op}
		a := d.Sample(tensor.NewRNG(2, 2), 256, 28, 28)
		b.Run(op, func(b *testing.B) {
			tp := autograd.NewTape[float32]()
			for b.Loop() {
				xv := tp.Param(x)
				y := Apply(a, xv)
				if _, err := tp.Grad([]*autograd.Var[float32]{y}, nil, []*autograd.Var[float32]{xv}, false); err != nil {
					b.Fatal(err)
				}
				tp.Release()
			}
		})
	}
}

// BenchmarkDSAAugment times the evaluation path (Sample + ApplyInto in
// place) with the digits strategy in single mode.
func BenchmarkDSAAugment(b *testing.B) {
	x := benchInput(256)
	d, _ := NewDSA(DSAStrategyDigits)
	rng := tensor.NewRNG(3, 3)
	for b.Loop() {
		if err := Augment(d, rng, x); err != nil {
			b.Fatal(err)
		}
	}
}
