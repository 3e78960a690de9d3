package privacy

import (
	"math"
	"strings"
	"testing"

	"github.com/fedsim/fedsim/tensor"
)

func TestSettingsResolve(t *testing.T) {
	s := Settings{Epsilon: 10, Clip: 1, Delta: 1e-5}
	sigma, err := s.Resolve(0.5, 20, 20)
	if err != nil {
		t.Fatal(err)
	}
	if eps, _, _ := Epsilon(0.5, sigma, 20, 1e-5); !(eps <= 10 && eps > 9.99) {
		t.Fatalf("σ %g spends ε %g, want just under 10", sigma, eps)
	}
	if got, err := (Settings{Noise: 1.3, Clip: 1, Delta: 1e-5}).Resolve(0.5, 20, 20); err != nil || got != 1.3 {
		t.Fatalf("given σ: %g, %v", got, err)
	}
	for _, c := range []struct {
		s     Settings
		q     float64
		steps int
		want  string
	}{
		{Settings{Noise: -1, Clip: 1, Delta: 1e-5}, 0.5, 1, "σ"},
		{Settings{Clip: 1, Delta: 1e-5}, 0.5, 1, "--dp-noise"},
		{Settings{Noise: 1, Clip: 0, Delta: 1e-5}, 0.5, 1, "clipping norm"},
		{Settings{Noise: 1, Clip: math.Inf(1), Delta: 1e-5}, 0.5, 1, "clipping norm"},
		{Settings{Noise: 1, Clip: 1, Delta: 1}, 0.5, 1, "δ"},
		{Settings{Noise: 1, Clip: 1, Delta: 0}, 0.5, 1, "δ"},
		{Settings{Noise: 1, Clip: 1, Delta: 1e-5}, 0, 1, "sampling rate"},
		{Settings{Noise: 1, Clip: 1, Delta: 1e-5}, 1.2, 1, "sampling rate"},
		{Settings{Noise: 0.5, Epsilon: 0.1, Clip: 1, Delta: 1e-5}, 1, 10, "unreachable"},
		{Settings{Epsilon: 1e-9, Clip: 1, Delta: 1e-5}, 1, 10, "unreachable"},
	} {
		if _, err := c.s.Resolve(c.q, c.steps, c.steps); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v q %g: error %v, want one containing %q", c.s, c.q, err, c.want)
		}
	}
}

// An update above C is scaled to norm C exactly, one below is unchanged;
// the noise has the asked standard deviation.
func TestClipUpdateAndNoise(t *testing.T) {
	a, _ := tensor.FromSlice([]float32{3, 0}, 2)
	b, _ := tensor.FromSlice([]float32{4}, 1)
	if n := ClipUpdate([]*tensor.Tensor[float32]{a, b}, 1); n != 5 || a.Data[0] != 0.6 || b.Data[0] != 0.8 {
		t.Fatalf("norm %g, clipped %v %v; want 5, (0.6, 0) (0.8)", n, a.Data, b.Data)
	}
	if n := ClipUpdate([]*tensor.Tensor[float32]{a, b}, 2); math.Abs(n-1) > 1e-6 || a.Data[0] != 0.6 {
		t.Fatalf("an update within C changed: norm %g, %v", n, a.Data)
	}
	z := tensor.New[float32](100000)
	AddNoise([]*tensor.Tensor[float32]{z}, 0.7, tensor.NewRNG(1, 0))
	var ss float64
	for _, v := range z.Data {
		ss += float64(v) * float64(v)
	}
	if std := math.Sqrt(ss / 100000); math.Abs(std/0.7-1) > 0.01 {
		t.Fatalf("noise std %g, want 0.7 ± 1%%", std)
	}
}
