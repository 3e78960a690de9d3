package tensor

import (
	"fmt"
	"math"
	"syscall"
	"testing"
	"time"

	"github.com/fedsim/fedsim/tensor/gemm"
	"github.com/fedsim/fedsim/tensor/internal/vec"
)

// naiveConv is the direct 7-loop definition of Conv2D in float64.
func naiveConv(x, w, b *Tensor[float64], p ConvParams) *Tensor[float64] {
	n, c, h, wd := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	f, kh, kw := w.Shape[0], w.Shape[2], w.Shape[3]
	oh, ow := ConvOutSize(h, kh, p.StrideH, p.PadH), ConvOutSize(wd, kw, p.StrideW, p.PadW)
	y := New[float64](n, f, oh, ow)
	for in := 0; in < n; in++ {
		for fo := 0; fo < f; fo++ {
			for i := 0; i < oh; i++ {
				for j := 0; j < ow; j++ {
					var s float64
					if b != nil {
						s = b.Data[fo]
					}
					for ci := 0; ci < c; ci++ {
						for a := 0; a < kh; a++ {
							for bb := 0; bb < kw; bb++ {
								ih, iw := i*p.StrideH-p.PadH+a, j*p.StrideW-p.PadW+bb
								if ih < 0 || ih >= h || iw < 0 || iw >= wd {
									continue
								}
								s += x.Data[((in*c+ci)*h+ih)*wd+iw] * w.Data[((fo*c+ci)*kh+a)*kw+bb]
							}
						}
					}
					y.Data[((in*f+fo)*oh+i)*ow+j] = s
				}
			}
		}
	}
	return y
}

// naiveConvT is the direct scatter definition of the input adjoint.
func naiveConvT(g, w *Tensor[float64], h, wd int, p ConvParams) *Tensor[float64] {
	n, f, oh, ow := g.Shape[0], g.Shape[1], g.Shape[2], g.Shape[3]
	c, kh, kw := w.Shape[1], w.Shape[2], w.Shape[3]
	x := New[float64](n, c, h, wd)
	for in := 0; in < n; in++ {
		for fo := 0; fo < f; fo++ {
			for i := 0; i < oh; i++ {
				for j := 0; j < ow; j++ {
					gv := g.Data[((in*f+fo)*oh+i)*ow+j]
					for ci := 0; ci < c; ci++ {
						for a := 0; a < kh; a++ {
							for bb := 0; bb < kw; bb++ {
								ih, iw := i*p.StrideH-p.PadH+a, j*p.StrideW-p.PadW+bb
								if ih < 0 || ih >= h || iw < 0 || iw >= wd {
									continue
								}
								x.Data[((in*c+ci)*h+ih)*wd+iw] += gv * w.Data[((fo*c+ci)*kh+a)*kw+bb]
							}
						}
					}
				}
			}
		}
	}
	return x
}

// naiveConvW is the direct definition of the weight adjoint.
func naiveConvW(x, g *Tensor[float64], kh, kw int, p ConvParams) *Tensor[float64] {
	n, c, h, wd := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	f, oh, ow := g.Shape[1], g.Shape[2], g.Shape[3]
	dw := New[float64](f, c, kh, kw)
	for in := 0; in < n; in++ {
		for fo := 0; fo < f; fo++ {
			for i := 0; i < oh; i++ {
				for j := 0; j < ow; j++ {
					gv := g.Data[((in*f+fo)*oh+i)*ow+j]
					for ci := 0; ci < c; ci++ {
						for a := 0; a < kh; a++ {
							for bb := 0; bb < kw; bb++ {
								ih, iw := i*p.StrideH-p.PadH+a, j*p.StrideW-p.PadW+bb
								if ih < 0 || ih >= h || iw < 0 || iw >= wd {
									continue
								}
								dw.Data[((fo*c+ci)*kh+a)*kw+bb] += gv * x.Data[((in*c+ci)*h+ih)*wd+iw]
							}
						}
					}
				}
			}
		}
	}
	return dw
}

func convRand(seed uint64, shape ...int) *Tensor[float64] {
	t := New[float64](shape...)
	FillNormal(NewRNG(seed, 3), t, 0, 1)
	return t
}

func convTo32(t *Tensor[float64]) *Tensor[float32] {
	u := New[float32](t.Shape...)
	for i, v := range t.Data {
		u.Data[i] = float32(v)
	}
	return u
}

func convRelDiff(got, want []float64) float64 {
	var scale, d float64
	for i := range want {
		scale = max(scale, math.Abs(want[i]))
		d = max(d, math.Abs(got[i]-want[i]))
	}
	return d / max(scale, 1e-300)
}

func convRelDiff32(got []float32, want []float64) float64 {
	g := make([]float64, len(got))
	for i, v := range got {
		g[i] = float64(v)
	}
	return convRelDiff(g, want)
}

type convCase struct {
	n, c, h, w, f, kh, kw int
	p                     ConvParams
}

func (cc convCase) String() string {
	return fmt.Sprintf("x%dx%dx%dx%d_w%dx%dx%d_s%dx%d_p%dx%d", cc.n, cc.c, cc.h, cc.w, cc.f, cc.kh, cc.kw, cc.p.StrideH, cc.p.StrideW, cc.p.PadH, cc.p.PadW)
}

func convCases() []convCase {
	var cs []convCase
	for _, s := range []int{1, 2} {
		for _, pad := range []int{0, 1, 3} {
			cs = append(cs,
				convCase{2, 3, 7, 6, 5, 3, 3, ConvParams{s, s, pad, pad}},
				convCase{3, 1, 9, 8, 3, 3, 2, ConvParams{s, s, pad, pad}},
				convCase{1, 2, 5, 7, 7, 2, 3, ConvParams{s, 1, pad, 1}},
				convCase{4, 3, 6, 6, 1, 1, 1, ConvParams{s, s, pad, pad}},
				convCase{5, 4, 4, 5, 6, 4, 3, ConvParams{s, s, pad, pad}},
			)
		}
	}
	// Large enough for the float32 blocked GEMM path, plus the 1×1 direct
	// path and the narrow transposed weight gradient with many images.
	cs = append(cs,
		convCase{3, 8, 10, 9, 9, 3, 3, ConvParams{1, 1, 1, 1}},
		convCase{2, 16, 6, 6, 13, 1, 1, ConvParams{1, 1, 0, 0}},
		convCase{9, 1, 12, 12, 40, 3, 3, ConvParams{1, 1, 3, 3}},
		convCase{8, 5, 11, 11, 7, 5, 5, ConvParams{2, 2, 2, 2}},
		// The Winograd path (3×3, stride 1, padding 1, at least
		// winogradMinChannels in and out): even and odd extents, a last
		// group of images smaller than the others (winogradGroupTiles),
		// rectangles, one row.
		convCase{3, 64, 8, 8, 64, 3, 3, ConvParams{1, 1, 1, 1}},
		convCase{2, 65, 7, 5, 70, 3, 3, ConvParams{1, 1, 1, 1}},
		convCase{11, 64, 6, 9, 66, 3, 3, ConvParams{1, 1, 1, 1}},
		convCase{2, 72, 1, 3, 64, 3, 3, ConvParams{1, 1, 1, 1}},
	)
	return cs
}

func (cc convCase) tensors(seed uint64) (x, w, b *Tensor[float64]) {
	return convRand(seed, cc.n, cc.c, cc.h, cc.w), convRand(seed+1, cc.f, cc.c, cc.kh, cc.kw), convRand(seed+2, cc.f)
}

func TestConv2DAgainstNaive(t *testing.T) {
	for i, cc := range convCases() {
		t.Run(cc.String(), func(t *testing.T) {
			x, w, b := cc.tensors(uint64(10 * i))
			shape, err := ConvOutShape(x.Shape, w.Shape, cc.p)
			if err != nil {
				t.Fatal(err)
			}
			for _, bias := range []*Tensor[float64]{nil, b} {
				want := naiveConv(x, w, bias, cc.p)
				if !SameShape(shape, want.Shape) {
					t.Fatalf("ConvOutShape %v, want %v", shape, want.Shape)
				}
				got := New[float64](shape...)
				got.Fill(math.NaN())
				Conv2D(got, x, w, bias, cc.p)
				if d := convRelDiff(got.Data, want.Data); d > 1e-12 {
					t.Errorf("Conv2D (bias %v) rel diff %g", bias != nil, d)
				}
				// float32 agrees with float64 to single precision.
				got32 := New[float32](shape...)
				var b32 *Tensor[float32]
				if bias != nil {
					b32 = convTo32(bias)
				}
				Conv2D(got32, convTo32(x), convTo32(w), b32, cc.p)
				if d := convRelDiff32(got32.Data, want.Data); d > 1e-5 {
					t.Errorf("Conv2D float32 (bias %v) rel diff %g", bias != nil, d)
				}
			}

			g := convRand(uint64(10*i+5), shape...)
			wantX := naiveConvT(g, w, cc.h, cc.w, cc.p)
			gotX := New[float64](x.Shape...)
			gotX.Fill(math.NaN())
			Conv2DTranspose(gotX, g, w, cc.p)
			if d := convRelDiff(gotX.Data, wantX.Data); d > 1e-12 {
				t.Errorf("Conv2DTranspose rel diff %g", d)
			}
			gotX32 := New[float32](x.Shape...)
			Conv2DTranspose(gotX32, convTo32(g), convTo32(w), cc.p)
			if d := convRelDiff32(gotX32.Data, wantX.Data); d > 1e-5 {
				t.Errorf("Conv2DTranspose float32 rel diff %g", d)
			}

			wantW := naiveConvW(x, g, cc.kh, cc.kw, cc.p)
			gotW := New[float64](w.Shape...)
			gotW.Fill(math.NaN())
			Conv2DWeightGrad(gotW, x, g, cc.p)
			if d := convRelDiff(gotW.Data, wantW.Data); d > 1e-12 {
				t.Errorf("Conv2DWeightGrad rel diff %g", d)
			}
			gotW32 := New[float32](w.Shape...)
			gotW32.Fill(float32(math.NaN()))
			Conv2DWeightGrad(gotW32, convTo32(x), convTo32(g), cc.p)
			if d := convRelDiff32(gotW32.Data, wantW.Data); d > 1e-5 {
				t.Errorf("Conv2DWeightGrad float32 rel diff %g", d)
			}
		})
	}
}

// TestConvAdjoint checks <Conv(x,w), g> = <x, ConvT(g,w)> = <w, WeightGrad(x,g)>.
func TestConvAdjoint(t *testing.T) {
	for i, cc := range convCases() {
		x, w, _ := cc.tensors(uint64(7 * i))
		shape, _ := ConvOutShape(x.Shape, w.Shape, cc.p)
		g := convRand(uint64(7*i+4), shape...)
		y := New[float64](shape...)
		Conv2D(y, x, w, nil, cc.p)
		dx := New[float64](x.Shape...)
		Conv2DTranspose(dx, g, w, cc.p)
		dw := New[float64](w.Shape...)
		Conv2DWeightGrad(dw, x, g, cc.p)
		a, b, c := Dot(y.Data, g.Data), Dot(x.Data, dx.Data), Dot(w.Data, dw.Data)
		tol := 1e-10 * (1 + math.Abs(a))
		if math.Abs(a-b) > tol || math.Abs(a-c) > tol {
			t.Errorf("%v: <Conv(x,w),g>=%.15g <x,ConvT(g,w)>=%.15g <w,WeightGrad(x,g)>=%.15g", cc, a, b, c)
		}
	}
}

func TestConvOutShapeErrors(t *testing.T) {
	for _, tc := range []struct {
		x, w []int
		p    ConvParams
	}{
		{[]int{1, 3, 8, 8}, []int{4, 2, 3, 3}, ConvParams{1, 1, 0, 0}},
		{[]int{1, 3, 2, 8}, []int{4, 3, 5, 3}, ConvParams{1, 1, 1, 1}},
		{[]int{1, 3, 8, 8}, []int{4, 3, 3, 3}, ConvParams{0, 1, 0, 0}},
		{[]int{1, 3, 8, 8}, []int{4, 3, 3, 3}, ConvParams{1, 1, -1, 0}},
		{[]int{3, 8, 8}, []int{4, 3, 3, 3}, ConvParams{1, 1, 0, 0}},
	} {
		if _, err := ConvOutShape(tc.x, tc.w, tc.p); err == nil {
			t.Errorf("ConvOutShape(%v, %v, %+v): no error", tc.x, tc.w, tc.p)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("Conv2D with a channel mismatch did not panic")
		}
	}()
	Conv2D(New[float32](1, 4, 6, 6), New[float32](1, 3, 8, 8), New[float32](4, 2, 3, 3), nil, ConvParams{1, 1, 0, 0})
}

// TestConvWeightGradDeterministic checks that repeated runs of the
// parallel weight gradient give bit-identical results.
func TestConvWeightGradDeterministic(t *testing.T) {
	x, g := convTo32(convRand(1, 16, 4, 9, 9)), convTo32(convRand(2, 16, 6, 9, 9))
	p := ConvParams{1, 1, 1, 1}
	a, b := New[float32](6, 4, 3, 3), New[float32](6, 4, 3, 3)
	Conv2DWeightGrad(a, x, g, p)
	for range 5 {
		Conv2DWeightGrad(b, x, g, p)
		for i := range a.Data {
			if a.Data[i] != b.Data[i] {
				t.Fatalf("element %d: %v then %v", i, a.Data[i], b.Data[i])
			}
		}
	}
}

// Benchmarks: the ConvNet (width 128, batch 256) layers.

type convBench struct {
	name                  string
	n, c, h, w, f, kh, kw int
	p                     ConvParams
}

var convBenches = []convBench{
	{"L2_256x128x16x16_k3p1", 256, 128, 16, 16, 128, 3, 3, ConvParams{1, 1, 1, 1}},
	{"L3_256x128x8x8_k3p1", 256, 128, 8, 8, 128, 3, 3, ConvParams{1, 1, 1, 1}},
	{"L1_256x1x28x28_k3p3", 256, 1, 28, 28, 128, 3, 3, ConvParams{1, 1, 3, 3}},
	{"L1_256x3x32x32_k3p1", 256, 3, 32, 32, 128, 3, 3, ConvParams{1, 1, 1, 1}},
	// A synthetic set of IPC 1 (MTT unrolls its steps on these).
	{"L2_10x128x16x16_k3p1", 10, 128, 16, 16, 128, 3, 3, ConvParams{1, 1, 1, 1}},
	{"L3_10x128x8x8_k3p1", 10, 128, 8, 8, 128, 3, 3, ConvParams{1, 1, 1, 1}},
}

func (cb convBench) setup() (x, w, b, y *Tensor[float32]) {
	x, w, b = New[float32](cb.n, cb.c, cb.h, cb.w), New[float32](cb.f, cb.c, cb.kh, cb.kw), New[float32](cb.f)
	r := NewRNG(42, 1)
	FillNormal(r, x, 0, 1)
	KaimingUniform(r, w, cb.c*cb.kh*cb.kw)
	FillUniform(r, b, -0.1, 0.1)
	shape, err := ConvOutShape(x.Shape, w.Shape, cb.p)
	if err != nil {
		panic(err)
	}
	y = New[float32](shape...)
	FillNormal(r, y, 0, 1)
	return x, w, b, y
}

func (cb convBench) flops(y *Tensor[float32]) float64 {
	return 2 * float64(len(y.Data)) * float64(cb.c*cb.kh*cb.kw)
}

// cpuTime returns the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runConvBench times f and reports GFLOP/s of wall time and GFLOP per CPU
// second (the latter is insensitive to other processes sharing the cores;
// divide by the worker count for the per-core rate).
func runConvBench(b *testing.B, flops float64, f func()) {
	b.ResetTimer()
	c0 := cpuTime()
	for b.Loop() {
		f()
	}
	cpu := (cpuTime() - c0).Seconds()
	b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	if cpu > 0 {
		b.ReportMetric(flops*float64(b.N)/cpu/1e9, "GFLOP/cpu-s")
	}
}

// forEachConvPath runs f once per path that serves cb's convolution and its
// adjoints: the default one, and im2col as well where the default is
// Winograd, as sub-benchmarks named after the path. GFLOP/s counts the
// direct convolution's flops on both, so the Winograd figure is effective.
func forEachConvPath(b *testing.B, cb convBench, f func(b *testing.B)) {
	x, w, _, y := cb.setup()
	g := newConvGeom("bench", x.Shape, w.Shape, y.Shape, cb.p)
	if !useWinograd(g) {
		b.Run(cb.name, f)
		return
	}
	b.Run(cb.name+"/winograd", f)
	b.Run(cb.name+"/im2col", func(b *testing.B) {
		winogradEnabled = false
		defer func() { winogradEnabled = true }()
		f(b)
	})
}

func BenchmarkConv2D(b *testing.B) {
	for _, cb := range convBenches {
		forEachConvPath(b, cb, func(b *testing.B) {
			x, w, bias, y := cb.setup()
			Conv2D(y, x, w, bias, cb.p)
			runConvBench(b, cb.flops(y), func() { Conv2D(y, x, w, bias, cb.p) })
		})
	}
}

func BenchmarkConv2DTranspose(b *testing.B) {
	for _, cb := range convBenches {
		forEachConvPath(b, cb, func(b *testing.B) {
			x, w, _, y := cb.setup()
			Conv2DTranspose(x, y, w, cb.p)
			runConvBench(b, cb.flops(y), func() { Conv2DTranspose(x, y, w, cb.p) })
		})
	}
}

func BenchmarkConv2DWeightGrad(b *testing.B) {
	for _, cb := range convBenches {
		forEachConvPath(b, cb, func(b *testing.B) {
			x, w, _, y := cb.setup()
			Conv2DWeightGrad(w, x, y, cb.p)
			runConvBench(b, cb.flops(y), func() { Conv2DWeightGrad(w, x, y, cb.p) })
		})
	}
}

// BenchmarkConvGemmReference times the GEMM the L2 forward pass reduces to
// (per image 128×256×1152, 256 images), the ceiling for the convolution.
func BenchmarkConvGemmReference(b *testing.B) {
	m, n, k, imgs := 128, 256, 1152, 256
	a, bb, c := New[float32](m, k), New[float32](k, n), New[float32](imgs, m, n)
	r := NewRNG(42, 2)
	FillNormal(r, a, 0, 1)
	FillNormal(r, bb, 0, 1)
	runConvBench(b, 2*float64(m*n*k*imgs), func() {
		for i := 0; i < imgs; i++ {
			Gemm(false, false, m, n, k, 1, a.Data, k, bb.Data, n, 0, c.Data[i*m*n:(i+1)*m*n], n)
		}
	})
}

// TestConv2DNarrowMatchesGEMM checks that the narrow path (C·KH·KW ≤
// narrowCKK) gives bit for bit the GEMM path's output: the same products
// summed in the same order, so switching paths changes no trained model.
// Both paths must fuse their multiply-adds, which the SIMD kernels do.
func TestConv2DNarrowMatchesGEMM(t *testing.T) {
	if k := gemm.KernelName(); (k != "avx512" && k != "avx2") || vec.Impl() != k {
		t.Skipf("GEMM kernel %s and vector kernels %s: not both the same FMA kernels", gemm.KernelName(), vec.Impl())
	}
	cases := []convCase{
		{4, 1, 28, 28, 128, 3, 3, ConvParams{1, 1, 3, 3}}, // MNIST ConvNet, layer 1
		{3, 1, 12, 12, 40, 3, 3, ConvParams{1, 1, 1, 1}},
		{2, 1, 16, 16, 6, 4, 4, ConvParams{2, 2, 1, 1}},
	}
	for i, cc := range cases {
		x64, w64, b64 := cc.tensors(uint64(31 * i))
		x, w, b := convTo32(x64), convTo32(w64), convTo32(b64)
		shape, _ := ConvOutShape(x.Shape, w.Shape, cc.p)
		got := New[float32](shape...)
		Conv2D(got, x, w, b, cc.p)
		g := newConvGeom("test", x.Shape, w.Shape, shape, cc.p)
		ckk, ohw, chw := g.ckk(), g.ohw(), g.chw()
		want := New[float32](shape...)
		col := make([]float32, ckk*ohw)
		for n := 0; n < cc.n; n++ {
			im2col(col, x.Data[n*chw:(n+1)*chw], g)
			out := want.Data[n*cc.f*ohw : (n+1)*cc.f*ohw]
			for f, bv := range b.Data {
				fillSlice(out[f*ohw:(f+1)*ohw], bv)
			}
			gemm.Sgemm(false, false, cc.f, ohw, ckk, 1, w.Data, ckk, col, ohw, 1, out, ohw)
		}
		for j := range got.Data {
			if math.Float32bits(got.Data[j]) != math.Float32bits(want.Data[j]) {
				t.Fatalf("%v: output %d is %v on the narrow path, %v on the GEMM path", cc, j, got.Data[j], want.Data[j])
			}
		}
	}
}

// BenchmarkConvWinogradChannels times a layer's three convolutions
// (forward, input gradient, weight gradient) on 256 images of 16×16 and
// 8×8 on both paths across channel counts: where the Winograd path starts
// to pay (winogradMinChannels). The im2col figure below the threshold is
// the default path; the Winograd one there is forced.
func BenchmarkConvWinogradChannels(b *testing.B) {
	for _, ch := range []int{16, 32, 48, 64, 96, 128} {
		for _, hw := range []int{16, 8} {
			cb := convBench{fmt.Sprintf("c%d_%dx%d", ch, hw, hw), 256, ch, hw, hw, ch, 3, 3, ConvParams{1, 1, 1, 1}}
			for _, path := range []struct {
				name     string
				min      int
				winograd bool
			}{{"winograd", 1, true}, {"im2col", 0, false}} {
				b.Run(cb.name+"/"+path.name, func(b *testing.B) {
					defer func(on bool, min int) { winogradEnabled, winogradMinChannels = on, min }(winogradEnabled, winogradMinChannels)
					winogradEnabled, winogradMinChannels = path.winograd, path.min
					x, w, bias, y := cb.setup()
					runConvBench(b, 3*cb.flops(y), func() {
						Conv2D(y, x, w, bias, cb.p)
						Conv2DTranspose(x, y, w, cb.p)
						Conv2DWeightGrad(w, x, y, cb.p)
					})
				})
			}
		}
	}
}

// BenchmarkWinogradTransforms times the transforms around the Winograd
// GEMMs at the ConvNet's sizes (128 channels; one group of 14×14 or 7×7
// images; 128×128 kernels), in ns per value written.
func BenchmarkWinogradTransforms(b *testing.B) {
	for _, c := range []struct{ imgs, hw int }{{2, 14}, {4, 7}} {
		const in = 128
		x := randT[float32](1, 1, c.imgs, in, c.hw, c.hw)
		t := (c.hw + 1) / 2
		ld := c.imgs * t * t
		v := make([]float32, 16*winogradStride(in*ld))
		b.Run(fmt.Sprintf("input/%dx%d", c.hw, c.hw), func(b *testing.B) {
			for b.Loop() {
				winogradInput(v, x.Data, c.imgs, in, c.hw, c.hw, ld)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(16*in*ld), "ns/value")
		})
	}
	const f, c = 128, 128
	w := randT[float32](2, 1, f, c, 3, 3)
	u := make([]float32, 16*winogradStride(f*c))
	for _, flip := range []bool{false, true} {
		b.Run(fmt.Sprintf("kernels/flip=%v", flip), func(b *testing.B) {
			for b.Loop() {
				winogradWeights(u, w.Data, f, c, flip)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(16*f*c), "ns/value")
		})
	}
	b.Run("kernel-adjoint", func(b *testing.B) {
		for b.Loop() {
			winogradKernelAdjoint(w.Data, u, f*c, winogradStride(f*c))
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(9*f*c), "ns/value")
	})
}

// TestWinogradPrecision checks the Winograd path at the sizes it serves
// (the ConvNet's width-128 layers) against float64: its float32 error on
// each of the three convolutions stays within 1e-5 of the largest entry
// and within 4 times the im2col path's own float32 error, so the faster
// path costs no meaningful precision. It also checks that these shapes,
// and the small Winograd cases of convCases, do take the Winograd path.
func TestWinogradPrecision(t *testing.T) {
	covered := 0
	for _, cc := range convCases() {
		x, w, _ := cc.tensors(0)
		shape, _ := ConvOutShape(x.Shape, w.Shape, cc.p)
		if useWinograd(newConvGeom("test", x.Shape, w.Shape, shape, cc.p)) {
			covered++
		}
	}
	if covered < 4 {
		t.Errorf("%d of convCases take the Winograd path, want 4 (winogradMinChannels = %d)", covered, winogradMinChannels)
	}
	p := ConvParams{1, 1, 1, 1}
	for i, cc := range []convCase{
		{4, 128, 16, 16, 128, 3, 3, p},
		{6, 128, 8, 8, 128, 3, 3, p},
		{3, 64, 7, 7, 96, 3, 3, p},
	} {
		t.Run(cc.String(), func(t *testing.T) {
			x, w, b := cc.tensors(uint64(100 + 10*i))
			shape, _ := ConvOutShape(x.Shape, w.Shape, cc.p)
			if !useWinograd(newConvGeom("test", x.Shape, w.Shape, shape, cc.p)) {
				t.Fatal("not on the Winograd path")
			}
			g := convRand(uint64(100+10*i+5), shape...)
			// float64 references, on the im2col path.
			winogradEnabled = false
			y64, dx64, dw64 := New[float64](shape...), New[float64](x.Shape...), New[float64](w.Shape...)
			Conv2D(y64, x, w, b, cc.p)
			Conv2DTranspose(dx64, g, w, cc.p)
			Conv2DWeightGrad(dw64, x, g, cc.p)
			winogradEnabled = true
			errs := func() (ey, edx, edw float64) {
				y, dx, dw := New[float32](shape...), New[float32](x.Shape...), New[float32](w.Shape...)
				Conv2D(y, convTo32(x), convTo32(w), convTo32(b), cc.p)
				Conv2DTranspose(dx, convTo32(g), convTo32(w), cc.p)
				Conv2DWeightGrad(dw, convTo32(x), convTo32(g), cc.p)
				return convRelDiff32(y.Data, y64.Data), convRelDiff32(dx.Data, dx64.Data), convRelDiff32(dw.Data, dw64.Data)
			}
			wy, wdx, wdw := errs()
			winogradEnabled = false
			iy, idx, idw := errs()
			winogradEnabled = true
			for _, e := range []struct {
				op               string
				winograd, im2col float64
			}{{"Conv2D", wy, iy}, {"Conv2DTranspose", wdx, idx}, {"Conv2DWeightGrad", wdw, idw}} {
				t.Logf("%s: float32 rel error Winograd %.2g, im2col %.2g", e.op, e.winograd, e.im2col)
				if e.winograd > 1e-5 || e.winograd > 4*e.im2col {
					t.Errorf("%s: float32 rel error Winograd %.3g, im2col %.3g (want ≤ 1e-5 and ≤ 4× im2col's)", e.op, e.winograd, e.im2col)
				}
			}
		})
	}
}
