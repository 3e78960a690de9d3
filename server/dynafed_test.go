package server

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/fedsim/fedsim/client"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// blobs is a 3-class set of 8×8 images whose classes differ in mean
// brightness pattern, so that training moves the model consistently.
func blobs(n int, seed uint64) *nn.TensorDataset[float32] {
	rng := tensor.NewRNG(seed, 0)
	x := tensor.New[float32](n, 1, 8, 8)
	tensor.FillNormal(rng, x, 0, 0.5)
	y := make([]int, n)
	for i := range y {
		y[i] = i % 3
		for p := range 64 {
			if p%3 == y[i] {
				x.Data[i*64+p] += 1
			}
		}
	}
	return &nn.TensorDataset[float32]{X: x, Y: y}
}

func testDynaFed() *DynaFed {
	return &DynaFed{Record: 3, Span: 1, SynSteps: 4, IPC: 2, Iterations: 30, LRImg: 10, LRInit: 0.05, LRLR: 1e-5, Momentum: 0.5,
		Steps: 5, BatchSize: 6, LR: 0.05, DSAStrategy: "none", Model: model, ImageShape: shape, Classes: 3, Seed: 3}
}

// record trains a model on blobs for d.Record epochs, handing each model
// (initial and after every epoch) to Refine as a round's aggregate.
func record(t *testing.T, d *DynaFed, st *State) nn.Model[float32] {
	t.Helper()
	m := newModel(t)
	set := blobs(60, 1)
	for round := 0; round <= d.Record; round++ {
		if round > 0 {
			tc := nn.TrainConfig[float32]{Epochs: 1, BatchSize: 10, LR: 0.05, Seed: uint64(round)}
			if err := nn.Train(m, set, tc, nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.Refine(context.Background(), round, m, st); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	return m
}

func TestDynaFedDistillsFromTheTrajectory(t *testing.T) {
	d := testDynaFed()
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	st := &State{}
	record(t, d, st)
	if st.ServerSet == nil || st.Trajectory != nil {
		t.Fatalf("after round %d: server set %v, %d trajectory points: want a set and the trajectory dropped", d.Record, st.ServerSet != nil, len(st.Trajectory))
	}
	if err := st.ServerSet.Check(shape, 3); err != nil {
		t.Fatal(err)
	}
	if got := st.ServerSet.X.Shape; !slices.Equal(got, []int{6, 1, 8, 8}) || !slices.Equal(st.ServerSet.Y, []int{0, 0, 1, 1, 2, 2}) {
		t.Fatalf("set of shape %v with labels %v", got, st.ServerSet.Y)
	}
	// Trajectory matching must make progress: the matching loss of the
	// last iterations is below that of the first.
	n := len(d.losses)
	if n != d.Iterations {
		t.Fatalf("%d losses for %d iterations", n, d.Iterations)
	}
	first, last := mean(d.losses[:5]), mean(d.losses[n-5:])
	if !(last < 0.95*first) {
		t.Fatalf("matching loss went from %.4f to %.4f: no progress", first, last)
	}
	t.Logf("matching loss %.4f → %.4f", first, last)

	// The same seed gives the same set; another seed another.
	st2 := &State{}
	record(t, testDynaFed(), st2)
	if !slices.Equal(st.ServerSet.X.Data, st2.ServerSet.X.Data) {
		t.Fatal("same seed, different server sets")
	}
	d3 := testDynaFed()
	d3.Seed = 4
	st3 := &State{}
	record(t, d3, st3)
	if slices.Equal(st.ServerSet.X.Data, st3.ServerSet.X.Data) {
		t.Fatal("seeds 3 and 4 gave the same server set")
	}
}

func mean(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func TestDynaFedFineTunesAfterRecording(t *testing.T) {
	d := testDynaFed()
	d.Iterations = 2
	st := &State{}
	m := record(t, d, st)
	before := client.WeightsOf(m)
	if err := d.Refine(context.Background(), d.Record+1, m, st); err != nil {
		t.Fatal(err)
	}
	after := client.WeightsOf(m)
	if slices.Equal(before.Tensors[0].Data, after.Tensors[0].Data) {
		t.Fatal("round after recording: the global model was not fine-tuned")
	}
	d.Steps = 0
	before = client.WeightsOf(m)
	if err := d.Refine(context.Background(), d.Record+2, m, st); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(before.Tensors[0].Data, client.WeightsOf(m).Tensors[0].Data) {
		t.Fatal("0 fine-tuning steps changed the model")
	}
}

func TestDynaFedErrors(t *testing.T) {
	d := testDynaFed()
	d.Span = 4
	if err := d.Validate(); err == nil || !strings.Contains(err.Error(), "span") {
		t.Fatalf("span beyond the recorded rounds: %v", err)
	}
	d = testDynaFed()
	d.LRImg = -1
	if err := d.Validate(); err == nil || !strings.Contains(err.Error(), "learning rates") {
		t.Fatalf("negative image learning rate: %v", err)
	}
	// A refiner that joins late has no trajectory to match.
	d = testDynaFed()
	if err := d.Refine(context.Background(), 2, newModel(t), &State{}); err == nil || !strings.Contains(err.Error(), "trajectory") {
		t.Fatalf("refining round 2 without rounds 0 and 1: %v", err)
	}
}

// TestDynaFedSoftLabels checks that learned labels leave their start, stay
// distributions and drive the fine-tuning.
func TestDynaFedSoftLabels(t *testing.T) {
	d := testDynaFed()
	d.SoftLabels, d.LRLabel = true, 20
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	st := &State{}
	m := record(t, d, st)
	set := st.ServerSet
	if set.Soft == nil {
		t.Fatal("soft labels asked for, none made")
	}
	if err := set.Check(shape, 3); err != nil {
		t.Fatal(err)
	}
	// At the start each row puts 0.9 on its class (logit ln 18 against 0).
	moved := 0.0
	for i, c := range set.Y {
		for k := range 3 {
			want := 0.05
			if k == c {
				want = 0.9
			}
			moved = max(moved, math.Abs(float64(set.Soft.Data[i*3+k])-want))
		}
	}
	if !(moved > 1e-3) {
		t.Fatalf("soft labels moved by at most %g from their start", moved)
	}
	t.Logf("soft labels moved by up to %.4f", moved)

	// The fine-tuning trains on the soft labels: other labels, other model.
	fine := func(soft *tensor.Tensor[float32]) []float32 {
		s := &State{ServerSet: &client.Synthetic{X: set.X, Y: set.Y, Counts: set.Counts, Soft: soft}}
		mm := newModel(t)
		if err := client.WeightsOf(m).Load(mm); err != nil {
			t.Fatal(err)
		}
		if err := d.Refine(context.Background(), d.Record+1, mm, s); err != nil {
			t.Fatal(err)
		}
		return client.WeightsOf(mm).Tensors[0].Data
	}
	uniform := tensor.New[float32](set.Soft.Shape...)
	for i := range uniform.Data {
		uniform.Data[i] = 1.0 / 3
	}
	if slices.Equal(fine(set.Soft), fine(uniform)) {
		t.Fatal("fine-tuning on learned and on uniform soft labels gave the same model: the soft labels are not used")
	}

	d.LRLabel = 0
	if err := d.Validate(); err == nil || !strings.Contains(err.Error(), "soft-label learning rate 0") {
		t.Fatalf("soft labels with learning rate 0: %v", err)
	}
}

// TestDynaFedImageAdam runs the distillation with Adam on the images and
// labels (the authors' optimizer): the matching loss must fall as with
// SGD, and the set must differ from SGD's.
func TestDynaFedImageAdam(t *testing.T) {
	d := testDynaFed()
	d.ImageAdam, d.LRImg = true, 0.05
	d.SoftLabels, d.LRLabel = true, 0.05
	st := &State{}
	record(t, d, st)
	n := len(d.losses)
	first, last := mean(d.losses[:5]), mean(d.losses[n-5:])
	if !(last < 0.95*first) {
		t.Fatalf("Adam: matching loss went from %.4f to %.4f: no progress", first, last)
	}
	t.Logf("Adam: matching loss %.4f → %.4f", first, last)
	if err := st.ServerSet.Check(shape, 3); err != nil {
		t.Fatal(err)
	}
	sgd := testDynaFed()
	sgd.LRImg, sgd.SoftLabels, sgd.LRLabel = 0.05, true, 0.05
	st2 := &State{}
	record(t, sgd, st2)
	if slices.Equal(st.ServerSet.X.Data, st2.ServerSet.X.Data) || slices.Equal(st.ServerSet.Soft.Data, st2.ServerSet.Soft.Data) {
		t.Fatal("Adam and SGD at the same learning rates made the same images or labels: Adam was not used")
	}
}
