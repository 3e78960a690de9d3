package tensor

import "fmt"

// Permute writes src with its axes reordered into dst: dst axis i is src
// axis perm[i]. It panics if perm is not a permutation of src's axes or dst
// has the wrong shape.
func Permute[T Float](dst, src *Tensor[T], perm []int) {
	r := len(src.Shape)
	if len(perm) != r || len(dst.Shape) != r {
		panic(fmt.Sprintf("tensor: Permute %v by %v into %v", src.Shape, perm, dst.Shape))
	}
	srcStrides := make([]int, r)
	s := 1
	for i := r - 1; i >= 0; i-- {
		srcStrides[i] = s
		s *= src.Shape[i]
	}
	st := make([]int, r) // src stride of each dst axis
	seen := make([]bool, r)
	for i, p := range perm {
		if p < 0 || p >= r || seen[p] || dst.Shape[i] != src.Shape[p] {
			panic(fmt.Sprintf("tensor: Permute %v by %v into %v", src.Shape, perm, dst.Shape))
		}
		seen[p] = true
		st[i] = srcStrides[p]
	}
	idx := make([]int, r)
	off := 0
	for o := range dst.Data {
		dst.Data[o] = src.Data[off]
		for d := r - 1; d >= 0; d-- {
			idx[d]++
			off += st[d]
			if idx[d] < dst.Shape[d] {
				break
			}
			off -= st[d] * idx[d]
			idx[d] = 0
		}
	}
}

// axisSplit returns (outer, dim, inner) sizes around axis.
func axisSplit(shape []int, axis int) (outer, dim, inner int) {
	outer, inner = 1, 1
	for i, d := range shape {
		switch {
		case i < axis:
			outer *= d
		case i > axis:
			inner *= d
		}
	}
	return outer, shape[axis], inner
}

func checkAxisCompatible(op string, small, big []int, axis int) {
	if len(small) != len(big) || axis < 0 || axis >= len(big) {
		panic(fmt.Sprintf("tensor: %s %v / %v along axis %d", op, small, big, axis))
	}
	for i := range small {
		if i != axis && small[i] != big[i] {
			panic(fmt.Sprintf("tensor: %s %v / %v along axis %d", op, small, big, axis))
		}
	}
}

// SliceAxis copies src[..., lo:lo+n, ...] (along axis, n = dst.Shape[axis])
// into dst. It panics if the range is out of bounds or the other dimensions
// differ.
func SliceAxis[T Float](dst, src *Tensor[T], axis, lo int) {
	checkAxisCompatible("SliceAxis", dst.Shape, src.Shape, axis)
	outer, n, inner := axisSplit(dst.Shape, axis)
	big := src.Shape[axis]
	if lo < 0 || lo+n > big {
		panic(fmt.Sprintf("tensor: SliceAxis [%d:%d] of axis %d of %v", lo, lo+n, axis, src.Shape))
	}
	for o := 0; o < outer; o++ {
		copy(dst.Data[o*n*inner:(o+1)*n*inner], src.Data[(o*big+lo)*inner:(o*big+lo+n)*inner])
	}
}

// PlaceAxis writes src into dst at offset lo along axis, leaving the rest of
// dst untouched (the adjoint of SliceAxis when dst starts at zero). It panics
// if the range is out of bounds or the other dimensions differ.
func PlaceAxis[T Float](dst, src *Tensor[T], axis, lo int) {
	checkAxisCompatible("PlaceAxis", src.Shape, dst.Shape, axis)
	outer, n, inner := axisSplit(src.Shape, axis)
	big := dst.Shape[axis]
	if lo < 0 || lo+n > big {
		panic(fmt.Sprintf("tensor: PlaceAxis [%d:%d] of axis %d of %v", lo, lo+n, axis, dst.Shape))
	}
	for o := 0; o < outer; o++ {
		copy(dst.Data[(o*big+lo)*inner:(o*big+lo+n)*inner], src.Data[o*n*inner:(o+1)*n*inner])
	}
}

// IndexRows sets dst[i] = src[idx[i]] along the first axis. It panics if an
// index is out of range or the row sizes differ.
func IndexRows[T Float](dst, src *Tensor[T], idx []int) {
	if len(src.Shape) == 0 || len(dst.Shape) == 0 || dst.Shape[0] != len(idx) {
		panic(fmt.Sprintf("tensor: IndexRows %v by %d indices into %v", src.Shape, len(idx), dst.Shape))
	}
	row := len(src.Data) / max(1, src.Shape[0])
	if len(dst.Data) != row*len(idx) {
		panic(fmt.Sprintf("tensor: IndexRows %v into %v: row sizes differ", src.Shape, dst.Shape))
	}
	for i, j := range idx {
		if j < 0 || j >= src.Shape[0] {
			panic(fmt.Sprintf("tensor: IndexRows index %d out of range [0,%d)", j, src.Shape[0]))
		}
		copy(dst.Data[i*row:(i+1)*row], src.Data[j*row:(j+1)*row])
	}
}

// AddRows does dst[idx[i]] += src[i] along the first axis (the adjoint of
// IndexRows). It panics if an index is out of range or the row sizes differ.
func AddRows[T Float](dst, src *Tensor[T], idx []int) {
	if len(src.Shape) == 0 || len(dst.Shape) == 0 || src.Shape[0] != len(idx) {
		panic(fmt.Sprintf("tensor: AddRows %v by %d indices into %v", src.Shape, len(idx), dst.Shape))
	}
	row := len(dst.Data) / max(1, dst.Shape[0])
	if len(src.Data) != row*len(idx) {
		panic(fmt.Sprintf("tensor: AddRows %v into %v: row sizes differ", src.Shape, dst.Shape))
	}
	for i, j := range idx {
		if j < 0 || j >= dst.Shape[0] {
			panic(fmt.Sprintf("tensor: AddRows index %d out of range [0,%d)", j, dst.Shape[0]))
		}
		d, s := dst.Data[j*row:(j+1)*row], src.Data[i*row:(i+1)*row]
		for k, v := range s {
			d[k] += v
		}
	}
}
