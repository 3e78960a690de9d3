package distill

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"

	"github.com/fedsim/fedsim/internal/atomicfile"
)

// GridImage draws the synthetic set as a grid: one row per class, the
// class's images left to right in set order, denormalized with the set's
// mean and std and clamped to [0, 1]. Images smaller than 64 pixels are
// upscaled by an integer factor (nearest neighbour); a 2-pixel grey gutter
// separates the cells. One-channel sets give a grey image, three-channel
// sets a colour one (other channel counts show the first channel).
func GridImage(s *SyntheticSet) (image.Image, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	c, h, w := s.X.Shape[1], s.X.Shape[2], s.X.Shape[3]
	scale := max(1, 64/max(h, w))
	const gap = 2
	rows := make([][]int, s.Classes)
	cols := 1
	for i, l := range s.Y {
		rows[l] = append(rows[l], i)
		cols = max(cols, len(rows[l]))
	}
	cw, ch := w*scale+gap, h*scale+gap
	img := image.NewRGBA(image.Rect(0, 0, cols*cw+gap, s.Classes*ch+gap))
	for i := range img.Pix {
		img.Pix[i] = 128
	}
	sz := c * h * w
	pix := func(n, ch, y, x int) uint8 {
		v := s.X.Data[n*sz+ch*h*w+y*w+x]*s.Std[ch] + s.Mean[ch]
		v = min(max(v, 0), 1)
		return uint8(v*255 + 0.5)
	}
	for r, idx := range rows {
		for k, n := range idx {
			x0, y0 := gap+k*cw, gap+r*ch
			for y := range h * scale {
				for x := range w * scale {
					sy, sx := y/scale, x/scale
					var col color.RGBA
					if c == 3 {
						col = color.RGBA{pix(n, 0, sy, sx), pix(n, 1, sy, sx), pix(n, 2, sy, sx), 255}
					} else {
						g := pix(n, 0, sy, sx)
						col = color.RGBA{g, g, g, 255}
					}
					img.SetRGBA(x0+x, y0+y, col)
				}
			}
		}
	}
	return img, nil
}

// WriteGrid writes GridImage(s) to path as a PNG, atomically.
func WriteGrid(path string, s *SyntheticSet) error {
	img, err := GridImage(s)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return fmt.Errorf("distill: encoding %s: %w", path, err)
	}
	return writeFileAtomic(path, buf.Bytes())
}

// writeFileAtomic writes b to path atomically (see internal/atomicfile).
func writeFileAtomic(path string, b []byte) error {
	if err := atomicfile.WriteFile(path, b); err != nil {
		return fmt.Errorf("distill: %w", err)
	}
	return nil
}
