package data

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/fedsim/fedsim/internal/npz"
	"github.com/fedsim/fedsim/tensor"
)

// The fixture is written by scripts/torch/make_dcaug_fixtures.py with the
// calls DC's reference augment makes: F.interpolate for scale and
// scipy.ndimage.rotate (at order 1) for rotate.
const dcaugGolden = "../testdata/golden/dcaug.npz"

func TestDCAugMatchesReference(t *testing.T) {
	g, err := npz.Read(dcaugGolden)
	if err != nil {
		t.Fatalf("reading the fixture (make it with /usr/bin/python3 scripts/torch/make_dcaug_fixtures.py): %v", err)
	}
	get := func(key string) []float64 {
		t.Helper()
		a, ok := g[key]
		if !ok {
			t.Fatalf("fixture has no %q", key)
		}
		v, err := a.Float64()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, c := range []struct{ ch, im int }{{1, 28}, {3, 32}} {
		p := fmt.Sprintf("c%d_", c.ch)
		xs := get(p + "x")
		x := make([]float32, len(xs))
		for i, v := range xs {
			x[i] = float32(v)
		}
		size := c.ch * c.im * c.im
		// The batch's channel means and their mean, as Apply takes them.
		mean := make([]float32, c.ch)
		var all float64
		for ch := range c.ch {
			var s float64
			for i := range 2 {
				for _, v := range x[i*size+ch*c.im*c.im : i*size+(ch+1)*c.im*c.im] {
					s += float64(v)
				}
			}
			mean[ch] = float32(s / float64(2*c.im*c.im))
			all += float64(mean[ch])
		}
		check := func(key string, tol float64, op func(img []float32)) {
			t.Helper()
			img := slices.Clone(x[:size])
			op(img)
			want := get(p + key)
			var worst float64
			at := 0
			for i, v := range want {
				if d := math.Abs(float64(img[i]) - v); d > worst {
					worst, at = d, i
				}
			}
			if worst > tol {
				t.Errorf("%s%s: differs from the reference by %.3g at value %d (%v vs %v)", p, key, worst, at, img[at], want[at])
			}
		}
		for _, rc := range [][2]int{{0, 0}, {3, 5}, {7, 7}, {4, 4}} {
			check(fmt.Sprintf("crop_%d_%d", rc[0], rc[1]), 0, func(img []float32) { dcCrop(img, c.ch, c.im, c.im, 4, mean, rc[0], rc[1]) })
		}
		for _, hw := range [][2]int{{22, 33}, {28, 28}, {24, 31}, {33, 22}, {25, 25}} {
			check(fmt.Sprintf("scale_%d_%d", hw[0], hw[1]), 0, func(img []float32) { dcScale(img, c.ch, c.im, c.im, hw[0], hw[1]) })
		}
		fill := float32(all / float64(c.ch))
		for _, deg := range []int{-45, -30, -7, 0, 1, 13, 44} {
			check(fmt.Sprintf("rotate_%d", deg), 2e-5, func(img []float32) { dcRotate(img, c.ch, c.im, c.im, float64(deg), fill) })
		}
	}
}

// Apply leaves its input alone, gives every image exactly one of the
// strategy's operations, repeats under the same stream, and changes
// nothing under "none".
func TestDCAugApply(t *testing.T) {
	rng := tensor.NewRNG(1, 0)
	x := tensor.New[float32](64, 1, 28, 28)
	for i := range x.Data {
		x.Data[i] = float32(rng.NormFloat64())
	}
	orig := slices.Clone(x.Data)
	a, err := NewDCAug(DCAugStrategyDigits)
	if err != nil {
		t.Fatal(err)
	}
	y := a.Apply(tensor.NewRNG(7, 1), x)
	if !slices.Equal(x.Data, orig) {
		t.Fatal("Apply changed its input")
	}
	if z := a.Apply(tensor.NewRNG(7, 1), x); !slices.Equal(y.Data, z.Data) {
		t.Fatal("Apply differs under the same random stream")
	}
	changed := 0
	for i := range 64 {
		if !slices.Equal(y.Data[i*784:(i+1)*784], orig[i*784:(i+1)*784]) {
			changed++
		}
	}
	// Only a crop at offset (4, 4), a scale to 28×28 or a rotation by 0°
	// leaves an image as it was: a few of 64 at most.
	if changed < 56 {
		t.Errorf("%d of 64 images changed, want nearly all", changed)
	}
	none, err := NewDCAug("none")
	if err != nil {
		t.Fatal(err)
	}
	if y := none.Apply(tensor.NewRNG(7, 1), x); !slices.Equal(y.Data, orig) {
		t.Error(`strategy "none" changed the batch`)
	}
	noise, _ := NewDCAug("noise")
	y = noise.Apply(tensor.NewRNG(7, 1), x)
	var s2 float64
	for i, v := range y.Data {
		s2 += float64(v-orig[i]) * float64(v-orig[i])
	}
	if std := math.Sqrt(s2 / float64(len(orig))); math.Abs(std-0.001) > 1e-4 {
		t.Errorf("noise std %g, want 0.001", std)
	}
}

func TestNewDCAugErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"crop_warp", `"warp"`},
		{"crop_crop", "twice"},
		{"crop__scale", `""`},
	} {
		if _, err := NewDCAug(c.in); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewDCAug(%q): %v, want an error containing %s", c.in, err, c.want)
		}
	}
	a, err := NewDCAug(" Crop_Scale_ROTATE ")
	if err != nil || a.String() != DCAugStrategyDigits {
		t.Errorf("NewDCAug is not case-insensitive: %v, %v", a, err)
	}
}

// Any size, offset, scale and angle within the reference's ranges (and
// beyond them) leaves a finite image of the same size whose values come
// from the input, the fill or, for rotation, between them.
func FuzzDCAugOps(f *testing.F) {
	f.Add(uint8(28), uint8(28), uint8(3), uint8(5), uint8(22), uint8(33), int16(-45))
	f.Add(uint8(1), uint8(7), uint8(0), uint8(0), uint8(1), uint8(200), int16(90))
	f.Fuzz(func(t *testing.T, h8, w8, r8, c8, sh8, sw8 uint8, deg int16) {
		h, w := int(h8%40)+1, int(w8%40)+1
		rng := tensor.NewRNG(uint64(h), uint64(w))
		src := make([]float32, 2*h*w)
		lo, hi := float32(math.Inf(1)), float32(math.Inf(-1))
		for i := range src {
			src[i] = float32(rng.NormFloat64())
			lo, hi = min(lo, src[i]), max(hi, src[i])
		}
		mean, fill := []float32{0.25, -0.5}, float32(-0.125)
		lo, hi = min(lo, -0.5, 0), max(hi, 0.25)
		img := slices.Clone(src)
		dcCrop(img, 2, h, w, 4, mean, int(r8%8), int(c8%8))
		dcScale(img, 2, h, w, int(sh8)+1, int(sw8)+1)
		dcRotate(img, 2, h, w, float64(deg), fill)
		for i, v := range img {
			if !(v >= lo-1e-5 && v <= hi+1e-5) {
				t.Fatalf("value %d is %v, outside [%v, %v]", i, v, lo, hi)
			}
		}
	})
}
