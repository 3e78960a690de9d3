package server

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/fedsim/fedsim/client"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/distill"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// DynaFed is server-side trajectory matching (Pi et al., "DynaFed:
// Tackling client data heterogeneity with global dynamics", CVPR 2023;
// survey §7.4), a Refiner beside any aggregation strategy (FedAvg in the
// paper):
//
//  1. it records the global models θ_0 (before round 1) … θ_L (after round
//     L = Record) — the global trajectory, which reflects every client's
//     data without the server seeing any of it;
//  2. after round L it distills a synthetic set from that trajectory by
//     trajectory matching (MTT, survey eq. 30): a student starts at θ_t
//     (t < L − Span + 1 drawn at random), takes SynSteps SGD steps with the
//     learnable step size α on the synthetic images (per-sample DSA), and
//     the images and α descend ‖θ_N − θ_{t+Span}‖² / ‖θ_t − θ_{t+Span}‖²
//     (with TargetAverage, θ_{t+Span} is replaced by a mean of models
//     drawn from θ_{t+1} … θ_{t+Span});
//     the images start as standard normal noise in the normalized space,
//     IPC per class;
//  3. from round L on, after every aggregation it fine-tunes the global
//     model on that set for about Steps SGD steps.
//
// The trajectory is dropped once the set is made; both live in State, so
// checkpoints carry them.
type DynaFed struct {
	// Record is L, the number of rounds whose global models form the
	// trajectory; Span is how many rounds ahead the student's target lies.
	Record, Span int
	// TargetAverage, when ≥ 1, makes each iteration's target the mean of
	// k global models, k drawn uniformly from TargetAverage … Span and the
	// models drawn with replacement from the Span rounds after the start,
	// as the authors' scripts do (--weight_averaging --least_ave_num 2
	// with expert_epochs 3): averaging smooths the round-to-round swings
	// of FedAvg under strong heterogeneity. 0 matches θ_{t+Span} itself.
	TargetAverage int
	// SynSteps is the student's number of steps per matching iteration;
	// BatchSyn its batch size (0: the whole set).
	SynSteps, BatchSyn int
	// IPC is the number of synthetic images per class; Iterations the
	// number of matching iterations.
	IPC, Iterations int
	// LRImg is the images' learning rate, LRInit the student's initial
	// step size α, LRLR α's learning rate; Momentum is the momentum of all
	// of them (MTT: 0.5).
	LRImg, LRInit, LRLR, Momentum float64
	// SoftLabels makes the labels learnable, as the DynaFed authors' code
	// does: each image carries label logits that descend the matching
	// loss beside the images (learning rate LRLabel), and the fine-tuning
	// trains on their softmax. The logits start at ln(9(K−1)) for the
	// image's class and 0 elsewhere, a distribution with 0.9 on the class.
	SoftLabels bool
	LRLabel    float64
	// ImageAdam updates the images (and learned labels) with Adam at LRImg
	// (LRLabel), PyTorch's other defaults, instead of SGD with Momentum, as
	// the authors' scripts do (--img_optim adam, lr_img 0.05). The step
	// size α keeps SGD with Momentum.
	ImageAdam bool
	// Steps, BatchSize, LR, Momentum (0.9) and WeightDecay (5e-4)
	// configure the fine-tuning after every aggregation.
	Steps, BatchSize int
	LR               float64
	// DSAStrategy is the augmentation of distillation and fine-tuning
	// ("none": off).
	DSAStrategy string
	// Model, ImageShape and Classes describe the global model (the student
	// is one of those).
	Model      string
	ImageShape []int
	Classes    int
	// Seed makes the distillation and fine-tuning reproducible.
	Seed uint64

	// SaveProgress, if set, receives the distillation's progress after
	// every ProgressEvery (≥ 1) iterations but the last (the driver writes
	// it to disk: a distillation of thousands of iterations takes hours,
	// and the round's checkpoint comes only after it). The progress holds
	// the live tensors; they are valid during the call only.
	SaveProgress  func(*DistillProgress) error
	ProgressEvery int
	// LoadProgress, if set, is asked once, when the distillation starts,
	// for saved progress with the distillation's key to continue from; it
	// returns nil to start afresh (no progress, or progress of another
	// distillation). Progress that carries the key but does not fit the
	// distillation is refused with an error wrapping ErrBadProgress.
	LoadProgress func(key string) (*DistillProgress, error)

	// losses records the matching loss of every iteration (for tests).
	losses []float64
}

var _ Refiner = &DynaFed{}

// DistillProgress is an unfinished DynaFed distillation between two
// iterations. Every random draw of an iteration derives from (Seed,
// iteration), so this is all a resumed distillation needs to go on
// exactly as an uninterrupted one would.
type DistillProgress struct {
	// Key identifies the distillation: a hash of the settings that shape
	// it and of the trajectory (DynaFed.progressKey). Progress with
	// another key belongs to another distillation.
	Key string
	// Done is the number of iterations done.
	Done int
	// X holds the images, Velocity their momentum (SGD) or nil (Adam).
	X, Velocity *tensor.Tensor[float32]
	// Logits and LogitVelocity are the learned labels and their momentum
	// (nil without soft labels, LogitVelocity nil with Adam).
	Logits, LogitVelocity *tensor.Tensor[float32]
	// ImageAdam and LabelAdam are the optimizers' states (zero without
	// ImageAdam).
	ImageAdam, LabelAdam nn.AdamState[float32]
	// LR is the student's step size α and LRVelocity its momentum.
	LR, LRVelocity float64
}

// ErrBadProgress is wrapped by the errors that refuse saved progress
// which carries the distillation's key but not a state it could be in.
var ErrBadProgress = errors.New("server: unusable DynaFed progress")

// progressKey returns the key of the distillation of trajectory traj
// (θ_0 … θ_Record): a SHA-256 of every setting the distillation depends
// on but the number of iterations, and of every value of the trajectory.
func (d *DynaFed) progressKey(traj []*client.Weights) string {
	h := sha256.New()
	settings := []any{d.Record, d.Span, d.TargetAverage, d.SynSteps, d.BatchSyn, d.IPC, d.LRImg, d.LRInit, d.LRLR, d.Momentum,
		d.SoftLabels, d.LRLabel, d.ImageAdam, d.DSAStrategy, d.Model, d.ImageShape, d.Classes, d.Seed}
	fmt.Fprintf(h, "dynafed %v\n", settings)
	var b []byte
	for k, w := range traj {
		for i, t := range w.Tensors {
			fmt.Fprintf(h, "%d %d %v\n", k, i, t.Shape)
			b = b[:0]
			for _, v := range t.Data {
				b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
			}
			h.Write(b)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Validate checks the settings.
func (d *DynaFed) Validate() error {
	var errs []error
	if d.Span < 1 || d.Record < d.Span {
		errs = append(errs, fmt.Errorf("server: DynaFed records %d rounds and matches %d rounds ahead: want 1 ≤ span ≤ recorded rounds", d.Record, d.Span))
	}
	if d.TargetAverage < 0 || d.TargetAverage > d.Span {
		errs = append(errs, fmt.Errorf("server: DynaFed averages targets of at least %d models: want 0 (off) to span %d", d.TargetAverage, d.Span))
	}
	if d.SynSteps < 1 || d.IPC < 1 || d.Iterations < 0 || d.BatchSyn < 0 {
		errs = append(errs, fmt.Errorf("server: DynaFed student steps %d, IPC %d, iterations %d, synthetic batch %d: want ≥ 1, ≥ 1, ≥ 0, ≥ 0", d.SynSteps, d.IPC, d.Iterations, d.BatchSyn))
	}
	if d.SaveProgress != nil && d.ProgressEvery < 1 {
		errs = append(errs, fmt.Errorf("server: DynaFed saves its progress every %d iterations: want ≥ 1", d.ProgressEvery))
	}
	for _, v := range []float64{d.LRImg, d.LRInit, d.LR} {
		if !(v > 0) || math.IsInf(v, 0) {
			errs = append(errs, fmt.Errorf("server: DynaFed learning rates (images %g, initial step size %g, fine-tuning %g) must be positive and finite", d.LRImg, d.LRInit, d.LR))
			break
		}
	}
	if d.SoftLabels && (!(d.LRLabel > 0) || math.IsInf(d.LRLabel, 0)) {
		errs = append(errs, fmt.Errorf("server: DynaFed soft-label learning rate %g: want a positive finite number", d.LRLabel))
	}
	if !(d.LRLR >= 0) || !(d.Momentum >= 0 && d.Momentum < 1) {
		errs = append(errs, fmt.Errorf("server: DynaFed step-size learning rate %g and momentum %g: want ≥ 0 and in [0, 1)", d.LRLR, d.Momentum))
	}
	if d.Steps < 0 || d.BatchSize < 1 {
		errs = append(errs, fmt.Errorf("server: DynaFed fine-tuning steps %d and batch %d: want ≥ 0 and ≥ 1", d.Steps, d.BatchSize))
	}
	if _, err := data.ParseDSAStrategy(d.DSAStrategy); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Refine implements Refiner.
func (d *DynaFed) Refine(ctx context.Context, round int, global nn.Model[float32], st *State) error {
	if round <= d.Record && st.ServerSet == nil {
		if len(st.Trajectory) != round {
			return fmt.Errorf("server: DynaFed holds %d trajectory points at round %d (want %d): the trajectory was not recorded from the start", len(st.Trajectory), round, round)
		}
		st.Trajectory = append(st.Trajectory, client.WeightsOf(global))
		if round < d.Record {
			return nil
		}
		set, err := d.distill(ctx, st.Trajectory)
		if err != nil {
			return err
		}
		st.ServerSet, st.Trajectory = set, nil
	}
	if st.ServerSet == nil || round == 0 || d.Steps == 0 {
		return nil
	}
	fit := setTraining{Steps: d.Steps, BatchSize: d.BatchSize, LR: d.LR, Momentum: 0.9, WeightDecay: 5e-4, DSAStrategy: d.DSAStrategy,
		SoftTargets: st.ServerSet.Soft}
	set := &nn.TensorDataset[float32]{X: st.ServerSet.X, Y: st.ServerSet.Y}
	if _, err := fit.train(ctx, global, set, tensor.NewRNG(d.Seed, streamDynaFed+uint64(round))); err != nil {
		return fmt.Errorf("server: DynaFed fine-tuning: %w", err)
	}
	return nil
}

// Random streams of DynaFed (with Seed): streamDynaFed+round for the
// fine-tuning, streamDynaFedIter+it for matching iteration it.
const (
	streamDynaFed     = 4 << 40
	streamDynaFedInit = 5 << 40
	streamDynaFedIter = 6 << 40
	// streamDynaFedAvg+it draws iteration it's averaged target, apart from
	// the iteration's other draws so that TargetAverage changes only the
	// targets.
	streamDynaFedAvg = 7 << 40
)

// target returns the matching target of an iteration that starts at
// trajectory point start: θ_{start+Span}, or with TargetAverage the mean
// (WeightedAverage, equal weights) of k models drawn with replacement from
// θ_{start+1} … θ_{start+Span}. Only the first nParams tensors (the
// model's parameters) are returned; they are the caller's.
func (d *DynaFed) target(traj []*client.Weights, nParams, start int, rng *tensor.RNG) ([]*tensor.Tensor[float32], error) {
	if d.TargetAverage == 0 {
		return traj[start+d.Span].Clone().Tensors[:nParams], nil
	}
	k := d.TargetAverage + rng.IntN(d.Span-d.TargetAverage+1)
	picks, coef := make([]*client.Weights, k), make([]float64, k)
	for i := range picks {
		picks[i], coef[i] = traj[start+1+rng.IntN(d.Span)], 1
	}
	avg, err := WeightedAverage(picks, coef)
	if err != nil {
		return nil, err
	}
	return avg.Tensors[:nParams], nil
}

// restore loads saved progress p into the distillation's state (x, the
// momenta or the optimizers, the logits), after checking that p belongs to
// the distillation with key and fits its shapes.
func (d *DynaFed) restore(p *DistillProgress, key string, x, vel, logits, logitVel *tensor.Tensor[float32], imgAdam, labelAdam *nn.Adam[float32]) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w after %d iterations: "+format, append([]any{ErrBadProgress, p.Done}, args...)...)
	}
	if p.Key != key {
		return bad("it was saved by another distillation (key %.12s…, this one's %.12s…)", p.Key, key)
	}
	if p.Done < 0 || p.Done > d.Iterations {
		return bad("want 0 to %d iterations done", d.Iterations)
	}
	if !(p.LR > 0) || math.IsInf(p.LR, 0) || math.IsNaN(p.LRVelocity) || math.IsInf(p.LRVelocity, 0) {
		return bad("step size %v with momentum %v: want a finite step size > 0", p.LR, p.LRVelocity)
	}
	load := func(name string, dst, src *tensor.Tensor[float32], needed bool) error {
		switch {
		case src == nil && !needed:
			return nil
		case src == nil:
			return bad("%s missing", name)
		case dst == nil:
			return bad("%s present, but this distillation has none", name)
		case !slices.Equal(src.Shape, dst.Shape) || len(src.Data) != len(dst.Data):
			return bad("%s has shape %v, want %v", name, src.Shape, dst.Shape)
		}
		if i := tensor.FirstNonFinite(src.Data); i >= 0 {
			return bad("%s has a non-finite value at %d", name, i)
		}
		copy(dst.Data, src.Data)
		return nil
	}
	sgd := imgAdam == nil
	if err := errors.Join(load("images", x, p.X, true), load("image momentum", vel, p.Velocity, sgd),
		load("label logits", logits, p.Logits, logits != nil), load("label momentum", logitVel, p.LogitVelocity, sgd && logits != nil)); err != nil {
		return err
	}
	if !sgd && (p.Velocity != nil || p.LogitVelocity != nil) {
		return bad("it carries SGD momenta, but the images are stepped by Adam")
	}
	if sgd && (p.ImageAdam.Steps > 0 || p.LabelAdam.Steps > 0) {
		return bad("it carries Adam states, but the images are stepped by SGD")
	}
	if sgd {
		return nil
	}
	if logits == nil && p.LabelAdam.Steps > 0 {
		return bad("it carries the labels' Adam, but this distillation has no learned labels")
	}
	// One Adam step per iteration, on one tensor: Adam would quietly
	// restart moments of the wrong size, so they are checked here.
	setAdam := func(name string, o *nn.Adam[float32], s nn.AdamState[float32], like *tensor.Tensor[float32]) error {
		if s.Steps != p.Done || (p.Done > 0 && (len(s.M) != 1 || s.M[0] == nil || !slices.Equal(s.M[0].Shape, like.Shape))) {
			return bad("%s Adam has %d steps over %d tensors, want %d over one of shape %v", name, s.Steps, len(s.M), p.Done, like.Shape)
		}
		if err := o.SetState(s); err != nil {
			return bad("%s Adam: %v", name, err)
		}
		return nil
	}
	if err := setAdam("the images'", imgAdam, p.ImageAdam, x); err != nil {
		return err
	}
	if logits != nil {
		return setAdam("the labels'", labelAdam, p.LabelAdam, logits)
	}
	return nil
}

// distill makes the server set from the trajectory θ_0 … θ_L.
func (d *DynaFed) distill(ctx context.Context, traj []*client.Weights) (*client.Synthetic, error) {
	student, err := nn.New[float32](d.Model, d.ImageShape, d.Classes, tensor.NewRNG(d.Seed, streamDynaFedInit))
	if err != nil {
		return nil, fmt.Errorf("server: DynaFed student: %w", err)
	}
	if tm, ok := student.(nn.Trainable); ok {
		tm.SetTraining(true)
	}
	nParams := len(student.Params())
	params := func(k int) []*tensor.Tensor[float32] {
		ps := make([]*tensor.Tensor[float32], nParams)
		for i := range ps {
			ps[i] = traj[k].Tensors[i].Clone()
		}
		return ps
	}
	c, h, w := d.ImageShape[0], d.ImageShape[1], d.ImageShape[2]
	n := d.Classes * d.IPC
	x := tensor.New[float32](n, c, h, w)
	tensor.FillNormal(tensor.NewRNG(d.Seed, streamDynaFedInit+1), x, 0, 1)
	y := make([]int, n)
	for i := range y {
		y[i] = i / d.IPC
	}
	var each *data.DSA
	if strategy, err := data.ParseDSAStrategy(d.DSAStrategy); err != nil {
		return nil, err
	} else if len(strategy) > 0 {
		each = &data.DSA{Strategy: strategy, Params: data.DefaultDSAParams()}
	}
	var logits, logitVel *tensor.Tensor[float32]
	if d.SoftLabels {
		logits, logitVel = tensor.New[float32](n, d.Classes), tensor.New[float32](n, d.Classes)
		on := float32(math.Log(9 * float64(max(1, d.Classes-1))))
		for i, c := range y {
			logits.Data[i*d.Classes+c] = on
		}
	}
	vel := tensor.New[float32](x.Shape...)
	var imgAdam, labelAdam *nn.Adam[float32]
	if d.ImageAdam {
		imgAdam, labelAdam = nn.NewAdam[float32](d.LRImg), nn.NewAdam[float32](d.LRLabel)
	}
	lr, lrVel := d.LRInit, 0.0
	first := 0
	key := ""
	if d.LoadProgress != nil || d.SaveProgress != nil {
		key = d.progressKey(traj)
	}
	if d.LoadProgress != nil {
		p, err := d.LoadProgress(key)
		if err != nil {
			return nil, fmt.Errorf("server: DynaFed distillation: %w", err)
		}
		if p != nil {
			if err := d.restore(p, key, x, vel, logits, logitVel, imgAdam, labelAdam); err != nil {
				return nil, err
			}
			first, lr, lrVel = p.Done, p.LR, p.LRVelocity
		}
	}
	mu := float32(d.Momentum)
	for it := first; it < d.Iterations; it++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("server: DynaFed distillation, iteration %d: %w", it, err)
		}
		rng := tensor.NewRNG(d.Seed, streamDynaFedIter+uint64(it))
		start := rng.IntN(len(traj) - d.Span)
		theta0 := params(start)
		target, err := d.target(traj, nParams, start, tensor.NewRNG(d.Seed, streamDynaFedAvg+uint64(it)))
		if err != nil {
			return nil, fmt.Errorf("server: DynaFed distillation, iteration %d: %w", it, err)
		}
		task := &distill.TrajectoryTask[float32]{Model: student, Start: theta0, Target: target, Denom: distill.ParamDistance(theta0, target), Y: y, SoftY: logits}
		task.Batches, task.Augs = distill.StudentBatches(rng, x.Shape, d.BatchSyn, d.SynSteps, each)
		g, err := distill.UnrolledMatchGrad(task, x, lr)
		if err != nil {
			return nil, fmt.Errorf("server: DynaFed distillation, iteration %d (start round %d): %w", it, start, err)
		}
		if math.IsNaN(g.Loss) || math.IsInf(g.Loss, 0) || math.IsNaN(g.LR) || math.IsInf(g.LR, 0) || tensor.FirstNonFinite(g.X.Data) >= 0 ||
			(g.SoftY != nil && tensor.FirstNonFinite(g.SoftY.Data) >= 0) {
			return nil, fmt.Errorf("server: DynaFed distillation diverged at iteration %d (loss %v): lower the image learning rate %g or the initial step size %g", it, g.Loss, d.LRImg, d.LRInit)
		}
		d.losses = append(d.losses, g.Loss)
		if imgAdam != nil {
			if err := imgAdam.Step([]*tensor.Tensor[float32]{x}, []*tensor.Tensor[float32]{g.X}); err != nil {
				return nil, fmt.Errorf("server: DynaFed distillation, iteration %d: %w", it, err)
			}
			if logits != nil {
				if err := labelAdam.Step([]*tensor.Tensor[float32]{logits}, []*tensor.Tensor[float32]{g.SoftY}); err != nil {
					return nil, fmt.Errorf("server: DynaFed distillation, iteration %d: %w", it, err)
				}
			}
		} else {
			for k, v := range g.X.Data {
				vel.Data[k] = mu*vel.Data[k] + v
				x.Data[k] -= float32(d.LRImg) * vel.Data[k]
			}
			if logits != nil {
				for k, v := range g.SoftY.Data {
					logitVel.Data[k] = mu*logitVel.Data[k] + v
					logits.Data[k] -= float32(d.LRLabel) * logitVel.Data[k]
				}
			}
		}
		lrVel = d.Momentum*lrVel + g.LR
		// α stays positive: a step size that crosses zero would make the
		// student ascend the loss.
		lr = max(lr-d.LRLR*lrVel, 1e-6)
		if d.SaveProgress != nil && d.ProgressEvery > 0 && (it+1)%d.ProgressEvery == 0 && it+1 < d.Iterations {
			p := &DistillProgress{Key: key, Done: it + 1, X: x, Logits: logits, LR: lr, LRVelocity: lrVel}
			if imgAdam != nil {
				p.ImageAdam = imgAdam.State()
				if logits != nil {
					p.LabelAdam = labelAdam.State()
				}
			} else {
				p.Velocity, p.LogitVelocity = vel, logitVel
			}
			if err := d.SaveProgress(p); err != nil {
				return nil, fmt.Errorf("server: DynaFed distillation, saving the progress after iteration %d: %w", it+1, err)
			}
		}
	}
	counts := make([]int, d.Classes)
	for k := range counts {
		counts[k] = d.IPC // the set stands for every class equally
	}
	set := &client.Synthetic{X: x, Y: y, Counts: counts}
	if logits != nil {
		set.Soft = tensor.New[float32](n, d.Classes)
		tensor.Softmax(set.Soft, logits)
	}
	return set, nil
}
