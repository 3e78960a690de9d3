package tensor

import (
	"github.com/fedsim/fedsim/internal/parallel"
	"github.com/fedsim/fedsim/tensor/internal/vec"
)

// Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, "Fast Algorithms
// for Convolutional Neural Networks", 2016) for the 3×3, stride-1,
// padding-1 convolutions that make up the ConvNet, VGG and ResNet bodies.
//
// Each 2×2 tile of output is computed from the 4×4 tile of input around it
// as Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A, where g is a 3×3 kernel and ⊙ the
// element-wise product. Summed over input channels, the element-wise
// products become 16 independent matrix products, one per position ξ of
// the 4×4 transformed tile:
//
//	M[ξ] (out × tiles) = U[ξ] (out × in) · V[ξ] (in × tiles)
//
// with U = G g Gᵀ per (out, in) pair and V = Bᵀ d B per (in, tile). That is
// 16 multiplications per 4 outputs instead of 36: 2.25 times fewer flops
// than the im2col GEMM, at the cost of the two small transforms, which are
// additions only. The matrices (interpolation points 0, ±1) are
//
//	Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]
//	G  = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]
//	Aᵀ = [1 1 1 0; 0 1 −1 −1]
//
// Every coefficient is 0, ±1 or ±½, so the transforms add no rounding
// beyond that of the sums themselves; in float32 the result differs from
// the im2col path by a few units in the last place of the largest terms
// (TestConv2DAgainstNaive bounds it at 1e-5 relative, as for every path).
//
// The input gradient of such a convolution (Conv2DTranspose) is itself a
// 3×3, stride-1, padding-1 correlation of the output gradient with the
// kernels rotated by 180° and in/out channels swapped, so the same code
// serves both. The weight gradient uses the transposed algorithm,
// F(3×3, 2×2) (conv2DWeightGradWinograd).

// winogradMinChannels: with fewer input or output channels the GEMMs are
// too thin to amortize the transforms. Forward, input gradient and weight
// gradient together, 256 images at one thread, Winograd against im2col:
// 0.58× at 16 channels, 0.82× at 32, 0.95× at 48, 1.06–1.14× at 64 and
// 1.3× at 96 (16×16 and 8×8 images; BenchmarkConvWinogradChannels). The first
// layer of a network on one- or three-channel images stays on the im2col
// or narrow path.
var winogradMinChannels = 64 // a variable for BenchmarkConvWinogradChannels

// winogradGroupTiles is the least number of tiles one group of images puts
// side by side in each of its 16 GEMMs: one 16×16 image, four 8×8 ones. A
// group's transformed input and output then take 16·C·64 floats each
// (512 KB at C = 128), which stay in L2 beside the other core's: at two
// threads, groups of 256 tiles ran the weight gradient 1.3 times slower
// and gained nothing at one thread (BenchmarkConv2D*/L2, 16×16 layer).
// Groups are fixed by the batch, not by the worker count, so results do
// not depend on the number of threads.
const winogradGroupTiles = 64

// winogradStride is the distance between consecutive planes of n floats
// in the 16-plane buffers: one cache line more than n. Planes of a power
// of two of bytes (64 KB for 128×128 kernels, 32 KB for 128 channels × 64
// tiles) would all map to the same L1 sets, and the transforms, which
// touch the 16 planes at one position together, would evict their own
// lines: unpadded, the kernel transform alone took as long as the GEMMs
// for a 10-image batch.
func winogradStride(n int) int { return n + 16 }

// winogradGroups cuts the batch of g into groups of whole images of at
// least winogradGroupTiles tiles (or the whole batch): tiles per image,
// images per group and the number of groups.
func winogradGroups(g *convGeom) (perImage, groupImages, groups int) {
	perImage = ((g.h + 1) / 2) * ((g.w + 1) / 2)
	groupImages = max(1, min(g.n, (winogradGroupTiles+perImage-1)/perImage))
	return perImage, groupImages, (g.n + groupImages - 1) / groupImages
}

// winogradScratch returns one group's buffers of cols tiles: 16 planes of
// in×cols (the transformed input), 16 of out×cols (the transformed output,
// or the transformed output gradient) and 4 of out×cols (de-interleaved
// output entries), planes winogradStride apart.
func winogradScratch[T Float](in, out, cols int) (in16, out16, out4 *Tensor[T]) {
	return GetUninit[T](16 * winogradStride(in*cols)), GetUninit[T](16 * winogradStride(out*cols)), GetUninit[T](4 * winogradStride(out*cols))
}

func putAll[T Float](ts ...*Tensor[T]) {
	for _, t := range ts {
		Put(t)
	}
}

// winogradEnabled lets tests compare the Winograd path with the im2col one.
var winogradEnabled = true

// useWinograd reports whether the convolution of g (or its transpose) takes
// the Winograd path.
func useWinograd(g *convGeom) bool {
	return winogradEnabled && g.kh == 3 && g.kw == 3 && g.p == ConvParams{1, 1, 1, 1} &&
		g.c >= winogradMinChannels && g.f >= winogradMinChannels
}

// conv2DWinograd computes dst = x ⋆ w (+ b) for a 3×3, stride-1, padding-1
// convolution, or with transpose set the adjoint dst = Σ_f x[:, f] ⋆ᵀ w[f]
// (Conv2DTranspose, x then holding the output gradient). g is the forward
// convolution's geometry; dst is overwritten.
func conv2DWinograd[T Float](dst, x, w, b []T, g *convGeom, transpose bool) {
	in, out := g.c, g.f
	if transpose {
		in, out = g.f, g.c
	}
	h, wd := g.h, g.w // stride 1, padding 1: the output has the input's extent
	perImage, groupImages, groups := winogradGroups(g)

	us0 := winogradStride(out * in)
	u := GetUninit[T](16 * us0)
	defer Put(u)
	winogradWeights(u.Data, w, g.f, g.c, transpose)
	var us [16]*fixedA[T]
	for xi := range us {
		us[xi] = newFixedA(false, out, in, u.Data[xi*us0:xi*us0+out*in], in)
		defer us[xi].release()
	}

	parallel.For(groups, 1, func(lo, hi int) {
		v, m, y := winogradScratch[T](in, out, groupImages*perImage)
		defer putAll(v, m, y)
		for gi := lo; gi < hi; gi++ {
			n0 := gi * groupImages
			imgs := min(groupImages, g.n-n0)
			ld := imgs * perImage // columns of this group's matrices
			vs, ms := winogradStride(in*ld), winogradStride(out*ld)
			winogradInput(v.Data, x[n0*in*h*wd:(n0+imgs)*in*h*wd], imgs, in, h, wd, ld)
			for xi, a := range us {
				a.mul(false, ld, 1, v.Data[xi*vs:xi*vs+in*ld], ld, 0, m.Data[xi*ms:xi*ms+out*ld], ld)
			}
			winogradOutput(dst[n0*out*h*wd:(n0+imgs)*out*h*wd], m.Data, b, imgs, out, h, wd, ld, y.Data)
		}
	})
}

// winogradWeights writes U = G g Gᵀ for every kernel g into u as 16
// matrices out×in (u[ξ·out·in + o·in + i]). w is (F, C, 3, 3). Without
// flip, out = F and in = C; with flip (the adjoint), out = C, in = F and
// each kernel is rotated by 180°.
//
// It runs in chunks of kernels that stay in L1, in parallel: the nine taps
// of each kernel are gathered into nine planes (tap (a, b) into plane
// 3b+a), G is applied down the columns into twelve planes (G·g, entry
// (r, j) into plane 3r+j) and then along the rows into the sixteen planes
// of u, both as weighted sums of planes (SIMD for float32). For a batch of
// ten images this transform is a noticeable part of the convolution; a
// scalar kernel-by-kernel version took three times as long
// (BenchmarkWinogradTransforms).
func winogradWeights[T Float](u, w []T, f, c int, flip bool) {
	out, in := f, c
	if flip {
		out, in = c, f
	}
	plane := winogradStride(out * in)
	const chunk = winogradChunk / 2 // 21 planes of it in L1
	parallel.For(out*in, chunk, func(lo, hi int) {
		taps := make([]T, 9*chunk)
		gg := make([]T, 12*chunk)
		for k0 := lo; k0 < hi; k0 += chunk {
			n := min(hi, k0+chunk) - k0
			t := taps[:9*chunk]
			o, i := k0/in, k0%in
			for j := range n {
				var k []T
				if flip {
					k = w[(i*c+o)*9 : (i*c+o)*9+9]
					// rotated: tap (a, b) is k[8−3a−b]
					t[j], t[chunk+j], t[2*chunk+j] = k[8], k[5], k[2]
					t[3*chunk+j], t[4*chunk+j], t[5*chunk+j] = k[7], k[4], k[1]
					t[6*chunk+j], t[7*chunk+j], t[8*chunk+j] = k[6], k[3], k[0]
				} else {
					k = w[(o*c+i)*9 : (o*c+i)*9+9]
					t[j], t[chunk+j], t[2*chunk+j] = k[0], k[3], k[6]
					t[3*chunk+j], t[4*chunk+j], t[5*chunk+j] = k[1], k[4], k[7]
					t[6*chunk+j], t[7*chunk+j], t[8*chunk+j] = k[2], k[5], k[8]
				}
				if i++; i == in {
					o, i = o+1, 0
				}
			}
			combinePlanes(gg, chunk, taps, chunk, n, winogradKernelCols.w, winogradKernelCols.first)
			combinePlanes(u[k0:], plane, gg, chunk, n, winogradKernelRows.w, winogradKernelRows.first)
		}
	})
}

// winogradKernelCols and winogradKernelRows are the two halves of U = G g
// Gᵀ as weighted sums of planes: (G·g)[r][j] = Σ_a G[r][a]·g[a][j] from the
// tap planes 3j+a, and U[4r+s] = Σ_j G[s][j]·(G·g)[r][j] from the planes
// 3r+j; the rows of G that are one unit vector are a copy of one plane.
var winogradKernelCols, winogradKernelRows = func() (cols, rows planeSums) {
	g := [4][]float32{{1}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {1}}
	off := [4]int{0, 0, 0, 2} // first nonzero column of each row of G
	cols = planeSums{make([][]float32, 12), make([]int, 12)}
	rows = planeSums{make([][]float32, 16), make([]int, 16)}
	for r := range 4 {
		for j := range 3 {
			cols.w[3*r+j], cols.first[3*r+j] = g[r], 3*j+off[r]
		}
		for s := range 4 {
			rows.w[4*r+s], rows.first[4*r+s] = g[s], 3*r+off[s]
		}
	}
	return cols, rows
}()

// winogradInput writes V = Bᵀ d B for every channel and 4×4 input tile d
// of imgs images x (imgs, in, h, w) into v as 16 matrices in×ld
// (v[ξ·in·ld + c·ld + tile]); tiles are numbered image by image, row by
// row. Tile (ty, tx) reads rows 2ty−1 … 2ty+2 and columns 2tx−1 … 2tx+2,
// zero outside the image.
//
// Per strip of four input rows, Bᵀ is applied once to whole rows (into
// four rows t padded with zeros at both ends), then B to each tile's four
// columns of t: neighbouring tiles share two columns, and the loops are
// plain enough for the compiler to keep the tile in registers. (Gathering
// the tiles into 16 planes and combining those with SIMD, as
// winogradOutput does, measured slower: the gather costs more than the
// arithmetic it vectorizes.) For float32 planes up to 16 wide with
// AVX-512, vec.WinogradInput does the same per plane with one row per
// register and permutes for the tile columns, bit for bit the same values.
func winogradInput[T Float](v, x []T, imgs, in, h, w, ld int) {
	tH, tW := (h+1)/2, (w+1)/2
	plane := winogradStride(in * ld)
	if v32, ok := any(v).([]float32); ok && vec.WinogradInputOK(w) {
		x32 := any(x).([]float32)
		for img := 0; img < imgs; img++ {
			for c := 0; c < in; c++ {
				vec.WinogradInput(v32[c*ld+img*tH*tW:], plane, x32[(img*in+c)*h*w:(img*in+c+1)*h*w], h, w)
			}
		}
		return
	}
	tw := 2*tW + 2 // padded strip width: column j of the image is column j+1
	buf := make([]T, 4*tw+w)
	t0, t1, t2, t3 := buf[:tw], buf[tw:2*tw], buf[2*tw:3*tw], buf[3*tw:4*tw]
	zero := buf[4*tw:]
	row := func(xc []T, y int) []T {
		if y < 0 || y >= h {
			return zero
		}
		return xc[y*w : (y+1)*w]
	}
	for img := 0; img < imgs; img++ {
		for c := 0; c < in; c++ {
			xc := x[(img*in+c)*h*w : (img*in+c+1)*h*w]
			for ty := 0; ty < tH; ty++ {
				r0, r1, r2, r3 := row(xc, 2*ty-1), row(xc, 2*ty), row(xc, 2*ty+1), row(xc, 2*ty+2)
				r1, r2, r3 = r1[:len(r0)], r2[:len(r0)], r3[:len(r0)]
				a0, a1, a2, a3 := t0[1:len(r0)+1], t1[1:len(r0)+1], t2[1:len(r0)+1], t3[1:len(r0)+1]
				for j, d0 := range r0 {
					d1, d2, d3 := r1[j], r2[j], r3[j]
					a0[j] = d0 - d2
					a1[j] = d1 + d2
					a2[j] = d2 - d1
					a3[j] = d1 - d3
				}
				base := c*ld + img*tH*tW + ty*tW
				for i, t := range [4][]T{t0, t1, t2, t3} {
					o := (4*i)*plane + base
					v0 := v[o : o+tW]
					v1 := v[o+plane : o+plane+tW]
					v2 := v[o+2*plane : o+2*plane+tW]
					v3 := v[o+3*plane : o+3*plane+tW]
					t = t[:2*tW+2]
					for tx := range v0 {
						p := t[2*tx : 2*tx+4]
						p0, p1, p2, p3 := p[0], p[1], p[2], p[3]
						v0[tx] = p0 - p2
						v1[tx] = p1 + p2
						v2[tx] = p2 - p1
						v3[tx] = p1 - p3
					}
				}
			}
		}
	}
}

// winogradOutput writes Y = Aᵀ m A (+ b) for every output channel and tile
// of the 16 matrices m (out×ld, laid out as winogradInput's v) into dst
// (imgs, out, h, w), dropping the tile entries that fall outside an image
// of odd extent. b is the bias (nil for none); y is scratch of 4·out·ld.
//
// The transform is the same linear map at every position of the 16
// planes, so each of the four output planes Y_ij = Σ_ξ
// Aᵀ[i][a]·Aᵀ[j][b]·m_ξ (ξ = 4a+b) is formed over whole planes
// (winogradCombine: SIMD for float32), in chunks that stay in L1; the
// planes are then interleaved into the images.
func winogradOutput[T Float](dst, m, b []T, imgs, out, h, w, ld int, y []T) {
	plane := winogradStride(out * ld)
	winogradCombine(y, m, plane, winogradOutWeights[:], winogradOutFirst[:])
	tH, tW := (h+1)/2, (w+1)/2
	for img := 0; img < imgs; img++ {
		for f := 0; f < out; f++ {
			var bias T
			if b != nil {
				bias = b[f]
			}
			yc := dst[(img*out+f)*h*w : (img*out+f+1)*h*w]
			for ty := 0; ty < tH; ty++ {
				o := f*ld + img*tH*tW + ty*tW
				for i := range 2 {
					if 2*ty+i >= h {
						break
					}
					row := yc[(2*ty+i)*w : (2*ty+i+1)*w]
					e, od := y[(2*i)*plane+o:(2*i)*plane+o+tW], y[(2*i+1)*plane+o:(2*i+1)*plane+o+tW]
					if len(row) == 2*tW {
						for tx, ev := range e {
							q := row[2*tx : 2*tx+2]
							q[0] = ev + bias
							q[1] = od[tx] + bias
						}
						continue
					}
					for tx, ev := range e {
						row[2*tx] = ev + bias
						if 2*tx+1 < w {
							row[2*tx+1] = od[tx] + bias
						}
					}
				}
			}
		}
	}
}

// winogradChunk is the number of plane positions winogradCombine combines
// at a time: 12 source rows of it (24 KB) stay in L1.
const winogradChunk = 512

// winogradOutWeights[2i+j][4(a−i)+b] = Aᵀ[i][a]·Aᵀ[j][b] for a = i … i+2:
// the weights of output (i, j) over the 12 planes from plane
// winogradOutFirst[2i+j] = 4i on (Aᵀ row i is zero elsewhere).
var winogradOutWeights, winogradOutFirst = func() (ws [4][]float32, first [4]int) {
	at := [2][4]float32{{1, 1, 1, 0}, {0, 1, -1, -1}}
	for i := range 2 {
		for j := range 2 {
			ws[2*i+j], first[2*i+j] = make([]float32, 12), 4*i
			for a := i; a < i+3; a++ {
				for bb := range 4 {
					ws[2*i+j][4*(a-i)+bb] = at[i][a] * at[j][bb]
				}
			}
		}
	}
	return ws, first
}()

// conv2DWeightGradWinograd computes the weight gradient of a 3×3,
// stride-1, padding-1 convolution, dst (F, C, 3, 3) = Σ_n g_n ⋆ x_n, by
// F(3×3, 2×2), the transpose of the forward algorithm: with V = Bᵀ d B
// the input tiles as in the forward pass and Q = A q Aᵀ the 2×2 tiles q of
// the output gradient (zero past the image),
//
//	S[ξ] (F × C) = Σ_tiles Q[ξ] (F × tiles) · V[ξ]ᵀ (tiles × C)
//	dst[f][c]    = Gᵀ S[f][c] G
//
// because the forward output is Aᵀ[(G w Gᵀ) ⊙ V]A and so its derivative
// with respect to w contracts g with A on the output side and G on the
// kernel side. The batch is cut into the forward pass's groups, the groups
// into one range per worker with its own S, and the ranges' S are added in
// order, as in Conv2DWeightGrad.
func conv2DWeightGradWinograd[T Float](dst, x, g []T, geo *convGeom) {
	in, out, h, wd := geo.c, geo.f, geo.h, geo.w
	perImage, groupImages, groups := winogradGroups(geo)
	chunks := min(parallel.Workers(), groups)
	partials := make([]*Tensor[T], chunks)
	ss := winogradStride(out * in)
	parallel.For(chunks, 1, func(lo, hi int) {
		v, q, p := winogradScratch[T](in, out, groupImages*perImage)
		defer putAll(v, q, p)
		for c := lo; c < hi; c++ {
			s := GetUninit[T](16 * ss)
			partials[c] = s
			g0, g1 := c*groups/chunks, (c+1)*groups/chunks
			for gi := g0; gi < g1; gi++ {
				n0 := gi * groupImages
				imgs := min(groupImages, geo.n-n0)
				ld := imgs * perImage
				winogradInput(v.Data, x[n0*in*h*wd:(n0+imgs)*in*h*wd], imgs, in, h, wd, ld)
				winogradGradTiles(q.Data, g[n0*out*h*wd:(n0+imgs)*out*h*wd], imgs, out, h, wd, ld, p.Data)
				var beta T
				if gi > g0 {
					beta = 1
				}
				qs, vs := winogradStride(out*ld), winogradStride(in*ld)
				for xi := range 16 {
					Gemm(false, true, out, in, ld, 1, q.Data[xi*qs:xi*qs+out*ld], ld,
						v.Data[xi*vs:xi*vs+in*ld], ld, beta, s.Data[xi*ss:xi*ss+out*in], in)
				}
			}
		}
	})
	sum := partials[0]
	for _, pt := range partials[1:] {
		addTo(sum.Data, pt.Data)
		Put(pt)
	}
	defer Put(sum)
	winogradKernelAdjoint(dst, sum.Data, out*in, ss)
}

// winogradKernelAdjoint writes dst[k·9 : k·9+9] = Gᵀ S_k G, the adjoint of
// the kernel transform, for the n 4×4 matrices S_k whose entry (a, b) is
// s[(4a+b)·ss + k]. As winogradWeights, in chunks that stay in L1 and in
// parallel: Gᵀ down the columns (each column b of S is four planes 4·ss
// apart) into twelve planes (entry (r, b) into plane 4r+b), G along the
// rows into nine (tap (r, q) into plane 3r+q), then scattered into the
// kernels.
func winogradKernelAdjoint[T Float](dst, s []T, n, ss int) {
	const chunk = winogradChunk / 2
	parallel.For(n, chunk, func(lo, hi int) {
		t := make([]T, 12*chunk)
		d := make([]T, 9*chunk)
		for k0 := lo; k0 < hi; k0 += chunk {
			m := min(hi, k0+chunk) - k0
			for b := range 4 {
				combinePlanes(t[b*chunk:], 4*chunk, s[b*ss+k0:], 4*ss, m, winogradAdjointCols.w, winogradAdjointCols.first)
			}
			combinePlanes(d, chunk, t, chunk, m, winogradAdjointRows.w, winogradAdjointRows.first)
			for j := range m {
				k := dst[(k0+j)*9 : (k0+j)*9+9]
				k[0], k[1], k[2] = d[j], d[chunk+j], d[2*chunk+j]
				k[3], k[4], k[5] = d[3*chunk+j], d[4*chunk+j], d[5*chunk+j]
				k[6], k[7], k[8] = d[6*chunk+j], d[7*chunk+j], d[8*chunk+j]
			}
		}
	})
}

// winogradAdjointCols and winogradAdjointRows are the two halves of Gᵀ S G
// as weighted sums of planes: (Gᵀ S)[r][b] = Σ_a Gᵀ[r][a]·S[a][b] over the
// four planes of column b, and the tap (r, q) = Σ_b Gᵀ[q][b]·(Gᵀ S)[r][b]
// from the planes 4r+b. Gᵀ = [1 ½ ½ 0; 0 ½ −½ 0; 0 ½ ½ 1].
var winogradAdjointCols, winogradAdjointRows = func() (cols, rows planeSums) {
	gt := [3][]float32{{1, 0.5, 0.5}, {0.5, -0.5}, {0.5, 0.5, 1}}
	off := [3]int{0, 1, 1} // first nonzero column of each row of Gᵀ
	cols = planeSums{make([][]float32, 3), make([]int, 3)}
	rows = planeSums{make([][]float32, 9), make([]int, 9)}
	for r := range 3 {
		cols.w[r], cols.first[r] = gt[r], off[r]
		for q := range 3 {
			rows.w[3*r+q], rows.first[3*r+q] = gt[q], 4*r+off[q]
		}
	}
	return cols, rows
}()

// winogradGradTiles writes Q = A q Aᵀ for every output channel and 2×2
// tile q of the output gradient g (imgs, out, h, w), zero past an image of
// odd extent, into q as 16 matrices out×ld laid out as winogradInput's v.
// A = [1 0; 1 1; 1 −1; 0 −1]. p is scratch of 4·out·ld.
//
// As in winogradOutput, the tiles' four entries are first de-interleaved
// into four planes q_ij, then each Q plane is a weighted sum of those four
// (winogradCombine: SIMD for float32).
func winogradGradTiles[T Float](q, g []T, imgs, out, h, w, ld int, p []T) {
	tH, tW := (h+1)/2, (w+1)/2
	plane := winogradStride(out * ld)
	for img := 0; img < imgs; img++ {
		for f := 0; f < out; f++ {
			gc := g[(img*out+f)*h*w : (img*out+f+1)*h*w]
			for ty := 0; ty < tH; ty++ {
				o := f*ld + img*tH*tW + ty*tW
				for i := range 2 {
					e, od := p[(2*i)*plane+o:(2*i)*plane+o+tW], p[(2*i+1)*plane+o:(2*i+1)*plane+o+tW]
					if 2*ty+i >= h {
						clear(e)
						clear(od)
						continue
					}
					row := gc[(2*ty+i)*w : (2*ty+i+1)*w]
					if len(row) == 2*tW {
						for tx := range e {
							r := row[2*tx : 2*tx+2]
							e[tx], od[tx] = r[0], r[1]
						}
						continue
					}
					for tx := range e {
						e[tx], od[tx] = row[2*tx], 0
						if 2*tx+1 < w {
							od[tx] = row[2*tx+1]
						}
					}
				}
			}
		}
	}
	winogradCombine(q, p, plane, winogradGradWeights[:], nil)
}

// winogradGradWeights[4a+b] are the weights of Q[a][b] over the planes
// q00, q01, q10, q11: A[a][i]·A[b][j].
var winogradGradWeights = func() (ws [16][]float32) {
	a := [4][2]float32{{1, 0}, {1, 1}, {1, -1}, {0, -1}}
	for x := range 4 {
		for y := range 4 {
			ws[4*x+y] = []float32{a[x][0] * a[y][0], a[x][0] * a[y][1], a[x][1] * a[y][0], a[x][1] * a[y][1]}
		}
	}
	return ws
}()

// winogradCombine sets plane k of dst (planes plane apart) to the
// weighted sum Σ_r weights[k][r]·src_{first[k]+r} of the planes of src
// (first nil: 0), over chunks that stay in L1.
func winogradCombine[T Float](dst, src []T, plane int, weights [][]float32, first []int) {
	for lo := 0; lo < plane; lo += winogradChunk {
		hi := min(plane, lo+winogradChunk)
		combinePlanes(dst[lo:], plane, src[lo:], plane, hi-lo, weights, first)
	}
}

// planeSums lists weighted sums of planes for combinePlanes: output k is
// Σ_r w[k][r]·plane(first[k]+r).
type planeSums struct {
	w     [][]float32
	first []int
}

// combinePlanes sets dst[k·ds : k·ds+n] to Σ_r weights[k][r]·src[(f+r)·ss :
// (f+r)·ss+n] with f = first[k] (first nil: 0), for every k: with the SIMD
// weighted row sum for float32, in plain Go for float64.
func combinePlanes[T Float](dst []T, ds int, src []T, ss, n int, weights [][]float32, first []int) {
	d32, simd := any(dst).([]float32)
	s32, _ := any(src).([]float32)
	for k, wt := range weights {
		f := 0
		if first != nil {
			f = first[k]
		}
		if simd {
			vec.WeightedRows(d32[k*ds:k*ds+n], s32[f*ss:], ss, wt, 0, false)
			continue
		}
		d := dst[k*ds : k*ds+n]
		clear(d)
		for r, wv := range wt {
			if wv == 0 {
				continue
			}
			for j, sv := range src[(f+r)*ss : (f+r)*ss+n] {
				d[j] += T(wv) * sv
			}
		}
	}
}
