package server

import (
	"math"
	"testing"

	"github.com/fedsim/fedsim/client"
	"github.com/fedsim/fedsim/privacy"
	"github.com/fedsim/fedsim/tensor"
)

func flatWeights(n int, v float32) *client.Weights {
	t := tensor.New[float32](n)
	t.Fill(v)
	return &client.Weights{Names: []string{"w"}, Tensors: []*tensor.Tensor[float32]{t}}
}

func updateNorm(a, b *client.Weights) float64 {
	var ss float64
	for j, v := range a.Tensors[0].Data {
		d := float64(v) - float64(b.Tensors[0].Data[j])
		ss += d * d
	}
	return math.Sqrt(ss)
}

// Each client's update is clipped to C before the fixed-denominator mean:
// two clients that moved by 100 move the model by 2C/n; the noise has
// standard deviation σC/n per coordinate (100 000 coordinates: within 2%).
func TestDPFedAvgClipAndNoise(t *testing.T) {
	const n = 100000
	g := flatWeights(n, 0.5)
	big := flatWeights(n, 100.5)
	d := &DPFedAvg{Clip: 2, Noise: 1e-9, Clients: 5, SampleRate: 0.1, Delta: 1e-5, Seed: 3}
	out, err := d.aggregate(1, g, []*client.Weights{big, big})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := updateNorm(out, g), 2*2.0/5; math.Abs(got-want) > 1e-3 {
		t.Fatalf("two clipped updates moved the model by %g, want %g", got, want)
	}
	d.Noise = 1.3
	out, err = d.aggregate(1, g, []*client.Weights{g.Clone(), g.Clone(), g.Clone()})
	if err != nil {
		t.Fatal(err)
	}
	std := updateNorm(out, g) / math.Sqrt(n)
	if want := 1.3 * 2 / 5; math.Abs(std/want-1) > 0.02 {
		t.Fatalf("noise std %g, want %g", std, want)
	}
	eps, err := d.spent(4)
	want, _, _ := privacy.Epsilon(0.1, 1.3, 4, 1e-5)
	if err != nil || eps != want {
		t.Fatalf("spent after 4 rounds: %g, %v; want %g", eps, err, want)
	}
	for _, bad := range []DPFedAvg{
		{Clip: 0, Noise: 1, Clients: 5, SampleRate: 0.1, Delta: 1e-5},
		{Clip: 1, Noise: -1, Clients: 5, SampleRate: 0.1, Delta: 1e-5},
		{Clip: 1, Noise: 1, Clients: 0, SampleRate: 0.1, Delta: 1e-5},
		{Clip: 1, Noise: 1, Clients: 5, SampleRate: 0, Delta: 1e-5},
		{Clip: 1, Noise: 1, Clients: 5, SampleRate: 0.1, Delta: 1},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

// A DP FedAvg round through the core reports the spent ε, and the
// distillation strategy forwards the DP settings and keeps each client's
// reported ε.
func TestDPStrategiesReport(t *testing.T) {
	f := &FedAvg{Epochs: 1, BatchSize: 4, LR: 0.1, DP: &DPFedAvg{Clip: 1, Noise: 1, Clients: 3, SampleRate: 0.3, Delta: 1e-5, Seed: 1}}
	s := newServer(t, 1, 0.3, f)
	rep, _ := runFedAvgRound(t, s)
	want, _, _ := privacy.Epsilon(0.3, 1, 1, 1e-5)
	if rep.Info.Privacy == nil || rep.Info.Privacy.EpsilonMax != want {
		t.Fatalf("privacy report %+v, want ε %g", rep.Info.Privacy, want)
	}
	dp := &client.DPTask{SampleRate: 0.5, Clip: 1, Noise: 1, Delta: 1e-5}
	d := &Distill{DP: dp}
	if task := d.Task(&State{}, newModel(t)); task.DP != dp {
		t.Fatal("the distillation task does not carry the DP settings")
	}
	st := &State{}
	p := d.recordPrivacy([]*client.Result{{Client: 1, Epsilon: 2}, {Client: 4, Epsilon: 4}}, st)
	p = d.recordPrivacy([]*client.Result{{Client: 2, Epsilon: 3}}, st)
	if p.EpsilonMax != 4 || p.EpsilonMean != 3 || len(p.PerClient) != 3 {
		t.Fatalf("privacy report %+v: want max 4, mean 3 over 3 clients", p)
	}
	if len(st.Epsilon) != 3 {
		t.Fatalf("state's privacy record %v: want 3 clients (checkpoints carry it)", st.Epsilon)
	}
}
