package tensor

import (
	"fmt"

	"github.com/fedsim/fedsim/internal/parallel"
	"github.com/fedsim/fedsim/tensor/internal/vec"
)

// ConvParams are the strides and zero paddings of a 2-D convolution
// (dilation 1, one group). Strides must be positive, paddings non-negative.
type ConvParams struct{ StrideH, StrideW, PadH, PadW int }

// ConvOutSize returns the output extent of a convolution or pooling window
// of size k sliding with the given stride over an input of extent in padded
// by pad on both sides: (in+2·pad−k)/stride + 1. It returns 0 when the
// window does not fit the padded input and panics if stride < 1.
func ConvOutSize(in, k, stride, pad int) int {
	if stride < 1 {
		panic(fmt.Sprintf("tensor: convolution stride %d", stride))
	}
	if in+2*pad < k || k < 1 {
		return 0
	}
	return (in+2*pad-k)/stride + 1
}

// ConvOutShape returns the shape (N, F, OH, OW) of Conv2D of an input of
// shape x = (N, C, H, W) with weights of shape w = (F, C, KH, KW), or an
// error naming both shapes when they are not compatible (wrong ranks,
// channel mismatch, kernel larger than the padded input, non-positive
// stride, negative padding).
func ConvOutShape(x, w []int, p ConvParams) ([]int, error) {
	if len(x) != 4 || len(w) != 4 {
		return nil, fmt.Errorf("tensor: convolution needs an input (N,C,H,W) and weights (F,C,KH,KW), got input %v and weights %v", x, w)
	}
	if p.StrideH < 1 || p.StrideW < 1 {
		return nil, fmt.Errorf("tensor: convolution strides must be positive, got %d×%d (input %v, weights %v)", p.StrideH, p.StrideW, x, w)
	}
	if p.PadH < 0 || p.PadW < 0 {
		return nil, fmt.Errorf("tensor: convolution paddings must be non-negative, got %d×%d (input %v, weights %v)", p.PadH, p.PadW, x, w)
	}
	if x[1] != w[1] {
		return nil, fmt.Errorf("tensor: convolution input %v has %d channels but weights %v expect %d", x, x[1], w, w[1])
	}
	if w[2] < 1 || w[3] < 1 || w[2] > x[2]+2*p.PadH || w[3] > x[3]+2*p.PadW {
		return nil, fmt.Errorf("tensor: convolution kernel %d×%d of weights %v does not fit input %v padded by %d×%d", w[2], w[3], w, x, p.PadH, p.PadW)
	}
	return []int{x[0], w[0], ConvOutSize(x[2], w[2], p.StrideH, p.PadH), ConvOutSize(x[3], w[3], p.StrideW, p.PadW)}, nil
}

// convGeom is the geometry of one convolution.
type convGeom struct {
	n, c, h, w, f, kh, kw, oh, ow int
	p                             ConvParams
}

func (g *convGeom) ckk() int { return g.c * g.kh * g.kw }
func (g *convGeom) ohw() int { return g.oh * g.ow }
func (g *convGeom) chw() int { return g.c * g.h * g.w }

// pointwise reports whether im2col is the identity (1×1 kernel, stride 1,
// no padding), so the GEMMs can read and write the images directly.
func (g *convGeom) pointwise() bool {
	return g.kh == 1 && g.kw == 1 && g.p.StrideH == 1 && g.p.StrideW == 1 && g.p.PadH == 0 && g.p.PadW == 0
}

// newConvGeom validates the shapes of a convolution whose input is x, whose
// weights are w and whose output is y, panicking with op's name on error.
func newConvGeom(op string, x, w, y []int, p ConvParams) *convGeom {
	want, err := ConvOutShape(x, w, p)
	if err != nil {
		panic(fmt.Sprintf("tensor: %s: %v", op, err))
	}
	if !SameShape(want, y) {
		panic(fmt.Sprintf("tensor: %s: input %v and weights %v give output shape %v, got %v", op, x, w, want, y))
	}
	return &convGeom{n: x[0], c: x[1], h: x[2], w: x[3], f: w[0], kh: w[2], kw: w[3], oh: want[2], ow: want[3], p: p}
}

// validRange returns the range [lo, hi) of output positions o in [0, out)
// whose input position o·stride + off lies in [0, in).
func validRange(out, stride, off, in int) (lo, hi int) {
	if off < 0 {
		lo = (-off + stride - 1) / stride
	}
	if in-off > 0 {
		hi = (in - off + stride - 1) / stride
	}
	hi = min(hi, out)
	lo = min(lo, out)
	return lo, max(lo, hi)
}

// im2col unfolds one image x (C,H,W) into col (C·KH·KW, OH·OW):
// col[(c·KH+i)·KW+j][oh·OW+ow] = x[c][oh·sh−ph+i][ow·sw−pw+j], zero outside.
func im2col[T Float](col, x []T, g *convGeom) {
	ohw, hw := g.ohw(), g.h*g.w
	sh, sw, ph, pw := g.p.StrideH, g.p.StrideW, g.p.PadH, g.p.PadW
	row := 0
	for c := 0; c < g.c; c++ {
		xc := x[c*hw : (c+1)*hw]
		for i := 0; i < g.kh; i++ {
			ohLo, ohHi := validRange(g.oh, sh, i-ph, g.h)
			for j := 0; j < g.kw; j++ {
				r := col[row*ohw : (row+1)*ohw]
				row++
				owLo, owHi := validRange(g.ow, sw, j-pw, g.w)
				clear(r[:ohLo*g.ow])
				clear(r[ohHi*g.ow:])
				if sh == 1 && sw == 1 && g.ow == g.w && ohLo < ohHi {
					// Same width: the valid rows are one shifted run of
					// the plane (one copy instead of one per row); the
					// entries that wrapped into a neighbouring row are the
					// out-of-range columns, zeroed afterwards.
					shift := (i-ph)*g.w + (j - pw)
					t0, t1 := max(ohLo*g.ow, -shift), min(ohHi*g.ow, hw-shift)
					copy(r[t0:t1], xc[t0+shift:t1+shift])
					zeroEdges(r, ohLo, ohHi, g.ow, owLo, owHi)
					continue
				}
				for oh := ohLo; oh < ohHi; oh++ {
					ro := r[oh*g.ow : (oh+1)*g.ow]
					ih := oh*sh - ph + i
					xr := xc[ih*g.w : (ih+1)*g.w]
					clear(ro[:owLo])
					clear(ro[owHi:])
					if owLo == owHi {
						continue
					}
					if sw == 1 {
						copy(ro[owLo:owHi], xr[owLo-pw+j:owHi-pw+j])
						continue
					}
					ro = ro[owLo:owHi]
					off := owLo*sw - pw + j
					for k := range ro {
						ro[k] = xr[off+k*sw]
					}
				}
			}
		}
	}
}

// col2im is the adjoint of im2col: it overwrites x (C,H,W) with the sum of
// the col entries that im2col would have read from each position. col is
// scratch: the entries im2col would have set to zero (padding) may be
// overwritten with zeros.
func col2im[T Float](x, col []T, g *convGeom) {
	clear(x)
	ohw, hw := g.ohw(), g.h*g.w
	sh, sw, ph, pw := g.p.StrideH, g.p.StrideW, g.p.PadH, g.p.PadW
	row := 0
	for c := 0; c < g.c; c++ {
		xc := x[c*hw : (c+1)*hw]
		for i := 0; i < g.kh; i++ {
			ohLo, ohHi := validRange(g.oh, sh, i-ph, g.h)
			for j := 0; j < g.kw; j++ {
				r := col[row*ohw : (row+1)*ohw]
				row++
				owLo, owHi := validRange(g.ow, sw, j-pw, g.w)
				if owLo == owHi {
					continue
				}
				if sh == 1 && sw == 1 && g.ow == g.w && ohLo < ohHi {
					// Same width, as in im2col: zero the col entries that
					// would wrap into a neighbouring row, then add the
					// valid rows as one shifted run.
					shift := (i-ph)*g.w + (j - pw)
					t0, t1 := max(ohLo*g.ow, -shift), min(ohHi*g.ow, hw-shift)
					zeroEdges(r, ohLo, ohHi, g.ow, owLo, owHi)
					addRun(xc[t0+shift:t1+shift], r[t0:t1])
					continue
				}
				for oh := ohLo; oh < ohHi; oh++ {
					ro := r[oh*g.ow+owLo : oh*g.ow+owHi]
					ih := oh*sh - ph + i
					xr := xc[ih*g.w : (ih+1)*g.w]
					off := owLo*sw - pw + j
					if sw == 1 {
						addRun(xr[off:off+len(ro)], ro)
						continue
					}
					for k, v := range ro {
						xr[off+k*sw] += v
					}
				}
			}
		}
	}
}

// zeroEdges zeroes, in each row oh in [ohLo, ohHi) of r (rows of ow
// values), the columns outside [owLo, owHi). The ranges are a few columns
// wide, so plain stores beat clear's call.
func zeroEdges[T Float](r []T, ohLo, ohHi, ow, owLo, owHi int) {
	if ohLo >= ohHi {
		return
	}
	r = r[ohLo*ow : ohHi*ow]
	// One strided pass per edge column (kernels are small: a column or
	// two per side).
	for k := 0; k < owLo; k++ {
		for t := k; t < len(r); t += ow {
			r[t] = 0
		}
	}
	for k := owHi; k < ow; k++ {
		for t := k; t < len(r); t += ow {
			r[t] = 0
		}
	}
}

// addRun computes dst += src (SIMD for float32; an FMA with 1 is an add).
func addRun[T Float](dst, src []T) { axpyRow(1, src, dst) }

// batchGrain is the parallel.For grain for a loop over n images: one image
// per chunk when the batch splits evenly enough over the workers, otherwise
// the whole batch in one chunk so that each GEMM parallelises itself.
func batchGrain(n int) int {
	w := parallel.Workers()
	if n >= 4*w || n%w == 0 {
		return 1
	}
	return n
}

// Conv2D computes the 2-D cross-correlation (PyTorch's conv2d, dilation 1,
// one group) dst = x ⋆ w + b, where x is (N,C,H,W), w is (F,C,KH,KW), the
// optional bias b (nil for none) is (F) and dst is (N,F,OH,OW) with
// OH = ConvOutSize(H, KH, StrideH, PadH) and OW likewise. Each image is an
// im2col unfolding followed by a GEMM; images run in parallel. 3×3,
// stride-1, padding-1 layers with at least winogradMinChannels channels in
// and out take the Winograd path instead (winograd.go).
//
// It panics if a shape is inconsistent (ranks, channels, dst or b shape),
// if the kernel does not fit the padded input, if a stride is not positive
// or a padding is negative.
func Conv2D[T Float](dst, x, w, b *Tensor[T], p ConvParams) {
	g := newConvGeom("Conv2D", x.Shape, w.Shape, dst.Shape, p)
	if b != nil && (len(b.Shape) != 1 || b.Shape[0] != g.f) {
		panic(fmt.Sprintf("tensor: Conv2D bias shape %v, want [%d] (weights %v)", b.Shape, g.f, w.Shape))
	}
	ckk, ohw, chw := g.ckk(), g.ohw(), g.chw()
	if w32, ok := any(w.Data).([]float32); ok && ckk <= narrowCKK && !g.pointwise() {
		var b32 []float32
		if b != nil {
			b32 = any(b.Data).([]float32)
		}
		conv2DNarrow(any(dst.Data).([]float32), any(x.Data).([]float32), w32, b32, g)
		return
	}
	if useWinograd(g) {
		var bd []T
		if b != nil {
			bd = b.Data
		}
		conv2DWinograd(dst.Data, x.Data, w.Data, bd, g, false)
		return
	}
	direct := g.pointwise()
	wa := newFixedA(false, g.f, ckk, w.Data, ckk)
	defer wa.release()
	parallel.For(g.n, batchGrain(g.n), func(lo, hi int) {
		var col *Tensor[T]
		if !direct {
			col = GetUninit[T](ckk * ohw)
			defer Put(col)
		}
		for n := lo; n < hi; n++ {
			src := x.Data[n*chw : (n+1)*chw]
			if !direct {
				im2col(col.Data, src, g)
				src = col.Data
			}
			out := dst.Data[n*g.f*ohw : (n+1)*g.f*ohw]
			var beta T
			if b != nil {
				for f, bv := range b.Data {
					fillSlice(out[f*ohw:(f+1)*ohw], bv)
				}
				beta = 1
			}
			wa.mul(false, ohw, 1, src, ohw, beta, out, ohw)
		}
	})
}

// narrowCKK: up to this C·KH·KW (the first layer of a network on
// one-channel images: 9 for a 3×3 kernel), Conv2D skips the GEMM. A product
// with so short a reduction is bound by packing its wide operand and by
// writing the output twice (the bias, then the sum); conv2DNarrow
// instead builds each output row in cache from the im2col rows.
const narrowCKK = 16

// conv2DNarrow is Conv2D for float32 when C·KH·KW ≤ narrowCKK: per image
// and filter f, out[f] = Σ_k w[f,k]·col[k] + b[f], each output vector
// summed in registers over the im2col rows and stored once. The sum is
// formed in the GEMM kernel's order (a product, fused multiply-adds in k
// order, then the bias), so the result is bit for bit the GEMM path's where
// both use FMA (AVX-512, AVX2) and OH·OW is a multiple of the vector width.
func conv2DNarrow(dst, x, w, b []float32, g *convGeom) {
	ckk, ohw, chw := g.ckk(), g.ohw(), g.chw()
	parallel.For(g.n, batchGrain(g.n), func(lo, hi int) {
		col := GetUninit[float32](ckk * ohw)
		defer Put(col)
		for n := lo; n < hi; n++ {
			im2col(col.Data, x[n*chw:(n+1)*chw], g)
			out := dst[n*g.f*ohw : (n+1)*g.f*ohw]
			for f := 0; f < g.f; f++ {
				var bf float32
				if b != nil {
					bf = b[f]
				}
				vec.WeightedRows(out[f*ohw:(f+1)*ohw], col.Data, ohw, w[f*ckk:(f+1)*ckk], bf, b != nil)
			}
		}
	})
}

// Conv2DTranspose computes the adjoint of Conv2D with respect to its input:
// dst = Σ_f g[:, f] ⋆ᵀ w[f], so that <Conv2D(x, w), g> = <x, dst> for every
// x of dst's shape. g is (N,F,OH,OW), w is (F,C,KH,KW) and dst is (N,C,H,W);
// H and W are taken from dst (several input sizes give the same output size
// when a stride exceeds 1). Each image is a GEMM wᵀ·g followed by col2im;
// images run in parallel (or the Winograd path, as in Conv2D). dst is
// overwritten.
//
// It panics if the shapes are inconsistent (Conv2D of an input of dst's
// shape with w must have g's shape) or the parameters are invalid, as
// Conv2D does.
func Conv2DTranspose[T Float](dst, g, w *Tensor[T], p ConvParams) {
	if len(dst.Shape) != 4 || len(w.Shape) != 4 || len(g.Shape) != 4 {
		panic(fmt.Sprintf("tensor: Conv2DTranspose needs rank-4 tensors, got gradient %v, weights %v, destination %v", g.Shape, w.Shape, dst.Shape))
	}
	geo := newConvGeom("Conv2DTranspose", dst.Shape, w.Shape, g.Shape, p)
	if useWinograd(geo) {
		conv2DWinograd(dst.Data, g.Data, w.Data, nil, geo, true)
		return
	}
	ckk, ohw, chw, nf := geo.ckk(), geo.ohw(), geo.chw(), geo.f
	direct := geo.pointwise()
	wt := newFixedA(true, ckk, nf, w.Data, ckk) // wᵀ, packed once for the batch
	defer wt.release()
	parallel.For(geo.n, batchGrain(geo.n), func(lo, hi int) {
		var col *Tensor[T]
		if !direct {
			col = GetUninit[T](ckk * ohw)
			defer Put(col)
		}
		for n := lo; n < hi; n++ {
			gn := g.Data[n*nf*ohw : (n+1)*nf*ohw]
			out := dst.Data[n*chw : (n+1)*chw]
			if direct {
				wt.mul(false, ohw, 1, gn, ohw, 0, out, ohw)
				continue
			}
			wt.mul(false, ohw, 1, gn, ohw, 0, col.Data, ohw)
			col2im(out, col.Data, geo)
		}
	})
}

// smallCKK: below this C·KH·KW the weight gradient is computed transposed,
// as a (C·KH·KW)×F product, which keeps the GEMM's wide dimension wide.
const smallCKK = 32

// Conv2DWeightGrad computes the adjoint of Conv2D with respect to its
// weights: dst = Σ_n g_n · im2col(x_n)ᵀ, so that <Conv2D(x, w), g> =
// <w, dst> for every w of dst's shape. x is (N,C,H,W), g is (N,F,OH,OW) and
// dst is (F,C,KH,KW). The batch is split into one range per worker; each
// range accumulates its own partial sum and the partials are added in range
// order, so the result does not depend on scheduling (the Winograd path,
// taken as in Conv2D, splits its groups of images the same way). dst is
// overwritten.
//
// It panics if the shapes are inconsistent (Conv2D of x with weights of
// dst's shape must have g's shape) or the parameters are invalid, as Conv2D
// does.
func Conv2DWeightGrad[T Float](dst, x, g *Tensor[T], p ConvParams) {
	if len(dst.Shape) != 4 || len(x.Shape) != 4 || len(g.Shape) != 4 {
		panic(fmt.Sprintf("tensor: Conv2DWeightGrad needs rank-4 tensors, got input %v, gradient %v, destination %v", x.Shape, g.Shape, dst.Shape))
	}
	geo := newConvGeom("Conv2DWeightGrad", x.Shape, dst.Shape, g.Shape, p)
	ckk, ohw, chw, nf := geo.ckk(), geo.ohw(), geo.chw(), geo.f
	if geo.n == 0 {
		clear(dst.Data)
		return
	}
	if useWinograd(geo) {
		conv2DWeightGradWinograd(dst.Data, x.Data, g.Data, geo)
		return
	}
	direct := geo.pointwise()
	// Transposed accumulation (dstᵀ = Σ col·gᵀ) when C·KH·KW is narrow.
	trans := ckk < smallCKK && ckk < nf
	chunks := 1
	if batchGrain(geo.n) == 1 {
		chunks = min(parallel.Workers(), geo.n)
	}
	partials := make([]*Tensor[T], chunks)
	parallel.For(chunks, 1, func(lo, hi int) {
		var col *Tensor[T]
		if !direct {
			col = GetUninit[T](ckk * ohw)
			defer Put(col)
		}
		for c := lo; c < hi; c++ {
			var acc *Tensor[T]
			if c == 0 && !trans {
				acc = dst
			} else {
				acc = GetUninit[T](nf * ckk)
			}
			partials[c] = acc
			n0, n1 := c*geo.n/chunks, (c+1)*geo.n/chunks
			for n := n0; n < n1; n++ {
				src := x.Data[n*chw : (n+1)*chw]
				if !direct {
					im2col(col.Data, src, geo)
					src = col.Data
				}
				gn := g.Data[n*nf*ohw : (n+1)*nf*ohw]
				var beta T
				if n > n0 {
					beta = 1
				}
				if trans {
					Gemm(false, true, ckk, nf, ohw, 1, src, ohw, gn, ohw, beta, acc.Data, nf)
				} else {
					Gemm(false, true, nf, ckk, ohw, 1, gn, ohw, src, ohw, beta, acc.Data, ckk)
				}
			}
		}
	})
	if trans {
		sum := partials[0]
		for _, pt := range partials[1:] {
			addTo(sum.Data, pt.Data)
			Put(pt)
		}
		for f := 0; f < nf; f++ {
			row := dst.Data[f*ckk : (f+1)*ckk]
			for k := range row {
				row[k] = sum.Data[k*nf+f]
			}
		}
		Put(sum)
		return
	}
	for _, pt := range partials[1:] {
		addTo(dst.Data, pt.Data)
		Put(pt)
	}
}

// addTo computes dst += src element-wise, in parallel.
func addTo[T Float](dst, src []T) {
	parallel.For(len(dst), 32768, func(lo, hi int) {
		addRun(dst[lo:hi], src[lo:hi])
	})
}
