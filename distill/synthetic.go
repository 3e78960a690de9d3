package distill

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/internal/npz"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// SyntheticSet is a distilled (or selected) image set. Its file form,
// synthetic.npz, is DESIGN.md's contract: x float32 (N, C, H, W) in the
// normalized space used for training, y int64 (N), optional y_soft float32
// (N, K), and mean, std float32 (C) to undo the normalization.
type SyntheticSet struct {
	// X holds the images (N, C, H, W), normalized per channel.
	X *tensor.Tensor[float32]
	// Y holds the hard labels, one per image.
	Y []int
	// YSoft, if not nil, holds soft labels (N, K).
	YSoft *tensor.Tensor[float32]
	// Mean and Std are the per-channel normalization constants.
	Mean, Std []float32
	// Classes is the number of classes (K). It is not stored in the file:
	// ReadSynthetic takes it from y_soft, or from the caller.
	Classes int
}

// Len returns the number of images.
func (s *SyntheticSet) Len() int { return len(s.Y) }

// ImageShape returns (C, H, W).
func (s *SyntheticSet) ImageShape() []int { return slices.Clone(s.X.Shape[1:]) }

// Clone returns a deep copy.
func (s *SyntheticSet) Clone() *SyntheticSet {
	c := &SyntheticSet{X: s.X.Clone(), Y: slices.Clone(s.Y), Mean: slices.Clone(s.Mean), Std: slices.Clone(s.Std), Classes: s.Classes}
	if s.YSoft != nil {
		c.YSoft = s.YSoft.Clone()
	}
	return c
}

// Dataset returns the set as an nn training set (sharing X and Y).
func (s *SyntheticSet) Dataset() *nn.TensorDataset[float32] {
	return &nn.TensorDataset[float32]{X: s.X, Y: s.Y}
}

// PerClass returns the number of images of each class.
func (s *SyntheticSet) PerClass() []int {
	h := make([]int, s.Classes)
	for _, l := range s.Y {
		if l >= 0 && l < len(h) {
			h[l]++
		}
	}
	return h
}

// Validate checks the set's invariants: X is (N, C, H, W) with N ≥ 1 and
// finite values, N labels in [0, Classes), one finite mean and one finite
// positive std per channel, and soft labels (if any) of shape (N, Classes)
// with finite values. Classes must be positive.
func (s *SyntheticSet) Validate() error {
	if s == nil || s.X == nil {
		return errors.New("distill: synthetic set has no images")
	}
	x := s.X
	if x.Rank() != 4 || len(x.Data) != tensor.Size(x.Shape) {
		return fmt.Errorf("distill: synthetic images have shape %v (%d values): want (N, C, H, W)", x.Shape, len(x.Data))
	}
	n, c := x.Shape[0], x.Shape[1]
	if n == 0 || c == 0 || x.Shape[2] == 0 || x.Shape[3] == 0 {
		return fmt.Errorf("distill: synthetic images have shape %v: every dimension must be positive", x.Shape)
	}
	if len(s.Y) != n {
		return fmt.Errorf("distill: %d synthetic images but %d labels", n, len(s.Y))
	}
	if s.Classes <= 0 {
		return fmt.Errorf("distill: synthetic set has class count %d: want a positive count", s.Classes)
	}
	for i, l := range s.Y {
		if l < 0 || l >= s.Classes {
			return fmt.Errorf("distill: synthetic label %d at index %d is out of range for %d classes (0..%d)", l, i, s.Classes, s.Classes-1)
		}
	}
	if len(s.Mean) != c || len(s.Std) != c {
		return fmt.Errorf("distill: synthetic images have %d channels but %d means and %d standard deviations", c, len(s.Mean), len(s.Std))
	}
	for i := range c {
		m, sd := float64(s.Mean[i]), float64(s.Std[i])
		if math.IsNaN(m) || math.IsInf(m, 0) || !(sd > 0) || math.IsInf(sd, 0) {
			return fmt.Errorf("distill: channel %d has mean %v and std %v: want a finite mean and a finite std > 0", i, s.Mean[i], s.Std[i])
		}
	}
	if i := tensor.FirstNonFinite(x.Data); i >= 0 {
		sz := len(x.Data) / n
		return fmt.Errorf("distill: synthetic image %d has a non-finite value (%v at offset %d)", i/sz, x.Data[i], i%sz)
	}
	if s.YSoft != nil {
		ys := s.YSoft
		if ys.Rank() != 2 || ys.Shape[0] != n || ys.Shape[1] != s.Classes || len(ys.Data) != tensor.Size(ys.Shape) {
			return fmt.Errorf("distill: soft labels have shape %v: want (%d, %d)", ys.Shape, n, s.Classes)
		}
		if i := tensor.FirstNonFinite(ys.Data); i >= 0 {
			return fmt.Errorf("distill: soft label of image %d has a non-finite value (%v)", i/s.Classes, ys.Data[i])
		}
	}
	return nil
}

// CheckAgainst reports whether the set can be used with the real data set
// d: same image shape, same class count, same normalization.
func (s *SyntheticSet) CheckAgainst(d *data.Dataset) error {
	if !slices.Equal(s.ImageShape(), d.ImageShape()) {
		return fmt.Errorf("distill: synthetic images are %v but %s images are %v", s.ImageShape(), d.Name, d.ImageShape())
	}
	if s.Classes != d.Classes {
		return fmt.Errorf("distill: synthetic set has %d classes but %s has %d", s.Classes, d.Name, d.Classes)
	}
	for c := range s.Mean {
		if math.Abs(float64(s.Mean[c]-d.Mean[c])) > 1e-4 || math.Abs(float64(s.Std[c]-d.Std[c])) > 1e-4 {
			return fmt.Errorf("distill: synthetic set is normalized with mean %v std %v but %s uses mean %v std %v", s.Mean, s.Std, d.Name, d.Mean, d.Std)
		}
	}
	return nil
}

// arrays returns the set's npz arrays in the contract's order.
func (s *SyntheticSet) arrays() ([]*npz.Array, error) {
	y := make([]int64, len(s.Y))
	for i, l := range s.Y {
		y[i] = int64(l)
	}
	var out []*npz.Array
	add := func(name string, shape []int, d any) error {
		a, err := npz.New(name, slices.Clone(shape), d)
		if err != nil {
			return fmt.Errorf("distill: %w", err)
		}
		out = append(out, a)
		return nil
	}
	if err := add("x", s.X.Shape, slices.Clone(s.X.Data)); err != nil {
		return nil, err
	}
	if err := add("y", []int{len(y)}, y); err != nil {
		return nil, err
	}
	if s.YSoft != nil {
		if err := add("y_soft", s.YSoft.Shape, slices.Clone(s.YSoft.Data)); err != nil {
			return nil, err
		}
	}
	if err := add("mean", []int{len(s.Mean)}, slices.Clone(s.Mean)); err != nil {
		return nil, err
	}
	if err := add("std", []int{len(s.Std)}, slices.Clone(s.Std)); err != nil {
		return nil, err
	}
	return out, nil
}

// Save validates the set and writes it to path as synthetic.npz
// (atomically: readers never see a partial file).
func (s *SyntheticSet) Save(path string) error {
	if err := s.Validate(); err != nil {
		return err
	}
	arrays, err := s.arrays()
	if err != nil {
		return err
	}
	if err := npz.Write(path, arrays); err != nil {
		return fmt.Errorf("distill: writing synthetic set: %w", err)
	}
	return nil
}

// ReadSynthetic reads and validates a synthetic.npz file. classes is the
// class count of the data set the set belongs to; with y_soft present it
// must match its second dimension, and 0 means "take it from y_soft, or
// else from the largest label". Wrong dtypes or shapes, NaN or infinite
// values and labels out of range are errors that name the array.
func ReadSynthetic(path string, classes int) (*SyntheticSet, error) {
	m, err := npz.Read(path)
	if err != nil {
		return nil, fmt.Errorf("distill: reading synthetic set: %w", err)
	}
	s, err := fromArrays(m, classes)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return s, nil
}

func fromArrays(m map[string]*npz.Array, classes int) (*SyntheticSet, error) {
	get := func(name, dtype string, rank int) (*npz.Array, error) {
		a, ok := m[name]
		if !ok {
			return nil, fmt.Errorf("distill: synthetic set has no array %q (want x, y, mean, std and optionally y_soft)", name)
		}
		if a.DType != dtype {
			return nil, fmt.Errorf("distill: synthetic array %q has dtype %s, want %s", name, a.DType, dtype)
		}
		if len(a.Shape) != rank {
			return nil, fmt.Errorf("distill: synthetic array %q has shape %v, want rank %d", name, a.Shape, rank)
		}
		return a, nil
	}
	xa, err := get("x", "float32", 4)
	if err != nil {
		return nil, err
	}
	ya, err := get("y", "int64", 1)
	if err != nil {
		return nil, err
	}
	ma, err := get("mean", "float32", 1)
	if err != nil {
		return nil, err
	}
	sa, err := get("std", "float32", 1)
	if err != nil {
		return nil, err
	}
	n, c := xa.Shape[0], xa.Shape[1]
	if ya.Shape[0] != n {
		return nil, fmt.Errorf("distill: synthetic array \"y\" has %d labels for %d images", ya.Shape[0], n)
	}
	if ma.Shape[0] != c || sa.Shape[0] != c {
		return nil, fmt.Errorf("distill: synthetic arrays \"mean\" and \"std\" have shapes %v and %v, want (%d) for %d channels", ma.Shape, sa.Shape, c, c)
	}
	x, err := tensor.FromSlice(xa.Data.([]float32), xa.Shape...)
	if err != nil {
		return nil, fmt.Errorf("distill: synthetic array \"x\": %w", err)
	}
	s := &SyntheticSet{X: x, Mean: ma.Data.([]float32), Std: sa.Data.([]float32)}
	y64 := ya.Data.([]int64)
	s.Y = make([]int, len(y64))
	maxLabel := -1
	for i, l := range y64 {
		if l < 0 || l > math.MaxInt32 {
			return nil, fmt.Errorf("distill: synthetic label %d at index %d is out of range", l, i)
		}
		s.Y[i] = int(l)
		maxLabel = max(maxLabel, int(l))
	}
	if sa, ok := m["y_soft"]; ok {
		if sa.DType != "float32" || len(sa.Shape) != 2 {
			return nil, fmt.Errorf("distill: synthetic array \"y_soft\" is %s %v, want float32 (N, K)", sa.DType, sa.Shape)
		}
		if classes == 0 {
			classes = sa.Shape[1]
		}
		s.YSoft, err = tensor.FromSlice(sa.Data.([]float32), sa.Shape...)
		if err != nil {
			return nil, fmt.Errorf("distill: synthetic array \"y_soft\": %w", err)
		}
	}
	if classes == 0 {
		classes = maxLabel + 1
	}
	s.Classes = classes
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}
