package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
)

func TestPrivacyCommands(t *testing.T) {
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Main(append([]string{"privacy"}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}
	// TF-Privacy's MNIST tutorial: q = 256/60000, σ = 1.1, 60 epochs, δ = 1e-5 → ε ≈ 3.01 (classic).
	code, out, errs := run("epsilon", "--sample-rate", "0.004266666666666667", "--noise", "1.1", "--steps", "14063", "--conversion", "classic")
	var eps, order float64
	if _, err := fmt.Sscanf(out, "epsilon = %g (order %g)", &eps, &order); code != 0 || err != nil || math.Abs(eps-3.01) > 0.03 {
		t.Errorf("epsilon: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	code, out, errs = run("epsilon", "--sample-rate", "0.004266666666666667", "--noise", "1.1", "--steps", "14063", "--json")
	var res map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil {
		t.Fatalf("epsilon --json: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	for _, k := range []string{"epsilon", "order", "delta", "noise", "sample_rate", "steps", "conversion"} {
		if _, ok := res[k]; !ok {
			t.Errorf("epsilon --json %q lacks %q", out, k)
		}
	}
	if e, _ := res["epsilon"].(float64); !(e > 2 && e < 3.01) || res["delta"] != 1e-5 || res["conversion"] != "improved" {
		t.Errorf("epsilon --json: %v", res)
	}
	code, out, errs = run("noise", "--target-epsilon", "3.01", "--sample-rate", "0.004266666666666667", "--steps", "14063", "--conversion", "classic")
	var sigma float64
	if _, err := fmt.Sscanf(out, "noise = %g", &sigma); code != 0 || err != nil || math.Abs(sigma-1.1) > 0.011 {
		t.Errorf("noise: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	// 60 epochs at σ = 1.1 fit in ε = 3.01 (classic), and not many more.
	code, out, errs = run("steps", "--target-epsilon", "3.01", "--sample-rate", "0.004266666666666667", "--noise", "1.1", "--conversion", "classic")
	var n int
	if _, err := fmt.Sscanf(out, "steps = %d", &n); code != 0 || err != nil || n < 14063 || n > 14200 {
		t.Errorf("steps: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	code, out, errs = run("noise", "--target-epsilon", "2", "--sample-rate", "0.01", "--steps", "1000", "--json")
	res = nil
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil {
		t.Fatalf("noise --json: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if e, _ := res["epsilon"].(float64); !(e <= 2 && math.Abs(e-2) < 1e-4) {
		t.Errorf("noise --json: %v", res)
	}
}

func TestPrivacyUsageErrors(t *testing.T) {
	ok := []string{"--sample-rate", "0.01", "--steps", "100"}
	cases := []struct {
		args []string
		want string
	}{
		{append([]string{"epsilon", "--noise", "0"}, ok...), "--noise 0"},
		{append([]string{"epsilon", "--noise", "-1"}, ok...), "--noise -1"},
		{[]string{"epsilon", "--noise", "1", "--sample-rate", "1.5", "--steps", "10"}, "--sample-rate 1.5"},
		{[]string{"epsilon", "--noise", "1", "--steps", "10"}, "--sample-rate 0"},
		{[]string{"epsilon", "--noise", "1", "--sample-rate", "0.1", "--steps", "-2"}, "--steps -2"},
		{append([]string{"epsilon", "--noise", "1", "--delta", "1"}, ok...), "--delta 1"},
		{append([]string{"epsilon", "--noise", "1", "--delta", "0"}, ok...), "--delta 0"},
		{append([]string{"epsilon", "--noise", "1", "--conversion", "tight"}, ok...), `--conversion "tight"`},
		{append([]string{"epsilon", "--noise", "abc"}, ok...), "abc"},
		{append([]string{"noise"}, ok...), "--target-epsilon 0"},
		{append([]string{"noise", "--target-epsilon", "-1"}, ok...), "--target-epsilon -1"},
		{[]string{"steps", "--target-epsilon", "1", "--sample-rate", "0.01"}, "--noise 0"},
		{[]string{"steps", "--noise", "1", "--sample-rate", "0.01"}, "--target-epsilon 0"},
		{[]string{"steps", "--noise", "1", "--sample-rate", "0.01", "--target-epsilon", "1", "--steps", "5"}, "--steps 5"},
		{[]string{"noise", "--target-epsilon", "1e-6", "--sample-rate", "1", "--steps", "1000000"}, "unreachable"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := Main(append([]string{"privacy"}, c.args...), &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 mentioning %q", c.args, code, errb.String(), c.want)
		}
	}
}
