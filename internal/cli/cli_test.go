package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMainExitCodesAndMessages(t *testing.T) {
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"version"}, 0, "fedsim "},
		{[]string{"bench", "--widths", "12x"}, 2, `"12x" is not a positive integer`},
		{[]string{"bench", "--workloads", "nope"}, 2, `unknown workload "nope"`},
		{[]string{"train", "--dataset", "imagenet"}, 2, `imagenet`},
		{[]string{"train", "--epochs", "-3"}, 2, "--epochs -3"},
		{[]string{"train", "--schedule", "linear"}, 2, `--schedule "linear"`},
		{[]string{"train", "--model", "transformer", "--train-limit", "10"}, 2, "transformer"},
		{[]string{"train", "--augment", "colour"}, 2, "colour"},
		{[]string{"nosuchcommand"}, 1, "unknown command"},
		{[]string{"version", "--cpuprofile", "/nonexistent-dir/cpu.prof"}, 2, `--cpuprofile "/nonexistent-dir/cpu.prof"`},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := Main(c.args, &out, &errb)
		if code != c.code {
			t.Errorf("%v: exit %d, want %d (stderr %q)", c.args, code, c.code, errb.String())
		}
		if !strings.Contains(out.String()+errb.String(), c.want) {
			t.Errorf("%v: output %q does not mention %q", c.args, out.String()+errb.String(), c.want)
		}
	}
}

// --cpuprofile writes a profile that go tool pprof can read (a gzipped
// protocol buffer), for any subcommand.
func TestCPUProfileFlag(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cpu.prof")
	var out, errb bytes.Buffer
	if code := Main([]string{"version", "--cpuprofile", path}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Fatalf("profile of %d bytes is not gzip data (pprof's format)", len(b))
	}
}

// A short real run: an MLP on 2000 MNIST images learns well above chance,
// writes its weights and result atomically, and reports JSON lines.
func TestRunTrainOnRealMNIST(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	o := &TrainOptions{Dataset: "mnist", Model: "mlp", Epochs: 2, Batch: 64, LR: 0.05, Momentum: 0.9,
		WeightDecay: 5e-4, Schedule: "cosine", Augment: "none", Seed: 1, TrainLimit: 2000, Out: dir, JSON: true, Quiet: true}
	if err := RunTrain(context.Background(), o, &out, &errb); err != nil {
		if strings.Contains(err.Error(), "go mod download") {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 2 epoch lines and a result, got %q", out.String())
	}
	var res TrainResult
	if err := json.Unmarshal([]byte(lines[2]), &res); err != nil {
		t.Fatal(err)
	}
	if res.TestAcc < 0.8 || res.TrainImages != 2000 {
		t.Fatalf("result %+v: want test_acc ≥ 0.8 on 2000 images", res)
	}
	for _, f := range []string{"weights.npz", "result.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
}
