package distill

import (
	"strings"
	"testing"
)

func TestEvalAugmentationLabel(t *testing.T) {
	for _, c := range []struct {
		dsa, dc, want string
	}{
		{"", "", "dsa:" + DefaultDSAStrategy("mnist")},
		{"crop_scale", "", "dsa:crop_scale"},
		{"none", "", "none"},
		{"none", "none", "none"},
		{"", "crop_rotate", "dc:crop_rotate"},
		{"none", "noise", "dc:noise"},
		{"crop", "none", "dsa:crop"},
	} {
		got, err := EvalConfig{DSAStrategy: c.dsa, DCAugment: c.dc}.Augmentation("mnist")
		if err != nil || got != c.want {
			t.Errorf("DSA %q, DC %q: %q (%v), want %q", c.dsa, c.dc, got, err, c.want)
		}
	}
	if _, err := (EvalConfig{DSAStrategy: "spin"}).Augmentation("mnist"); err == nil || !strings.Contains(err.Error(), "spin") {
		t.Errorf("unknown DSA operation: %v", err)
	}
	if _, err := (EvalConfig{DCAugment: "spin"}).Augmentation("mnist"); err == nil || !strings.Contains(err.Error(), "spin") {
		t.Errorf("unknown DC operation: %v", err)
	}
}
