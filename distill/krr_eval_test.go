package distill

import (
	"context"
	"testing"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/tensor"
)

// TestEvaluateKRR: kernel ridge regression on a support set classifies
// its own images exactly (it interpolates at a small ridge), test images
// near a support image take that image's label, and swapping the
// support labels turns every answer wrong.
func TestEvaluateKRR(t *testing.T) {
	const n = 6
	rng := tensor.NewRNG(3, 1)
	xs := tensor.New[float32](n, 1, 4, 4)
	tensor.FillNormal(rng, xs, 0, 1)
	ys := []int{0, 1, 2, 0, 1, 2}
	syn := &SyntheticSet{X: xs, Y: ys, Mean: []float32{0}, Std: []float32{1}, Classes: 3}
	// Test images: each support image plus a little noise.
	xt := xs.Clone()
	noise := tensor.New[float32](xt.Shape...)
	tensor.FillNormal(rng, noise, 0, 0.05)
	for i := range xt.Data {
		xt.Data[i] += noise.Data[i]
	}
	test, err := data.New("mnist", xt, ys, 3, []float32{0}, []float32{1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, krr := range []KRRConfig{{}, {Kernel: KernelConv, Depth: 1}, {NNGP: true}} {
		acc, err := EvaluateKRR(ctx, krr, syn, test, 4)
		if err != nil || acc != 1 {
			t.Fatalf("%+v: accuracy %v, %v; want 1", krr, acc, err)
		}
		swapped := *syn
		swapped.Y = []int{1, 2, 0, 1, 2, 0}
		if acc, err := EvaluateKRR(ctx, krr, &swapped, test, 0); err != nil || acc != 0 {
			t.Fatalf("%+v, swapped labels: accuracy %v, %v; want 0", krr, acc, err)
		}
	}
	// Soft labels are read back as regression targets.
	soft := *syn
	soft.YSoft = tensor.New[float32](n, 3)
	for i, l := range ys {
		for j := range 3 {
			soft.YSoft.Data[i*3+j] = -labelLogitScale(3) / 3
		}
		soft.YSoft.Data[i*3+l] += labelLogitScale(3)
	}
	if acc, err := EvaluateKRR(ctx, KRRConfig{}, &soft, test, 0); err != nil || acc != 1 {
		t.Fatalf("soft labels: accuracy %v, %v", acc, err)
	}
	other, _ := data.New("mnist", tensor.New[float32](2, 1, 5, 5), []int{0, 1}, 3, []float32{0}, []float32{1}, nil)
	if _, err := EvaluateKRR(ctx, KRRConfig{}, syn, other, 0); err == nil {
		t.Fatal("images of another shape were accepted")
	}
}
