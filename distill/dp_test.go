package distill

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// Every clipped row has norm at most C, rows within C are untouched, and
// the sum is the sum of the clipped rows (worked by hand for 3-4-5 rows).
func TestClipRowsSum(t *testing.T) {
	x := []float64{3, 4, 0.3, 0.4, -6, 8}
	sum, maxNorm := ClipRowsSum(x, 3, 2, 1)
	// rows (3,4)→(0.6,0.8); (0.3,0.4) unchanged; (−6,8)→(−0.6,0.8)
	want := []float64{0.6 + 0.3 - 0.6, 0.8 + 0.4 + 0.8}
	for j := range want {
		if math.Abs(sum[j]-want[j]) > 1e-12 {
			t.Fatalf("sum %v, want %v", sum, want)
		}
	}
	if maxNorm != 10 {
		t.Fatalf("max norm %g, want 10", maxNorm)
	}
	// Random rows: each clipped row's norm ≤ C (one row at a time).
	rng := tensor.NewRNG(1, 0)
	for range 200 {
		row := make([]float32, 17)
		s := 10 * rng.Float64()
		for j := range row {
			row[j] = float32(s * rng.NormFloat64())
		}
		c := 0.1 + 3*rng.Float64()
		got, _ := ClipRowsSum(row, 1, 17, c)
		var ss float64
		for _, v := range got {
			ss += v * v
		}
		if math.Sqrt(ss) > c*(1+1e-6) {
			t.Fatalf("clipped norm %g exceeds C = %g", math.Sqrt(ss), c)
		}
	}
	inf, _ := ClipRowsSum(x, 3, 2, math.Inf(1))
	if inf[0] != 3+0.3-6 || inf[1] != 4+0.4+8 {
		t.Fatalf("C = +Inf changed the rows: %v", inf)
	}
}

// The noise added to a sum has standard deviation σC: with 200 000 draws
// the sample std is within 1% (its standard error is 0.16%) and the mean
// within 4 standard errors of 0.
func TestGaussianNoiseStd(t *testing.T) {
	const n, sigma, clip = 200000, 1.7, 1.5
	v := make([]float64, n)
	AddGaussian(v, sigma*clip, tensor.NewRNG(42, 0))
	var s, ss float64
	for _, x := range v {
		s += x
		ss += x * x
	}
	mean := s / n
	std := math.Sqrt(ss/n - mean*mean)
	if math.Abs(std/(sigma*clip)-1) > 0.01 {
		t.Fatalf("noise std %.4f, want %.4f ± 1%%", std, sigma*clip)
	}
	if math.Abs(mean) > 4*sigma*clip/math.Sqrt(n) {
		t.Fatalf("noise mean %.5f is not 0", mean)
	}
}

func tinyConvNet(t *testing.T, seed uint64) *nn.ConvNet[float64] {
	t.Helper()
	m, err := nn.NewConvNet[float64](nn.ConvNetConfig{InChannels: 1, Height: 8, Width: 8, Classes: 3, NetWidth: 4, Depth: 2}, tensor.NewRNG(seed, 0))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func randImages(n int, seed uint64) *tensor.Tensor[float64] {
	x := tensor.New[float64](n, 1, 8, 8)
	tensor.FillNormal(tensor.NewRNG(seed, 1), x, 0, 1)
	return x
}

// The DP target is the clean mean embedding plus noise of std σC/denom on
// every coordinate: over 400 draws of a 16-wide target (6400 values) the
// std of the difference matches within 3%; with C small every clipped
// embedding has norm C, so the clean part of the target has norm ≤ C.
func TestDPDMTargetNoise(t *testing.T) {
	m := tinyConvNet(t, 1)
	real, syn := randImages(5, 2), randImages(2, 3)
	clean, _, err := dpDMTarget[float64](m, real, 5, syn, nil, DPConfig{SampleRate: 1, Clip: math.Inf(1)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	const sigma, clip, denom = 0.8, 1e6, 4.0 // C large: no clipping, so the clean part is known
	rng := tensor.NewRNG(9, 0)
	var ss float64
	var k int
	for range 400 {
		got, _, err := dpDMTarget[float64](m, real, denom, syn, nil, DPConfig{SampleRate: 1, Clip: clip, Noise: sigma}, rng)
		if err != nil {
			t.Fatal(err)
		}
		for j, v := range got.Data {
			d := v - clean.Data[j]*5/denom
			ss += d * d
			k++
		}
	}
	std := math.Sqrt(ss / float64(k))
	if want := sigma * clip / denom; math.Abs(std/want-1) > 0.03 {
		t.Fatalf("target noise std %.4g, want %.4g ± 3%%", std, want)
	}
	small, _, err := dpDMTarget[float64](m, real, 1, syn, nil, DPConfig{SampleRate: 1, Clip: 0.01}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var n2 float64
	for _, v := range small.Data {
		n2 += v * v
	}
	if math.Sqrt(n2) > 5*0.01*(1+1e-9) {
		t.Fatalf("sum of 5 embeddings clipped to 0.01 has norm %g > 0.05", math.Sqrt(n2))
	}
}

func maxRelDiff(a, b []float64) float64 {
	var d, s float64
	for i := range a {
		d = math.Max(d, math.Abs(a[i]-b[i]))
		s = math.Max(s, math.Abs(b[i]))
	}
	return d / math.Max(s, 1e-300)
}

// With σ = 0, no clipping and the real count as denominator, DP-DM is DM
// and DP gradient matching is gradient matching (float64, with and without
// Siamese augmentation).
func TestDPReducesToNonPrivate(t *testing.T) {
	m := tinyConvNet(t, 4)
	real, syn := randImages(6, 5), randImages(2, 6)
	realY := []int{1, 1, 1, 1, 1, 1}
	synY := []int{1, 1}
	off := DPConfig{SampleRate: 1, Clip: math.Inf(1)}
	dsa, err := data.NewDSA(data.DSAStrategyDigits)
	if err != nil {
		t.Fatal(err)
	}
	for _, withAug := range []bool{false, true} {
		var aug *data.Augmentation
		if withAug {
			p := data.DefaultDSAParams()
			p.Shared = true
			aug = (&data.DSA{Strategy: dsa.Strategy, Params: p}).Sample(tensor.NewRNG(3, 3), 6, 8, 8)
		}
		g1, g2 := tensor.New[float64](syn.Shape...), tensor.New[float64](syn.Shape...)
		l1, err := DMLoss[float64](m, real, syn, aug, g1)
		if err != nil {
			t.Fatal(err)
		}
		l2, err := DPDMLoss[float64](m, real, 6, syn, aug, off, nil, g2)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(l1-l2) > 1e-12*math.Abs(l1) || maxRelDiff(g2.Data, g1.Data) > 1e-10 {
			t.Fatalf("aug %v: DP-DM with σ = 0 gives loss %.15g (DM %.15g), gradient differs by %.3g", withAug, l2, l1, maxRelDiff(g2.Data, g1.Data))
		}
		l1, err = GradMatchLoss[float64](m, real, realY, syn, synY, aug, MatchConfig{}, g1)
		if err != nil {
			t.Fatal(err)
		}
		l2, err = DPGradMatchLoss[float64](m, real, realY, 6, syn, synY, aug, MatchConfig{}, off, nil, g2)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(l1-l2) > 1e-9*math.Abs(l1) || maxRelDiff(g2.Data, g1.Data) > 1e-7 {
			t.Fatalf("aug %v: DP-GM with σ = 0 gives loss %.15g (GM %.15g), gradient differs by %.3g", withAug, l2, l1, maxRelDiff(g2.Data, g1.Data))
		}
	}
}

// Each example's gradient is clipped: the sum of n clipped gradients has
// norm ≤ nC, one example's exactly C when its gradient is larger; with
// C = +Inf the sum is n times the batch gradient.
func TestClippedGradSum(t *testing.T) {
	m := tinyConvNet(t, 7)
	x := randImages(4, 8)
	y := []int{0, 2, 1, 0}
	norm := func(s [][]float64) float64 {
		var ss float64
		for _, p := range s {
			for _, v := range p {
				ss += v * v
			}
		}
		return math.Sqrt(ss)
	}
	one, maxNorm, err := ClippedGradSum[float64](m, randImages(1, 9), []int{2}, 1e-3)
	if err != nil {
		t.Fatal(err)
	}
	if !(maxNorm > 1e-3) || math.Abs(norm(one)-1e-3) > 1e-12 {
		t.Fatalf("one example: clipped norm %g (unclipped %g), want 1e-3", norm(one), maxNorm)
	}
	four, _, err := ClippedGradSum[float64](m, x, y, 0.05)
	if err != nil {
		t.Fatal(err)
	}
	if norm(four) > 4*0.05*(1+1e-12) {
		t.Fatalf("sum of 4 gradients clipped to 0.05 has norm %g", norm(four))
	}
	full, _, err := ClippedGradSum[float64](m, x, y, math.Inf(1))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ClippedGradSum[float64](m, x, y[:3], 1); err == nil {
		t.Fatal("4 images with 3 labels: no error")
	}
	// the batch gradient of the mean loss, times 4
	batch := batchGrad(t, m, x, y)
	for k := range full {
		if r := maxRelDiff(full[k], scaled(batch[k], 4)); r > 1e-9 {
			t.Fatalf("parameter %d: unclipped per-example sum differs from 4× the batch gradient by %.3g", k, r)
		}
	}
}

func scaled(v []float64, s float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = s * x
	}
	return out
}

func batchGrad(t *testing.T, m nn.Model[float64], x *tensor.Tensor[float64], y []int) [][]float64 {
	t.Helper()
	tp := ag.NewTape[float64]()
	defer tp.Release()
	ps := nn.Bind(tp, m)
	gs, err := tp.Grad([]*ag.Var[float64]{ag.CrossEntropy(m.Forward(tp.Const(x), ps), y)}, nil, ps, false)
	if err != nil {
		t.Fatal(err)
	}
	out := make([][]float64, len(gs))
	for k, g := range gs {
		out[k] = append([]float64(nil), g.Value.Data...)
	}
	return out
}

func TestDPConfigErrors(t *testing.T) {
	good := DPConfig{SampleRate: 0.1, Clip: 1, Noise: 1}
	cases := []struct {
		cfg  Config
		want string
	}{
		{Config{Method: MethodDM, IPC: 1, DP: &DPConfig{SampleRate: 0, Clip: 1, Noise: 1}}, "sample rate"},
		{Config{Method: MethodDM, IPC: 1, DP: &DPConfig{SampleRate: 1.5, Clip: 1, Noise: 1}}, "sample rate"},
		{Config{Method: MethodDM, IPC: 1, DP: &DPConfig{SampleRate: 0.1, Clip: 0, Noise: 1}}, "clipping norm"},
		{Config{Method: MethodDM, IPC: 1, DP: &DPConfig{SampleRate: 0.1, Clip: 1, Noise: -1}}, "noise multiplier"},
		{Config{Method: MethodMTT, IPC: 1, DP: &good}, "no private variant"},
		{Config{Method: MethodDM, IPC: 1, Init: InitReal, DP: &good}, "release real images"},
		{Config{Method: MethodDSA, IPC: 1, Match: MatchConfig{InnerReal: true}, DP: &good}, "not private"},
	}
	for _, c := range cases {
		_, err := New(c.cfg, "mnist")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one containing %q", c.cfg.DP, err, c.want)
		}
	}
	d, err := New(Config{Method: MethodDM, IPC: 1, DP: &good}, "mnist")
	if err != nil || d.Config().Init != InitNoise {
		t.Fatalf("DP DM: %v, init %q (want noise)", err, d.Config().Init)
	}
}

// A private DM and DSA run on real MNIST digits steps without error, is
// reproducible from its seed, and moves the images.
func TestDPDistillRuns(t *testing.T) {
	train, _ := loadMNIST(t)
	real := twoClass(train, 60)
	for _, method := range []string{MethodDM, MethodDSA} {
		run := func() *SyntheticSet {
			d, err := New(Config{Method: method, IPC: 1, Seed: 5, Model: "convnet-w8-d2", OuterLoop: 1, InnerLoop: 1,
				DP: &DPConfig{SampleRate: 0.1, Clip: 1, Noise: 1}}, "mnist")
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Init(context.Background(), real); err != nil {
				t.Fatal(err)
			}
			for it := range 2 {
				if _, err := d.Step(context.Background(), it); err != nil {
					t.Fatalf("%s iteration %d: %v", method, it, err)
				}
			}
			return d.Synthetic().Clone()
		}
		a, b := run(), run()
		if maxRelDiff64(a.X.Data, b.X.Data) != 0 {
			t.Fatalf("%s: two runs with one seed differ", method)
		}
	}
}

func maxRelDiff64(a, b []float32) float64 {
	var d float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

// The image gradient of DP-DM with clipping on both sides agrees with
// central differences of the loss (float64, no noise so the target is
// fixed), at a clipping norm below every embedding's norm and at one above
// some of them.
func TestDPDMGradientFiniteDifference(t *testing.T) {
	m := tinyConvNet(t, 11)
	real, syn := randImages(5, 12), randImages(3, 13)
	for _, clip := range []float64{0.05, 1.5} {
		dp := DPConfig{SampleRate: 1, Clip: clip}
		grad := tensor.New[float64](syn.Shape...)
		if _, err := DPDMLoss[float64](m, real, 5, syn, nil, dp, nil, grad); err != nil {
			t.Fatal(err)
		}
		loss := func() float64 {
			g := tensor.New[float64](syn.Shape...)
			l, err := DPDMLoss[float64](m, real, 5, syn, nil, dp, nil, g)
			if err != nil {
				t.Fatal(err)
			}
			return l
		}
		checkCentralDiff(t, fmt.Sprintf("C = %g", clip), syn, grad, loss, []int{0, 17, 64, 100, 150, 191})
	}
}

func TestDPStepsPerIteration(t *testing.T) {
	dm := Config{Method: MethodDM, IPC: 10}.Defaults("mnist")
	dsa := Config{Method: MethodDSA, IPC: 10}.Defaults("mnist")
	if dm.DPStepsPerIteration() != 1 || dsa.DPStepsPerIteration() != 10 {
		t.Fatalf("steps per iteration: dm %d (want 1), dsa at IPC 10 %d (want its 10 outer steps)", dm.DPStepsPerIteration(), dsa.DPStepsPerIteration())
	}
}

// Centered DP-DM: with no clipping and the expected batch equal to the real
// batch it is DMLoss (the center cancels); one example moves the noiseless
// sum by at most C whatever the center; and its image gradient, the center
// held constant as the method defines it, agrees with central differences.
func TestDPDMCenter(t *testing.T) {
	m := tinyConvNet(t, 21)
	real, syn := randImages(5, 22), randImages(3, 23)
	g1, g2 := tensor.New[float64](syn.Shape...), tensor.New[float64](syn.Shape...)
	l1, err := DMLoss[float64](m, real, syn, nil, g1)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := DPDMLoss[float64](m, real, 5, syn, nil, DPConfig{SampleRate: 1, Clip: math.Inf(1), Center: true}, nil, g2)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(l1-l2) > 1e-10*math.Abs(l1) || maxRelDiff(g2.Data, g1.Data) > 1e-8 {
		t.Fatalf("centered DP-DM without clipping: loss %.15g (DM %.15g), gradient differs by %.3g", l2, l1, maxRelDiff(g2.Data, g1.Data))
	}

	// Sensitivity: the target with and without the last example differ by
	// at most C/denom, and by exactly that when the offset is longer than C.
	const clip, denom = 0.05, 4.0
	dp := DPConfig{SampleRate: 1, Clip: clip, Center: true}
	all, center, err := dpDMTarget[float64](m, real, denom, syn, nil, dp, nil)
	if err != nil {
		t.Fatal(err)
	}
	if center == nil {
		t.Fatal("centered target returned no center")
	}
	fewer := &tensor.Tensor[float64]{Shape: []int{4, 1, 8, 8}, Data: real.Data[:4*64]}
	part, _, err := dpDMTarget[float64](m, fewer, denom, syn, nil, dp, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ss float64
	for j := range all.Data {
		d := (all.Data[j] - part.Data[j]) * denom
		ss += d * d
	}
	if n := math.Sqrt(ss); math.Abs(n-clip) > 1e-9 {
		t.Fatalf("one example moved the centered sum by %.6g, want exactly C = %g (its offset is longer)", n, clip)
	}

	// Gradient of the synthetic side around a fixed center, clipping active.
	target := all
	grad := tensor.New[float64](syn.Shape...)
	loss := func(g *tensor.Tensor[float64]) float64 {
		tp := ag.NewTape[float64]()
		defer tp.Release()
		l, err := dmMatch(tp, m, target, syn, nil, clip, center, g)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	got := loss(grad)
	// The synthetic side by hand: μ + mean clip(e_i − μ), not mean clip(e_i).
	tp := ag.NewTape[float64]()
	e := m.Embed(tp.Const(syn), nn.BindConst(tp, m)).Value
	n, d := e.Shape[0], len(center)
	side := slices.Clone(center)
	for i := range n {
		var ss float64
		for j := range d {
			o := e.Data[i*d+j] - center[j]
			ss += o * o
		}
		s := math.Min(1, clip/math.Sqrt(ss+1e-12))
		for j := range d {
			side[j] += s * (e.Data[i*d+j] - center[j]) / float64(n)
		}
	}
	tp.Release()
	var want float64
	for j := range d {
		want += (target.Data[j] - side[j]) * (target.Data[j] - side[j])
	}
	if math.Abs(got-want) > 1e-9*math.Abs(want) {
		t.Fatalf("centered synthetic side: loss %.12g, by hand %.12g", got, want)
	}
	const h = 1e-6
	for _, i := range []int{0, 31, 64, 129, 191} {
		v := syn.Data[i]
		syn.Data[i] = v + h
		lp := loss(tensor.New[float64](syn.Shape...))
		syn.Data[i] = v - h
		lm := loss(tensor.New[float64](syn.Shape...))
		syn.Data[i] = v
		fd := (lp - lm) / (2 * h)
		if math.Abs(fd-grad.Data[i]) > 1e-7+1e-4*math.Abs(fd) {
			t.Fatalf("element %d: gradient %.8g, finite difference %.8g", i, grad.Data[i], fd)
		}
	}
}

// ImageSteps takes further steps against one iteration's targets: the
// first loss of an iteration is the one-step run's (same target, same
// images, the noise drawn once), the images move further, and after a few
// iterations the matching loss is lower than with one step per iteration.
// Other methods and negative counts are refused.
func TestDMImageSteps(t *testing.T) {
	train, _ := loadMNIST(t)
	real := twoClass(train, 60)
	run := func(steps int, dp *DPConfig, iters int) ([]float64, *SyntheticSet) {
		d, err := New(Config{Method: MethodDM, IPC: 2, Seed: 3, Model: "convnet-w8-d2", Init: InitNoise, LRImg: 5, ImageSteps: steps, DP: dp}, "mnist")
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Init(context.Background(), real); err != nil {
			t.Fatal(err)
		}
		var losses []float64
		for it := range iters {
			l, err := d.Step(context.Background(), it)
			if err != nil {
				t.Fatalf("image steps %d, iteration %d: %v", steps, it, err)
			}
			losses = append(losses, l)
		}
		return losses, d.Synthetic().Clone()
	}
	dp := &DPConfig{SampleRate: 0.5, Clip: 1, Noise: 1, Center: true}
	one, x1 := run(1, dp, 1)
	three, x3 := run(3, dp, 1)
	if one[0] != three[0] {
		t.Fatalf("first loss of iteration 0: %v with one image step, %v with three; the target must be the same", one[0], three[0])
	}
	if maxRelDiff64(x1.X.Data, x3.X.Data) == 0 {
		t.Fatal("three image steps left the images where one step did")
	}
	zero, _ := run(0, nil, 6)
	one, _ = run(1, nil, 6)
	three, _ = run(3, nil, 6)
	if !slices.Equal(zero, one) {
		t.Fatalf("image steps 0 and 1 differ: %v, %v", zero, one)
	}
	if !(three[5] < one[5]) {
		t.Fatalf("loss at iteration 5: %g with three image steps, %g with one; want lower", three[5], one[5])
	}
	for _, bad := range []Config{{Method: MethodDM, IPC: 1, ImageSteps: -1}, {Method: MethodDSA, IPC: 1, ImageSteps: 2}} {
		if err := bad.Defaults("mnist").Validate(); err == nil || !strings.Contains(err.Error(), "image steps") {
			t.Fatalf("%s with image steps %d: error %v, want one naming image steps", bad.Method, bad.ImageSteps, err)
		}
	}
}

// The projected embedder (DPConfig.Project) returns e·P for the network's
// embedding e and a k-column P of N(0, 1/k) entries, so norms are kept on
// average (the mean over 2000 random directions of ‖e·P‖²/‖e‖² is within
// 5% of 1); private DM through it has the image gradient of central
// differences; a negative dimension, or a projection outside dm, is
// refused.
func TestDPProject(t *testing.T) {
	m := tinyConvNet(t, 21)
	real, syn := randImages(5, 22), randImages(3, 23)
	e, err := embedConst[float64](m, real, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	const k = 2000
	pm := projectEmbedder[float64](m, e.Shape[1], k, tensor.NewRNG(3, 0))
	pe, err := embedConst(pm, real, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	p := pm.(projected[float64]).p
	d := e.Shape[1]
	if !slices.Equal(pe.Shape, []int{5, k}) || !slices.Equal(p.Shape, []int{d, k}) {
		t.Fatalf("projected embedding %v, matrix %v; want [5 %d], [%d %d]", pe.Shape, p.Shape, k, d, k)
	}
	for i := range 5 {
		var ee, pp float64
		for j := range d {
			ee += e.Data[i*d+j] * e.Data[i*d+j]
		}
		for c := range k {
			var want float64
			for j := range d {
				want += e.Data[i*d+j] * p.Data[j*k+c]
			}
			if got := pe.Data[i*k+c]; math.Abs(got-want) > 1e-9*(1+math.Abs(want)) {
				t.Fatalf("image %d, direction %d: %g, want e·P = %g", i, c, got, want)
			}
			pp += pe.Data[i*k+c] * pe.Data[i*k+c]
		}
		if r := pp / ee; math.Abs(r-1) > 0.05 {
			t.Fatalf("image %d: ‖e·P‖²/‖e‖² = %.3f, want 1 ± 5%%", i, r)
		}
	}
	pm = projectEmbedder[float64](m, e.Shape[1], 4, tensor.NewRNG(4, 0))
	dp := DPConfig{SampleRate: 1, Clip: 0.05} // no center: it moves with syn, which the gradient holds fixed
	grad := tensor.New[float64](syn.Shape...)
	if _, err := DPDMLoss(pm, real, 5, syn, nil, dp, nil, grad); err != nil {
		t.Fatal(err)
	}
	loss := func() float64 {
		l, err := DPDMLoss(pm, real, 5, syn, nil, dp, nil, tensor.New[float64](syn.Shape...))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	checkCentralDiff(t, "projected", syn, grad, loss, []int{0, 33, 95, 140, 191})
	for _, bad := range []Config{
		{Method: MethodDM, IPC: 1, DP: &DPConfig{SampleRate: 1, Clip: 1, Noise: 1, Project: -1}},
		{Method: MethodDSA, IPC: 1, DP: &DPConfig{SampleRate: 1, Clip: 1, Noise: 1, Project: 8}},
	} {
		if err := bad.Defaults("mnist").Validate(); err == nil || !strings.Contains(err.Error(), "projection") {
			t.Fatalf("%s with projection %d: error %v, want one naming the projection", bad.Method, bad.DP.Project, err)
		}
	}
}

// checkCentralDiff compares grad with central differences (h = 1e-6) of
// loss, a function of x, at the elements idx of x.
func checkCentralDiff(t *testing.T, what string, x, grad *tensor.Tensor[float64], loss func() float64, idx []int) {
	t.Helper()
	const h = 1e-6
	for _, i := range idx {
		v := x.Data[i]
		x.Data[i] = v + h
		lp := loss()
		x.Data[i] = v - h
		lm := loss()
		x.Data[i] = v
		fd := (lp - lm) / (2 * h)
		if math.Abs(fd-grad.Data[i]) > 1e-6+1e-4*math.Abs(fd) {
			t.Fatalf("%s, element %d: gradient %.8g, finite difference %.8g", what, i, grad.Data[i], fd)
		}
	}
}
