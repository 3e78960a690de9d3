package server

import (
	"context"
	"fmt"
	"slices"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/client"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// FedAvg is federated averaging (McMahan et al., 2017): sampled clients
// train the global model locally for Epochs epochs and the server averages
// their weights, each weighted by its number of samples. With Mu > 0 it is
// FedProx (Li et al., 2020): the local loss gets μ/2‖w − w_global‖².
type FedAvg struct {
	Epochs    int
	BatchSize int
	LR        float64
	Momentum  float64 // SGD only
	// Optimizer is the clients' local optimizer (client.OptimSGD or
	// client.OptimAdam; "": SGD).
	Optimizer string
	Mu        float64
	// DP, if set, is client-level differential privacy (dp.go).
	DP *DPFedAvg
}

// Name implements Strategy.
func (f *FedAvg) Name() string {
	if f.Mu > 0 {
		return "fedprox"
	}
	return "fedavg"
}

// Eligible implements Strategy: every client, every round.
func (f *FedAvg) Eligible(*State, int) bool { return true }

// Task implements Strategy.
func (f *FedAvg) Task(_ *State, global nn.Model[float32]) *client.Task {
	return &client.Task{Kind: client.KindTrain, Epochs: f.Epochs, BatchSize: f.BatchSize, LR: f.LR,
		Momentum: f.Momentum, Optimizer: f.Optimizer, Mu: f.Mu, Global: client.WeightsOf(global)}
}

// Aggregate implements Strategy: w ← Σ_i n_i w_i / Σ_i n_i, accumulated in
// float64 in the given (increasing client) order.
func (f *FedAvg) Aggregate(_ context.Context, round int, global nn.Model[float32], acc []*client.Result, _ *State) (AggregateInfo, error) {
	var info AggregateInfo
	if len(acc) == 0 {
		return info, nil
	}
	ws := make([]*client.Weights, len(acc))
	ns := make([]float64, len(acc))
	var loss float64
	for i, r := range acc {
		if r.Weights == nil {
			return info, fmt.Errorf("client %d sent no weights", r.Client)
		}
		ws[i], ns[i] = r.Weights, float64(r.NumSamples)
		info.Samples += r.NumSamples
		loss += ns[i] * r.Loss
	}
	avg, priv, err := f.average(round, global, ws, ns)
	if err != nil {
		return info, err
	}
	info.Privacy = priv
	info.TrainLoss = loss / float64(info.Samples)
	return info, avg.Load(global)
}

// WeightedAverage returns Σ_i c_i w_i / Σ_i c_i over weights of identical
// names and shapes, summed in float64 in the given order.
func WeightedAverage(ws []*client.Weights, coef []float64) (*client.Weights, error) {
	if len(ws) == 0 || len(ws) != len(coef) {
		return nil, fmt.Errorf("server: averaging %d weight sets with %d coefficients", len(ws), len(coef))
	}
	var total float64
	for _, c := range coef {
		if !(c >= 0) {
			return nil, fmt.Errorf("server: negative averaging coefficient %g", c)
		}
		total += c
	}
	if !(total > 0) {
		return nil, fmt.Errorf("server: averaging coefficients sum to %g", total)
	}
	out := ws[0].Clone()
	for k, t := range out.Tensors {
		acc := make([]float64, len(t.Data))
		for i, w := range ws {
			if len(w.Tensors) != len(out.Tensors) || w.Names[k] != out.Names[k] || !slices.Equal(w.Tensors[k].Shape, t.Shape) {
				return nil, fmt.Errorf("server: weight set %d does not match the first at %s", i, out.Names[k])
			}
			c := coef[i] / total
			for j, v := range w.Tensors[k].Data {
				acc[j] += c * float64(v)
			}
		}
		for j := range t.Data {
			t.Data[j] = float32(acc[j])
		}
	}
	return out, nil
}

// Distill is the family of distillation-based strategies: sampled clients
// distill their data into a few images per class (DM or DSA gradient
// matching) and the server trains the global model on the union of the
// latest set of every client it has heard from, classes weighted by how
// many real samples their images stand for.
//
// With Nets client.NetsRandom (one-shot, FedD3/DOSFL-style) clients match
// with fresh random networks, so a client's set does not depend on the
// round: each client is asked once, and the union grows round by round
// until every client has contributed. With client.NetsGlobal (FedDM-style)
// clients match with the current global model plus small random
// perturbations, every client stays eligible, and a new set replaces the
// client's previous one.
type Distill struct {
	// Client side.
	Method     string // client.MethodDM, client.MethodGM or a method client.CheckMethod accepts
	IPC        int
	Iterations int
	BatchReal  int
	LRImg      float64
	ImageSteps int // client.Task.ImageSteps
	Nets       string
	Perturb    float64
	Init       string // client.Task.Init
	// Server side: training on the union (SGD with momentum, cosine
	// schedule, DSA augmentation) for about Steps steps per round (whole
	// epochs: ⌈Steps / steps per epoch⌉).
	Steps       int
	BatchSize   int
	LR          float64
	Momentum    float64
	WeightDecay float64
	// DSAStrategy augments the server's batches ("none": off).
	DSAStrategy string
	// Seed seeds the server's training (with the round).
	Seed uint64
	// DP, if set, makes the clients' distillation private (example-level
	// DP, client.DPTask); State.Epsilon holds the ε each client reported.
	DP *client.DPTask
}

// Name implements Strategy.
func (d *Distill) Name() string {
	if d.Nets == client.NetsGlobal {
		return "feddm"
	}
	return "oneshot"
}

// Eligible implements Strategy.
func (d *Distill) Eligible(st *State, id int) bool {
	if d.Nets == client.NetsGlobal {
		return true
	}
	_, held := st.Held[id]
	return !held
}

// Task implements Strategy.
func (d *Distill) Task(_ *State, global nn.Model[float32]) *client.Task {
	t := &client.Task{Kind: client.KindDistill, Method: d.Method, IPC: d.IPC, Iterations: d.Iterations,
		BatchReal: d.BatchReal, LRImg: d.LRImg, ImageSteps: d.ImageSteps, Nets: d.Nets, Perturb: d.Perturb, Init: d.Init, DP: d.DP}
	if d.Nets == client.NetsGlobal {
		t.Global = client.WeightsOf(global)
	}
	return t
}

// Aggregate implements Strategy.
func (d *Distill) Aggregate(ctx context.Context, round int, global nn.Model[float32], acc []*client.Result, st *State) (AggregateInfo, error) {
	var info AggregateInfo
	for _, r := range acc {
		if r.Synthetic == nil {
			return info, fmt.Errorf("client %d sent no synthetic set", r.Client)
		}
		st.Held[r.Client] = r.Synthetic
	}
	info.Privacy = d.recordPrivacy(acc, st)
	if len(acc) == 0 || len(st.Held) == 0 {
		return info, nil
	}
	union, weights := Union(st.Held)
	for _, s := range st.Held {
		for _, n := range s.Counts {
			info.Samples += n
		}
	}
	info.SyntheticImages = union.Len()
	rng := tensor.NewRNG(RoundSeed(d.Seed, round), 0)
	set := &resampled{base: union, idx: SystematicResample(weights, union.Len(), rng.Float64())}
	fit := setTraining{Steps: d.Steps, BatchSize: d.BatchSize, LR: d.LR, Momentum: d.Momentum, WeightDecay: d.WeightDecay, DSAStrategy: d.DSAStrategy}
	loss, err := fit.train(ctx, global, set, rng)
	if err != nil {
		return info, err
	}
	info.TrainLoss = loss
	return info, nil
}

// setTraining is how the server trains the global model on a small
// synthetic set: about Steps SGD steps (whole epochs, cosine schedule) with
// per-sample DSA augmentation.
type setTraining struct {
	Steps, BatchSize          int
	LR, Momentum, WeightDecay float64
	DSAStrategy               string
	// SoftTargets, if set, replaces the set's labels (nn.TrainConfig).
	SoftTargets *tensor.Tensor[float32]
}

// train runs the training with seeds drawn from rng and returns the last
// epoch's loss.
func (f setTraining) train(ctx context.Context, global nn.Model[float32], set nn.Dataset[float32], rng *tensor.RNG) (float64, error) {
	perEpoch := (set.Len() + f.BatchSize - 1) / f.BatchSize
	tc := nn.TrainConfig[float32]{Epochs: max(1, (f.Steps+perEpoch-1)/perEpoch), BatchSize: f.BatchSize, LR: f.LR, Momentum: f.Momentum,
		WeightDecay: f.WeightDecay, Schedule: nn.CosineLR{}, Seed: rng.Uint64(), Context: ctx, SoftTargets: f.SoftTargets}
	strategy, err := data.ParseDSAStrategy(f.DSAStrategy)
	if err != nil {
		return 0, err
	}
	if len(strategy) > 0 {
		dsa := &data.DSA{Strategy: strategy, Params: data.DefaultDSAParams()}
		arng := tensor.NewRNG(rng.Uint64(), 1)
		tc.Augment = func(_ *ag.Tape[float32], x *ag.Var[float32]) *ag.Var[float32] {
			s := x.Shape()
			return data.Apply(dsa.Sample(arng, s[0], s[2], s[3]), x)
		}
	}
	var loss float64
	if err := nn.Train(global, set, tc, func(p nn.Progress) { loss = p.EpochLoss }); err != nil {
		return 0, err
	}
	return loss, nil
}

// Union stacks held synthetic sets in increasing client order and returns
// each image's weight: the images of class k share its real-sample count
// Σ_clients Counts[k] equally, so the training set's class balance is the
// real data's.
func Union(held map[int]*client.Synthetic) (*nn.TensorDataset[float32], []float64) {
	ids := make([]int, 0, len(held))
	n := 0
	var shape []int
	classes := 0
	for id, s := range held {
		ids = append(ids, id)
		n += len(s.Y)
		shape = s.X.Shape[1:]
		classes = len(s.Counts)
	}
	slices.Sort(ids)
	sz := tensor.Size(shape)
	x := tensor.New[float32](append([]int{n}, shape...)...)
	y := make([]int, 0, n)
	real := make([]float64, classes)
	images := make([]float64, classes)
	for _, id := range ids {
		s := held[id]
		copy(x.Data[len(y)*sz:], s.X.Data)
		y = append(y, s.Y...)
		for k := range classes {
			if slices.Contains(s.Y, k) {
				real[k] += float64(s.Counts[k])
			}
		}
		for _, l := range s.Y {
			images[l]++
		}
	}
	w := make([]float64, n)
	for i, l := range y {
		w[i] = real[l] / images[l]
	}
	return &nn.TensorDataset[float32]{X: x, Y: y}, w
}

// SystematicResample draws n indices with probabilities proportional to w
// by systematic resampling with offset u ∈ [0, 1): index i appears
// ⌊n·W_i⌋ or ⌈n·W_i⌉ times (W the normalized weights), in increasing order.
func SystematicResample(w []float64, n int, u float64) []int {
	var total float64
	for _, v := range w {
		total += v
	}
	out := make([]int, 0, n)
	if !(total > 0) || n == 0 {
		return out
	}
	cum, i := 0.0, 0
	for k := range n {
		target := (float64(k) + u) / float64(n) * total
		for i < len(w)-1 && cum+w[i] <= target {
			cum += w[i]
			i++
		}
		out = append(out, i)
	}
	return out
}

// resampled is a training set whose sample j is base's sample idx[j].
type resampled struct {
	base *nn.TensorDataset[float32]
	idx  []int
}

func (r *resampled) Len() int          { return len(r.idx) }
func (r *resampled) ImageShape() []int { return r.base.ImageShape() }
func (r *resampled) Batch(idx []int) (*tensor.Tensor[float32], []int) {
	m := make([]int, len(idx))
	for i, j := range idx {
		m[i] = r.idx[j]
	}
	return r.base.Batch(m)
}
