package nn

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/fedsim/fedsim/internal/npz"
	"github.com/fedsim/fedsim/tensor"
)

// Weights are saved as NumPy .npz archives with one float32 array per
// parameter and per buffer, keyed by its PyTorch-style name (parameters
// first, in Params order, then buffers), so
// numpy.load("w.npz")["conv0.weight"] works and a PyTorch state_dict can be
// written by a few lines of Python.

// state returns the model's named tensors: parameters, then buffers.
func state[T Float](m Model[T]) ([]string, []*tensor.Tensor[T]) {
	names, ts := m.ParamNames(), slices.Clone(m.Params())
	if b, ok := m.(Buffered[T]); ok {
		names = append(names, b.BufferNames()...)
		ts = append(ts, b.Buffers()...)
	}
	return names, ts
}

// WeightArrays returns m's parameters and buffers as float32 arrays named
// as in ParamNames and BufferNames (copies: later changes to m do not show).
func WeightArrays[T Float](m Model[T]) ([]*npz.Array, error) {
	names, ts := state(m)
	out := make([]*npz.Array, len(ts))
	for i, t := range ts {
		d := make([]float32, len(t.Data))
		for j, v := range t.Data {
			d[j] = float32(v)
		}
		a, err := npz.New(names[i], slices.Clone(t.Shape), d)
		if err != nil {
			return nil, fmt.Errorf("nn: %w", err)
		}
		out[i] = a
	}
	return out, nil
}

// Save writes m's parameters and buffers to the .npz file at path,
// atomically (a temporary file renamed over path).
func Save[T Float](path string, m Model[T]) error {
	arrays, err := WeightArrays(m)
	if err != nil {
		return err
	}
	if err := npz.Write(path, arrays); err != nil {
		return fmt.Errorf("nn: saving weights: %w", err)
	}
	return nil
}

// WriteWeights writes m's parameters and buffers as an .npz archive to w.
func WriteWeights[T Float](w io.Writer, m Model[T]) error {
	arrays, err := WeightArrays(m)
	if err != nil {
		return err
	}
	if err := npz.WriteTo(w, arrays); err != nil {
		return fmt.Errorf("nn: writing weights: %w", err)
	}
	return nil
}

// Load reads the .npz file at path into m's parameters and buffers. Every
// parameter and buffer must be present with its exact shape, and the file
// must hold nothing else; otherwise Load returns an error naming the
// offending array (and both shapes) and m is left unchanged. Arrays of any
// numeric dtype are accepted and converted.
func Load[T Float](path string, m Model[T]) error {
	arrays, err := npz.Read(path)
	if err != nil {
		return fmt.Errorf("nn: loading weights: %w", err)
	}
	if err := SetWeights(m, arrays); err != nil {
		return fmt.Errorf("%w (file %s)", err, path)
	}
	return nil
}

// ReadWeights reads an .npz archive of the given size from r into m, as
// Load does.
func ReadWeights[T Float](r io.ReaderAt, size int64, m Model[T]) error {
	arrays, err := npz.ReadFrom(r, size)
	if err != nil {
		return fmt.Errorf("nn: reading weights: %w", err)
	}
	return SetWeights(m, arrays)
}

// SetWeights copies named arrays into m's parameters and buffers, checking
// first (so that m is unchanged on error) that every name is present with
// the right shape and that there are no unknown names.
func SetWeights[T Float](m Model[T], arrays map[string]*npz.Array) error {
	names, ts := state(m)
	vals := make([][]float64, len(ts))
	var missing []string
	for i, name := range names {
		a, ok := arrays[name]
		if !ok {
			missing = append(missing, name)
			continue
		}
		if !slices.Equal(a.Shape, ts[i].Shape) {
			return fmt.Errorf("nn: weights: %s has shape %v in the file, the model's is %v", name, a.Shape, ts[i].Shape)
		}
		v, err := a.Float64()
		if err != nil {
			return fmt.Errorf("nn: weights: %s: %w", name, err)
		}
		vals[i] = v
	}
	if len(missing) > 0 {
		return fmt.Errorf("nn: weights: the file lacks %s", strings.Join(missing, ", "))
	}
	if len(arrays) != len(names) {
		var extra []string
		for k := range arrays {
			if !slices.Contains(names, k) {
				extra = append(extra, k)
			}
		}
		sort.Strings(extra)
		return fmt.Errorf("nn: weights: the file has arrays the model does not: %s", strings.Join(extra, ", "))
	}
	for i, t := range ts {
		for j, v := range vals[i] {
			t.Data[j] = T(v)
		}
	}
	return nil
}
