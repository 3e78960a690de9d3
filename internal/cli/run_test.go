package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedsim/fedsim/sim"
)

func TestRunFlagErrors(t *testing.T) {
	dir := t.TempDir()
	badKey := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badKey, []byte("clients: 4\nrouns: 2\n"), 0o644)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--rounds", "-2"}, "rounds -2"},
		{[]string{"run", "--fraction", "0"}, "fraction 0"},
		{[]string{"--fraction", "1.5"}, "fraction 1.5"},
		{[]string{"--clients", "5000", "--train-limit", "100"}, "more clients than the 100 training samples"},
		{[]string{"--distill", "kd"}, `distill "kd"`},
		{[]string{"--strategy", "dynafed"}, "use distill none"},
		{[]string{"--server-tm", "--server-tm-span", "9"}, "server_tm_rounds 5 and server_tm_span 9"},
		{[]string{"--server-tm", "--server-tm-img-optim", "Adam"}, `server_tm_img_optim "Adam": want sgd or adam`},
		{[]string{"--local-optim", "Adam"}, `local_optim "Adam": want sgd or adam`},
		{[]string{"--server-tm", "--server-tm-average", "-1"}, "server_tm_average -1: want 0 (off) to server_tm_span 2"},
		{[]string{"--config", badKey}, "rouns"},
		{[]string{"--config", filepath.Join(dir, "missing.yaml")}, "missing.yaml"},
		{[]string{"--resume", dir, "--clients", "3"}, "only --rounds may change"},
		{[]string{"--clients", "x"}, "invalid argument"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := Main(c.args, &out, &errb)
		if code == 0 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q: want an error mentioning %q", c.args, code, errb.String(), c.want)
		}
		if strings.Contains(c.want, "rounds") || strings.Contains(c.want, "fraction") || strings.Contains(c.want, "rouns") {
			if code != 2 {
				t.Errorf("%v: exit %d, want 2 (usage)", c.args, code)
			}
		}
	}
}

// fedsim with no command is fedsim run; a config file is overridden by the
// flags given; --resume extends a finished run.
func TestRunDefaultCommandWithConfig(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	cfgFile := filepath.Join(dir, "exp.yaml")
	os.WriteFile(cfgFile, []byte(`train_limit: 1500
test_limit: 300
clients: 3
rounds: 5
fraction: 0.34
model: convnet-w4
ipc: 1
distill_iters: 2
server_steps: 2
server_batch: 32
seed: 4
out: ignored-by-flag
`), 0o644)
	var stdout, stderr bytes.Buffer
	code := Main([]string{"--config", cfgFile, "--rounds", "1", "--out", out, "--quiet"}, &stdout, &stderr)
	if code != 0 {
		if strings.Contains(stderr.String(), "go mod download") {
			t.Skip(stderr.String())
		}
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "round 1/1") || !strings.Contains(stdout.String(), "final test accuracy") {
		t.Fatalf("stdout %q", stdout.String())
	}
	var sum sim.Summary
	b, err := os.ReadFile(filepath.Join(out, sim.SummaryFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Config.Rounds != 1 || sum.Config.Clients != 3 || sum.Config.Seed != 4 || sum.Config.Out != out {
		t.Fatalf("config %+v: want the file's values with --rounds and --out from the flags", sum.Config)
	}
	stdout.Reset()
	stderr.Reset()
	if code := Main([]string{"run", "--resume", out, "--rounds", "2", "--quiet"}, &stdout, &stderr); code != 0 {
		t.Fatalf("resume: exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "resuming after round 1") || !strings.Contains(stdout.String(), "round 2/2") {
		t.Fatalf("resume stdout %q", stdout.String())
	}
	lines, _ := os.ReadFile(filepath.Join(out, sim.MetricsFile))
	if n := strings.Count(string(lines), "\n"); n != 2 {
		t.Fatalf("%d metrics lines after resuming to 2 rounds", n)
	}
}
