package distill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/internal/npz"
	"github.com/fedsim/fedsim/tensor"
)

// Checkpoint is a distillation run's state between iterations: the
// configuration, the number of iterations done, the synthetic set and the
// images' momentum. Every random draw of an iteration derives from
// (Config.Seed, iteration), so nothing else is needed to continue exactly.
type Checkpoint struct {
	Config   Config
	Next     int // iterations done
	Syn      *SyntheticSet
	Velocity *tensor.Tensor[float32] // may be nil (zero)
}

// configJSON is the configuration as stored in a checkpoint.
func configJSON(c Config) []byte {
	b, _ := json.Marshal(c)
	return b
}

// matches reports whether c was written by a run with configuration cfg.
func (c *Checkpoint) matches(cfg Config) error {
	a, b := configJSON(c.Config), configJSON(cfg)
	if !slices.Equal(a, b) {
		return fmt.Errorf("distill: the checkpoint comes from a different configuration:\n  checkpoint: %s\n  this run:   %s", a, b)
	}
	return nil
}

// Save writes c to path atomically, as an .npz file holding the synthetic
// set's arrays (x, y, y_soft, mean, std, so it is also a valid
// synthetic.npz; for idc, of its stored rather than its decoded images),
// velocity, next (int64) and config (the configuration as
// JSON bytes).
func (c *Checkpoint) Save(path string) error {
	if err := c.Syn.Validate(); err != nil {
		return err
	}
	arrays, err := c.Syn.arrays()
	if err != nil {
		return err
	}
	add := func(name string, shape []int, d any) error {
		a, err := npz.New(name, shape, d)
		if err != nil {
			return fmt.Errorf("distill: %w", err)
		}
		arrays = append(arrays, a)
		return nil
	}
	if c.Velocity != nil {
		if err := add("velocity", slices.Clone(c.Velocity.Shape), slices.Clone(c.Velocity.Data)); err != nil {
			return err
		}
	}
	cj := configJSON(c.Config)
	if err := add("next", []int{1}, []int64{int64(c.Next)}); err != nil {
		return err
	}
	if err := add("config", []int{len(cj)}, cj); err != nil {
		return err
	}
	if err := npz.Write(path, arrays); err != nil {
		return fmt.Errorf("distill: writing checkpoint: %w", err)
	}
	return nil
}

// LoadCheckpoint reads and validates a checkpoint written by Save.
func LoadCheckpoint(path string) (*Checkpoint, error) {
	m, err := npz.Read(path)
	if err != nil {
		return nil, fmt.Errorf("distill: reading checkpoint: %w", err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("distill: checkpoint %s: "+format, append([]any{path}, args...)...)
	}
	ca, ok := m["config"]
	if !ok || ca.DType != "uint8" {
		return nil, bad("no configuration (is it a synthetic.npz rather than a checkpoint?)")
	}
	var cfg Config
	if err := json.Unmarshal(ca.Data.([]uint8), &cfg); err != nil {
		return nil, bad("configuration: %v", err)
	}
	na, ok := m["next"]
	if !ok || na.DType != "int64" || na.Size() != 1 {
		return nil, bad("no int64 iteration count \"next\"")
	}
	next := na.Data.([]int64)[0]
	if next < 0 {
		return nil, bad("iteration count %d is negative", next)
	}
	syn, err := fromArrays(m, 0)
	if err != nil {
		return nil, bad("%v", err)
	}
	c := &Checkpoint{Config: cfg, Next: int(next), Syn: syn}
	if va, ok := m["velocity"]; ok {
		if va.DType != "float32" || !slices.Equal(va.Shape, syn.X.Shape) {
			return nil, bad("velocity is %s %v, want float32 %v", va.DType, va.Shape, syn.X.Shape)
		}
		c.Velocity, _ = tensor.FromSlice(va.Data.([]float32), va.Shape...)
		if i := tensor.FirstNonFinite(c.Velocity.Data); i >= 0 {
			return nil, bad("velocity has a non-finite value")
		}
	}
	return c, nil
}

// RunConfig configures Run.
type RunConfig struct {
	// Iterations is the total number of iterations (including those a
	// resumed checkpoint already did).
	Iterations int
	// CheckpointPath, if set, is where the state is saved (atomically)
	// every CheckpointEvery iterations (0: only at the end) and after the
	// last one.
	CheckpointPath  string
	CheckpointEvery int
	// Resume continues from CheckpointPath if that file exists.
	Resume bool
	// BeforeFirst, if set, is called once before the first iteration this
	// call runs (first: its index, after a resumed checkpoint's).
	BeforeFirst func(first int)
	// AfterStep, if set, is called after each iteration it (0-based) with
	// its loss; an error stops the run.
	AfterStep func(it int, loss float64) error
}

// Run initialises d on real, restores the checkpoint if asked to, and runs
// the remaining iterations. It returns the number of iterations the
// checkpoint had already done (0 for a fresh run). When a step fails (a
// diverging loss, cancellation) the last good checkpoint stays on disk and
// the error says which iteration it holds.
func Run(ctx context.Context, d Distiller, real *data.Dataset, rc RunConfig) (resumedAt int, err error) {
	if rc.Iterations < 0 || rc.CheckpointEvery < 0 {
		return 0, fmt.Errorf("distill: iterations %d and checkpoint interval %d must not be negative", rc.Iterations, rc.CheckpointEvery)
	}
	if err := d.Init(ctx, real); err != nil {
		return 0, err
	}
	if !d.Iterative() {
		return 0, nil
	}
	start := 0
	if rc.Resume && rc.CheckpointPath != "" {
		c, err := LoadCheckpoint(rc.CheckpointPath)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return 0, err
		default:
			if c.Next > rc.Iterations {
				return 0, fmt.Errorf("distill: the checkpoint has done %d iterations, more than the %d asked for", c.Next, rc.Iterations)
			}
			if err := d.Restore(c); err != nil {
				return 0, err
			}
			start = c.Next
		}
	}
	lastSaved := start
	save := func(next int) error {
		if rc.CheckpointPath == "" {
			return nil
		}
		if err := d.Checkpoint(next).Save(rc.CheckpointPath); err != nil {
			return err
		}
		lastSaved = next
		return nil
	}
	if rc.BeforeFirst != nil && start < rc.Iterations {
		rc.BeforeFirst(start)
	}
	for it := start; it < rc.Iterations; it++ {
		if err := ctx.Err(); err != nil {
			return start, stopErr(rc, lastSaved, fmt.Errorf("distill: stopped before iteration %d: %w", it, err))
		}
		loss, err := d.Step(ctx, it)
		if err != nil {
			return start, stopErr(rc, lastSaved, err)
		}
		if rc.CheckpointEvery > 0 && (it+1)%rc.CheckpointEvery == 0 || it+1 == rc.Iterations {
			if err := save(it + 1); err != nil {
				return start, err
			}
		}
		if rc.AfterStep != nil {
			if err := rc.AfterStep(it, loss); err != nil {
				return start, stopErr(rc, lastSaved, err)
			}
		}
	}
	return start, nil
}

func stopErr(rc RunConfig, lastSaved int, err error) error {
	if rc.CheckpointPath == "" {
		return err
	}
	if _, serr := os.Stat(rc.CheckpointPath); serr != nil {
		return fmt.Errorf("%w (no checkpoint was written yet)", err)
	}
	return fmt.Errorf("%w (the last good checkpoint, after %d iterations, is %s)", err, lastSaved, rc.CheckpointPath)
}
