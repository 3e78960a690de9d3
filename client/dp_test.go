package client

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/privacy"
	"github.com/fedsim/fedsim/tensor"
)

// A private task reports the ε the accountant gives for its steps; a
// second task that would pass the budget is refused before any work; bad
// settings fail the task.
func TestPrivateDistillationBudget(t *testing.T) {
	m, _ := nn.New[float32]("convnet-w4", []int{1, 8, 8}, 3, tensor.NewRNG(2, 0))
	const q, sigma, delta, iters = 0.5, 1.0, 1e-5, 3
	one, _, err := privacy.Epsilon(q, sigma, iters, delta)
	if err != nil {
		t.Fatal(err)
	}
	for _, base := range []Task{
		{Kind: KindDistill, Method: MethodDM, Nets: NetsRandom},
		{Kind: KindDistill, Method: MethodGM, Nets: NetsRandom},
		{Kind: KindDistill, Method: MethodDM, Nets: NetsGlobal, Global: WeightsOf(m)},
		{Kind: KindDistill, Method: MethodGM, Nets: NetsGlobal, Global: WeightsOf(m)},
	} {
		c := testClient(t)
		task := base
		task.Round, task.Client, task.Seed, task.Model, task.Dataset = 1, 4, 9, "convnet-w4", "mnist"
		task.IPC, task.Iterations, task.BatchReal = 2, iters, 4
		task.DP = &DPTask{SampleRate: q, Clip: 1, Noise: sigma, Delta: delta, Budget: 1.2 * one}
		r := c.Handle(context.Background(), &task)
		if r.Status != StatusOK {
			t.Fatalf("%s/%s: %s", task.Method, task.Nets, r.Error)
		}
		if math.Abs(r.Epsilon-one) > 1e-9*one {
			t.Fatalf("%s/%s: reported ε %g, the accountant gives %g", task.Method, task.Nets, r.Epsilon, one)
		}
		// The set starts from noise, not from the client's images.
		for i := range r.Synthetic.X.Data {
			if r.Synthetic.X.Data[i] == c.Data.X.Data[i%len(c.Data.X.Data)] {
				t.Fatalf("%s/%s: synthetic value %d equals a real pixel", task.Method, task.Nets, i)
			}
		}
		task.Round = 2
		r = c.Handle(context.Background(), &task)
		if r.Status != StatusFailed || !strings.Contains(r.Error, "privacy budget") {
			t.Fatalf("%s/%s: second task over budget: %+v", task.Method, task.Nets, r)
		}
		if eps, _ := c.Spent(delta); math.Abs(eps-one) > 1e-9*one {
			t.Fatalf("a refused task was charged: spent %g, want %g", eps, one)
		}
	}
	c := testClient(t)
	for _, bad := range []struct {
		dp   DPTask
		want string
	}{
		{DPTask{SampleRate: 0, Clip: 1, Noise: 1, Delta: 1e-5}, "sample rate"},
		{DPTask{SampleRate: 0.5, Clip: 0, Noise: 1, Delta: 1e-5}, "clipping norm"},
		{DPTask{SampleRate: 0.5, Clip: 1, Noise: 0, Delta: 1e-5}, "noise multiplier"},
		{DPTask{SampleRate: 0.5, Clip: 1, Noise: 1, Delta: 1}, "δ"},
	} {
		task := Task{Round: 1, Client: 4, Kind: KindDistill, Method: MethodDM, Nets: NetsRandom, Seed: 1, Model: "convnet-w4", Dataset: "mnist",
			IPC: 1, Iterations: 1, BatchReal: 4, DP: &bad.dp}
		r := c.Handle(context.Background(), &task)
		if r.Status != StatusFailed || !strings.Contains(r.Error, bad.want) {
			t.Errorf("%+v: want a failure mentioning %q, got %+v", bad.dp, bad.want, r)
		}
	}
}

// Steps charged before a resume count against the budget.
func TestChargePrivacy(t *testing.T) {
	c := testClient(t)
	if err := c.ChargePrivacy(0.5, 1, 3); err != nil {
		t.Fatal(err)
	}
	want, _, _ := privacy.Epsilon(0.5, 1, 3, 1e-5)
	if got, err := c.Spent(1e-5); err != nil || math.Abs(got-want) > 1e-9*want {
		t.Fatalf("spent %g (%v), want %g", got, err, want)
	}
	task := Task{Round: 1, Client: 4, Kind: KindDistill, Method: MethodDM, Nets: NetsRandom, Seed: 1, Model: "convnet-w4", Dataset: "mnist",
		IPC: 1, Iterations: 3, BatchReal: 4, DP: &DPTask{SampleRate: 0.5, Clip: 1, Noise: 1, Delta: 1e-5, Budget: 1.2 * want}}
	if r := c.Handle(context.Background(), &task); r.Status != StatusFailed || !strings.Contains(r.Error, "privacy budget") {
		t.Fatalf("a task past the budget after a charge: %+v", r)
	}
}

// A client rebuilt after a restart (no steps in its accountant) charges the
// steps the server's ledger says earlier tasks asked of it: its ε and its
// budget are those of the client that never restarted.
func TestPriorStepsRestoreTheBudget(t *testing.T) {
	dp := DPTask{SampleRate: 0.5, Clip: 1, Noise: 1, Delta: 1e-5}
	task := func(prior int, budget float64) *Task {
		d := dp
		d.PriorSteps, d.Budget = prior, budget
		return &Task{Round: 2, Client: 4, Kind: KindDistill, Method: MethodDM, Nets: NetsRandom, Seed: 1, Model: "convnet-w4", Dataset: "mnist",
			IPC: 1, Iterations: 2, BatchReal: 4, DP: &d}
	}
	lived, restarted := testClient(t), testClient(t)
	if r := lived.Handle(context.Background(), task(0, 0)); r.Status != StatusOK {
		t.Fatal(r.Error)
	}
	a := lived.Handle(context.Background(), task(2, 0))
	b := restarted.Handle(context.Background(), task(2, 0))
	if a.Status != StatusOK || b.Status != StatusOK || a.Epsilon != b.Epsilon || a.Epsilon == 0 {
		t.Fatalf("ε after 4 steps: lived %g (%s), restarted %g (%s): want equal and positive", a.Epsilon, a.Error, b.Epsilon, b.Error)
	}
	want, _, _ := privacy.Epsilon(0.5, 1, 4, 1e-5)
	if math.Abs(b.Epsilon-want) > 1e-9*want {
		t.Fatalf("restarted client spent %g, want %g (4 steps)", b.Epsilon, want)
	}
	// The ledger is not charged twice, and it counts against the budget.
	fresh := testClient(t)
	if r := fresh.Handle(context.Background(), task(4, 1.01*want)); r.Status != StatusFailed || !strings.Contains(r.Error, "privacy budget") {
		t.Fatalf("a task past the budget once 4 prior steps are charged: %+v", r)
	}
	if r := restarted.Handle(context.Background(), task(-1, 0)); r.Status != StatusFailed || !strings.Contains(r.Error, "prior steps -1") {
		t.Fatalf("negative prior steps: %+v", r)
	}
}

// Task.Init: noise makes a non-private set start from noise, real is
// refused in a private task (its images would be released), and unknown
// values are refused, all before any work or privacy spending.
func TestDistillInit(t *testing.T) {
	base := Task{Kind: KindDistill, Method: MethodDM, Nets: NetsRandom, Round: 1, Client: 4, Seed: 3, Model: "convnet-w4",
		Dataset: "mnist", IPC: 2, Iterations: 0, BatchReal: 4}
	c := testClient(t)
	real := func(r *Result) bool { // every synthetic image is one of the client's images
		sz := len(c.Data.X.Data) / c.Data.Len()
		for i := range r.Synthetic.X.Shape[0] {
			img := r.Synthetic.X.Data[i*sz : (i+1)*sz]
			found := false
			for j := 0; j < c.Data.Len() && !found; j++ {
				found = slices.Equal(img, c.Data.X.Data[j*sz:(j+1)*sz])
			}
			if !found {
				return false
			}
		}
		return true
	}
	m, _ := nn.New[float32]("convnet-w4", []int{1, 8, 8}, 3, tensor.NewRNG(2, 0))
	// Every distillation path: DM with fresh networks (distill's DM), GM
	// with fresh networks and DM around the global model (the matching loop).
	for _, path := range []Task{
		{Method: MethodDM, Nets: NetsRandom},
		{Method: MethodGM, Nets: NetsRandom},
		{Method: MethodDM, Nets: NetsGlobal, Global: WeightsOf(m)},
	} {
		for _, tc := range []struct {
			init     string
			wantReal bool
		}{{"", true}, {InitReal, true}, {InitNoise, false}} {
			task := base
			task.Method, task.Nets, task.Global, task.Init = path.Method, path.Nets, path.Global, tc.init
			r := c.Handle(context.Background(), &task)
			if r.Status != StatusOK {
				t.Fatalf("%s/%s init %q: %s", path.Method, path.Nets, tc.init, r.Error)
			}
			if got := real(r); got != tc.wantReal {
				t.Fatalf("%s/%s init %q with no iterations: synthetic images are the client's own: %v, want %v", path.Method, path.Nets, tc.init, got, tc.wantReal)
			}
		}
	}
	for _, tc := range []struct {
		init string
		dp   *DPTask
		want string
	}{
		{InitReal, &DPTask{SampleRate: 0.5, Clip: 1, Noise: 1, Delta: 1e-5}, "cannot start from real images"},
		{"zeros", nil, `unknown initialisation "zeros"`},
	} {
		task := base
		task.Init, task.DP = tc.init, tc.dp
		r := c.Handle(context.Background(), &task)
		if r.Status != StatusFailed || !strings.Contains(r.Error, tc.want) {
			t.Fatalf("init %q: %+v, want a failure naming %q", tc.init, r, tc.want)
		}
	}
	if eps, _ := c.Spent(1e-5); eps != 0 {
		t.Fatalf("a refused private task was charged ε %g", eps)
	}
}

// A private one-shot DM task that starts from the class means charges their
// release (one plain Gaussian mechanism) beside its iterations; a client
// rebuilt after a restart charges the releases the ledger counts; the
// release needs its settings, and other paths refuse the mean start.
func TestPrivateMeanInit(t *testing.T) {
	const q, sigma, delta, iters = 0.5, 1.0, 1e-5, 2
	release := privacy.Mechanism{Q: 1, Sigma: 4, Steps: 1}
	task := func(priorSteps, priorReleases int) *Task {
		return &Task{Round: 1, Client: 4, Kind: KindDistill, Method: MethodDM, Nets: NetsRandom, Seed: 1, Model: "convnet-w4", Dataset: "mnist",
			IPC: 2, Iterations: iters, BatchReal: 4, Init: InitMean,
			DP: &DPTask{SampleRate: q, Clip: 1, Noise: sigma, Delta: delta, InitClip: 6, InitNoise: release.Sigma,
				PriorSteps: priorSteps, PriorReleases: priorReleases}}
	}
	want, _, _ := privacy.Config{}.EpsilonAfter([]privacy.Mechanism{release}, q, sigma, iters, delta)
	c := testClient(t)
	r := c.Handle(context.Background(), task(0, 0))
	if r.Status != StatusOK || math.Abs(r.Epsilon-want) > 1e-9*want {
		t.Fatalf("ε after the release and %d iterations: %g (%s), want %g", iters, r.Epsilon, r.Error, want)
	}
	twice, _, _ := privacy.Config{}.EpsilonAfter([]privacy.Mechanism{release, release}, q, sigma, 2*iters, delta)
	lived := c.Handle(context.Background(), task(iters, 1))
	restarted := testClient(t).Handle(context.Background(), task(iters, 1))
	if lived.Status != StatusOK || restarted.Status != StatusOK || math.Abs(lived.Epsilon-twice) > 1e-9*twice || restarted.Epsilon != lived.Epsilon {
		t.Fatalf("second task: lived %g (%s), restarted %g (%s), want %g", lived.Epsilon, lived.Error, restarted.Epsilon, restarted.Error, twice)
	}
	bad := task(0, 0)
	bad.DP.InitNoise = 0
	if r := testClient(t).Handle(context.Background(), bad); r.Status != StatusFailed || !strings.Contains(r.Error, "releases the class means") {
		t.Fatalf("a mean start without release noise: %+v", r)
	}
	gm := task(0, 0)
	gm.Method = MethodGM
	other := testClient(t)
	if r := other.Handle(context.Background(), gm); r.Status != StatusFailed || !strings.Contains(r.Error, "one-shot dm") {
		t.Fatalf("gm from the class means: %+v", r)
	}
	if eps, _ := other.Spent(delta); eps != 0 {
		t.Fatalf("a refused task spent ε = %g", eps)
	}
}

// MinClass leaves the classes with fewer real examples out of a private
// task (the test client holds 5 of class 0 and 1 of class 1); a floor no
// class reaches fails the task before any privacy is spent.
func TestPrivateMinClass(t *testing.T) {
	task := func(minClass int) *Task {
		return &Task{Round: 1, Client: 4, Kind: KindDistill, Method: MethodDM, Nets: NetsRandom, Seed: 1, Model: "convnet-w4", Dataset: "mnist",
			IPC: 2, Iterations: 1, BatchReal: 4, DP: &DPTask{SampleRate: 0.5, Clip: 1, Noise: 1, Delta: 1e-5, MinClass: minClass}}
	}
	for _, tc := range []struct {
		min  int
		want []int // labels of the synthetic set
	}{{0, []int{0, 0, 1}}, {2, []int{0, 0}}, {5, []int{0, 0}}} {
		r := testClient(t).Handle(context.Background(), task(tc.min))
		if r.Status != StatusOK || !slices.Equal(r.Synthetic.Y, tc.want) {
			t.Fatalf("min_class %d: labels %v (%s), want %v", tc.min, r.Synthetic.Y, r.Error, tc.want)
		}
	}
	c := testClient(t)
	if r := c.Handle(context.Background(), task(6)); r.Status != StatusFailed || !strings.Contains(r.Error, "no class has the 6 real examples") {
		t.Fatalf("min_class above every class: %+v", r)
	}
	if eps, _ := c.Spent(1e-5); eps != 0 {
		t.Fatalf("a task with nothing to distill spent ε = %g", eps)
	}
	if r := c.Handle(context.Background(), task(-1)); r.Status != StatusFailed || !strings.Contains(r.Error, "min_class -1") {
		t.Fatalf("negative min_class: %+v", r)
	}
}

// ImageSteps reaches the distiller (the set differs from one step's) and
// costs no privacy (the same ε as one step); it is refused where the
// client runs no one-shot dm and when negative, before any work.
func TestImageSteps(t *testing.T) {
	task := func(steps int, method, nets string) *Task {
		return &Task{Round: 1, Client: 4, Kind: KindDistill, Method: method, Nets: nets, Seed: 1, Model: "convnet-w4", Dataset: "mnist",
			IPC: 2, Iterations: 2, BatchReal: 4, ImageSteps: steps, DP: &DPTask{SampleRate: 0.5, Clip: 1, Noise: 1, Delta: 1e-5}}
	}
	var sets []*Result
	var eps []float64
	for _, steps := range []int{1, 3} {
		c := testClient(t)
		r := c.Handle(context.Background(), task(steps, MethodDM, NetsRandom))
		if r.Status != StatusOK {
			t.Fatalf("image steps %d: %s", steps, r.Error)
		}
		e, _ := c.Spent(1e-5)
		sets, eps = append(sets, r), append(eps, e)
	}
	if slices.Equal(sets[0].Synthetic.X.Data, sets[1].Synthetic.X.Data) {
		t.Fatal("three image steps gave the one-step set: the setting did not reach the distiller")
	}
	if eps[0] != eps[1] || eps[0] <= 0 {
		t.Fatalf("ε spent: %g with one image step, %g with three; want the same, positive", eps[0], eps[1])
	}
	for _, tc := range []struct {
		steps  int
		method string
		nets   string
	}{{-1, MethodDM, NetsRandom}, {2, MethodGM, NetsRandom}, {2, MethodDM, NetsGlobal}} {
		tk := task(tc.steps, tc.method, tc.nets)
		if tc.nets == NetsGlobal {
			tk.DP = nil
		}
		if r := testClient(t).Handle(context.Background(), tk); r.Status != StatusFailed || !strings.Contains(r.Error, "image steps") {
			t.Fatalf("image steps %d with %s, nets %s: %+v", tc.steps, tc.method, tc.nets, r.Status)
		}
	}
}

// Project reaches the distiller (the set differs from the unprojected
// one's) and costs the same ε.
func TestPrivateProject(t *testing.T) {
	var xs [][]float32
	var eps []float64
	for _, k := range []int{0, 8} {
		c := testClient(t)
		r := c.Handle(context.Background(), &Task{Round: 1, Client: 4, Kind: KindDistill, Method: MethodDM, Nets: NetsRandom, Seed: 1, Model: "convnet-w4", Dataset: "mnist",
			IPC: 2, Iterations: 2, BatchReal: 4, DP: &DPTask{SampleRate: 0.5, Clip: 1, Noise: 1, Delta: 1e-5, Project: k}})
		if r.Status != StatusOK {
			t.Fatalf("projection %d: %s", k, r.Error)
		}
		e, _ := c.Spent(1e-5)
		xs, eps = append(xs, r.Synthetic.X.Data), append(eps, e)
	}
	if slices.Equal(xs[0], xs[1]) {
		t.Fatal("the projection did not reach the distiller")
	}
	if eps[0] != eps[1] {
		t.Fatalf("ε spent: %g without the projection, %g with it; want the same", eps[0], eps[1])
	}
}
