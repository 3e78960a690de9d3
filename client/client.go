package client

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/distill"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/privacy"
	"github.com/fedsim/fedsim/tensor"
)

// Client is one simulated participant: an id and its partition of the
// training data.
type Client struct {
	ID   int
	Data *data.Dataset

	// privacy composes the client's private tasks (the one thing a client
	// keeps between tasks: its spent budget); privateSteps counts the
	// steps it holds.
	privacy      *privacy.Accountant
	privateSteps int
	// privateReleases counts the class-mean releases (init mean) charged.
	privateReleases int
}

// New returns client id holding data (which it does not modify).
func New(id int, d *data.Dataset) (*Client, error) {
	if d == nil || d.Len() == 0 {
		return nil, fmt.Errorf("client %d: no data", id)
	}
	return &Client{ID: id, Data: d, privacy: privacy.NewAccountant(privacy.Config{})}, nil
}

// Random streams of a task (with Task.Seed).
const (
	streamModel = 1
	streamInit  = 2
	streamGroup = 100
	streamIter  = 1 << 32
)

// Handle runs task t and returns the client's answer. It never returns an
// error: a task that cannot be done gives a Result with Status failed and
// the reason, which the server counts and reports.
func (c *Client) Handle(ctx context.Context, t *Task) *Result {
	if t == nil {
		return Failed(nil, errors.New("nil task"))
	}
	if t.Client != c.ID {
		return Failed(t, fmt.Errorf("client %d: task is addressed to client %d", c.ID, t.Client))
	}
	var (
		res *Result
		err error
	)
	switch t.Kind {
	case KindTrain:
		res, err = c.train(ctx, t)
	case KindDistill:
		res, err = c.distill(ctx, t)
	default:
		err = fmt.Errorf("unknown task kind %q (want %s or %s)", t.Kind, KindTrain, KindDistill)
	}
	if err != nil {
		return Failed(t, fmt.Errorf("client %d round %d: %w", c.ID, t.Round, err))
	}
	res.Round, res.Client, res.Status, res.NumSamples = t.Round, c.ID, StatusOK, c.Data.Len()
	return res
}

func (c *Client) newModel(t *Task) (nn.Model[float32], error) {
	m, err := nn.New[float32](t.Model, c.Data.ImageShape(), c.Data.Classes, tensor.NewRNG(t.Seed, streamModel))
	if err != nil {
		return nil, err
	}
	if t.Global != nil {
		if err := t.Global.Load(m); err != nil {
			return nil, fmt.Errorf("global weights: %w", err)
		}
	}
	return m, nil
}

// train runs t.Epochs of local SGD (or Adam) from the global weights;
// with Mu > 0 the loss has FedProx's proximal term μ/2‖w − w_global‖².
func (c *Client) train(ctx context.Context, t *Task) (*Result, error) {
	if t.Global == nil {
		return nil, errors.New("a training task needs the global weights")
	}
	if t.Epochs < 1 || t.BatchSize < 1 || !(t.LR > 0) || t.Mu < 0 {
		return nil, fmt.Errorf("bad training settings: epochs %d, batch %d, lr %g, mu %g", t.Epochs, t.BatchSize, t.LR, t.Mu)
	}
	var opt nn.Optimizer[float32]
	switch t.Optimizer {
	case "", OptimSGD:
		opt = &nn.SGD[float32]{LR: t.LR, Momentum: t.Momentum}
	case OptimAdam:
		opt = nn.NewAdam[float32](t.LR)
	default:
		return nil, fmt.Errorf("bad training settings: optimizer %q (want %s or %s)", t.Optimizer, OptimSGD, OptimAdam)
	}
	m, err := c.newModel(t)
	if err != nil {
		return nil, err
	}
	if t.Mu > 0 {
		opt = &proxOptimizer{Optimizer: opt, mu: float32(t.Mu), anchor: t.Global.Tensors[:len(m.Params())]}
	}
	var loss float64
	tc := nn.TrainConfig[float32]{Epochs: t.Epochs, BatchSize: t.BatchSize, Optimizer: opt, Seed: t.Seed, Context: ctx}
	if err := nn.Train(m, c.Data, tc, func(p nn.Progress) { loss = p.EpochLoss }); err != nil {
		return nil, err
	}
	return &Result{Loss: loss, Weights: WeightsOf(m)}, nil
}

// proxOptimizer adds FedProx's proximal gradient μ(w − anchor) before the
// wrapped optimizer's step.
type proxOptimizer struct {
	nn.Optimizer[float32]
	mu     float32
	anchor []*tensor.Tensor[float32]
}

func (o *proxOptimizer) Step(params, grads []*tensor.Tensor[float32]) error {
	if len(params) != len(o.anchor) {
		return fmt.Errorf("fedprox: %d parameters but %d anchors", len(params), len(o.anchor))
	}
	for i, p := range params {
		g, a := grads[i].Data, o.anchor[i].Data
		for j, w := range p.Data {
			g[j] += o.mu * (w - a[j])
		}
	}
	return o.Optimizer.Step(params, grads)
}

// distill condenses the client's data into at most IPC images per class it
// holds (a class with fewer samples gets as many images as samples).
func (c *Client) distill(ctx context.Context, t *Task) (*Result, error) {
	if err := CheckMethod(t.Method); err != nil {
		return nil, err
	}
	own := t.Method == MethodDM || t.Method == MethodGM
	if !own && (t.DP != nil || t.Nets == NetsGlobal) {
		return nil, fmt.Errorf("distillation method %s runs as package distill defines it: differential privacy and matching around the global model are for %s and %s", t.Method, MethodDM, MethodGM)
	}
	if t.IPC < 1 || t.Iterations < 0 || t.BatchReal < 0 || t.LRImg < 0 || t.Perturb < 0 {
		return nil, fmt.Errorf("bad distillation settings: ipc %d, iterations %d, real batch %d, image lr %g, perturbation %g",
			t.IPC, t.Iterations, t.BatchReal, t.LRImg, t.Perturb)
	}
	if t.ImageSteps < 0 || (t.ImageSteps > 1 && (t.Method != MethodDM || t.Nets == NetsGlobal)) {
		return nil, fmt.Errorf("image steps %d: want 0 or more, and more than 1 only for one-shot %s with fresh networks (nets %s), not %s with nets %q", t.ImageSteps, MethodDM, NetsRandom, t.Method, t.Nets)
	}
	init, err := t.initOf()
	if err != nil {
		return nil, err
	}
	if init == InitMean && (t.Method == MethodGM || t.Nets == NetsGlobal) {
		return nil, fmt.Errorf("init %s is for one-shot dm with fresh networks (nets %s), not %s with nets %q: use %s or %s", InitMean, NetsRandom, t.Method, t.Nets, InitReal, InitNoise)
	}
	hist := c.Data.Histogram()
	ipc := make([]int, len(hist)) // images per class
	held := 0
	for k, n := range hist {
		ipc[k] = min(n, t.IPC)
		if t.DP != nil && n < t.DP.MinClass {
			ipc[k] = 0
		}
		if ipc[k] > 0 {
			held++
		}
	}
	if held == 0 && t.DP != nil && t.DP.MinClass > 0 {
		return nil, fmt.Errorf("private task: no class has the %d real examples min_class asks (largest: %d): nothing to distill", t.DP.MinClass, slices.Max(hist))
	}
	if err := c.spendPrivacy(t); err != nil {
		return nil, err
	}
	var (
		perClass [][]*tensor.Tensor[float32]
		loss     float64
	)
	switch t.Nets {
	case NetsRandom, "":
		if t.Global != nil {
			return nil, errors.New("one-shot distillation with random networks does not take global weights")
		}
		switch t.Method {
		case MethodDM:
			perClass, loss, err = c.distillRandom(ctx, t, ipc, init)
		case MethodGM:
			// Gradient matching needs a classifier over all the classes
			// (a relabelled one-class problem has zero gradients), so it
			// runs the matching loop with fresh networks.
			perClass, loss, err = c.distillMatch(ctx, t, ipc, init)
		default:
			perClass, loss, err = c.distillJoint(ctx, t, init)
		}
	case NetsGlobal:
		if t.Global == nil {
			return nil, errors.New("distillation around the global model needs the global weights")
		}
		perClass, loss, err = c.distillMatch(ctx, t, ipc, init)
	default:
		err = fmt.Errorf("unknown matching networks %q (want %s or %s)", t.Nets, NetsRandom, NetsGlobal)
	}
	if err != nil {
		return nil, err
	}
	res := &Result{Loss: loss, Synthetic: assemble(perClass, hist, c.Data.ImageShape())}
	if t.DP != nil {
		if res.Epsilon, _, err = c.privacy.Spent(t.DP.Delta); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// assemble stacks the per-class images class-major.
func assemble(perClass [][]*tensor.Tensor[float32], hist []int, shape []int) *Synthetic {
	n := 0
	for _, imgs := range perClass {
		n += len(imgs)
	}
	sz := tensor.Size(shape)
	x := tensor.New[float32](append([]int{n}, shape...)...)
	y := make([]int, 0, n)
	i := 0
	for k, imgs := range perClass {
		for _, img := range imgs {
			copy(x.Data[i*sz:(i+1)*sz], img.Data)
			y = append(y, k)
			i++
		}
	}
	return &Synthetic{X: x, Y: y, Counts: slices.Clone(hist)}
}

// relabelled returns the client's examples of classes, relabelled 0..k−1
// in the order given (package distill wants every class present).
func (c *Client) relabelled(classes []int) *data.Dataset {
	byClass := c.Data.ClassIndices()
	var idx []int
	for _, k := range classes {
		idx = append(idx, byClass[k]...)
	}
	sort.Ints(idx)
	sub := c.Data.Subset(idx)
	remap := make([]int, c.Data.Classes)
	for j, k := range classes {
		remap[k] = j
	}
	for i, l := range sub.Y {
		sub.Y[i] = remap[l]
	}
	sub.Classes, sub.ClassNames = len(classes), nil
	return sub
}

// distillJoint runs a method of package distill, with its defaults, on the
// client's classes that have at least IPC images, relabelled 0..k−1, and
// returns its images by original class. Classes with fewer images are left
// out (their samples are not represented; Union weights only the classes a
// set holds), and a client with fewer than two such classes fails: most
// methods need a classifier over at least two classes. Factorized methods
// return their decoded images, which is what the client uploads and is
// charged for.
func (c *Client) distillJoint(ctx context.Context, t *Task, init string) ([][]*tensor.Tensor[float32], float64, error) {
	var classes []int
	for k, n := range c.Data.Histogram() {
		if n >= t.IPC {
			classes = append(classes, k)
		}
	}
	if len(classes) < 2 {
		return nil, 0, fmt.Errorf("%s distills classes jointly and needs two with at least %d images; this client has %d such classes (histogram %v): lower the IPC or use %s", t.Method, t.IPC, len(classes), c.Data.Histogram(), MethodDM)
	}
	cfg := distill.Config{Method: t.Method, IPC: t.IPC, Model: t.Model, BatchReal: t.BatchReal, LRImg: t.LRImg,
		Init: init, Seed: tensor.NewRNG(t.Seed, streamGroup).Uint64()}
	d, err := distill.New(cfg, t.Dataset)
	if err != nil {
		return nil, 0, err
	}
	if err := d.Init(ctx, c.relabelled(classes)); err != nil {
		return nil, 0, err
	}
	var loss float64
	if d.Iterative() {
		for it := range t.Iterations {
			if loss, err = d.Step(ctx, it); err != nil {
				return nil, 0, err
			}
		}
	}
	syn := d.Synthetic()
	if syn.YSoft != nil {
		return nil, 0, fmt.Errorf("%s produced soft labels, which a client cannot upload", t.Method)
	}
	out := make([][]*tensor.Tensor[float32], c.Data.Classes)
	sz := tensor.Size(syn.ImageShape())
	for i, l := range syn.Y {
		img := tensor.New[float32](syn.ImageShape()...)
		copy(img.Data, syn.X.Data[i*sz:(i+1)*sz])
		out[classes[l]] = append(out[classes[l]], img)
	}
	return out, loss, nil
}

// distillRandom runs distill's DM on the client's classes, relabelled
// 0..k−1 (distill wants every class present), once per distinct
// images-per-class value.
func (c *Client) distillRandom(ctx context.Context, t *Task, ipc []int, init string) ([][]*tensor.Tensor[float32], float64, error) {
	groups := map[int][]int{} // ipc → classes
	for k, n := range ipc {
		if n > 0 {
			groups[n] = append(groups[n], k)
		}
	}
	sizes := make([]int, 0, len(groups))
	for g := range groups {
		sizes = append(sizes, g)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(sizes)))
	out := make([][]*tensor.Tensor[float32], len(ipc))
	var lossSum float64
	var lossN int
	for gi, g := range sizes {
		classes := groups[g]
		sub := c.relabelled(classes)
		cfg := distill.Config{Method: distill.MethodDM, IPC: g, Model: t.Model, BatchReal: t.BatchReal, LRImg: t.LRImg,
			ImageSteps: t.ImageSteps, Init: init, Seed: tensor.NewRNG(t.Seed, streamGroup+uint64(gi)).Uint64(), DP: t.DP.distillConfig()}
		d, err := distill.New(cfg, t.Dataset)
		if err != nil {
			return nil, 0, err
		}
		if err := d.Init(ctx, sub); err != nil {
			return nil, 0, err
		}
		for it := range t.Iterations {
			l, err := d.Step(ctx, it)
			if err != nil {
				return nil, 0, err
			}
			if it == t.Iterations-1 {
				lossSum += l * float64(len(classes))
				lossN += len(classes)
			}
		}
		syn := d.Synthetic()
		sz := tensor.Size(syn.ImageShape())
		for i, l := range syn.Y {
			k := classes[l]
			img := tensor.New[float32](syn.ImageShape()...)
			copy(img.Data, syn.X.Data[i*sz:(i+1)*sz])
			out[k] = append(out[k], img)
		}
	}
	if lossN > 0 {
		lossSum /= float64(lossN)
	}
	return out, lossSum, nil
}

// distillMatch is the matching loop built from distill's DMLoss and
// GradMatchLoss: every iteration one network — the global model plus a
// fresh random perturbation (NetsGlobal, FedDM-style) or a freshly
// initialised one (NetsRandom) — one loss per class the client holds with
// Siamese DSA augmentation, and one step of SGD with momentum 0.5 on the
// images (gradient matching: one outer step per network, no inner loop).
func (c *Client) distillMatch(ctx context.Context, t *Task, ipc []int, init string) ([][]*tensor.Tensor[float32], float64, error) {
	global, err := c.newModel(t)
	if err != nil {
		return nil, 0, err
	}
	if _, ok := global.(nn.Embedder[float32]); !ok && t.Method == MethodDM {
		return nil, 0, fmt.Errorf("dm needs a model that exposes its features; %q does not", t.Model)
	}
	shape := c.Data.ImageShape()
	byClass := c.Data.ClassIndices()
	rng := tensor.NewRNG(t.Seed, streamInit)
	syn := make([]*tensor.Tensor[float32], len(ipc))
	vel := make([]*tensor.Tensor[float32], len(ipc))
	grad := make([]*tensor.Tensor[float32], len(ipc))
	for k, n := range ipc {
		if n == 0 {
			continue
		}
		perm := rng.Perm(len(byClass[k]))
		pick := make([]int, n)
		for i := range pick {
			pick[i] = byClass[k][perm[i]]
		}
		if init == InitNoise {
			syn[k] = noiseImages(n, shape, rng)
		} else {
			syn[k], _ = c.Data.Batch(pick)
		}
		vel[k] = tensor.New[float32](syn[k].Shape...)
		grad[k] = tensor.New[float32](syn[k].Shape...)
	}
	strategy, err := data.ParseDSAStrategy(distill.DefaultDSAStrategy(t.Dataset))
	if err != nil {
		return nil, 0, err
	}
	var shared *data.DSA
	if len(strategy) > 0 {
		p := data.DefaultDSAParams()
		p.Shared = true
		shared = &data.DSA{Strategy: strategy, Params: p}
	}
	lr := t.LRImg
	if lr == 0 {
		lr = 1.0
		if t.Method == MethodGM {
			lr = 0.1
		}
	}
	batch := t.BatchReal
	if batch == 0 {
		batch = 256
	}
	const momentum = 0.5
	var loss float64
	for it := range t.Iterations {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		rng := tensor.NewRNG(t.Seed, streamIter+uint64(it))
		net := global
		if t.Nets == NetsGlobal {
			net, err = perturbed(global, t, shape, c.Data.Classes, rng)
		} else {
			net, err = nn.New[float32](t.Model, shape, c.Data.Classes, rng)
		}
		if err != nil {
			return nil, 0, err
		}
		var total float64
		var classes int
		for k, n := range ipc {
			if n == 0 {
				continue
			}
			idx := byClass[k]
			perm := rng.Perm(len(idx))
			pick := make([]int, min(batch, len(idx)))
			for i := range pick {
				pick[i] = idx[perm[i]]
			}
			if t.DP != nil {
				pick = distill.PoissonSample(idx, t.DP.SampleRate, rng)
			}
			xr, yr := c.Data.Batch(pick)
			var aug *data.Augmentation
			if shared != nil {
				aug = shared.Sample(rng, max(len(pick), n), shape[1], shape[2])
			}
			var l float64
			if t.DP != nil {
				l, err = dpClassLoss(t, net, xr, yr, len(idx), syn[k], k, aug, rng, grad[k])
			} else if t.Method == MethodDM {
				l, err = distill.DMLoss(net.(nn.Embedder[float32]), xr, syn[k], aug, grad[k])
			} else {
				synY := make([]int, n)
				for i := range synY {
					synY[i] = k
				}
				l, err = distill.GradMatchLoss(net, xr, yr, syn[k], synY, aug, distill.MatchConfig{}, grad[k])
			}
			if err != nil {
				return nil, 0, fmt.Errorf("iteration %d class %d: %w", it, k, err)
			}
			total += l
			classes++
		}
		total /= float64(max(classes, 1))
		if math.IsNaN(total) || math.IsInf(total, 0) {
			return nil, 0, fmt.Errorf("distillation diverged at iteration %d (loss %v); lower the image learning rate (now %g)", it, total, lr)
		}
		for k := range ipc {
			if syn[k] == nil {
				continue
			}
			x, v, g := syn[k].Data, vel[k].Data, grad[k].Data
			for j := range x {
				v[j] = momentum*v[j] + g[j]
				x[j] -= float32(lr) * v[j]
			}
			if j := tensor.FirstNonFinite(x); j >= 0 {
				return nil, 0, fmt.Errorf("distillation diverged at iteration %d: an image value became %v", it, x[j])
			}
		}
		loss = total
	}
	out := make([][]*tensor.Tensor[float32], len(ipc))
	sz := tensor.Size(shape)
	for k, s := range syn {
		if s == nil {
			continue
		}
		for i := range s.Shape[0] {
			img := tensor.New[float32](shape...)
			copy(img.Data, s.Data[i*sz:(i+1)*sz])
			out[k] = append(out[k], img)
		}
	}
	return out, loss, nil
}

// perturbed returns a copy of global whose every parameter tensor p got
// Gaussian noise of standard deviation Perturb·RMS(p).
func perturbed(global nn.Model[float32], t *Task, shape []int, classes int, rng *tensor.RNG) (nn.Model[float32], error) {
	m, err := nn.New[float32](t.Model, shape, classes, tensor.NewRNG(0, 0))
	if err != nil {
		return nil, err
	}
	if err := WeightsOf(global).Load(m); err != nil {
		return nil, err
	}
	if tm, ok := m.(nn.Trainable); ok {
		tm.SetTraining(true)
	}
	if t.Perturb == 0 {
		return m, nil
	}
	for _, p := range m.Params() {
		var ss float64
		for _, v := range p.Data {
			ss += float64(v) * float64(v)
		}
		sd := t.Perturb * math.Sqrt(ss/float64(max(len(p.Data), 1)))
		for j := range p.Data {
			p.Data[j] += float32(sd * rng.NormFloat64())
		}
	}
	return m, nil
}
