package tensor

import (
	"fmt"
	"math"
	"testing"
)

type poolCase struct {
	shape          []int
	k, stride, pad int
}

func poolCases() []poolCase {
	return []poolCase{
		{[]int{2, 3, 8, 8}, 2, 2, 0},
		{[]int{2, 3, 32, 34}, 2, 2, 0}, // SIMD chunks and a masked tail
		{[]int{3, 2, 6, 64}, 2, 2, 0},
		{[]int{2, 3, 7, 5}, 2, 2, 0},
		{[]int{1, 2, 9, 7}, 3, 2, 1},
		{[]int{2, 1, 6, 6}, 3, 1, 1},
		{[]int{1, 2, 5, 8}, 2, 1, 0},
		{[]int{1, 1, 6, 9}, 4, 3, 2},
		{[]int{3, 2, 4, 4}, 4, 4, 0},
	}
}

// naivePool computes average and max pooling with the padded-window
// definitions: average over k² (padding counts as 0), maximum over the
// in-bounds positions with its first argmax.
func naivePool(x *Tensor[float64], k, s, p int) (avg, mx *Tensor[float64], idx []int32) {
	n, c, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	oh, ow := ConvOutSize(h, k, s, p), ConvOutSize(w, k, s, p)
	avg, mx = New[float64](n, c, oh, ow), New[float64](n, c, oh, ow)
	idx = make([]int32, n*c*oh*ow)
	for pl := 0; pl < n*c; pl++ {
		for i := 0; i < oh; i++ {
			for j := 0; j < ow; j++ {
				sum, best, bi := 0.0, math.Inf(-1), -1
				for a := 0; a < k; a++ {
					for b := 0; b < k; b++ {
						ih, iw := i*s-p+a, j*s-p+b
						if ih < 0 || ih >= h || iw < 0 || iw >= w {
							continue
						}
						v := x.Data[pl*h*w+ih*w+iw]
						sum += v
						if v > best {
							best, bi = v, ih*w+iw
						}
					}
				}
				o := pl*oh*ow + i*ow + j
				avg.Data[o] = sum / float64(k*k)
				mx.Data[o], idx[o] = best, int32(bi)
			}
		}
	}
	return avg, mx, idx
}

func TestPool2DAgainstNaive(t *testing.T) {
	for ci, pc := range poolCases() {
		t.Run(fmt.Sprintf("%v_k%ds%dp%d", pc.shape, pc.k, pc.stride, pc.pad), func(t *testing.T) {
			x := convRand(uint64(ci), pc.shape...)
			wantAvg, wantMax, wantIdx := naivePool(x, pc.k, pc.stride, pc.pad)
			shape, err := PoolOutShape(pc.shape, pc.k, pc.stride, pc.pad)
			if err != nil || !SameShape(shape, wantAvg.Shape) {
				t.Fatalf("PoolOutShape = %v, %v; want %v", shape, err, wantAvg.Shape)
			}

			avg := New[float64](shape...)
			AvgPool2D(avg, x, pc.k, pc.stride, pc.pad)
			if d := convRelDiff(avg.Data, wantAvg.Data); d > 1e-14 {
				t.Errorf("AvgPool2D rel diff %g", d)
			}
			avg32 := New[float32](shape...)
			AvgPool2D(avg32, convTo32(x), pc.k, pc.stride, pc.pad)
			if d := convRelDiff32(avg32.Data, wantAvg.Data); d > 1e-6 {
				t.Errorf("AvgPool2D float32 rel diff %g", d)
			}

			mx := New[float64](shape...)
			idx := make([]int32, len(mx.Data))
			MaxPool2D(mx, idx, x, pc.k, pc.stride, pc.pad)
			mx32 := New[float32](shape...)
			idx32 := make([]int32, len(mx.Data))
			MaxPool2D(mx32, idx32, convTo32(x), pc.k, pc.stride, pc.pad)
			for i := range mx.Data {
				if mx.Data[i] != wantMax.Data[i] || idx[i] != wantIdx[i] || idx32[i] != wantIdx[i] || mx32.Data[i] != float32(wantMax.Data[i]) {
					t.Fatalf("MaxPool2D output %d: %v@%d (float32 %v@%d), want %v@%d", i, mx.Data[i], idx[i], mx32.Data[i], idx32[i], wantMax.Data[i], wantIdx[i])
				}
			}

			// Adjoint identities: <Avg(x), g> = <x, AvgBackward(g)> and
			// <Gather(x), g> = <x, Scatter(g)>.
			g := convRand(uint64(ci+100), shape...)
			dx := New[float64](pc.shape...)
			dx.Fill(math.NaN())
			AvgPool2DBackward(dx, g, pc.k, pc.stride, pc.pad)
			if a, b := Dot(avg.Data, g.Data), Dot(x.Data, dx.Data); math.Abs(a-b) > 1e-12*(1+math.Abs(a)) {
				t.Errorf("avg adjoint: %v vs %v", a, b)
			}
			dx32 := New[float32](pc.shape...)
			AvgPool2DBackward(dx32, convTo32(g), pc.k, pc.stride, pc.pad)
			if d := convRelDiff32(dx32.Data, dx.Data); d > 1e-6 {
				t.Errorf("AvgPool2DBackward float32 rel diff %g", d)
			}

			gathered := New[float64](shape...)
			MaxPool2DGather(gathered, x, idx)
			if convRelDiff(gathered.Data, mx.Data) != 0 {
				t.Error("MaxPool2DGather differs from MaxPool2D")
			}
			dx.Fill(math.NaN())
			MaxPool2DBackward(dx, g, idx)
			if a, b := Dot(gathered.Data, g.Data), Dot(x.Data, dx.Data); math.Abs(a-b) > 1e-12*(1+math.Abs(a)) {
				t.Errorf("max adjoint: %v vs %v", a, b)
			}
		})
	}
}

func TestMaxPool2DTiesAndNaN(t *testing.T) {
	x := New[float32](1, 1, 2, 4)
	copy(x.Data, []float32{1, 1, 2, float32(math.NaN()), 1, 1, 2, 5})
	y, idx := New[float32](1, 1, 1, 2), make([]int32, 2)
	MaxPool2D(y, idx, x, 2, 2, 0)
	if y.Data[0] != 1 || idx[0] != 0 {
		t.Errorf("tie: %v@%d, want 1@0", y.Data[0], idx[0])
	}
	if !math.IsNaN(float64(y.Data[1])) || idx[1] != 3 {
		t.Errorf("NaN window: %v@%d, want NaN@3", y.Data[1], idx[1])
	}
}

func TestPoolOutShapeErrors(t *testing.T) {
	for _, tc := range []poolCase{
		{[]int{2, 4, 4}, 2, 2, 0},
		{[]int{1, 1, 3, 3}, 5, 1, 0},
		{[]int{1, 1, 4, 4}, 2, 0, 0},
		{[]int{1, 1, 4, 4}, 2, 2, 2},
		{[]int{1, 1, 4, 4}, 0, 1, 0},
	} {
		if _, err := PoolOutShape(tc.shape, tc.k, tc.stride, tc.pad); err == nil {
			t.Errorf("PoolOutShape(%v, %d, %d, %d): no error", tc.shape, tc.k, tc.stride, tc.pad)
		}
	}
}

// The pooling benchmarks report input elements per second as "GFLOP".
func BenchmarkMaxPool2D(b *testing.B) {
	x := New[float32](256, 128, 32, 32)
	FillNormal(NewRNG(42, 1), x, 0, 1)
	y := New[float32](256, 128, 16, 16)
	idx := make([]int32, len(y.Data))
	runConvBench(b, float64(len(x.Data)), func() { MaxPool2D(y, idx, x, 2, 2, 0) })
}

func BenchmarkAvgPool2D(b *testing.B) {
	x := New[float32](256, 128, 32, 32)
	FillNormal(NewRNG(42, 1), x, 0, 1)
	y := New[float32](256, 128, 16, 16)
	runConvBench(b, float64(len(x.Data)), func() { AvgPool2D(y, x, 2, 2, 0) })
}
