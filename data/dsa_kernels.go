package data

import (
	"fmt"

	"github.com/fedsim/fedsim/internal/parallel"
	"github.com/fedsim/fedsim/tensor"
)

// DSA kernels. Each works on (N, C, H, W) tensors with per-sample
// parameters, runs in parallel over images or planes, and writes its whole
// destination. They panic on programmer errors: ranks other than 4, a
// destination whose shape differs from what the kernel produces, fewer
// parameters than images, or a destination that is also the source.
// Apply and ApplyInto validate first, so their users never reach the panics.

// colorCoef is one sample's fused color map
// y = a·x + b·mean_C(x) + c·mean_CHW(x) + d.
type colorCoef struct{ a, b, c, d float64 }

// rect is a half-open rectangle of rows [h0, h1) and columns [w0, w1).
type rect struct{ h0, h1, w0, w1 int }

func dims4(op string, shape []int) (n, c, h, w int) {
	if len(shape) != 4 {
		panic(fmt.Sprintf("data: %s needs (N, C, H, W), got shape %v", op, shape))
	}
	return shape[0], shape[1], shape[2], shape[3]
}

func checkSame[T tensor.Float](op string, dst, src *tensor.Tensor[T], params int) (n, c, h, w int) {
	n, c, h, w = dims4(op, src.Shape)
	if !tensor.SameShape(dst.Shape, src.Shape) || len(dst.Data) != len(src.Data) || len(src.Data) != n*c*h*w {
		panic(fmt.Sprintf("data: %s destination %v, source %v", op, dst.Shape, src.Shape))
	}
	if params < n {
		panic(fmt.Sprintf("data: %s has %d parameters for %d images", op, params, n))
	}
	if len(dst.Data) > 0 && &dst.Data[0] == &src.Data[0] {
		panic(fmt.Sprintf("data: %s destination is its source", op))
	}
	return n, c, h, w
}

// grainFor returns how many units of size elements make a chunk worth a
// goroutine.
func grainFor(size int) int { return max(1, 16384/max(1, size)) }

// colorKernel writes the fused color map of each sample of src into dst.
func colorKernel[T tensor.Float](dst, src *tensor.Tensor[T], coef []colorCoef) {
	n, c, h, w := checkSame("color", dst, src, len(coef))
	hw := h * w
	chw := c * hw
	parallel.For(n, grainFor(chw), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			x := src.Data[i*chw : (i+1)*chw]
			y := dst.Data[i*chw : (i+1)*chw]
			k := coef[i]
			mean := sum64(x) / float64(max(chw, 1))
			off := T(k.c*mean + k.d)
			if c == 1 {
				a := T(k.a + k.b) // the channel mean is the pixel itself
				for j, v := range x {
					y[j] = a*v + off
				}
				continue
			}
			a, b := T(k.a), T(k.b/float64(c))
			for p := range hw {
				var m T
				for ch := range c {
					m += x[ch*hw+p]
				}
				base := b*m + off
				for ch := range c {
					y[ch*hw+p] = a*x[ch*hw+p] + base
				}
			}
		}
	})
}

// sum64 returns Σ x in float64 with four independent accumulators.
func sum64[T tensor.Float](x []T) float64 {
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(x); i += 4 {
		q := x[i : i+4 : i+4]
		s0 += float64(q[0])
		s1 += float64(q[1])
		s2 += float64(q[2])
		s3 += float64(q[3])
	}
	for ; i < len(x); i++ {
		s0 += float64(x[i])
	}
	return (s0 + s1) + (s2 + s3)
}

// translateKernel writes dst(h, w) = src(h + sign·s.H, w + sign·s.W), zero
// where that falls outside the image. Its adjoint is the same kernel with
// −sign.
func translateKernel[T tensor.Float](dst, src *tensor.Tensor[T], shift []Offset, sign int) {
	n, c, h, w := checkSame("crop", dst, src, len(shift))
	hw := h * w
	parallel.For(n*c, grainFor(hw), func(lo, hi int) {
		for p := lo; p < hi; p++ {
			s := shift[p/c]
			dh, dw := sign*s.H, sign*s.W
			in := src.Data[p*hw : (p+1)*hw]
			out := dst.Data[p*hw : (p+1)*hw]
			// Columns w in [w0, w1) read column w+dw inside the image.
			w0, w1 := max(0, -dw), min(w, w-dw)
			if w0 >= w1 || dh >= h || dh <= -h {
				clear(out)
				continue
			}
			for y := range h {
				row := out[y*w : (y+1)*w]
				sy := y + dh
				if sy < 0 || sy >= h {
					clear(row)
					continue
				}
				clear(row[:w0])
				copy(row[w0:w1], in[sy*w+w0+dw:sy*w+w1+dw])
				clear(row[w1:])
			}
		}
	})
}

// cutoutKernel copies src to dst with each sample's rectangle set to zero.
// It is self-adjoint.
func cutoutKernel[T tensor.Float](dst, src *tensor.Tensor[T], r []rect) {
	n, c, h, w := checkSame("cutout", dst, src, len(r))
	hw := h * w
	parallel.For(n*c, grainFor(hw), func(lo, hi int) {
		for p := lo; p < hi; p++ {
			out := dst.Data[p*hw : (p+1)*hw]
			copy(out, src.Data[p*hw:(p+1)*hw])
			q := r[p/c]
			if q.w0 >= q.w1 {
				continue
			}
			for y := max(q.h0, 0); y < min(q.h1, h); y++ {
				clear(out[y*w+max(q.w0, 0) : y*w+min(q.w1, w)])
			}
		}
	})
}

// flipKernel copies src to dst, mirroring the columns of sample i when
// flip[i]. It is self-adjoint.
func flipKernel[T tensor.Float](dst, src *tensor.Tensor[T], flip []bool) {
	n, c, h, w := checkSame("flip", dst, src, len(flip))
	hw := h * w
	parallel.For(n*c, grainFor(hw), func(lo, hi int) {
		for p := lo; p < hi; p++ {
			in := src.Data[p*hw : (p+1)*hw]
			out := dst.Data[p*hw : (p+1)*hw]
			if !flip[p/c] {
				copy(out, in)
				continue
			}
			for y := range h {
				ri, ro := in[y*w:(y+1)*w], out[y*w:(y+1)*w]
				for j := range ro {
					ro[j] = ri[len(ri)-1-j]
				}
			}
		}
	})
}

// AffineGrid fills grid (N, H, W, 2) with the sampling points of the 2×3
// matrices theta (row-major, one per image): PyTorch's F.affine_grid with
// align_corners=True, i.e. point (i, j) is theta·(x_j, y_i, 1) with x_j and
// y_i evenly spaced from −1 to 1 (0 for a size of 1). It panics if grid is
// not (N, H, W, 2) or theta has fewer than N matrices.
func AffineGrid[T tensor.Float](grid *tensor.Tensor[T], theta [][6]float64) {
	s := grid.Shape
	if len(s) != 4 || s[3] != 2 || len(grid.Data) != tensor.Size(s) {
		panic(fmt.Sprintf("data: AffineGrid needs a grid (N, H, W, 2), got %v", s))
	}
	n, h, w := s[0], s[1], s[2]
	if len(theta) < n {
		panic(fmt.Sprintf("data: AffineGrid has %d matrices for %d images", len(theta), n))
	}
	xs, ys := unitGrid(w), unitGrid(h)
	parallel.For(n, grainFor(2*h*w), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			t := theta[i]
			g := grid.Data[i*h*w*2 : (i+1)*h*w*2]
			for r, y := range ys {
				row := g[r*w*2 : (r+1)*w*2]
				bx, by := t[1]*y+t[2], t[4]*y+t[5]
				for q, x := range xs {
					row[2*q] = T(t[0]*x + bx)
					row[2*q+1] = T(t[3]*x + by)
				}
			}
		}
	})
}

// axisTap locates the sampling coordinate ix (in pixels) on an axis of n
// pixels (fn = n as a float): the lower corner i0 = ⌊ix⌋ and the weight
// e = ix − i0 of the upper corner i0+1. ok is false when neither corner is
// inside the axis (or ix is NaN). GridSample and its adjoint locate points
// with this one function, so they use identical weights and are exact
// adjoints.
func axisTap[T tensor.Float](ix, fn T) (i0 int, e T, ok bool) {
	if !(ix > -1 && ix < fn) {
		return 0, 0, false
	}
	i0 = int(ix+1) - 1 // ix+1 > 0, so truncation is the floor
	return i0, ix - T(i0), true
}

// pixelScale returns the factors that map normalized coordinates plus one
// to pixel coordinates (align_corners=True: −1 ↦ 0 and 1 ↦ size−1).
func pixelScale[T tensor.Float](h, w int) (sy, sx T) { return T(h-1) / 2, T(w-1) / 2 }

// bilinearWeights returns the weights of the corners (x0, y0), (x0+1, y0),
// (x0, y0+1) and (x0+1, y0+1) given those of the upper corners on each axis.
func bilinearWeights[T tensor.Float](ex, ey T) (w00, w01, w10, w11 T) {
	return (1 - ex) * (1 - ey), ex * (1 - ey), (1 - ex) * ey, ex * ey
}

// gridSampleKernel writes dst (N, C, Ho, Wo) = src (N, C, H, W) sampled at
// grid (N, Ho, Wo, 2): bilinear, with corners outside the image
// contributing nothing. It panics on mismatched shapes or if dst is src.
func gridSampleKernel[T tensor.Float](dst, src, grid *tensor.Tensor[T]) {
	n, c, h, w := dims4("GridSample", src.Shape)
	ho, wo := checkGrid("GridSample", dst, src, grid, n, c)
	hw, ohw := h*w, ho*wo
	// Both kernels locate points with the same code (pixelScale, axisTap,
	// bilinearWeights), so their weights are identical and they are exact
	// adjoints.
	sy, sx := pixelScale[T](h, w)
	fh, fw := T(h), T(w)
	parallel.For(n, grainFor(c*ohw*4), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			g := grid.Data[i*ohw*2 : (i+1)*ohw*2]
			in := src.Data[i*c*hw : (i+1)*c*hw]
			out := dst.Data[i*c*ohw : (i+1)*c*ohw]
			for p := range ohw {
				x0, ex, okx := axisTap((g[2*p]+1)*sx, fw)
				y0, ey, oky := axisTap((g[2*p+1]+1)*sy, fh)
				if !okx || !oky {
					for ch := range c {
						out[ch*ohw+p] = 0
					}
					continue
				}
				w00, w01, w10, w11 := bilinearWeights(ex, ey)
				if x0 >= 0 && x0+1 < w && y0 >= 0 && y0+1 < h {
					o := y0*w + x0
					for ch := range c {
						q := in[ch*hw+o : ch*hw+o+w+2]
						out[ch*ohw+p] = w00*q[0] + w01*q[1] + w10*q[w] + w11*q[w+1]
					}
					continue
				}
				in0, in1 := x0 >= 0, x0+1 < w
				for ch := range c {
					plane := in[ch*hw : (ch+1)*hw]
					var v T
					if y0 >= 0 {
						if in0 {
							v += w00 * plane[y0*w+x0]
						}
						if in1 {
							v += w01 * plane[y0*w+x0+1]
						}
					}
					if y0+1 < h {
						if in0 {
							v += w10 * plane[(y0+1)*w+x0]
						}
						if in1 {
							v += w11 * plane[(y0+1)*w+x0+1]
						}
					}
					out[ch*ohw+p] = v
				}
			}
		}
	})
}

// gridSampleAdjointKernel writes dst (N, C, H, W) = the adjoint of sampling
// at grid (N, Ho, Wo, 2) applied to g (N, C, Ho, Wo): each g value is
// added to the in-image corners of its point with the bilinear weights.
// It panics on mismatched shapes or if dst is g.
func gridSampleAdjointKernel[T tensor.Float](dst, g, grid *tensor.Tensor[T]) {
	n, c, h, w := dims4("GridSampleAdjoint", dst.Shape)
	ho, wo := checkGrid("GridSampleAdjoint", g, dst, grid, n, c)
	hw, ohw := h*w, ho*wo
	// Both kernels locate points with the same code (pixelScale, axisTap,
	// bilinearWeights), so their weights are identical and they are exact
	// adjoints.
	sy, sx := pixelScale[T](h, w)
	fh, fw := T(h), T(w)
	parallel.For(n, grainFor(c*ohw*4), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			gr := grid.Data[i*ohw*2 : (i+1)*ohw*2]
			in := g.Data[i*c*ohw : (i+1)*c*ohw]
			out := dst.Data[i*c*hw : (i+1)*c*hw]
			clear(out)
			for p := range ohw {
				x0, ex, okx := axisTap((gr[2*p]+1)*sx, fw)
				y0, ey, oky := axisTap((gr[2*p+1]+1)*sy, fh)
				if !okx || !oky {
					continue
				}
				w00, w01, w10, w11 := bilinearWeights(ex, ey)
				if x0 >= 0 && x0+1 < w && y0 >= 0 && y0+1 < h {
					o := y0*w + x0
					for ch := range c {
						v := in[ch*ohw+p]
						q := out[ch*hw+o : ch*hw+o+w+2]
						q[0] += w00 * v
						q[1] += w01 * v
						q[w] += w10 * v
						q[w+1] += w11 * v
					}
					continue
				}
				in0, in1 := x0 >= 0, x0+1 < w
				for ch := range c {
					v := in[ch*ohw+p]
					plane := out[ch*hw : (ch+1)*hw]
					if y0 >= 0 {
						if in0 {
							plane[y0*w+x0] += w00 * v
						}
						if in1 {
							plane[y0*w+x0+1] += w01 * v
						}
					}
					if y0+1 < h {
						if in0 {
							plane[(y0+1)*w+x0] += w10 * v
						}
						if in1 {
							plane[(y0+1)*w+x0+1] += w11 * v
						}
					}
				}
			}
		}
	})
}

// checkGrid checks that sampled (N, C, Ho, Wo) and image (N, C, H, W)
// agree with grid (N, Ho, Wo, 2), and returns Ho, Wo.
func checkGrid[T tensor.Float](op string, sampled, image, grid *tensor.Tensor[T], n, c int) (ho, wo int) {
	s, gs := sampled.Shape, grid.Shape
	ok := len(s) == 4 && len(gs) == 4 && s[0] == n && s[1] == c && gs[0] == n && gs[1] == s[2] && gs[2] == s[3] && gs[3] == 2 &&
		len(sampled.Data) == tensor.Size(s) && len(grid.Data) == tensor.Size(gs) && len(image.Data) == tensor.Size(image.Shape)
	if !ok {
		panic(fmt.Sprintf("data: %s images %v, sampled %v, grid %v", op, image.Shape, s, gs))
	}
	if len(s) > 0 && len(sampled.Data) > 0 && len(image.Data) > 0 && &sampled.Data[0] == &image.Data[0] {
		panic(fmt.Sprintf("data: %s destination is its source", op))
	}
	return s[2], s[3]
}

// unitGrid returns size points evenly spaced from −1 to 1 (the single point
// 0 for size 1), as affine_grid's base grid with align_corners=True.
func unitGrid(size int) []float64 {
	if size <= 1 {
		return make([]float64, size)
	}
	out := make([]float64, size)
	for i := range out {
		out[i] = -1 + 2*float64(i)/float64(size-1)
	}
	return out
}
