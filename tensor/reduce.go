package tensor

import "fmt"

// MaxAxis writes the maximum of src along axis into dst (src's shape with
// that axis removed or kept as 1: only the size matters) and, when arg is
// not nil, the index along axis of each maximum (the first one on ties).
// It panics if the sizes do not match.
func MaxAxis[T Float](dst *Tensor[T], arg []int, src *Tensor[T], axis int) {
	if axis < 0 || axis >= len(src.Shape) {
		panic(fmt.Sprintf("tensor: MaxAxis axis %d of shape %v", axis, src.Shape))
	}
	outer, n, inner := axisSplit(src.Shape, axis)
	if len(dst.Data) != outer*inner || (arg != nil && len(arg) != outer*inner) || n == 0 {
		panic(fmt.Sprintf("tensor: MaxAxis of %v along %d into %v", src.Shape, axis, dst.Shape))
	}
	for o := 0; o < outer; o++ {
		for i := 0; i < inner; i++ {
			base := o*n*inner + i
			best, bi := src.Data[base], 0
			for k := 1; k < n; k++ {
				if v := src.Data[base+k*inner]; v > best {
					best, bi = v, k
				}
			}
			dst.Data[o*inner+i] = best
			if arg != nil {
				arg[o*inner+i] = bi
			}
		}
	}
}
