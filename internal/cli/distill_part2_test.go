package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedsim/fedsim/distill"
)

// The kernel and meta-learning methods run through `fedsim distill` and
// leave the same files: synthetic.npz (with y_soft where labels are
// learned), grid.png, report.json with their configuration, a checkpoint
// that --resume continues from, and for factorized methods factors.npz.
func TestDistillPart2Methods(t *testing.T) {
	for _, c := range []struct {
		method string
		edit   func(o *DistillOptions)
		soft   bool
	}{
		{"kip", func(o *DistillOptions) { o.LearnLabels = true }, true},
		{"kip", func(o *DistillOptions) { o.Kernel, o.KernelDepth = "conv", 1; o.BatchReal = 4 }, false},
		{"rfad", func(o *DistillOptions) { o.RFModels, o.RFWidth = 1, 8 }, false},
		{"frepo", func(o *DistillOptions) { o.RFModels, o.MaxAge = 2, 2 }, false},
		{"dd", func(o *DistillOptions) { o.Unroll, o.UnrollMom, o.UnrollSeg = 3, 0.9, 2 }, false},
		{"sldd", func(o *DistillOptions) { o.Unroll = 2 }, true},
		{"ld", func(o *DistillOptions) { o.Unroll = 2 }, true},
		{"linba", func(o *DistillOptions) { o.Unroll = 2 }, false},
		{"idc", func(o *DistillOptions) { o.OuterLoop, o.IDCNetData = 1, 8 }, false},
		{"gtn", func(o *DistillOptions) { o.Unroll, o.GenWarm, o.GTNOverBudget = 2, 2, true }, false},
		{"itgan", func(o *DistillOptions) { o.ITGANEpochs, o.ITGANInvert, o.ITGANOverBudget = 1, 2, true }, false},
		{"kfs", func(o *DistillOptions) { o.KFS.Codes, o.KFS.Decoders = 1, 2 }, false},
	} {
		t.Run(c.method, func(t *testing.T) {
			dir := t.TempDir()
			o := tinyDistill(c.method, dir)
			o.EvalRuns = 1
			c.edit(o)
			stdout := runDistillOrSkip(t, o)
			if !strings.Contains(stdout, "test accuracy") {
				t.Errorf("stdout %q reports no accuracy", stdout)
			}
			syn, err := distill.ReadSynthetic(filepath.Join(dir, "synthetic.npz"), 10)
			if err != nil {
				t.Fatal(err)
			}
			want := 10
			switch c.method {
			case "linba", "idc":
				want = 10 * 4 * o.IPC // linba: r = 4·IPC; idc: factor² = 4 per stored image
			case "kfs":
				want = 10 * 2 // one code per class × two decoders
			}
			if _, err := os.Stat(filepath.Join(dir, "factors.npz")); (err == nil) != distill.HasFactors(c.method) {
				t.Errorf("factors.npz: %v, want one only for factorized methods", err)
			}
			if syn.Len() != want || (syn.YSoft != nil) != c.soft {
				t.Errorf("%d images, soft labels %v (want %d, %v)", syn.Len(), syn.YSoft != nil, want, c.soft)
			}
			rep, err := os.ReadFile(filepath.Join(dir, "report.json"))
			if err != nil || !strings.Contains(string(rep), `"method": "`+c.method+`"`) {
				t.Errorf("report.json %s, %v", rep, err)
			}
			// Resume to more iterations from the checkpoint.
			o.Iters, o.Resume = 4, true
			if out := runDistillOrSkip(t, o); !strings.Contains(out, "resumed from the checkpoint after 3 iterations") {
				t.Errorf("resume: %q", out)
			}
		})
	}
}

// TestDistillKRREvaluation: --eval-models krr evaluates a KIP set by
// kernel ridge regression with its own kernel, beside a network, and
// report.json records it; KRR on 10 KIP images beats chance on real MNIST.
func TestDistillKRREvaluation(t *testing.T) {
	dir := t.TempDir()
	o := tinyDistill("kip", dir)
	o.EvalModels, o.EvalRuns, o.Iters = []string{"krr", "convnet-w8"}, 1, 20
	out := runDistillOrSkip(t, o)
	if !strings.Contains(out, "krr  test accuracy") {
		t.Fatalf("stdout %q has no krr evaluation", out)
	}
	rep := readDistillReport(t, dir)
	if len(rep.Evals) != 2 || rep.Evals[0].Model != "krr" || !(rep.Evals[0].Mean > 0.3) {
		t.Fatalf("evaluations %+v: want krr first, above 30 %%", rep.Evals)
	}
}

// TestDistillUnrolledEvaluation: --eval-models unrolled evaluates a dd set
// by its own inner loop (the learned step size, --unroll steps) and
// report.json records it; other methods and `fedsim eval` refuse it.
func TestDistillUnrolledEvaluation(t *testing.T) {
	dir := t.TempDir()
	o := tinyDistill("dd", dir)
	o.EvalModels, o.EvalRuns, o.Iters, o.Unroll = []string{"unrolled"}, 2, 3, 4
	o.EvalLR = 0.01 // for networks; the unrolled evaluation keeps the learned step size
	out := runDistillOrSkip(t, o)
	if !strings.Contains(out, "unrolled  test accuracy") || !strings.Contains(out, "× 4 full-batch steps") {
		t.Fatalf("stdout %q has no unrolled evaluation of 4 steps", out)
	}
	rep := readDistillReport(t, dir)
	if len(rep.Evals) != 1 || rep.Evals[0].Model != "unrolled" || rep.Evals[0].Epochs != 4 || rep.Evals[0].Runs != 2 ||
		len(rep.Evals[0].Accs) != 2 || rep.Evals[0].LR == 0.01 || !(rep.Evals[0].LR > 0) {
		t.Fatalf("evaluations %+v: want one unrolled record of 2 runs × 4 steps at the learned step size", rep.Evals)
	}
	d := tinyDistill("dm", t.TempDir())
	d.EvalModels = []string{"unrolled"}
	if err := RunDistill(t.Context(), d, &strings.Builder{}, &strings.Builder{}); err == nil || !strings.Contains(err.Error(), "unrolled") {
		t.Errorf("dm with --eval-models unrolled: %v, want a usage error naming it", err)
	}
	e := &EvalOptions{Synthetic: filepath.Join(dir, "synthetic.npz"), Dataset: "mnist", EvalModels: []string{"unrolled"}, EvalRuns: 1}
	if err := RunEval(t.Context(), e, &strings.Builder{}, &strings.Builder{}); err == nil || !strings.Contains(err.Error(), "fedsim distill") {
		t.Errorf("fedsim eval --eval-models unrolled: %v, want a usage error pointing to fedsim distill", err)
	}
}

// TestDistillLRCosine: --lr-cosine spans --iters (recorded in report.json),
// a resumed run must keep --iters (the decay would change), and methods
// without Adam-rate decay refuse the flag.
func TestDistillLRCosine(t *testing.T) {
	dir := t.TempDir()
	o := tinyDistill("kip", dir)
	o.LRCosine, o.EvalRuns = true, 0
	runDistillOrSkip(t, o)
	if rep := readDistillReport(t, dir); rep.Config.KRR.CosineIters != o.Iters {
		t.Fatalf("report.json cosine_iters %d, want --iters %d", rep.Config.KRR.CosineIters, o.Iters)
	}
	o.Iters, o.Resume = o.Iters+1, true
	if err := RunDistill(t.Context(), o, &strings.Builder{}, &strings.Builder{}); err == nil || !strings.Contains(err.Error(), "cosine_iters") {
		t.Errorf("resume with another --iters under --lr-cosine: %v, want an error naming cosine_iters", err)
	}
	d := tinyDistill("dm", t.TempDir())
	d.LRCosine = true
	if err := RunDistill(t.Context(), d, &strings.Builder{}, &strings.Builder{}); err == nil || !strings.Contains(err.Error(), "--lr-cosine") {
		t.Errorf("dm with --lr-cosine: %v, want a usage error naming the flag", err)
	}
}

// TestIDCRecipeEvaluation: --eval-models idc trains ConvNets by IDC's
// recipe, in fedsim distill (whatever the method; --eval-epochs shortens
// it) and in fedsim eval, and report.json records it at IDC's rate.
func TestIDCRecipeEvaluation(t *testing.T) {
	dir := t.TempDir()
	o := tinyDistill("random", dir)
	o.EvalModels, o.EvalRuns, o.EvalEpochs = []string{"idc"}, 1, 2
	out := runDistillOrSkip(t, o)
	if !strings.Contains(out, "idc  test accuracy") {
		t.Fatalf("stdout %q has no idc evaluation", out)
	}
	rep := readDistillReport(t, dir)
	if len(rep.Evals) != 1 || rep.Evals[0].Model != "idc" || rep.Evals[0].Epochs != 2 || rep.Evals[0].LR != 0.01 || len(rep.Evals[0].Accs) != 1 {
		t.Fatalf("evaluations %+v: want one idc record of 1 run × 2 epochs at 0.01", rep.Evals)
	}
	e := &EvalOptions{Synthetic: filepath.Join(dir, "synthetic.npz"), Dataset: "mnist", EvalModels: []string{"idc"}, EvalRuns: 1,
		EvalEpochs: 1, TestLimit: 200, JSON: true, Quiet: true}
	var stdout strings.Builder
	if err := RunEval(t.Context(), e, &stdout, &strings.Builder{}); err != nil {
		t.Fatal(err)
	}
	var er EvalReport
	if err := json.Unmarshal([]byte(stdout.String()), &er); err != nil || len(er.Evals) != 1 || er.Evals[0].Model != "idc" || er.Evals[0].Epochs != 1 {
		t.Fatalf("fedsim eval --eval-models idc: %s (%v)", stdout.String(), err)
	}
	e.JSON = false
	stdout.Reset()
	if err := RunEval(t.Context(), e, &stdout, &strings.Builder{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "each of idc (1 epochs)") {
		t.Fatalf("fedsim eval's plan line does not give idc's epochs: %q", stdout.String())
	}
}

// TestEvalEpochs checks that fedsim eval announces and trains each model
// for its own length: IDC's recipe is 1000 epochs whatever the data set's
// default for the other networks.
func TestEvalEpochs(t *testing.T) {
	for _, c := range []struct {
		model    string
		explicit int
		dataset  string
		want     int
	}{
		{"idc", 0, "fmnist", distill.IDCEvalEpochs},
		{"convnet", 0, "fmnist", distill.DefaultEvalEpochs("fmnist", "")},
		{"convnet", 0, "mnist", distill.DefaultEvalEpochs("mnist", "")},
		{"idc", 7, "fmnist", 7},
		{"mlp", 7, "mnist", 7},
	} {
		if got := evalEpochs(c.model, c.explicit, c.dataset, ""); got != c.want {
			t.Errorf("evalEpochs(%s, %d, %s) = %d, want %d", c.model, c.explicit, c.dataset, got, c.want)
		}
	}
	if got, want := evalEpochs("convnet", 0, "fmnist", "cafe"), distill.DefaultEvalEpochs("fmnist", "cafe"); got != want {
		t.Errorf("fedsim distill's cafe default: %d epochs, want %d", got, want)
	}
	if distill.IDCEvalEpochs == distill.DefaultEvalEpochs("fmnist", "") {
		t.Fatal("the test cannot tell IDC's length from the default")
	}
}
