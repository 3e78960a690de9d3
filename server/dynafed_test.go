package server

import (
	"context"
	"errors"
	"fmt"
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
	if err := train(m, d, st); err != nil {
		t.Fatal(err)
	}
	return m
}

// recordErr is record's error, for tests of refused settings.
func recordErr(t *testing.T, d *DynaFed, st *State) error {
	t.Helper()
	return train(newModel(t), d, st)
}

func train(m nn.Model[float32], d *DynaFed, st *State) error {
	set := blobs(60, 1)
	for round := 0; round <= d.Record; round++ {
		if round > 0 {
			tc := nn.TrainConfig[float32]{Epochs: 1, BatchSize: 10, LR: 0.05, Seed: uint64(round)}
			if err := nn.Train(m, set, tc, nil); err != nil {
				return err
			}
		}
		if err := d.Refine(context.Background(), round, m, st); err != nil {
			return fmt.Errorf("round %d: %w", round, err)
		}
	}
	return nil
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

// TestDynaFedTargetAverage checks the averaged targets: every target is
// the mean of TargetAverage … Span models drawn from the Span rounds after
// the start, both ends of that range occur, and off (0) means θ_{t+Span}.
func TestDynaFedTargetAverage(t *testing.T) {
	// Trajectory point k holds the value 3^k, so a mean of picks from
	// k ∈ {s+1, s+2, s+3} reveals which picks and how many.
	var traj []*client.Weights
	for k := range 8 {
		w := tensor.New[float32](2)
		w.Data[0], w.Data[1] = float32(math.Pow(3, float64(k))), -float32(k)
		extra := tensor.New[float32](1) // a buffer beyond the parameters
		traj = append(traj, &client.Weights{Names: []string{"w", "buf"}, Tensors: []*tensor.Tensor[float32]{w, extra}})
	}
	d := &DynaFed{Span: 3}
	const start = 2
	got, err := d.target(traj, 1, start, tensor.NewRNG(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Data[0] != 243 || got[0].Data[1] != -5 {
		t.Fatalf("no averaging: target %v, want θ_5 = [243 -5]", got[0].Data)
	}
	d.TargetAverage = 2
	// valid[v] is the count of picks for every mean of 2 or 3 picks.
	valid := map[float32]int{}
	vals := []float64{27, 81, 243}
	for _, a := range vals {
		for _, b := range vals {
			valid[float32((a+b)/2)] = 2
			for _, c := range vals {
				if _, ok := valid[float32((a+b+c)/3)]; !ok {
					valid[float32((a+b+c)/3)] = 3
				}
			}
		}
	}
	seen := map[int]bool{}
	for it := range 200 {
		got, err := d.target(traj, 1, start, tensor.NewRNG(1, uint64(it)))
		if err != nil {
			t.Fatal(err)
		}
		k, ok := valid[got[0].Data[0]]
		if !ok {
			t.Fatalf("iteration %d: target %v is no mean of 2 or 3 of θ_3, θ_4, θ_5", it, got[0].Data)
		}
		seen[k] = true
		if traj[start+1].Tensors[0].Data[0] != 27 {
			t.Fatal("averaging changed the trajectory")
		}
	}
	if !seen[2] || !seen[3] {
		t.Fatalf("averages of %v models seen: want both 2 and 3", seen)
	}
	if err := (&DynaFed{Record: 3, Span: 3, TargetAverage: 4}).Validate(); err == nil || !strings.Contains(err.Error(), "averages targets of at least 4") {
		t.Fatalf("target average 4 with span 3: %v", err)
	}
}

// TestDynaFedTargetAverageOfOne checks that averaging one model of a span
// of one is matching θ_{t+1} itself: the set is the same as without it,
// so the averaging draws do not disturb the iteration's other draws.
func TestDynaFedTargetAverageOfOne(t *testing.T) {
	d := testDynaFed()
	d.Iterations = 5
	st := &State{}
	record(t, d, st)
	d1 := testDynaFed()
	d1.Iterations, d1.TargetAverage = 5, 1
	st1 := &State{}
	record(t, d1, st1)
	if !slices.Equal(st.ServerSet.X.Data, st1.ServerSet.X.Data) || !slices.Equal(d.losses, d1.losses) {
		t.Fatal("averaging 1 of a span of 1 changed the set or the losses")
	}
	d2 := testDynaFed()
	d2.Record, d2.Span, d2.Iterations, d2.TargetAverage = 3, 2, 5, 1
	st2 := &State{}
	record(t, d2, st2)
	d3 := testDynaFed()
	d3.Record, d3.Span, d3.Iterations = 3, 2, 5
	st3 := &State{}
	record(t, d3, st3)
	if slices.Equal(d2.losses, d3.losses) {
		t.Fatal("span 2: averaging left every loss as matching θ_{t+2}")
	}
}

// cloneProgress deep-copies p's tensors (SaveProgress hands over live
// ones); its Adam states are copies already (Adam.State).
func cloneProgress(p *DistillProgress) *DistillProgress {
	c := *p
	cl := func(t *tensor.Tensor[float32]) *tensor.Tensor[float32] {
		if t == nil {
			return nil
		}
		return t.Clone()
	}
	c.X, c.Velocity, c.Logits, c.LogitVelocity = cl(p.X), cl(p.Velocity), cl(p.Logits), cl(p.LogitVelocity)
	return &c
}

// TestDynaFedResumesDistillation stops nothing but saves the progress
// every 7 iterations, then continues a second distillation from one of
// those saves: it must end with the same set, bit for bit, for each way
// of stepping the images and labels.
func TestDynaFedResumesDistillation(t *testing.T) {
	for _, c := range []struct {
		name       string
		adam, soft bool
	}{{"sgd", false, false}, {"sgd+soft", false, true}, {"adam", true, false}, {"adam+soft", true, true}} {
		t.Run(c.name, func(t *testing.T) {
			setup := func() *DynaFed {
				d := testDynaFed()
				if c.adam {
					d.ImageAdam, d.LRImg = true, 0.05
				}
				d.SoftLabels, d.LRLabel = c.soft, 0.05
				return d
			}
			full := setup()
			var saved []*DistillProgress
			full.ProgressEvery = 7
			full.SaveProgress = func(p *DistillProgress) error {
				saved = append(saved, cloneProgress(p))
				return nil
			}
			st := &State{}
			record(t, full, st)
			if got := len(saved); got != 4 { // after 7, 14, 21, 28 of 30
				t.Fatalf("%d saves of the progress over 30 iterations every 7, want 4", got)
			}
			p := saved[2]
			if p.Done != 21 || (p.Velocity == nil) == !c.adam || (p.Logits == nil) == c.soft || (p.ImageAdam.Steps == 21) != c.adam {
				t.Fatalf("progress after 21: done %d, momentum %t, logits %t, Adam steps %d", p.Done, p.Velocity != nil, p.Logits != nil, p.ImageAdam.Steps)
			}

			resumed := setup()
			var asked string
			resumed.LoadProgress = func(key string) (*DistillProgress, error) {
				asked = key
				return p, nil
			}
			st2 := &State{}
			record(t, resumed, st2)
			if !slices.Equal(st.ServerSet.X.Data, st2.ServerSet.X.Data) {
				t.Fatal("the resumed distillation made other images than the uninterrupted one")
			}
			if c.soft && !slices.Equal(st.ServerSet.Soft.Data, st2.ServerSet.Soft.Data) {
				t.Fatal("the resumed distillation made other labels than the uninterrupted one")
			}
			if asked != p.Key {
				t.Fatalf("LoadProgress asked for key %q, the progress was saved with %q", asked, p.Key)
			}
			if !slices.Equal(full.losses[21:], resumed.losses) {
				t.Fatalf("the resumed losses %v differ from the uninterrupted run's %v", resumed.losses, full.losses[21:])
			}
		})
	}
}

// TestDynaFedResumeErrors checks that progress which does not belong to
// the distillation, or is damaged, is refused with a message naming what
// is wrong.
func TestDynaFedResumeErrors(t *testing.T) {
	d := testDynaFed()
	d.ImageAdam, d.LRImg = true, 0.05
	var saved *DistillProgress
	d.ProgressEvery = 10
	d.SaveProgress = func(p *DistillProgress) error {
		if saved == nil {
			saved = cloneProgress(p)
		}
		return nil
	}
	record(t, d, &State{})
	for _, c := range []struct {
		name   string
		change func(d *DynaFed, p *DistillProgress)
		want   string
	}{
		{"other seed", func(d *DynaFed, _ *DistillProgress) { d.Seed++ }, "another distillation"},
		{"other target", func(d *DynaFed, _ *DistillProgress) { d.TargetAverage = 1 }, "another distillation"},
		{"images' shape", func(_ *DynaFed, p *DistillProgress) { p.X = tensor.New[float32](1, 2) }, "images has shape [1 2]"},
		{"NaN image", func(_ *DynaFed, p *DistillProgress) { p.X.Data[3] = float32(math.NaN()) }, "images has a non-finite value at 3"},
		{"too many done", func(_ *DynaFed, p *DistillProgress) { p.Done = 31 }, "want 0 to 30 iterations done"},
		{"step size", func(_ *DynaFed, p *DistillProgress) { p.LR = 0 }, "step size 0"},
		{"Adam steps", func(_ *DynaFed, p *DistillProgress) { p.ImageAdam.Steps = 9 }, "9 steps over 1 tensors, want 10"},
		{"SGD progress", func(_ *DynaFed, p *DistillProgress) { p.Velocity = p.X.Clone() }, "SGD momenta"},
		{"save fails", func(d *DynaFed, p *DistillProgress) {
			d.SaveProgress = func(*DistillProgress) error { return errors.New("disk full") }
			*p = DistillProgress{}
		}, "saving the progress after iteration 10: disk full"},
		{"load fails", func(d *DynaFed, p *DistillProgress) {
			d.LoadProgress = func(string) (*DistillProgress, error) { return nil, errors.New("unreadable") }
		}, "DynaFed distillation: unreadable"},
	} {
		dd := testDynaFed()
		dd.ImageAdam, dd.LRImg = true, 0.05
		p := cloneProgress(saved)
		c.change(dd, p)
		if p.Key != "" && dd.LoadProgress == nil {
			dd.LoadProgress = func(string) (*DistillProgress, error) { return p, nil }
		}
		dd.ProgressEvery = 10
		err := recordErr(t, dd, &State{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
		if bad := errors.Is(err, ErrBadProgress); bad != (p.Key != "" && !strings.Contains(c.name, "fails")) {
			t.Errorf("%s: errors.Is(err, ErrBadProgress) = %t", c.name, bad)
		}
	}
	d = testDynaFed()
	d.SaveProgress = func(*DistillProgress) error { return nil }
	if err := d.Validate(); err == nil || !strings.Contains(err.Error(), "every 0 iterations") {
		t.Errorf("progress saved every 0 iterations: %v", err)
	}
}
