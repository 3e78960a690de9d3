package client

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// testClient holds 6 random 8×8 images: five of class 0, one of class 1,
// none of class 2.
func testClient(t *testing.T) *Client {
	t.Helper()
	x := tensor.New[float32](6, 1, 8, 8)
	tensor.FillUniform(tensor.NewRNG(1, 1), x, 0, 1)
	d, err := data.New("mnist", x, []int{0, 0, 1, 0, 0, 0}, 3, []float32{0.5}, []float32{0.25}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(4, d)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDistillOneShotAndAroundGlobal(t *testing.T) {
	c := testClient(t)
	m, _ := nn.New[float32]("convnet-w4", []int{1, 8, 8}, 3, tensor.NewRNG(2, 0))
	for _, task := range []*Task{
		{Kind: KindDistill, Method: MethodDM, IPC: 2, Iterations: 2, BatchReal: 4, Nets: NetsRandom},
		{Kind: KindDistill, Method: MethodGM, IPC: 2, Iterations: 2, BatchReal: 4, Nets: NetsRandom},
		{Kind: KindDistill, Method: MethodDM, IPC: 2, Iterations: 2, BatchReal: 4, Nets: NetsGlobal, Perturb: 0.01, Global: WeightsOf(m)},
		{Kind: KindDistill, Method: MethodGM, IPC: 2, Iterations: 2, BatchReal: 4, Nets: NetsGlobal, Global: WeightsOf(m)},
	} {
		task.Round, task.Client, task.Seed, task.Model, task.Dataset = 3, 4, 9, "convnet-w4", "mnist"
		r := c.Handle(context.Background(), task)
		if r.Status != StatusOK {
			t.Fatalf("%s/%s: %s", task.Method, task.Nets, r.Error)
		}
		s := r.Synthetic
		// Class 1 has one sample, so it gets one image; class 2 none.
		if !slices.Equal(s.Y, []int{0, 0, 1}) || !slices.Equal(s.Counts, []int{5, 1, 0}) || r.NumSamples != 6 {
			t.Fatalf("%s/%s: labels %v counts %v samples %d", task.Method, task.Nets, s.Y, s.Counts, r.NumSamples)
		}
		if err := s.Check([]int{1, 8, 8}, 3); err != nil {
			t.Fatal(err)
		}
		// The same task gives the same set.
		r2 := c.Handle(context.Background(), task)
		if !slices.Equal(r2.Synthetic.X.Data, s.X.Data) {
			t.Fatalf("%s/%s: not reproducible", task.Method, task.Nets)
		}
	}
}

func TestTrainAndFailures(t *testing.T) {
	c := testClient(t)
	m, _ := nn.New[float32]("convnet-w4", []int{1, 8, 8}, 3, tensor.NewRNG(2, 0))
	g := WeightsOf(m)
	task := &Task{Round: 1, Client: 4, Kind: KindTrain, Seed: 1, Model: "convnet-w4", Dataset: "mnist",
		Epochs: 2, BatchSize: 4, LR: 0.1, Momentum: 0.9, Mu: 0.5, Global: g}
	r := c.Handle(context.Background(), task)
	if r.Status != StatusOK || r.Weights.Matches(m) != nil {
		t.Fatalf("%+v", r)
	}
	if slices.Equal(r.Weights.Tensors[0].Data, g.Tensors[0].Data) {
		t.Fatal("local training did not change the weights")
	}
	for _, c2 := range []struct {
		edit func(*Task)
		want string
	}{
		{func(t *Task) { t.Client = 5 }, "addressed to client 5"},
		{func(t *Task) { t.Optimizer = "adagrad" }, `optimizer "adagrad" (want sgd or adam)`},
		{func(t *Task) { t.Kind = "sing" }, "unknown task kind"},
		{func(t *Task) { t.Global = nil }, "needs the global weights"},
		{func(t *Task) { t.Model = "convnet-w8" }, "shape"},
		{func(t *Task) { t.Kind, t.Method = KindDistill, "flow" }, "unknown distillation method"},
		{func(t *Task) { t.Kind, t.Method = KindDistill, "mtt" }, "expert trajectories"},
		{func(t *Task) { t.Kind, t.Method = KindDistill, "sldd" }, "soft labels"},
		{func(t *Task) { t.Kind, t.Method, t.Nets = KindDistill, "kip", NetsGlobal }, "are for dm and gm"},
		{func(t *Task) {
			t.Kind, t.Method, t.IPC, t.Iterations, t.Nets, t.Global = KindDistill, "kip", 2, 1, NetsRandom, nil
		}, "needs two with at least 2 images"},
		{func(t *Task) { t.Kind, t.Method, t.IPC, t.Nets = KindDistill, MethodDM, 1, NetsRandom }, "does not take global weights"},
	} {
		tk := *task
		c2.edit(&tk)
		r := c.Handle(context.Background(), &tk)
		if r.Status != StatusFailed || !strings.Contains(r.Error, c2.want) {
			t.Errorf("want a failure mentioning %q, got %+v", c2.want, r)
		}
	}
}

// TestTrainAdam checks that a training task with Optimizer adam takes
// Adam's steps: the result equals nn.Train with PyTorch-default Adam from
// the global weights, and differs from SGD's.
func TestTrainAdam(t *testing.T) {
	c := testClient(t)
	m, _ := nn.New[float32]("convnet-w4", []int{1, 8, 8}, 3, tensor.NewRNG(2, 0))
	g := WeightsOf(m)
	task := &Task{Round: 1, Client: 4, Kind: KindTrain, Seed: 1, Model: "convnet-w4", Dataset: "mnist",
		Epochs: 2, BatchSize: 4, LR: 0.001, Momentum: 0.9, Optimizer: OptimAdam, Global: g}
	r := c.Handle(context.Background(), task)
	if r.Status != StatusOK {
		t.Fatal(r.Error)
	}
	want, _ := nn.New[float32]("convnet-w4", []int{1, 8, 8}, 3, tensor.NewRNG(2, 0))
	tc := nn.TrainConfig[float32]{Epochs: 2, BatchSize: 4, Optimizer: nn.NewAdam[float32](0.001), Seed: 1, Context: context.Background()}
	if err := nn.Train(want, c.Data, tc, nil); err != nil {
		t.Fatal(err)
	}
	for i, p := range want.Params() {
		if !slices.Equal(r.Weights.Tensors[i].Data, p.Data) {
			t.Fatalf("parameter %d differs from nn.Train with Adam", i)
		}
	}
	sgd := *task
	sgd.Optimizer = OptimSGD
	if rs := c.Handle(context.Background(), &sgd); rs.Status != StatusOK || slices.Equal(rs.Weights.Tensors[0].Data, r.Weights.Tensors[0].Data) {
		t.Fatalf("SGD and Adam gave the same weights (or SGD failed: %s)", rs.Error)
	}
}

// TestDistillJoint runs methods of package distill on a client: the classes
// with at least IPC images are distilled together and come back under
// their own labels; the class with fewer is left out but still counted.
func TestDistillJoint(t *testing.T) {
	x := tensor.New[float32](11, 1, 8, 8)
	tensor.FillUniform(tensor.NewRNG(1, 1), x, 0, 1)
	d, err := data.New("mnist", x, []int{2, 0, 2, 1, 0, 2, 0, 2, 2, 0, 0}, 3, []float32{0.5}, []float32{0.25}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(4, d)
	if err != nil {
		t.Fatal(err)
	}
	for _, method := range []string{"random", "kip", "dd"} {
		task := &Task{Round: 1, Client: 4, Kind: KindDistill, Seed: 3, Model: "convnet-w4", Dataset: "mnist",
			Method: method, IPC: 2, Iterations: 2, Nets: NetsRandom}
		r := c.Handle(context.Background(), task)
		if r.Status != StatusOK {
			t.Fatalf("%s: %s", method, r.Error)
		}
		s := r.Synthetic
		if !slices.Equal(s.Y, []int{0, 0, 2, 2}) || !slices.Equal(s.Counts, []int{5, 1, 5}) {
			t.Fatalf("%s: labels %v counts %v, want [0 0 2 2] and [5 1 5]", method, s.Y, s.Counts)
		}
		if err := s.Check([]int{1, 8, 8}, 3); err != nil {
			t.Fatal(err)
		}
		r2 := c.Handle(context.Background(), task)
		if !slices.Equal(r2.Synthetic.X.Data, s.X.Data) {
			t.Fatalf("%s: not reproducible", method)
		}
		if method == "random" {
			// A coreset uploads real images of the right class.
			for i, l := range s.Y {
				img := s.X.Data[i*64 : (i+1)*64]
				found := false
				for j, y := range d.Y {
					found = found || (y == l && slices.Equal(d.X.Data[j*64:(j+1)*64], img))
				}
				if !found {
					t.Fatalf("random: image %d is not a real image of class %d", i, l)
				}
			}
		}
	}
}
