package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fedsim/fedsim/distill"
	"github.com/fedsim/fedsim/internal/npz"
)

// tinyDistill returns options for a run that takes a second: 500 MNIST
// training images, a width-8 ConvNet, 16 real images per class, and one
// evaluation model trained for 2 epochs, tested on 300 images.
func tinyDistill(method, out string) *DistillOptions {
	return &DistillOptions{Dataset: "mnist", Method: method, IPC: 1, Iters: 3, Out: out, EvalModels: []string{"convnet-w8"},
		EvalRuns: 2, EvalEpochs: 2, Seed: 1, CheckpointEvery: 1, Model: "convnet-w8", BatchReal: 16, TrainLimit: 500,
		TestLimit: 300, Quiet: true}
}

func runDistillOrSkip(t *testing.T, o *DistillOptions) string {
	t.Helper()
	var out, errb bytes.Buffer
	if err := RunDistill(context.Background(), o, &out, &errb); err != nil {
		if strings.Contains(err.Error(), "go mod download") {
			t.Skip(err)
		}
		t.Fatalf("%v\nstdout: %s\nstderr: %s", err, out.String(), errb.String())
	}
	return out.String()
}

func TestDistillCommandWritesOutputs(t *testing.T) {
	for _, method := range []string{"dm", "dsa", "herding"} {
		dir := t.TempDir()
		o := tinyDistill(method, dir)
		if method == "dsa" {
			o.IPC, o.OuterLoop, o.InnerLoop = 2, 2, 1
		}
		o.EvalEvery = 2
		stdout := runDistillOrSkip(t, o)
		if !strings.Contains(stdout, "test accuracy") {
			t.Errorf("%s: stdout %q reports no accuracy", method, stdout)
		}
		syn, err := distill.ReadSynthetic(filepath.Join(dir, "synthetic.npz"), 10)
		if err != nil {
			t.Fatal(err)
		}
		if syn.Len() != 10*o.IPC {
			t.Fatalf("%s: %d synthetic images", method, syn.Len())
		}
		f, err := os.Open(filepath.Join(dir, "grid.png"))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if b := img.Bounds(); b.Dx() < o.IPC*56 || b.Dy() < 10*56 {
			t.Errorf("%s: grid.png is %v for 10 classes × %d images", method, b, o.IPC)
		}
		rep := readDistillReport(t, dir)
		if rep.Method != method || rep.IPC != o.IPC || rep.Seed != 1 || rep.WallS <= 0 {
			t.Errorf("%s: report %+v", method, rep)
		}
		for _, e := range rep.Evals {
			if e.LR != 0.01 {
				t.Errorf("%s: evaluated at lr %g, want the protocol's 0.01", method, e.LR)
			}
		}
		last := rep.Evals[len(rep.Evals)-1]
		if last.Runs != 2 || len(last.Accs) != 2 || last.Mean < 0 || last.Mean > 1 || last.Model != "convnet-w8" {
			t.Errorf("%s: final evaluation %+v", method, last)
		}
		if method == "herding" {
			if len(rep.Evals) != 1 || rep.Iterations != 0 {
				t.Errorf("herding: evaluations %+v, iterations %d", rep.Evals, rep.Iterations)
			}
			continue
		}
		// An intermediate evaluation at iteration 2, then the final one.
		if len(rep.Evals) != 2 || rep.Evals[0].Iteration != 2 || last.Iteration != 3 || rep.FinalLoss == nil {
			t.Errorf("%s: evaluations %+v, final loss %v", method, rep.Evals, rep.FinalLoss)
		}
		if !(rep.SecPerIterMedian > 0 && rep.SecPerIterMedian <= rep.DistillWallS) {
			t.Errorf("%s: median iteration time %g s, distillation %g s", method, rep.SecPerIterMedian, rep.DistillWallS)
		}
		if rep.Config.LRImg == 0 || rep.Config.Init == "" {
			t.Errorf("%s: report lacks the hyper-parameters: %+v", method, rep.Config)
		}
	}
}

// A run stopped after 2 iterations and resumed to 4 writes the same
// synthetic set as a run of 4; without --resume an existing checkpoint is
// not overwritten.
func TestDistillCommandResume(t *testing.T) {
	full, part := t.TempDir(), t.TempDir()
	o := tinyDistill("dm", full)
	o.Iters, o.EvalRuns = 4, 0
	runDistillOrSkip(t, o)

	o = tinyDistill("dm", part)
	o.Iters, o.EvalRuns = 2, 0
	runDistillOrSkip(t, o)
	o.Iters = 4
	var out, errb bytes.Buffer
	err := RunDistill(context.Background(), o, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "pass --resume") {
		t.Fatalf("second run without --resume: %v", err)
	}
	o.Resume = true
	o.EvalRuns, o.EvalEvery = 1, 1 // an evaluation at iteration 3, during the resumed part
	stdout := runDistillOrSkip(t, o)
	// The resume is said when it happens, before the resumed part's
	// output, so that a log appended to by every resumption shows where
	// each part started.
	if i, j := strings.Index(stdout, "resumed from the checkpoint after 2 iterations"), strings.Index(stdout, "iteration 3 "); i < 0 || j < 0 || i > j {
		t.Errorf("stdout %q does not mention the resume before the evaluation at iteration 3", stdout)
	}
	a, err := npz.Read(filepath.Join(full, "synthetic.npz"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := npz.Read(filepath.Join(part, "synthetic.npz"))
	if err != nil {
		t.Fatal(err)
	}
	xa, xb := a["x"].Data.([]float32), b["x"].Data.([]float32)
	for i := range xa {
		if xa[i] != xb[i] {
			t.Fatalf("resumed run differs at value %d: %v vs %v", i, xa[i], xb[i])
		}
	}
}

func TestEvalCommand(t *testing.T) {
	dir := t.TempDir()
	o := tinyDistill("random", dir)
	o.EvalRuns = 0
	runDistillOrSkip(t, o)
	var out, errb bytes.Buffer
	eo := &EvalOptions{Synthetic: filepath.Join(dir, "synthetic.npz"), EvalModels: []string{"convnet-w8", "mlp"}, EvalRuns: 2,
		EvalEpochs: 2, Seed: 1, TestLimit: 200, JSON: true, Quiet: true}
	if err := RunEval(context.Background(), eo, &out, &errb); err != nil {
		t.Fatal(err)
	}
	var rep EvalReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v: %q", err, out.String())
	}
	if rep.Dataset != "mnist" || rep.Images != 10 || len(rep.Evals) != 2 || rep.TestImages != 200 {
		t.Fatalf("report %+v", rep)
	}
	for _, e := range rep.Evals {
		if len(e.Accs) != 2 || e.Mean < 0 || e.Mean > 1 {
			t.Errorf("evaluation %+v", e)
		}
	}
}

func TestDistillAndEvalBadInput(t *testing.T) {
	dir := t.TempDir()
	// A synthetic set with a NaN, one with a wrong dtype, one that fits no data set.
	writeNPZ := func(name string, arrays ...*npz.Array) string {
		p := filepath.Join(dir, name)
		if err := npz.Write(p, arrays); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mk := func(name string, shape []int, d any) *npz.Array {
		a, err := npz.New(name, shape, d)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	nan := make([]float32, 28*28)
	nan[7] = float32(math.NaN())
	nanPath := writeNPZ("nan.npz", mk("x", []int{1, 1, 28, 28}, nan), mk("y", []int{1}, []int64{0}),
		mk("mean", []int{1}, []float32{0.1307}), mk("std", []int{1}, []float32{0.3081}))
	dtypePath := writeNPZ("dtype.npz", mk("x", []int{1, 1, 28, 28}, make([]float64, 28*28)), mk("y", []int{1}, []int64{0}),
		mk("mean", []int{1}, []float32{0.1307}), mk("std", []int{1}, []float32{0.3081}))
	oddPath := writeNPZ("odd.npz", mk("x", []int{1, 1, 5, 5}, make([]float32, 25)), mk("y", []int{1}, []int64{0}),
		mk("mean", []int{1}, []float32{0.5}), mk("std", []int{1}, []float32{0.5}))
	labelPath := writeNPZ("label.npz", mk("x", []int{1, 1, 28, 28}, make([]float32, 28*28)), mk("y", []int{1}, []int64{12}),
		mk("mean", []int{1}, []float32{0.1307}), mk("std", []int{1}, []float32{0.3081}))
	out := filepath.Join(dir, "out")
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"distill", "--method", "nosuch", "--out", out}, 2, `--method "nosuch"`},
		{[]string{"distill", "--method", "mtt", "--out", out}, 2, "--buffer"},
		{[]string{"distill", "--dataset", "imagenet", "--out", out}, 2, "imagenet"},
		{[]string{"distill", "--ipc", "0", "--out", out}, 2, "--ipc 0"},
		{[]string{"distill", "--method", "dm"}, 2, "--out is required"},
		{[]string{"distill", "--ipc", "60", "--train-limit", "300", "--out", out, "--eval-runs", "0"}, 2, "--ipc 60 is more than class"},
		{[]string{"distill", "--eval-models", "transformer", "--out", out}, 2, "transformer"},
		{[]string{"distill", "--init", "zeros", "--out", out}, 2, `initialisation "zeros"`},
		{[]string{"distill", "--eval-lr", "-1", "--out", out}, 2, "--eval-lr -1"},
		{[]string{"distill", "--zca-reg", "0.5", "--out", out}, 2, "--zca-reg 0.5 needs --zca"},
		{[]string{"eval"}, 2, "--synthetic is required"},
		{[]string{"eval", "--synthetic", nanPath}, 2, "non-finite"},
		{[]string{"eval", "--synthetic", dtypePath}, 2, `"x" has dtype float64, want float32`},
		{[]string{"eval", "--synthetic", oddPath}, 2, "pass --dataset"},
		{[]string{"eval", "--synthetic", labelPath}, 2, "label 12 at index 0 is out of range for 10 classes"},
		{[]string{"eval", "--synthetic", filepath.Join(dir, "absent.npz")}, 2, "absent.npz"},
	}
	for _, c := range cases {
		var o, e bytes.Buffer
		code := Main(c.args, &o, &e)
		if code != c.code || !strings.Contains(o.String()+e.String(), c.want) {
			t.Errorf("%v: exit %d, output %q; want exit %d mentioning %q", c.args, code, o.String()+e.String(), c.code, c.want)
		}
	}
}

// `fedsim distill buffer` then `fedsim distill --method tesla --buffer`.
func TestDistillBufferAndTrajectoryMatching(t *testing.T) {
	dir := t.TempDir()
	buf := filepath.Join(dir, "buffer")
	var out, errb bytes.Buffer
	bo := &BufferOptions{Dataset: "mnist", Model: "convnet-w8", Experts: 1, Epochs: 3, LR: 0.01, Batch: 64, Seed: 1, Out: buf,
		TrainLimit: 300, TestLimit: 200, Quiet: true}
	if err := RunBuffer(context.Background(), bo, &out, &errb); err != nil {
		if strings.Contains(err.Error(), "go mod download") {
			t.Skip(err)
		}
		t.Fatalf("%v\n%s%s", err, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "expert 0 epoch 3: test accuracy") {
		t.Errorf("buffer output %q", out.String())
	}
	for _, method := range []string{"mtt", "tesla"} {
		o := tinyDistill(method, filepath.Join(dir, method))
		o.Buffer, o.SynSteps, o.MaxStartEpoch, o.ExpertEpochs, o.LRImg = buf, 3, 1, 2, 100
		stdout := runDistillOrSkip(t, o)
		if !strings.Contains(stdout, "learned student step size") {
			t.Errorf("%s: stdout %q", method, stdout)
		}
		syn, err := distill.ReadSynthetic(filepath.Join(o.Out, "synthetic.npz"), 10)
		if err != nil {
			t.Fatal(err)
		}
		if (syn.YSoft != nil) != (method == "tesla") {
			t.Errorf("%s: soft labels %v", method, syn.YSoft != nil)
		}
		// The evaluation trains at the learned step size, as MTT's
		// distill.py does.
		rep := readDistillReport(t, o.Out)
		if len(rep.Evals) == 0 {
			t.Fatalf("%s: report.json has no evaluation", method)
		}
		if e := rep.Evals[len(rep.Evals)-1]; rep.StepSize <= 0 || e.LR != rep.StepSize {
			t.Errorf("%s: evaluated at lr %g, want the learned step size %g", method, e.LR, rep.StepSize)
		}
	}
	// Without a buffer, or with one for another model, the run stops early.
	o := tinyDistill("mtt", filepath.Join(dir, "nobuf"))
	if err := RunDistill(context.Background(), o, &out, &errb); err == nil || !strings.Contains(err.Error(), "buffer") {
		t.Errorf("no buffer: %v", err)
	}
	o = tinyDistill("mtt", filepath.Join(dir, "othermodel"))
	o.Buffer, o.Model, o.MaxStartEpoch = buf, "convnet-w4", 1
	if err := RunDistill(context.Background(), o, &out, &errb); err == nil || !strings.Contains(err.Error(), "convnet-w4") {
		t.Errorf("other model: %v", err)
	}
}

// With --zca the method sees whitened images, but what leaves the run is
// in the normalized space: random selection picks the same real images
// with or without whitening, so synthetic.npz must match to float32
// rounding, and eval must find zca.npz.
func TestDistillZCA(t *testing.T) {
	plain, white := t.TempDir(), t.TempDir()
	o := tinyDistill("random", plain)
	o.EvalRuns = 0
	runDistillOrSkip(t, o)
	o = tinyDistill("random", white)
	o.EvalRuns, o.ZCA = 0, true
	runDistillOrSkip(t, o)
	a, err := distill.ReadSynthetic(filepath.Join(plain, "synthetic.npz"), 10)
	if err != nil {
		t.Fatal(err)
	}
	b, err := distill.ReadSynthetic(filepath.Join(white, "synthetic.npz"), 10)
	if err != nil {
		t.Fatal(err)
	}
	var worst float64
	for i, v := range a.X.Data {
		worst = max(worst, math.Abs(float64(v-b.X.Data[i])))
	}
	if worst > 2e-3 {
		t.Fatalf("--zca synthetic.npz differs from the plain run by %g: not mapped back to the normalized space", worst)
	}
	z, err := distill.ReadZCA(filepath.Join(white, "zca.npz"))
	if err != nil {
		t.Fatal(err)
	}
	if z.Eps != distill.DefaultZCAReg {
		t.Fatalf("zca.npz has ε = %g, want the default %g", z.Eps, distill.DefaultZCAReg)
	}
	for _, tc := range []struct{ zca, want string }{{"", filepath.Join(white, "zca.npz")}, {"none", ""}} {
		var out, errb bytes.Buffer
		eo := &EvalOptions{Synthetic: filepath.Join(white, "synthetic.npz"), EvalModels: []string{"convnet-w8"}, EvalRuns: 1,
			EvalEpochs: 1, Seed: 1, TestLimit: 100, ZCA: tc.zca, JSON: true, Quiet: true}
		if err := RunEval(context.Background(), eo, &out, &errb); err != nil {
			t.Fatal(err)
		}
		var rep EvalReport
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatal(err)
		}
		if rep.ZCA != tc.want {
			t.Errorf("--zca %q: the report's transform is %q, want %q", tc.zca, rep.ZCA, tc.want)
		}
	}
	// A checkpoint distilled in ZCA space does not resume without it.
	dir := t.TempDir()
	o = tinyDistill("dm", dir)
	o.EvalRuns, o.Iters, o.ZCA = 0, 2, true
	runDistillOrSkip(t, o)
	o.Iters, o.ZCA, o.ZCAReg, o.Resume = 3, false, 0, true
	var out, errb bytes.Buffer
	if err := RunDistill(context.Background(), o, &out, &errb); err == nil || !strings.Contains(err.Error(), "zca_reg") {
		t.Fatalf("resuming a --zca checkpoint without --zca: %v", err)
	}
	o.ZCA, o.ZCAReg, o.Resume = false, 0.5, false
	if err := RunDistill(context.Background(), o, &out, &errb); err == nil || !strings.Contains(err.Error(), "needs --zca") {
		t.Fatalf("--zca-reg without --zca: %v", err)
	}
}

// readDistillReport reads and decodes dir/report.json.
func readDistillReport(t *testing.T, dir string) DistillReport {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep DistillReport
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("%s/report.json: %v", dir, err)
	}
	return rep
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 4}, 4},
		{[]float64{9, 1, 4, 2}, 3},
	} {
		in := slices.Clone(tc.xs)
		if got := median(in); got != tc.want {
			t.Errorf("median(%v) = %g, want %g", tc.xs, got, tc.want)
		}
		if !slices.Equal(in, tc.xs) {
			t.Errorf("median reordered its input: %v", in)
		}
	}
}

// --dsa-strategy and --dc-augment reach the evaluation of `fedsim distill`
// and of `fedsim eval`: the models train without augmentation under
// "none", with DC's augmentation under --dc-augment, and so end elsewhere
// than under the data set's default DSA; each record names the
// augmentation it trained with. Unknown operations are refused.
func TestEvalAugmentationFlags(t *testing.T) {
	evalRecords := func(dsa, dc string) (distill, eval EvalRecord) {
		t.Helper()
		dir := t.TempDir()
		o := tinyDistill("random", dir)
		// 30 epochs and 2000 test images: the models learn, and their
		// accuracies are fine enough to tell the augmentations apart.
		o.DSAStrategy, o.DCAugment, o.EvalRuns, o.EvalEpochs, o.TestLimit = dsa, dc, 1, 30, 2000
		runDistillOrSkip(t, o)
		rep := readDistillReport(t, dir)
		if len(rep.Evals) != 1 {
			t.Fatalf("--dsa-strategy %q --dc-augment %q: report.json has %d evaluations, want 1", dsa, dc, len(rep.Evals))
		}
		var out, errb bytes.Buffer
		eo := &EvalOptions{Synthetic: filepath.Join(dir, "synthetic.npz"), EvalModels: []string{"convnet-w8"}, EvalRuns: 1,
			EvalEpochs: 30, Seed: 1, TestLimit: 2000, DSAStrategy: dsa, DCAugment: dc, JSON: true, Quiet: true}
		if err := RunEval(context.Background(), eo, &out, &errb); err != nil {
			t.Fatal(err)
		}
		var er EvalReport
		if err := json.Unmarshal(out.Bytes(), &er); err != nil {
			t.Fatalf("%v: %q", err, out.String())
		}
		return rep.Evals[0], er.Evals[0]
	}
	type pair struct{ distill, eval EvalRecord }
	var def, off, dc pair
	def.distill, def.eval = evalRecords("", "")
	off.distill, off.eval = evalRecords("none", "")
	dc.distill, dc.eval = evalRecords("", "crop_scale_rotate")
	wantDef := "dsa:" + distill.DefaultDSAStrategy("mnist")
	for _, c := range []struct {
		name         string
		def, off, dc EvalRecord
	}{{"fedsim distill", def.distill, off.distill, dc.distill}, {"fedsim eval", def.eval, off.eval, dc.eval}} {
		if c.def.Augmentation != wantDef || c.off.Augmentation != "none" || c.dc.Augmentation != "dc:crop_scale_rotate" {
			t.Errorf("%s: records name augmentations %q, %q and %q, want %q, none and dc:crop_scale_rotate", c.name,
				c.def.Augmentation, c.off.Augmentation, c.dc.Augmentation, wantDef)
		}
		if c.def.Mean == c.off.Mean || c.def.Mean == c.dc.Mean || c.off.Mean == c.dc.Mean {
			t.Errorf("%s: accuracies %v (DSA), %v (none), %v (DC's): an augmentation flag did not reach the models' training", c.name, c.def.Mean, c.off.Mean, c.dc.Mean)
		}
	}
	// The same set, the same seed and the same augmentation give the same
	// models through either command.
	for _, p := range []pair{def, off, dc} {
		if p.distill.Mean != p.eval.Mean {
			t.Errorf("fedsim distill and fedsim eval disagree on the same set under %s: %v vs %v", p.distill.Augmentation, p.distill.Mean, p.eval.Mean)
		}
	}
	for _, c := range []struct{ dsa, dc, want string }{{"crop_warp", "", `"warp"`}, {"", "crop_flip", `"flip"`}} {
		eo := &EvalOptions{Synthetic: "unused.npz", EvalModels: []string{"convnet-w8"}, EvalRuns: 1, DSAStrategy: c.dsa, DCAugment: c.dc}
		err := RunEval(context.Background(), eo, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("--dsa-strategy %q --dc-augment %q: %v, want an error naming %s", c.dsa, c.dc, err, c.want)
		}
	}
}
