package tensor

import (
	"fmt"

	"github.com/fedsim/fedsim/internal/parallel"
	"github.com/fedsim/fedsim/tensor/internal/vec"
)

// ReLUAvgPool2x2 applies ReLU to x in place and writes its 2×2 stride-2
// average pool into dst, plane by plane, so each plane is pooled while it
// is still in cache: the block's ReLU and pooling cost one pass over x
// instead of two. x is (N,C,H,W) with even H and W; dst is (N,C,H/2,W/2).
// It panics on other shapes.
func ReLUAvgPool2x2[T Float](dst, x *Tensor[T]) {
	planes, h, w := reluPoolCheck("ReLUAvgPool2x2", dst, x)
	hw, ohw := h*w, h*w/4
	parallel.For(planes, planeGrain(hw), func(lo, hi int) {
		for p := lo; p < hi; p++ {
			xs, ds := x.Data[p*hw:(p+1)*hw], dst.Data[p*ohw:(p+1)*ohw]
			if x32, ok := any(xs).([]float32); ok {
				vec.ReLU(x32, x32)
				vec.AvgPool2x2(any(ds).([]float32), x32, w, 0.25)
				continue
			}
			for i, v := range xs {
				if !(v > 0) && v == v { // keep NaN, as ReLU does
					xs[i] = 0
				}
			}
			for oh := 0; oh < h/2; oh++ {
				r0, r1 := xs[2*oh*w:], xs[(2*oh+1)*w:]
				for ow := 0; ow < w/2; ow++ {
					ds[oh*(w/2)+ow] = (r0[2*ow] + r0[2*ow+1] + r1[2*ow] + r1[2*ow+1]) / 4
				}
			}
		}
	})
}

// ReLUAvgPool2x2Backward is the backward of ReLUAvgPool2x2: dx = (g spread
// over each 2×2 window)/4 where y > 0, else 0. y is the ReLU output (x after
// ReLUAvgPool2x2), g and dx are shaped like the pool output and like y.
// It panics on other shapes.
func ReLUAvgPool2x2Backward[T Float](dx, g, y *Tensor[T]) {
	planes, h, w := reluPoolCheck("ReLUAvgPool2x2Backward", g, y)
	if !SameShape(dx.Shape, y.Shape) {
		panic(fmt.Sprintf("tensor: ReLUAvgPool2x2Backward destination %v, want %v", dx.Shape, y.Shape))
	}
	hw, ohw := h*w, h*w/4
	parallel.For(planes, planeGrain(hw), func(lo, hi int) {
		for p := lo; p < hi; p++ {
			ds, gs, ys := dx.Data[p*hw:(p+1)*hw], g.Data[p*ohw:(p+1)*ohw], y.Data[p*hw:(p+1)*hw]
			if d32, ok := any(ds).([]float32); ok {
				vec.AvgPool2x2Backward(d32, any(gs).([]float32), w, 0.25)
				vec.ReLUBackward(d32, d32, any(ys).([]float32))
				continue
			}
			for i := range ds {
				hh, ww := i/w, i%w
				if ys[i] > 0 {
					ds[i] = gs[(hh/2)*(w/2)+ww/2] / 4
				} else {
					ds[i] = 0
				}
			}
		}
	})
}

func reluPoolCheck[T Float](name string, small, big *Tensor[T]) (planes, h, w int) {
	if len(big.Shape) != 4 || len(small.Shape) != 4 || big.Shape[2]%2 != 0 || big.Shape[3]%2 != 0 ||
		small.Shape[0] != big.Shape[0] || small.Shape[1] != big.Shape[1] ||
		small.Shape[2]*2 != big.Shape[2] || small.Shape[3]*2 != big.Shape[3] {
		panic(fmt.Sprintf("tensor: %s shapes %v and %v (want (N,C,H,W) with even H, W and (N,C,H/2,W/2))", name, big.Shape, small.Shape))
	}
	return big.Shape[0] * big.Shape[1], big.Shape[2], big.Shape[3]
}

// MaskedAvgPool2x2 is the adjoint of ReLUAvgPool2x2Backward in its gradient
// argument: dst = AvgPool2x2(u ⊙ 1[y > 0]). u and y are (N,C,H,W) with even
// H and W, dst is (N,C,H/2,W/2). It panics on other shapes.
func MaskedAvgPool2x2[T Float](dst, u, y *Tensor[T]) {
	planes, h, w := reluPoolCheck("MaskedAvgPool2x2", dst, y)
	if !SameShape(u.Shape, y.Shape) {
		panic(fmt.Sprintf("tensor: MaskedAvgPool2x2 gradient %v, mask %v", u.Shape, y.Shape))
	}
	hw, ow := h*w, w/2
	parallel.For(planes, planeGrain(hw), func(lo, hi int) {
		var masked []float32 // one plane of u ⊙ 1[y > 0], float32 only
		for p := lo; p < hi; p++ {
			us, ys, ds := u.Data[p*hw:(p+1)*hw], y.Data[p*hw:(p+1)*hw], dst.Data[p*hw/4:(p+1)*hw/4]
			if u32, ok := any(us).([]float32); ok {
				if masked == nil {
					masked = make([]float32, hw)
				}
				vec.ReLUBackward(masked, u32, any(ys).([]float32))
				vec.AvgPool2x2(any(ds).([]float32), masked, w, 0.25)
				continue
			}
			for oh := 0; oh < h/2; oh++ {
				for j := 0; j < ow; j++ {
					var s T
					for _, i := range [4]int{2*oh*w + 2*j, 2*oh*w + 2*j + 1, (2*oh+1)*w + 2*j, (2*oh+1)*w + 2*j + 1} {
						if ys[i] > 0 {
							s += us[i]
						}
					}
					ds[oh*ow+j] = s / 4
				}
			}
		}
	})
}
