package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/privacy"
)

func needMNIST(t *testing.T) {
	t.Helper()
	if _, err := data.Load("mnist", "test", ""); err != nil {
		t.Skip(err)
	}
}

func runFedsim(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

// Tiny invocations of every attack command: JSON reports with the metrics,
// files in --out.
func TestAttackCommands(t *testing.T) {
	needMNIST(t)
	dir := t.TempDir()
	code, out, errs := runFedsim("attack", "mia", "--model", "mlp", "--members", "64", "--epochs", "40", "--batch", "16", "--lr", "0.05", "--bootstrap", "50", "--json", "--out", filepath.Join(dir, "mia"))
	var rep AttackReport
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || rep.Report == nil {
		t.Fatalf("mia: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if !(rep.Report.AUC.Value > 0.7) {
		t.Errorf("mia on an overfit raw-data model: AUC %v, want clearly above 0.5", rep.Report.AUC)
	}
	for _, f := range []string{"mia/roc.png", "mia/report.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	code, out, errs = runFedsim("attack", "lira", "--model", "mlp", "--members", "40", "--shadows", "4", "--epochs", "20", "--batch", "16", "--lr", "0.05",
		"--bootstrap", "20", "--global-variance", "--json", "--out", filepath.Join(dir, "lira"))
	rep = AttackReport{}
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || rep.Report == nil || rep.Attack != "lira-online" {
		t.Fatalf("lira: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "lira", "roc_compare.png")); err != nil {
		t.Error(err)
	}
	code, out, errs = runFedsim("attack", "dlg", "--model", "mlp", "--iters", "30", "--json", "--out", filepath.Join(dir, "dlg"))
	rep = AttackReport{}
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || len(rep.PSNR) != 1 || rep.LabelsFound[0] != rep.LabelsTrue[0] {
		t.Fatalf("dlg: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	for _, bad := range [][]string{
		{"attack", "mia", "--members", "1"},
		{"attack", "mia", "--epochs", "0"},
		{"attack", "lira", "--shadows", "1"},
		{"attack", "dlg", "--optimizer", "sgd"},
		{"attack", "leakage"},
	} {
		if code, _, errs := runFedsim(bad...); code != 2 || errs == "" {
			t.Errorf("%v: exit %d, stderr %q; want a usage error", bad, code, errs)
		}
	}
}

// The --dp-* flags reach the configuration: σ from --dp-epsilon by the
// accountant, and bad values are usage errors before any work.
func TestRunDPFlags(t *testing.T) {
	base := []string{"--out", t.TempDir(), "--clients", "5", "--rounds", "2", "--distill-iters", "10"}
	parse := func(args ...string) (*RunOptions, error) {
		o := &RunOptions{}
		fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
		addRunFlags(fs, o)
		if err := fs.Parse(append(slices.Clone(base), args...)); err != nil {
			return nil, err
		}
		o.Changed = changedFlags(fs)
		return o, nil
	}
	o, err := parse("--dp-epsilon", "8", "--dp-clip", "1", "--dp-sample-rate", "0.5")
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := resolveRunConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	want, err := privacy.NoiseForEpsilon(0.5, 10, 8, 1e-5)
	if err != nil || cfg.DPNoise != want || !cfg.DPEnabled() {
		t.Fatalf("σ %g (enabled %v), want %g (%v)", cfg.DPNoise, cfg.DPEnabled(), want, err)
	}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"--dp-noise", "-1", "--dp-clip", "1"}, "σ"},
		{[]string{"--dp-noise", "1", "--dp-clip", "0"}, "clipping norm"},
		{[]string{"--dp-noise", "1", "--dp-clip", "-2"}, "clipping norm"},
		{[]string{"--dp-noise", "1", "--dp-clip", "1", "--dp-delta", "1"}, "δ"},
		{[]string{"--dp-noise", "1", "--dp-clip", "1", "--dp-sample-rate", "0"}, "dp_sample_rate"},
		{[]string{"--dp-noise", "1", "--dp-clip", "1", "--dp-sample-rate", "1.5"}, "dp_sample_rate"},
		{[]string{"--dp-clip", "1"}, "--dp-noise"},
		{[]string{"--dp-noise", "0.3", "--dp-epsilon", "0.01", "--dp-clip", "1"}, "unreachable"},
		{[]string{"--dp-epsilon", "1e-9", "--dp-clip", "1"}, "unreachable"},
		{[]string{"--distill", "none", "--dp-noise", "0.5", "--dp-epsilon", "0.1", "--dp-clip", "1"}, "unreachable"},
	} {
		o, err := parse(bad.args...)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := resolveRunConfig(o); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%v: error %v, want one containing %q", bad.args, err, bad.want)
		}
	}
}
