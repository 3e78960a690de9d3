package distill

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// Distiller is one method's running state. A run is Init once, then
// Step(it) for it = 0, 1, …; between steps the state can be saved with
// Checkpoint and a new Distiller continued from it with Restore (after its
// own Init), giving the same result as an uninterrupted run. Coreset
// methods (random, herding, k-center) do all their work in Init and are not
// Iterative.
type Distiller interface {
	// Config returns the configuration, defaults filled in.
	Config() Config
	// Iterative reports whether Step refines the set.
	Iterative() bool
	// Init checks real against the configuration and builds the initial
	// synthetic set (for coresets, the final one). It fails before any
	// long work if the data cannot be used.
	Init(ctx context.Context, real *data.Dataset) error
	// Step runs iteration it and returns its loss (for DM the mean over
	// classes, for DC/DSA the mean over classes and outer steps, as the
	// reference reports). A non-finite loss leaves the set unchanged and
	// returns an error wrapping ErrDiverged.
	Step(ctx context.Context, it int) (float64, error)
	// Synthetic returns the current synthetic set. It is the distiller's
	// own: clone it to keep it across steps.
	Synthetic() *SyntheticSet
	// Checkpoint returns a copy of the state after next iterations.
	Checkpoint(next int) *Checkpoint
	// Restore replaces the state with c (which must come from the same
	// configuration).
	Restore(c *Checkpoint) error
}

// ErrDiverged is wrapped by Step's error when the loss or the images stop
// being finite.
var ErrDiverged = errors.New("distill: run diverged")

// New returns the distiller of cfg.Method for the data set named dataset
// (a name as for data.Load; it selects defaults such as the DSA strategy).
// cfg is completed with Defaults and validated.
func New(cfg Config, dataset string) (Distiller, error) {
	cfg = cfg.Defaults(dataset)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d := newPart2(cfg); d != nil {
		return d, nil
	}
	switch cfg.Method {
	case MethodRandom, MethodHerding, MethodKCenter:
		return &coreset{cfg: cfg}, nil
	case MethodDM:
		return &dm{imageState: imageState{cfg: cfg}}, nil
	case MethodMTT, MethodFTD, MethodTESLA:
		return &tm{imageState: imageState{cfg: cfg}}, nil
	case MethodCAFE:
		return newCAFE(cfg), nil
	default:
		return newGM(cfg, GMOptions{InnerReal: cfg.Match.InnerReal}), nil
	}
}

// Random streams of a run (with Config.Seed): stream streamInit draws the
// initial set, streamFeature the feature network, and iteration it uses
// stream streamIter+it, so every iteration's draws depend only on the seed
// and the iteration.
const (
	streamInit    = 1
	streamFeature = 2
	streamIter    = 1 << 32
	// streamProject+it draws iteration it's projection (DPConfig.Project).
	streamProject = 2 << 32
)

func iterRNG(seed uint64, it int) *tensor.RNG { return tensor.NewRNG(seed, streamIter+uint64(it)) }

// iterNet returns iteration it's random stream and the freshly initialised
// network of cfg.Model drawn first from it, in training mode (net.train()
// in the references), for methods that match on a new network every
// iteration.
func iterNet(cfg Config, real *data.Dataset, it int) (nn.Model[float32], *tensor.RNG, error) {
	rng := iterRNG(cfg.Seed, it)
	m, err := nn.New[float32](cfg.Model, real.ImageShape(), real.Classes, rng)
	if err != nil {
		return nil, nil, fmt.Errorf("distill: %w", err)
	}
	if t, ok := m.(nn.Trainable); ok {
		t.SetTraining(true)
	}
	return m, rng, nil
}

// imageState is what DM and DC/DSA share: the real data by class, the
// synthetic images and their SGD-with-momentum state.
type imageState struct {
	cfg      Config
	real     *data.Dataset
	byClass  [][]int
	syn      *SyntheticSet
	velocity *tensor.Tensor[float32]
	grad     *tensor.Tensor[float32]
	shared   *data.DSA // Siamese augmentation (one parameter set per batch); nil for none
}

func (s *imageState) Config() Config           { return s.cfg }
func (s *imageState) Iterative() bool          { return true }
func (s *imageState) Synthetic() *SyntheticSet { return s.syn }

func (s *imageState) init(real *data.Dataset) error {
	if err := s.cfg.checkData(real); err != nil {
		return err
	}
	s.real = real
	s.byClass = real.ClassIndices()
	rng := tensor.NewRNG(s.cfg.Seed, streamInit)
	switch s.cfg.Init {
	case InitReal:
		s.syn = randomReal(real, s.byClass, s.cfg.IPC, rng)
	case InitMean:
		s.syn = meanSet(real, s.byClass, s.cfg.IPC, s.cfg.DP, rng)
	default:
		s.syn = noiseSet(real, s.cfg.IPC, rng)
	}
	s.velocity = tensor.New[float32](s.syn.X.Shape...)
	s.grad = tensor.New[float32](s.syn.X.Shape...)
	strategy, err := data.ParseDSAStrategy(s.cfg.DSAStrategy)
	if err != nil {
		return err
	}
	if len(strategy) > 0 {
		p := data.DefaultDSAParams()
		p.Shared = true
		s.shared = &data.DSA{Strategy: strategy, Params: p}
	}
	return nil
}

// classImages returns the synthetic images of class c (a view).
func (s *imageState) classImages(c int) *tensor.Tensor[float32] {
	return classSlice(s.syn.X, c, s.cfg.IPC)
}

func classSlice[T tensor.Float](x *tensor.Tensor[T], c, ipc int) *tensor.Tensor[T] {
	sz := x.Shape[1] * x.Shape[2] * x.Shape[3]
	return &tensor.Tensor[T]{Shape: []int{ipc, x.Shape[1], x.Shape[2], x.Shape[3]}, Data: x.Data[c*ipc*sz : (c+1)*ipc*sz]}
}

// realBatch draws up to BatchReal real images of class c without
// replacement (the reference's get_images).
func (s *imageState) realBatch(c int, rng *tensor.RNG) (*tensor.Tensor[float32], []int) {
	idx := s.byClass[c]
	perm := rng.Perm(len(idx))
	n := min(s.cfg.BatchReal, len(idx))
	pick := make([]int, n)
	for i := range n {
		pick[i] = idx[perm[i]]
	}
	return s.real.Batch(pick)
}

// update takes one SGD-with-momentum step on the images from s.grad
// (PyTorch's semantics: v ← μv + g, x ← x − lr·v). It checks the result
// first and leaves the images unchanged if a value would not be finite.
func (s *imageState) update(it int, loss float64) error {
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return fmt.Errorf("%w: iteration %d: loss is %v (lower the image learning rate, now %g)", ErrDiverged, it, loss, s.cfg.LRImg)
	}
	if i := tensor.FirstNonFinite(s.grad.Data); i >= 0 {
		return fmt.Errorf("%w: iteration %d: the image gradient is not finite (%v)", ErrDiverged, it, s.grad.Data[i])
	}
	mu, lr := float32(s.cfg.Momentum), float32(s.cfg.LRImg)
	x, v := s.syn.X.Data, s.velocity.Data
	for j, g := range s.grad.Data {
		nv := mu*v[j] + g
		nx := x[j] - lr*nv
		if math.IsNaN(float64(nx)) || math.IsInf(float64(nx), 0) {
			return fmt.Errorf("%w: iteration %d: an image value would become %v", ErrDiverged, it, nx)
		}
	}
	for j, g := range s.grad.Data {
		v[j] = mu*v[j] + g
		x[j] -= lr * v[j]
	}
	return nil
}

func (s *imageState) Checkpoint(next int) *Checkpoint {
	return &Checkpoint{Config: s.cfg, Next: next, Syn: s.syn.Clone(), Velocity: s.velocity.Clone()}
}

func (s *imageState) Restore(c *Checkpoint) error {
	if s.syn == nil {
		return errors.New("distill: Restore before Init")
	}
	if err := c.matches(s.cfg); err != nil {
		return err
	}
	if !equalShape(c.Syn.X.Shape, s.syn.X.Shape) {
		return fmt.Errorf("distill: checkpoint images have shape %v, this run's %v", c.Syn.X.Shape, s.syn.X.Shape)
	}
	s.syn = c.Syn.Clone()
	if c.Velocity != nil {
		if !equalShape(c.Velocity.Shape, s.syn.X.Shape) {
			return fmt.Errorf("distill: checkpoint velocity has shape %v, images %v", c.Velocity.Shape, s.syn.X.Shape)
		}
		s.velocity = c.Velocity.Clone()
	} else {
		s.velocity = tensor.New[float32](s.syn.X.Shape...)
	}
	return nil
}

func equalShape(a, b []int) bool { return tensor.SameShape(a, b) }

// randomReal picks ipc random real images of every class, class-major.
func randomReal(real *data.Dataset, byClass [][]int, ipc int, rng *tensor.RNG) *SyntheticSet {
	var pick []int
	for _, idx := range byClass {
		perm := rng.Perm(len(idx))
		for i := range ipc {
			pick = append(pick, idx[perm[i]])
		}
	}
	return subsetSet(real, pick)
}

// noiseSet returns ipc standard-normal images per class, class-major.
func noiseSet(real *data.Dataset, ipc int, rng *tensor.RNG) *SyntheticSet {
	shape := real.ImageShape()
	x := tensor.New[float32](real.Classes*ipc, shape[0], shape[1], shape[2])
	tensor.FillNormal(rng, x, 0, 1)
	y := make([]int, 0, real.Classes*ipc)
	for c := range real.Classes {
		for range ipc {
			y = append(y, c)
		}
	}
	return &SyntheticSet{X: x, Y: y, Mean: slices.Clone(real.Mean), Std: slices.Clone(real.Std), Classes: real.Classes}
}

func subsetSet(real *data.Dataset, idx []int) *SyntheticSet {
	x, y := real.Batch(idx)
	return &SyntheticSet{X: x, Y: y, Mean: slices.Clone(real.Mean), Std: slices.Clone(real.Std), Classes: real.Classes}
}
