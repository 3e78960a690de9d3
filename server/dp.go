package server

import (
	"fmt"
	"maps"
	"slices"

	"github.com/fedsim/fedsim/client"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/privacy"
	"github.com/fedsim/fedsim/tensor"
)

// DPFedAvg is client-level differential privacy for FedAvg (McMahan et
// al., ICLR 2018, DP-FedAvg with a fixed denominator): each accepted
// client's update Δ_i = w_i − w_global is clipped to L2 norm Clip, the
// server averages the clipped updates with equal weights over the expected
// number of clients per round (Clients, so that who answered does not
// change the scale), and adds N(0, (Noise·Clip/Clients)²) to every
// coordinate. A round is one step of the sampled Gaussian mechanism over
// clients with rate SampleRate (the sampled fraction; fedsim samples a
// fixed number of clients, for which the Poisson accountant is the usual
// approximation), so after r rounds every client has spent
// ε(SampleRate, Noise, r, Delta).
type DPFedAvg struct {
	Clip, Noise float64
	Clients     int
	SampleRate  float64
	Delta       float64
	// Seed seeds the noise (with the round).
	Seed uint64
}

// PrivacyInfo is a round's privacy report: the ε spent at Delta by the
// clients, their maximum and mean, per client (by id) for the clients heard
// from so far.
type PrivacyInfo struct {
	Delta       float64         `json:"delta"`
	EpsilonMax  float64         `json:"epsilon_max"`
	EpsilonMean float64         `json:"epsilon_mean"`
	PerClient   map[int]float64 `json:"per_client,omitempty"`
}

func newPrivacyInfo(delta float64, perClient map[int]float64) *PrivacyInfo {
	p := &PrivacyInfo{Delta: delta, PerClient: maps.Clone(perClient)}
	ids := slices.Sorted(maps.Keys(perClient))
	for _, id := range ids {
		e := perClient[id]
		p.EpsilonMax = max(p.EpsilonMax, e)
		p.EpsilonMean += e / float64(len(ids))
	}
	return p
}

// Validate checks the settings.
func (d *DPFedAvg) Validate() error {
	if _, err := (privacy.Settings{Noise: d.Noise, Clip: d.Clip, Delta: d.Delta}).Resolve(d.SampleRate, 1, 1); err != nil {
		return fmt.Errorf("server: dp-fedavg: %w", err)
	}
	if d.Clients < 1 {
		return fmt.Errorf("server: dp-fedavg: expected clients per round %d must be at least 1", d.Clients)
	}
	return nil
}

// aggregate returns the new global weights from the clients' weights ws
// (names and shapes checked by the caller) and the round's noise stream.
func (d *DPFedAvg) aggregate(round int, global *client.Weights, ws []*client.Weights) (*client.Weights, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	out := global.Clone()
	acc := make([][]float64, len(out.Tensors))
	for k, t := range out.Tensors {
		acc[k] = make([]float64, len(t.Data))
	}
	for i, w := range ws {
		if len(w.Tensors) != len(global.Tensors) {
			return nil, fmt.Errorf("server: dp-fedavg: weight set %d has %d tensors, the global model %d", i, len(w.Tensors), len(global.Tensors))
		}
		delta := make([]*tensor.Tensor[float32], len(w.Tensors))
		for k, t := range w.Tensors {
			g := global.Tensors[k]
			if w.Names[k] != global.Names[k] || !slices.Equal(t.Shape, g.Shape) {
				return nil, fmt.Errorf("server: dp-fedavg: weight set %d does not match the global model at %s", i, global.Names[k])
			}
			delta[k] = tensor.New[float32](t.Shape...)
			for j, v := range t.Data {
				delta[k].Data[j] = v - g.Data[j]
			}
		}
		privacy.ClipUpdate(delta, d.Clip)
		for k, t := range delta {
			for j, v := range t.Data {
				acc[k][j] += float64(v)
			}
		}
	}
	rng := tensor.NewRNG(RoundSeed(d.Seed, round), 7)
	n := float64(d.Clients)
	std := d.Noise * d.Clip / n
	for k, t := range out.Tensors {
		for j := range t.Data {
			t.Data[j] += float32(acc[k][j]/n + std*rng.NormFloat64())
		}
	}
	return out, nil
}

// spent returns the ε every client has spent after round rounds.
func (d *DPFedAvg) spent(round int) (float64, error) {
	eps, _, err := privacy.Epsilon(d.SampleRate, d.Noise, round, d.Delta)
	return eps, err
}

// average is FedAvg's aggregation: the sample-weighted average, or with DP
// the clipped, noised, equally weighted one and the privacy spent.
func (f *FedAvg) average(round int, global nn.Model[float32], ws []*client.Weights, ns []float64) (*client.Weights, *PrivacyInfo, error) {
	if f.DP == nil {
		avg, err := WeightedAverage(ws, ns)
		return avg, nil, err
	}
	avg, err := f.DP.aggregate(round, client.WeightsOf(global), ws)
	if err != nil {
		return nil, nil, err
	}
	eps, err := f.DP.spent(round)
	if err != nil {
		return nil, nil, err
	}
	return avg, &PrivacyInfo{Delta: f.DP.Delta, EpsilonMax: eps, EpsilonMean: eps}, nil
}

// recordPrivacy notes the ε each accepted client reported and returns the
// round's report over every client heard from (nil without DP).
func (d *Distill) recordPrivacy(acc []*client.Result, st *State) *PrivacyInfo {
	if d.DP == nil {
		return nil
	}
	if st.Epsilon == nil {
		st.Epsilon = map[int]float64{}
	}
	for _, r := range acc {
		st.Epsilon[r.Client] = max(st.Epsilon[r.Client], r.Epsilon)
	}
	return newPrivacyInfo(d.DP.Delta, st.Epsilon)
}
