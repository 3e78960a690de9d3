// Package client is the federated client role: it holds one partition of a
// data set and answers the server's tasks — local training (FedAvg,
// FedProx) or local distillation (its own DM or DSA gradient-matching
// loops, optionally differentially private, or any method of package
// distill that CheckMethod accepts, run jointly; one-shot from fresh random
// networks or around the current global model as in FedDM). It also
// defines the protocol types (Task, Result) both roles speak; their wire
// form is in package federation.
//
// A client keeps nothing between tasks but its privacy accountant (the
// budget its private releases have spent): every task carries what it needs
// (the global weights if the strategy uses them), and every random draw of
// a task comes from the task's Seed, so a result depends only on the task
// and the client's data.
package client

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/fedsim/fedsim/distill"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// Task kinds.
const (
	KindTrain   = "train"   // local SGD from the global weights (FedAvg, FedProx)
	KindDistill = "distill" // local distillation into a small synthetic set
)

// Distillation methods a task may ask for: the client's own matching loops
// (dm, gm), or any method of package distill that CheckMethod accepts, run
// on the client's classes jointly with that method's defaults.
const (
	MethodDM = "dm" // distribution matching
	MethodGM = "gm" // gradient matching with Siamese augmentation (DSA-style, one outer step per network)
)

// CheckMethod returns nil if a client can distill with method, or an error
// saying why not. Methods whose product a client cannot upload as hard-
// labelled images are refused: trajectory matching needs expert
// trajectories the client would first have to train, and learned labels do
// not travel in a Synthetic.
func CheckMethod(method string) error {
	switch {
	case method == MethodDM || method == MethodGM:
		return nil
	case !slices.Contains(distill.Methods(), method):
		return fmt.Errorf("unknown distillation method %q: want %s, %s or one of distill's: %s", method, MethodDM, MethodGM, strings.Join(distill.Methods(), ", "))
	case distill.IsTrajectoryMethod(method):
		return fmt.Errorf("distillation method %s matches expert trajectories, which a client does not have: use dm, gm or a method without a buffer", method)
	case method == distill.MethodSLDD || method == distill.MethodLD:
		return fmt.Errorf("distillation method %s learns soft labels, and clients upload hard-labelled images: use dd, dm or gm", method)
	}
	return nil
}

// Networks used for matching.
const (
	// NetsRandom matches with freshly initialised random networks (one-shot
	// distillation, FedD3/DOSFL-style): the task carries no weights.
	NetsRandom = "random"
	// NetsGlobal matches with the global model plus small random
	// perturbations (FedDM-style): the task carries the global weights.
	NetsGlobal = "global"
)

// Task is what the server asks one client to do in one round.
type Task struct {
	Round  int    `json:"round"`
	Client int    `json:"client"`
	Kind   string `json:"kind"`
	// Seed is the base of every random draw of this task (derived by the
	// server from the run's seed, the round and the client).
	Seed uint64 `json:"seed"`
	// Model is the network's name for nn.New (e.g. "convnet-w32"); the
	// global weights, when present, are this model's.
	Model string `json:"model"`
	// Dataset names the data set (it selects defaults such as the DSA
	// strategy).
	Dataset string `json:"dataset"`

	// Local training (KindTrain).
	Epochs    int     `json:"epochs,omitempty"`
	BatchSize int     `json:"batch_size,omitempty"`
	LR        float64 `json:"lr,omitempty"`
	Momentum  float64 `json:"momentum,omitempty"` // SGD only
	// Optimizer is OptimSGD (with Momentum) or OptimAdam (PyTorch's
	// defaults); "" is OptimSGD.
	Optimizer string `json:"optimizer,omitempty"`
	// Mu is FedProx's proximal coefficient (0: FedAvg).
	Mu float64 `json:"mu,omitempty"`

	// Local distillation (KindDistill).
	Method     string  `json:"method,omitempty"`
	IPC        int     `json:"ipc,omitempty"`
	Iterations int     `json:"iterations,omitempty"`
	BatchReal  int     `json:"batch_real,omitempty"`
	LRImg      float64 `json:"lr_img,omitempty"`
	Nets       string  `json:"nets,omitempty"`
	// ImageSteps (one-shot dm only) is how many SGD steps the images take
	// against each iteration's targets (distill.Config.ImageSteps; 0 or 1:
	// one). Under DP the extra steps cost no privacy.
	ImageSteps int `json:"image_steps,omitempty"`
	// Init is where the synthetic images start: InitReal (random real
	// images of the class), InitNoise (Gaussian noise) or InitMean (the
	// class mean, one-shot DM only); "" is real, or
	// noise when the task is private (real images would be released as
	// they are).
	Init string `json:"init,omitempty"`
	// Perturb is the relative size of the random perturbation of the
	// global model's parameters (NetsGlobal): each tensor gets Gaussian
	// noise of standard deviation Perturb × its RMS.
	Perturb float64 `json:"perturb,omitempty"`

	// DP, if set, makes the distillation differentially private (dp.go).
	DP *DPTask `json:"dp,omitempty"`

	// Global holds the global model's weights (nil when the task does not
	// need them).
	Global *Weights `json:"-"`
}

// Local optimizers of a training task (Task.Optimizer).
const (
	OptimSGD  = "sgd"
	OptimAdam = "adam"
)

// Initialisations of a distillation task's synthetic images (Task.Init).
const (
	InitReal  = distill.InitReal
	InitNoise = distill.InitNoise
	// InitMean starts from each class's mean image, pooled and jittered
	// (distill.InitMean); in a private task the means are released by the
	// Gaussian mechanism of DPTask.InitClip and InitNoise.
	InitMean = distill.InitMean
)

// initOf returns where t's synthetic images start, or an error for an
// unknown value or real images in a private task.
func (t *Task) initOf() (string, error) {
	switch t.Init {
	case "":
		if t.DP != nil {
			return InitNoise, nil
		}
		return InitReal, nil
	case InitNoise, InitMean:
		return t.Init, nil
	case InitReal:
		if t.DP != nil {
			return "", fmt.Errorf("a private task cannot start from real images (they would be released as they are): want init %q", InitNoise)
		}
		return InitReal, nil
	}
	return "", fmt.Errorf("unknown initialisation %q (want %s, %s or %s)", t.Init, InitReal, InitNoise, InitMean)
}

// Result statuses.
const (
	StatusOK     = "ok"
	StatusFailed = "failed"
)

// Result is a client's answer to a Task.
type Result struct {
	Round  int    `json:"round"`
	Client int    `json:"client"`
	Status string `json:"status"`
	// Error says why the task failed (Status failed).
	Error string `json:"error,omitempty"`
	// NumSamples is the number of real samples the client holds (FedAvg's
	// weight).
	NumSamples int `json:"num_samples"`
	// Loss is the final local training or distillation loss.
	Loss float64 `json:"loss"`
	// Weights are the locally trained weights (KindTrain).
	Weights *Weights `json:"-"`
	// Synthetic is the distilled set (KindDistill).
	Synthetic *Synthetic `json:"-"`
	// Epsilon is the ε the client has spent so far at the task's δ, this
	// task included (private tasks only).
	Epsilon float64 `json:"epsilon,omitempty"`
}

// Failed returns a failed result for task t.
func Failed(t *Task, err error) *Result {
	r := &Result{Status: StatusFailed, Error: err.Error()}
	if t != nil {
		r.Round, r.Client = t.Round, t.Client
	}
	return r
}

// Weights are a model's named tensors: parameters, then buffers, in the
// model's order.
type Weights struct {
	Names   []string
	Tensors []*tensor.Tensor[float32]
}

// WeightsOf copies m's parameters and buffers.
func WeightsOf(m nn.Model[float32]) *Weights {
	names, ts := slices.Clone(m.ParamNames()), m.Params()
	if b, ok := m.(nn.Buffered[float32]); ok {
		names = append(names, b.BufferNames()...)
		ts = append(slices.Clone(ts), b.Buffers()...)
	}
	w := &Weights{Names: names, Tensors: make([]*tensor.Tensor[float32], len(ts))}
	for i, t := range ts {
		w.Tensors[i] = t.Clone()
	}
	return w
}

// Clone returns a deep copy.
func (w *Weights) Clone() *Weights {
	c := &Weights{Names: slices.Clone(w.Names), Tensors: make([]*tensor.Tensor[float32], len(w.Tensors))}
	for i, t := range w.Tensors {
		c.Tensors[i] = t.Clone()
	}
	return c
}

// Matches checks that w has the names and shapes of m's parameters and
// buffers and only finite values, naming the first offender.
func (w *Weights) Matches(m nn.Model[float32]) error {
	ref := WeightsOf(m)
	if len(w.Names) != len(ref.Names) || len(w.Tensors) != len(w.Names) {
		return fmt.Errorf("weights have %d tensors, the model has %d", len(w.Tensors), len(ref.Names))
	}
	for i, name := range ref.Names {
		if w.Names[i] != name {
			return fmt.Errorf("weight %d is %q, the model's is %q", i, w.Names[i], name)
		}
		t := w.Tensors[i]
		if t == nil || !slices.Equal(t.Shape, ref.Tensors[i].Shape) || len(t.Data) != tensor.Size(t.Shape) {
			var shape []int
			if t != nil {
				shape = t.Shape
			}
			return fmt.Errorf("weight %s has shape %v, the model's is %v", name, shape, ref.Tensors[i].Shape)
		}
		if j := tensor.FirstNonFinite(t.Data); j >= 0 {
			return fmt.Errorf("weight %s has a non-finite value (%v at %d)", name, t.Data[j], j)
		}
	}
	return nil
}

// Load copies w into m's parameters and buffers (w must match m).
func (w *Weights) Load(m nn.Model[float32]) error {
	if err := w.Matches(m); err != nil {
		return err
	}
	ts := m.Params()
	if b, ok := m.(nn.Buffered[float32]); ok {
		ts = append(slices.Clone(ts), b.Buffers()...)
	}
	for i, t := range ts {
		copy(t.Data, w.Tensors[i].Data)
	}
	return nil
}

// Synthetic is a client's distilled set: images in the data set's
// normalized space, their labels, and how many real samples of each class
// the client distilled them from (the server's class weights).
type Synthetic struct {
	X      *tensor.Tensor[float32] // (N, C, H, W)
	Y      []int                   // N labels in [0, K)
	Counts []int                   // K real-sample counts
	// Soft, if set, holds learned soft labels: one target distribution
	// per image (N, K), which training uses in place of Y (Y stays the
	// class each image stands for).
	Soft *tensor.Tensor[float32]
}

// Clone returns a deep copy.
func (s *Synthetic) Clone() *Synthetic {
	c := &Synthetic{X: s.X.Clone(), Y: slices.Clone(s.Y), Counts: slices.Clone(s.Counts)}
	if s.Soft != nil {
		c.Soft = s.Soft.Clone()
	}
	return c
}

// Check verifies the set against an image shape (C, H, W) and a class
// count: N ≥ 1 images of that shape, N labels in [0, classes), finite
// values, one non-negative count per class, every label's class has a
// positive count, and soft labels, if any, are N rows of K probabilities
// that sum to 1.
func (s *Synthetic) Check(shape []int, classes int) error {
	if s == nil || s.X == nil {
		return fmt.Errorf("synthetic set has no images")
	}
	x := s.X
	if x.Rank() != 4 || len(x.Data) != tensor.Size(x.Shape) || x.Shape[0] < 1 {
		return fmt.Errorf("synthetic images have shape %v: want (N ≥ 1, %d, %d, %d)", x.Shape, shape[0], shape[1], shape[2])
	}
	if !slices.Equal(x.Shape[1:], shape) {
		return fmt.Errorf("synthetic images are %v, the data set's are %v", x.Shape[1:], shape)
	}
	if len(s.Y) != x.Shape[0] {
		return fmt.Errorf("%d synthetic images but %d labels", x.Shape[0], len(s.Y))
	}
	if len(s.Counts) != classes {
		return fmt.Errorf("synthetic set has %d class counts for %d classes", len(s.Counts), classes)
	}
	for c, n := range s.Counts {
		if n < 0 {
			return fmt.Errorf("class %d has a negative real-sample count %d", c, n)
		}
	}
	for i, l := range s.Y {
		if l < 0 || l >= classes {
			return fmt.Errorf("synthetic label %d at index %d is out of range for %d classes (0..%d)", l, i, classes, classes-1)
		}
		if s.Counts[l] == 0 {
			return fmt.Errorf("synthetic image %d has label %d but the set stands for no real sample of that class", i, l)
		}
	}
	if j := tensor.FirstNonFinite(x.Data); j >= 0 {
		sz := len(x.Data) / x.Shape[0]
		return fmt.Errorf("synthetic image %d has a non-finite value (%v)", j/sz, x.Data[j])
	}
	if s.Soft != nil {
		return CheckSoftLabels(s.Soft, x.Shape[0], classes)
	}
	return nil
}

// CheckSoftLabels verifies soft labels: n rows of classes probabilities
// that sum to 1 (to within float32 rounding of a softmax).
func CheckSoftLabels(soft *tensor.Tensor[float32], n, classes int) error {
	if soft.Rank() != 2 || soft.Shape[0] != n || soft.Shape[1] != classes || len(soft.Data) != n*classes {
		return fmt.Errorf("soft labels have shape %v: want (%d, %d), one distribution over the classes per image", soft.Shape, n, classes)
	}
	for i := range n {
		sum := 0.0
		for k, p := range soft.Data[i*classes : (i+1)*classes] {
			if !(p >= 0 && p <= 1) {
				return fmt.Errorf("soft label of image %d has probability %v for class %d: want a value in [0, 1]", i, p, k)
			}
			sum += float64(p)
		}
		if math.Abs(sum-1) > 1e-3 {
			return fmt.Errorf("soft label of image %d sums to %g: want a distribution that sums to 1", i, sum)
		}
	}
	return nil
}
