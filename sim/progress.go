package sim

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"

	"github.com/fedsim/fedsim/internal/npz"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/server"
	"github.com/fedsim/fedsim/tensor"
)

// ServerProgressFile holds an unfinished server-side distillation
// (DynaFed), saved every serverProgressEvery iterations: the distillation
// runs inside one round, after that round's training and before its
// checkpoint, and the authors' 3000 iterations take hours. A resumed run
// redoes the interrupted round (deterministically, from the previous
// round's checkpoint) and continues the distillation from this file; so
// does the same run started again when it stopped in round 1, before any
// checkpoint. It is removed once a checkpoint holds the finished set.
const ServerProgressFile = "server_tm_progress.npz"

// serverProgressEvery is how often (in iterations) the server's
// distillation progress is saved: a save writes a few arrays of the set's
// size, far less than one iteration costs.
const serverProgressEvery = 10

// saveServerProgress writes p to path atomically as an .npz file: key
// (uint8, the distillation's key as text), done (int64), lr (float64: α
// and its momentum), x, and as the distillation has them velocity, logits,
// logit_velocity, and image_adam_* / label_adam_* (steps, m, v).
func saveServerProgress(path string, p *server.DistillProgress) error {
	var arrays []*npz.Array
	var err error
	add := func(name string, shape []int, data any) {
		if err != nil {
			return
		}
		var a *npz.Array
		if a, err = npz.New(name, slices.Clone(shape), data); err == nil {
			arrays = append(arrays, a)
		}
	}
	addTensor := func(name string, t *tensor.Tensor[float32]) {
		if t != nil {
			add(name, t.Shape, slices.Clone(t.Data))
		}
	}
	addAdam := func(prefix string, s nn.AdamState[float32]) {
		if s.Steps == 0 {
			return
		}
		add(prefix+"steps", []int{1}, []int64{int64(s.Steps)})
		if len(s.M) != 1 {
			err = fmt.Errorf("sim: server distillation progress: %sstate over %d tensors, want 1", prefix, len(s.M))
			return
		}
		addTensor(prefix+"m", s.M[0])
		addTensor(prefix+"v", s.V[0])
	}
	add("key", []int{len(p.Key)}, []uint8(p.Key))
	add("done", []int{1}, []int64{int64(p.Done)})
	add("lr", []int{2}, []float64{p.LR, p.LRVelocity})
	addTensor("x", p.X)
	addTensor("velocity", p.Velocity)
	addTensor("logits", p.Logits)
	addTensor("logit_velocity", p.LogitVelocity)
	addAdam("image_adam_", p.ImageAdam)
	addAdam("label_adam_", p.LabelAdam)
	if err != nil {
		return fmt.Errorf("sim: server distillation progress: %w", err)
	}
	if err := npz.Write(path, arrays); err != nil {
		return fmt.Errorf("sim: saving the server distillation progress: %w", err)
	}
	return nil
}

// removeProgress removes the progress file at path, if there is one.
func removeProgress(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("sim: %w", err)
	}
	return nil
}

// progressHint adds to a round's error what the user can do about the
// server's distillation progress: delete a file that was refused, or
// continue a stopped distillation from it (after rounds rounds done).
func progressHint(err error, path string, rounds int) error {
	if errors.Is(err, server.ErrBadProgress) {
		return fmt.Errorf("sim: %w (in %s: delete it to distill afresh)", err, path)
	}
	if _, serr := os.Stat(path); serr == nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		how := "start the same run again"
		if rounds > 0 {
			how = "resume the run"
		}
		return fmt.Errorf("%w (the server distillation's progress is saved in %s: %s to continue it)", err, path, how)
	}
	return err
}

// loadServerProgress reads a file written by saveServerProgress; it
// returns nil and no error if there is none. It checks the file's arrays'
// types and shapes; whether the progress fits the run is the server's
// check (DynaFed.LoadProgress).
func loadServerProgress(path string) (*server.DistillProgress, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	m, err := npz.Read(path)
	if err != nil {
		return nil, fmt.Errorf("sim: reading the server distillation progress: %w (delete the file to distill afresh)", err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("sim: server distillation progress %s: "+format+" (delete the file to distill afresh)", append([]any{path}, args...)...)
	}
	get := func(name, dtype string, size int) (*npz.Array, error) {
		a, ok := m[name]
		if !ok {
			return nil, nil
		}
		if a.DType != dtype {
			return nil, bad("%s is %s %v, want %s", name, a.DType, a.Shape, dtype)
		}
		if size > 0 && a.Size() != size {
			return nil, bad("%s has shape %v, want %d values", name, a.Shape, size)
		}
		return a, nil
	}
	need := func(name, dtype string, size int) (*npz.Array, error) {
		a, err := get(name, dtype, size)
		if err == nil && a == nil {
			err = bad("no %s array", name)
		}
		return a, err
	}
	tensorOf := func(name string, required bool) (*tensor.Tensor[float32], error) {
		a, err := get(name, "float32", 0)
		if err == nil && a == nil && required {
			err = bad("no %s array", name)
		}
		if err != nil || a == nil {
			return nil, err
		}
		t, err := tensor.FromSlice(a.Data.([]float32), a.Shape...)
		if err != nil {
			return nil, bad("%s: %v", name, err)
		}
		return t, nil
	}
	p := &server.DistillProgress{}
	key, err := need("key", "uint8", 0)
	if err != nil {
		return nil, err
	}
	done, err := need("done", "int64", 1)
	if err != nil {
		return nil, err
	}
	lr, err := need("lr", "float64", 2)
	if err != nil {
		return nil, err
	}
	p.Key, p.Done = string(key.Data.([]uint8)), int(done.Data.([]int64)[0])
	p.LR, p.LRVelocity = lr.Data.([]float64)[0], lr.Data.([]float64)[1]
	if p.X, err = tensorOf("x", true); err != nil {
		return nil, err
	}
	if p.Velocity, err = tensorOf("velocity", false); err != nil {
		return nil, err
	}
	if p.Logits, err = tensorOf("logits", false); err != nil {
		return nil, err
	}
	if p.LogitVelocity, err = tensorOf("logit_velocity", false); err != nil {
		return nil, err
	}
	adam := func(prefix string) (nn.AdamState[float32], error) {
		var s nn.AdamState[float32]
		steps, err := get(prefix+"steps", "int64", 1)
		if err != nil || steps == nil {
			return s, err
		}
		s.Steps = int(steps.Data.([]int64)[0])
		mt, err := tensorOf(prefix+"m", true)
		if err != nil {
			return s, err
		}
		vt, err := tensorOf(prefix+"v", true)
		if err != nil {
			return s, err
		}
		s.M, s.V = []*tensor.Tensor[float32]{mt}, []*tensor.Tensor[float32]{vt}
		return s, nil
	}
	if p.ImageAdam, err = adam("image_adam_"); err != nil {
		return nil, err
	}
	if p.LabelAdam, err = adam("label_adam_"); err != nil {
		return nil, err
	}
	return p, nil
}
