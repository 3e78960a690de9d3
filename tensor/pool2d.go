package tensor

import (
	"fmt"
	"math"

	"github.com/fedsim/fedsim/internal/parallel"
	"github.com/fedsim/fedsim/tensor/internal/vec"
)

// PoolOutShape returns the shape (N, C, OH, OW) of a k×k pooling with the
// given stride and padding (PyTorch semantics, floor mode) of an input of
// shape x = (N, C, H, W), or an error naming the shape when the pooling is
// invalid: wrong rank, k < 1, stride < 1, pad < 0, pad > k/2 (a window would
// see only padding) or a window larger than the padded input.
func PoolOutShape(x []int, k, stride, pad int) ([]int, error) {
	if len(x) != 4 {
		return nil, fmt.Errorf("tensor: pooling needs an input (N,C,H,W), got %v", x)
	}
	if k < 1 || stride < 1 {
		return nil, fmt.Errorf("tensor: pooling window %d and stride %d must be positive (input %v)", k, stride, x)
	}
	if pad < 0 || pad > k/2 {
		return nil, fmt.Errorf("tensor: pooling padding %d must be between 0 and half the window %d (input %v)", pad, k, x)
	}
	if k > x[2]+2*pad || k > x[3]+2*pad {
		return nil, fmt.Errorf("tensor: pooling window %d×%d does not fit input %v padded by %d", k, k, x, pad)
	}
	return []int{x[0], x[1], ConvOutSize(x[2], k, stride, pad), ConvOutSize(x[3], k, stride, pad)}, nil
}

type poolGeom struct {
	planes, h, w, oh, ow, k, s, p int
}

// newPoolGeom validates a pooling from x to y and panics on error.
func newPoolGeom(op string, x, y []int, k, stride, pad int) *poolGeom {
	want, err := PoolOutShape(x, k, stride, pad)
	if err != nil {
		panic(fmt.Sprintf("tensor: %s: %v", op, err))
	}
	if !SameShape(want, y) {
		panic(fmt.Sprintf("tensor: %s: input %v with window %d, stride %d, padding %d gives shape %v, got %v", op, x, k, stride, pad, want, y))
	}
	return &poolGeom{planes: x[0] * x[1], h: x[2], w: x[3], oh: want[2], ow: want[3], k: k, s: stride, p: pad}
}

// fast2 reports the 2×2, stride 2, unpadded case.
func (g *poolGeom) fast2() bool { return g.k == 2 && g.s == 2 && g.p == 0 }

// even2 reports the 2×2, stride 2, unpadded case on planes of even height
// and width: then the planes are one run of row pairs, which the float32
// SIMD kernels pool whole.
func (g *poolGeom) even2() bool { return g.fast2() && g.h%2 == 0 && g.w%2 == 0 }

// window returns the clipped input ranges of output (oh, ow).
func (g *poolGeom) window(oh, ow int) (h0, h1, w0, w1 int) {
	h0, w0 = oh*g.s-g.p, ow*g.s-g.p
	h1, w1 = min(h0+g.k, g.h), min(w0+g.k, g.w)
	return max(h0, 0), h1, max(w0, 0), w1
}

// planeGrain is the parallel.For grain over planes of size sz.
func planeGrain(sz int) int { return max(1, 16384/max(1, sz)) }

// AvgPool2D computes k×k average pooling with the given stride and zero
// padding (PyTorch's avg_pool2d with count_include_pad=True and floor mode:
// every window sum is divided by k²). x is (N,C,H,W) and dst is (N,C,OH,OW)
// with OH = ConvOutSize(H, k, stride, pad).
//
// It panics if dst's shape is wrong or the pooling is invalid (see
// PoolOutShape).
func AvgPool2D[T Float](dst, x *Tensor[T], k, stride, pad int) {
	g := newPoolGeom("AvgPool2D", x.Shape, dst.Shape, k, stride, pad)
	hw, ohw := g.h*g.w, g.oh*g.ow
	inv := 1 / T(k*k)
	parallel.For(g.planes, planeGrain(hw), func(lo, hi int) {
		if d32, ok := any(dst.Data).([]float32); ok && g.even2() {
			vec.AvgPool2x2(d32[lo*ohw:hi*ohw], any(x.Data).([]float32)[lo*hw:hi*hw], g.w, float32(inv))
			return
		}
		for pl := lo; pl < hi; pl++ {
			xp, op := x.Data[pl*hw:(pl+1)*hw], dst.Data[pl*ohw:(pl+1)*ohw]
			if g.fast2() {
				for oh := 0; oh < g.oh; oh++ {
					r0, r1 := xp[2*oh*g.w:(2*oh+1)*g.w], xp[(2*oh+1)*g.w:(2*oh+2)*g.w]
					o := op[oh*g.ow : (oh+1)*g.ow]
					for ow := range o {
						o[ow] = (r0[2*ow] + r0[2*ow+1] + r1[2*ow] + r1[2*ow+1]) * inv
					}
				}
				continue
			}
			for oh := 0; oh < g.oh; oh++ {
				for ow := 0; ow < g.ow; ow++ {
					h0, h1, w0, w1 := g.window(oh, ow)
					var s T
					for ih := h0; ih < h1; ih++ {
						for _, v := range xp[ih*g.w+w0 : ih*g.w+w1] {
							s += v
						}
					}
					op[oh*g.ow+ow] = s * inv
				}
			}
		}
	})
}

// AvgPool2DBackward computes the adjoint of AvgPool2D: it overwrites dst
// (N,C,H,W) with the gradient of <AvgPool2D(x), g> with respect to x, where
// g is (N,C,OH,OW). H and W are taken from dst.
//
// It panics if the shapes or the pooling are invalid, as AvgPool2D does.
func AvgPool2DBackward[T Float](dst, g *Tensor[T], k, stride, pad int) {
	geo := newPoolGeom("AvgPool2DBackward", dst.Shape, g.Shape, k, stride, pad)
	hw, ohw := geo.h*geo.w, geo.oh*geo.ow
	inv := 1 / T(k*k)
	parallel.For(geo.planes, planeGrain(hw), func(lo, hi int) {
		if d32, ok := any(dst.Data).([]float32); ok && geo.even2() {
			vec.AvgPool2x2Backward(d32[lo*hw:hi*hw], any(g.Data).([]float32)[lo*ohw:hi*ohw], geo.w, float32(inv))
			return
		}
		for pl := lo; pl < hi; pl++ {
			xp, gp := dst.Data[pl*hw:(pl+1)*hw], g.Data[pl*ohw:(pl+1)*ohw]
			if geo.fast2() {
				if geo.h%2 != 0 || geo.w%2 != 0 {
					clear(xp)
				}
				for oh := 0; oh < geo.oh; oh++ {
					r0, r1 := xp[2*oh*geo.w:(2*oh+1)*geo.w], xp[(2*oh+1)*geo.w:(2*oh+2)*geo.w]
					gr := gp[oh*geo.ow : (oh+1)*geo.ow]
					for ow, v := range gr {
						v *= inv
						r0[2*ow], r0[2*ow+1], r1[2*ow], r1[2*ow+1] = v, v, v, v
					}
				}
				continue
			}
			clear(xp)
			for oh := 0; oh < geo.oh; oh++ {
				for ow := 0; ow < geo.ow; ow++ {
					h0, h1, w0, w1 := geo.window(oh, ow)
					v := gp[oh*geo.ow+ow] * inv
					for ih := h0; ih < h1; ih++ {
						r := xp[ih*geo.w+w0 : ih*geo.w+w1]
						for i := range r {
							r[i] += v
						}
					}
				}
			}
		}
	})
}

// MaxPool2D computes k×k max pooling with the given stride and padding
// (PyTorch's max_pool2d, floor mode, padding counts as −∞): dst (N,C,OH,OW)
// receives the window maxima of x (N,C,H,W) and idx (len(dst.Data) values)
// the position of each maximum within its input plane, ih·W + iw. Ties go
// to the first position in row-major window order; a NaN wins over numbers.
//
// It panics if dst's shape or len(idx) is wrong or the pooling is invalid
// (see PoolOutShape).
func MaxPool2D[T Float](dst *Tensor[T], idx []int32, x *Tensor[T], k, stride, pad int) {
	g := newPoolGeom("MaxPool2D", x.Shape, dst.Shape, k, stride, pad)
	if len(idx) != len(dst.Data) {
		panic(fmt.Sprintf("tensor: MaxPool2D got %d indices for output %v", len(idx), dst.Shape))
	}
	if g.h*g.w > math.MaxInt32 {
		panic(fmt.Sprintf("tensor: MaxPool2D input planes of %v too large for int32 indices", x.Shape))
	}
	hw, ohw := g.h*g.w, g.oh*g.ow
	parallel.For(g.planes, planeGrain(hw), func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			xp, op, ip := x.Data[pl*hw:(pl+1)*hw], dst.Data[pl*ohw:(pl+1)*ohw], idx[pl*ohw:(pl+1)*ohw]
			if g.fast2() {
				for oh := 0; oh < g.oh; oh++ {
					b0 := 2 * oh * g.w
					r0, r1 := xp[b0:b0+g.w], xp[b0+g.w:b0+2*g.w]
					o, id := op[oh*g.ow:(oh+1)*g.ow], ip[oh*g.ow:(oh+1)*g.ow]
					for ow := range o {
						j := 2 * ow
						a, b, c, d := r0[j], r0[j+1], r1[j], r1[j+1]
						// Branch-free: the indices are integer selects on
						// float comparisons (strict, so ties keep the first
						// position), the maxima the max builtin. A NaN
						// anywhere makes the sum NaN and takes the rare
						// exact path.
						i01, i23 := 0, g.w
						if b > a {
							i01 = 1
						}
						if d > c {
							i23 = g.w + 1
						}
						bi := i01
						if max(c, d) > max(a, b) {
							bi = i23
						}
						if s := a + b + c + d; s != s {
							best := a
							bi = 0
							for q, v := range [3]T{b, c, d} {
								if v > best || v != v {
									best, bi = v, [3]int{1, g.w, g.w + 1}[q]
								}
							}
						}
						bi += b0 + j
						best := xp[bi]
						o[ow], id[ow] = best, int32(bi)
					}
				}
				continue
			}
			for oh := 0; oh < g.oh; oh++ {
				for ow := 0; ow < g.ow; ow++ {
					h0, h1, w0, w1 := g.window(oh, ow)
					bi := h0*g.w + w0
					best := xp[bi]
					for ih := h0; ih < h1; ih++ {
						for iw := w0; iw < w1; iw++ {
							if v := xp[ih*g.w+iw]; v > best || v != v {
								best, bi = v, ih*g.w+iw
							}
						}
					}
					op[oh*g.ow+ow], ip[oh*g.ow+ow] = best, int32(bi)
				}
			}
		}
	})
}

// maxPoolPlanes checks the shapes of a max-pool scatter or gather between
// an input-shaped tensor in (N,C,H,W) and an output-shaped out (N,C,OH,OW)
// with len(idx) == len(out.Data), and returns the plane sizes.
func maxPoolPlanes[T Float](op string, in, out *Tensor[T], idx []int32) (planes, hw, ohw int) {
	if len(in.Shape) != 4 || len(out.Shape) != 4 || in.Shape[0] != out.Shape[0] || in.Shape[1] != out.Shape[1] {
		panic(fmt.Sprintf("tensor: %s between input shape %v and output shape %v", op, in.Shape, out.Shape))
	}
	if len(idx) != len(out.Data) {
		panic(fmt.Sprintf("tensor: %s got %d indices for output %v", op, len(idx), out.Shape))
	}
	return in.Shape[0] * in.Shape[1], in.Shape[2] * in.Shape[3], out.Shape[2] * out.Shape[3]
}

// MaxPool2DBackward scatters g (N,C,OH,OW) into dst (N,C,H,W) at the argmax
// positions idx recorded by MaxPool2D: dst is overwritten with zeros and
// dst[plane][idx[o]] += g[o] for every output o (the adjoint of
// MaxPool2DGather).
//
// It panics if the batch or channel counts differ, len(idx) differs from
// len(g.Data), or an index lies outside its plane.
func MaxPool2DBackward[T Float](dst, g *Tensor[T], idx []int32) {
	planes, hw, ohw := maxPoolPlanes("MaxPool2DBackward", dst, g, idx)
	parallel.For(planes, planeGrain(hw), func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			xp, gp, ip := dst.Data[pl*hw:(pl+1)*hw], g.Data[pl*ohw:(pl+1)*ohw], idx[pl*ohw:(pl+1)*ohw]
			clear(xp)
			for o, v := range gp {
				xp[ip[o]] += v
			}
		}
	})
}

// MaxPool2DGather computes dst[plane][o] = x[plane][idx[o]] for dst
// (N,C,OH,OW) and x (N,C,H,W): the max pooling of x at fixed argmax
// positions, and the adjoint of MaxPool2DBackward.
//
// It panics if the batch or channel counts differ, len(idx) differs from
// len(dst.Data), or an index lies outside its plane.
func MaxPool2DGather[T Float](dst, x *Tensor[T], idx []int32) {
	planes, hw, ohw := maxPoolPlanes("MaxPool2DGather", x, dst, idx)
	parallel.For(planes, planeGrain(hw), func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			xp, op, ip := x.Data[pl*hw:(pl+1)*hw], dst.Data[pl*ohw:(pl+1)*ohw], idx[pl*ohw:(pl+1)*ohw]
			for o, i := range ip {
				op[o] = xp[i]
			}
		}
	})
}
