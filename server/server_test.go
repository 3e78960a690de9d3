package server

import (
	"context"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/fedsim/fedsim/client"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

const model = "convnet-w2-d1"

var shape = []int{1, 8, 8}

func newModel(t *testing.T) nn.Model[float32] {
	t.Helper()
	m, err := nn.New[float32](model, shape, 3, tensor.NewRNG(7, 0))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func newServer(t *testing.T, seed uint64, fraction float64, strat Strategy) *Server {
	t.Helper()
	s, err := New(Config{Clients: 10, Fraction: fraction, Seed: seed, Dataset: "test", ImageShape: shape, Classes: 3, Model: model}, newModel(t), strat)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fakeTransport answers FedAvg tasks synchronously: client id returns the
// global weights plus id, with id+1 samples, in reverse client order (so
// the core must sort).
type fakeTransport struct{ replies []*client.Result }

func (f *fakeTransport) send(t *client.Task) {
	w := t.Global.Clone()
	for _, x := range w.Tensors {
		for j := range x.Data {
			x.Data[j] += float32(t.Client)
		}
	}
	f.replies = append([]*client.Result{{Round: t.Round, Client: t.Client, Status: client.StatusOK, NumSamples: t.Client + 1, Weights: w}}, f.replies...)
}

func runFedAvgRound(t *testing.T, s *Server) (*RoundReport, []*client.Task) {
	t.Helper()
	tasks, err := s.StartRound()
	if err != nil {
		t.Fatal(err)
	}
	ft := &fakeTransport{}
	for _, task := range tasks {
		ft.send(task)
	}
	for _, r := range ft.replies {
		if o := s.Deliver(r.Client, r, nil); o != Accepted {
			t.Fatalf("client %d: %v", r.Client, o)
		}
	}
	s.Tick()
	rep, err := s.EndRound(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return rep, tasks
}

func TestFedAvgAggregationMath(t *testing.T) {
	s := newServer(t, 1, 0.3, &FedAvg{Epochs: 1, BatchSize: 8, LR: 0.1})
	before := client.WeightsOf(s.Global())
	rep, tasks := runFedAvgRound(t, s)
	if len(tasks) != 3 || rep.OK != 3 || rep.Dropped() != 0 {
		t.Fatalf("sampled %d, report %+v: want 3 ok", len(tasks), rep)
	}
	// Global = before + Σ n_i·id_i / Σ n_i with n_i = id_i + 1.
	var num, den float64
	for _, id := range rep.Sampled {
		num += float64((id + 1) * id)
		den += float64(id + 1)
	}
	shift := num / den
	after := client.WeightsOf(s.Global())
	for k, x := range after.Tensors {
		for j, v := range x.Data {
			if want := float64(before.Tensors[k].Data[j]) + shift; math.Abs(float64(v)-want) > 1e-5 {
				t.Fatalf("%s[%d] = %v, want %v", after.Names[k], j, v, want)
			}
		}
	}
	if rep.Info.Samples != int(den) {
		t.Fatalf("samples %d, want %v", rep.Info.Samples, den)
	}
}

func TestWeightedAverage(t *testing.T) {
	mk := func(v float32) *client.Weights {
		x, _ := tensor.FromSlice([]float32{v, 2 * v}, 2)
		return &client.Weights{Names: []string{"a"}, Tensors: []*tensor.Tensor[float32]{x}}
	}
	avg, err := WeightedAverage([]*client.Weights{mk(1), mk(4)}, []float64{3, 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := avg.Tensors[0].Data; got[0] != 1.75 || got[1] != 3.5 {
		t.Fatalf("average %v, want [1.75 3.5]", got)
	}
	if _, err := WeightedAverage([]*client.Weights{mk(1)}, []float64{0}); err == nil {
		t.Fatal("zero total weight accepted")
	}
}

func TestCoreIsDeterministic(t *testing.T) {
	run := func(seed uint64) ([][]int, []uint64, []float32) {
		s := newServer(t, seed, 0.4, &FedAvg{Epochs: 1, BatchSize: 8, LR: 0.1})
		var sampled [][]int
		var seeds []uint64
		for range 3 {
			rep, tasks := runFedAvgRound(t, s)
			sampled = append(sampled, rep.Sampled)
			for _, tk := range tasks {
				seeds = append(seeds, tk.Seed)
			}
		}
		return sampled, seeds, client.WeightsOf(s.Global()).Tensors[0].Data
	}
	a1, s1, w1 := run(5)
	a2, s2, w2 := run(5)
	a3, _, _ := run(6)
	for i := range a1 {
		if !slices.Equal(a1[i], a2[i]) {
			t.Fatalf("round %d sampled %v then %v", i+1, a1[i], a2[i])
		}
		if len(a1[i]) != 4 {
			t.Fatalf("round %d sampled %d clients, want 4 (fraction 0.4 of 10)", i+1, len(a1[i]))
		}
	}
	if !slices.Equal(s1, s2) || !slices.Equal(w1, w2) {
		t.Fatal("same seed gave different task seeds or weights")
	}
	if slices.Equal(a1[0], a3[0]) && slices.Equal(a1[1], a3[1]) && slices.Equal(a1[2], a3[2]) {
		t.Fatal("different seeds sampled the same clients three rounds running")
	}
	seen := map[uint64]bool{}
	for _, sd := range s1 {
		if seen[sd] {
			t.Fatal("two tasks share a seed")
		}
		seen[sd] = true
	}
}

func TestOutcomes(t *testing.T) {
	s := newServer(t, 1, 0.5, &FedAvg{Epochs: 1, BatchSize: 8, LR: 0.1})
	tasks, err := s.StartRound()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartRound(); err == nil {
		t.Fatal("second StartRound while open accepted")
	}
	ids := make([]int, len(tasks))
	for i, tk := range tasks {
		ids[i] = tk.Client
	}
	ok := func(id int) *client.Result {
		return &client.Result{Round: 1, Client: id, Status: client.StatusOK, NumSamples: 5, Weights: client.WeightsOf(s.Global())}
	}
	notSampled := 0
	for slices.Contains(ids, notSampled) {
		notSampled++
	}
	bad := ok(ids[1])
	bad.Weights.Tensors[0] = tensor.New[float32](1, 1)
	nan := ok(ids[2])
	nan.Weights.Tensors[1].Data[0] = float32(math.NaN())
	cases := []struct {
		id   int
		res  *client.Result
		want Outcome
	}{
		{ids[0], ok(ids[0]), Accepted},
		{ids[0], ok(ids[0]), Unexpected}, // duplicate
		{notSampled, ok(notSampled), Unexpected},
		{ids[1], bad, Failed},
		{ids[2], nan, Failed},
		{ids[3], &client.Result{Round: 1, Client: ids[3], Status: client.StatusFailed, Error: "out of memory"}, Failed},
	}
	for _, c := range cases {
		if got := s.Deliver(c.id, c.res, nil); got != c.want {
			t.Errorf("client %d: %v, want %v", c.id, got, c.want)
		}
	}
	if !s.Tick() {
		t.Fatal("deadline of 1 tick did not pass after one tick")
	}
	if got := s.Deliver(ids[4], ok(ids[4]), nil); got != Late {
		t.Fatalf("reply after the deadline: %v, want late", got)
	}
	rep, err := s.EndRound(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK != 1 || rep.Failed != 3 || rep.Late != 1 || rep.Missing != len(ids)-5 || rep.Dropped() != len(ids)-1 {
		t.Fatalf("report %+v", rep)
	}
	msgs := ""
	for _, f := range rep.Failures {
		msgs += f.Error + "\n"
	}
	for _, want := range []string{"shape", "non-finite", "out of memory"} {
		if !strings.Contains(msgs, want) {
			t.Errorf("failures %q do not mention %q", msgs, want)
		}
	}
}

func TestOneShotAsksEachClientOnce(t *testing.T) {
	d := &Distill{Method: client.MethodDM, IPC: 1, Nets: client.NetsRandom, Steps: 1, BatchSize: 4, LR: 0.01, DSAStrategy: "none"}
	s := newServer(t, 3, 0.3, d)
	asked := map[int]int{}
	for r := 0; r < 5; r++ {
		tasks, err := s.StartRound()
		if err != nil {
			t.Fatal(err)
		}
		for _, tk := range tasks {
			asked[tk.Client]++
			if tk.Global != nil {
				t.Fatal("one-shot task carries global weights")
			}
			x := tensor.New[float32](2, 1, 8, 8)
			res := &client.Result{Round: tk.Round, Client: tk.Client, Status: client.StatusOK, NumSamples: 7,
				Synthetic: &client.Synthetic{X: x, Y: []int{0, 2}, Counts: []int{3, 0, 4}}}
			if o := s.Deliver(tk.Client, res, nil); o != Accepted {
				t.Fatalf("%v", o)
			}
		}
		s.Tick()
		rep, err := s.EndRound(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if r == 3 && rep.Info.SyntheticImages != 20 {
			t.Fatalf("round 4 trained on %d images, want 20 (10 clients × 2)", rep.Info.SyntheticImages)
		}
	}
	if len(asked) != 10 {
		t.Fatalf("%d clients asked, want all 10", len(asked))
	}
	for id, n := range asked {
		if n != 1 {
			t.Fatalf("client %d asked %d times", id, n)
		}
	}
}

func TestUnionWeightsAndResample(t *testing.T) {
	held := map[int]*client.Synthetic{
		0: {X: tensor.New[float32](2, 1, 1, 1), Y: []int{0, 1}, Counts: []int{90, 10}},
		1: {X: tensor.New[float32](1, 1, 1, 1), Y: []int{0}, Counts: []int{30, 0}},
	}
	_, w := Union(held)
	// class 0: 120 real samples over 2 images; class 1: 10 over 1.
	if !slices.Equal(w, []float64{60, 10, 60}) {
		t.Fatalf("weights %v", w)
	}
	idx := SystematicResample([]float64{1, 1, 2}, 8, 0.5)
	if !slices.Equal(idx, []int{0, 0, 1, 1, 2, 2, 2, 2}) {
		t.Fatalf("resample %v", idx)
	}
}

// Private tasks carry the ledger of the steps earlier tasks asked of their
// client (counted at sending, answered or not), and a checkpoint's ledger
// is checked on restore.
func TestPrivateStepsLedger(t *testing.T) {
	dp := &client.DPTask{SampleRate: 0.5, Clip: 1, Noise: 1, Delta: 1e-5}
	d := &Distill{Method: client.MethodDM, IPC: 1, Iterations: 3, Nets: client.NetsGlobal, Steps: 1, BatchSize: 4, LR: 0.01, DSAStrategy: "none", DP: dp,
		Init: client.InitMean}
	s := newServer(t, 3, 0.5, d)
	sent, released := map[int]int{}, map[int]int{}
	for r := 0; r < 4; r++ {
		tasks, err := s.StartRound()
		if err != nil {
			t.Fatal(err)
		}
		for _, tk := range tasks {
			if tk.DP == nil || tk.DP == dp || tk.DP.PriorSteps != sent[tk.Client] || tk.DP.PriorReleases != released[tk.Client] {
				t.Fatalf("round %d client %d: DP task %+v, want its own copy with %d prior steps and %d releases", tk.Round, tk.Client, tk.DP, sent[tk.Client], released[tk.Client])
			}
			sent[tk.Client] += tk.Iterations
			released[tk.Client]++
		}
		// Nobody answers: the steps still count.
		s.Tick()
		if _, err := s.EndRound(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.State().PrivateSteps; !maps.Equal(got, sent) || !maps.Equal(s.State().PrivateReleases, released) || dp.PriorSteps != 0 {
		t.Fatalf("ledger %v and releases %v, want %v and %v (and the strategy's DP task untouched: %d)", got, s.State().PrivateReleases, sent, released, dp.PriorSteps)
	}
	for _, bad := range []State{{PrivateSteps: map[int]int{10: 3}}, {PrivateSteps: map[int]int{1: -1}}, {PrivateReleases: map[int]int{0: -2}}, {Epsilon: map[int]float64{2: math.NaN()}}} {
		if err := s.Restore(bad, client.WeightsOf(s.Global())); err == nil || !strings.Contains(err.Error(), "checkpoint privacy") {
			t.Errorf("restore of %+v: %v, want a privacy ledger error", bad, err)
		}
	}
}
