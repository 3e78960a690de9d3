package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedsim/fedsim/distill"
)

// idc runs through `fedsim distill`: synthetic.npz holds the decoded set
// (factor² images per stored one), report.json the idc configuration, and
// --resume continues from the checkpoint; a bad factor is a usage error
// naming the flag.
func TestDistillIDC(t *testing.T) {
	dir := t.TempDir()
	o := tinyDistill(distill.MethodIDC, dir)
	o.EvalRuns, o.OuterLoop, o.InnerLoop, o.IDCNetData, o.IDCFactor = 1, 2, 1, 16, 2
	stdout := runDistillOrSkip(t, o)
	if !strings.Contains(stdout, "test accuracy") {
		t.Errorf("stdout %q reports no accuracy", stdout)
	}
	syn, err := distill.ReadSynthetic(filepath.Join(dir, "synthetic.npz"), 10)
	if err != nil {
		t.Fatal(err)
	}
	if syn.Len() != 10*4 {
		t.Errorf("%d decoded images, want 40", syn.Len())
	}
	rep, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil || !strings.Contains(string(rep), `"factor": 2`) || !strings.Contains(string(rep), `"metric": "l1"`) {
		t.Errorf("report.json %s, %v", rep, err)
	}
	o.Iters, o.Resume = 4, true
	if out := runDistillOrSkip(t, o); !strings.Contains(out, "resumed from the checkpoint after 3 iterations") {
		t.Errorf("resume: %q", out)
	}
	bad := tinyDistill(distill.MethodIDC, t.TempDir())
	bad.IDCMetric = "cos"
	if err := RunDistill(t.Context(), bad, &strings.Builder{}, &strings.Builder{}); err == nil || !strings.Contains(err.Error(), "--idc-metric") {
		t.Errorf("bad metric: %v", err)
	}
}
