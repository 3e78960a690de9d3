// Package data loads the real data sets fedsim simulates (MNIST,
// Fashion-MNIST, CIFAR-10), holds them as normalized (N, C, H, W) float32
// tensors, and partitions them among simulated clients (IID, Dirichlet label
// skew, pathological shards, quantity skew).
//
// Nothing here panics on bad input (files, parameters, user data): it
// returns errors that start with "data: " and name the file or value and the
// problem. Index arguments to Dataset's helpers are the exception: an index
// out of range is a programmer error and panics, as slice indexing does.
// Randomness always comes from a caller's seeded *tensor.RNG.
package data

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/fedsim/fedsim/internal/parallel"
	"github.com/fedsim/fedsim/tensor"
)

// Dataset is a labelled image data set held in memory.
type Dataset struct {
	Name string
	// X holds the images, shape (N, C, H, W), normalized per channel:
	// (pixel/255 − Mean[c]) / Std[c].
	X *tensor.Tensor[float32]
	// Y holds the labels, each in [0, Classes).
	Y       []int
	Classes int
	// Mean and Std are the per-channel statistics used for normalization.
	Mean, Std  []float32
	ClassNames []string
}

// Info describes one of the data sets Load knows.
type Info struct {
	Name                    string // as passed to Load
	Title                   string // for people: "Fashion-MNIST"
	Channels, Height, Width int
	Classes                 int
	TrainSize, TestSize     int
	// Mean and Std are the per-channel normalization constants of the
	// DC/DM reference code (pixels scaled to [0, 1] first).
	Mean, Std  []float32
	ClassNames []string
}

var infos = []Info{
	{
		Name: "mnist", Title: "MNIST", Channels: 1, Height: 28, Width: 28, Classes: 10,
		TrainSize: 60000, TestSize: 10000,
		Mean: []float32{0.1307}, Std: []float32{0.3081},
		ClassNames: []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"},
	},
	{
		Name: "fmnist", Title: "Fashion-MNIST", Channels: 1, Height: 28, Width: 28, Classes: 10,
		TrainSize: 60000, TestSize: 10000,
		Mean: []float32{0.2861}, Std: []float32{0.3530},
		ClassNames: []string{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
			"Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"},
	},
	{
		Name: "cifar10", Title: "CIFAR-10", Channels: 3, Height: 32, Width: 32, Classes: 10,
		TrainSize: 50000, TestSize: 10000,
		Mean: []float32{0.4914, 0.4822, 0.4465}, Std: []float32{0.2023, 0.1994, 0.2010},
		ClassNames: []string{"airplane", "automobile", "bird", "cat", "deer",
			"dog", "frog", "horse", "ship", "truck"},
	},
}

// Names lists the data sets Load knows, in a fixed order.
func Names() []string {
	out := make([]string, len(infos))
	for i, in := range infos {
		out[i] = in.Name
	}
	return out
}

// Lookup returns the description of a data set (names as for Load).
func Lookup(name string) (Info, error) {
	key := strings.ToLower(strings.TrimSpace(name))
	for _, in := range infos {
		if in.Name == key {
			in.Mean = slices.Clone(in.Mean)
			in.Std = slices.Clone(in.Std)
			in.ClassNames = slices.Clone(in.ClassNames)
			return in, nil
		}
	}
	return Info{}, fmt.Errorf("data: unknown data set %q: want one of %s", name, strings.Join(Names(), ", "))
}

// New builds a data set from images whose pixel values are already scaled
// to [0, 1] (x of shape (N, C, H, W); it is not modified) and normalizes a
// copy with mean and std (one value per channel; if both are nil they are
// computed from x). It rejects NaN or infinite pixels, labels outside
// [0, classes), and mismatched sizes, naming the first offender.
func New(name string, x *tensor.Tensor[float32], y []int, classes int, mean, std []float32, classNames []string) (*Dataset, error) {
	if x == nil {
		return nil, fmt.Errorf("data: %s: no images (nil tensor)", name)
	}
	if len(x.Shape) != 4 {
		return nil, fmt.Errorf("data: %s: images have shape %v, want rank 4 (N, C, H, W)", name, x.Shape)
	}
	for _, d := range x.Shape {
		if d < 0 {
			return nil, fmt.Errorf("data: %s: images have negative dimension in shape %v", name, x.Shape)
		}
	}
	n, c, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	if c == 0 || h == 0 || w == 0 {
		return nil, fmt.Errorf("data: %s: images have shape %v: channels, height and width must be positive", name, x.Shape)
	}
	if len(x.Data) != n*c*h*w {
		return nil, fmt.Errorf("data: %s: images of shape %v need %d values, tensor has %d", name, x.Shape, n*c*h*w, len(x.Data))
	}
	if len(y) != n {
		return nil, fmt.Errorf("data: %s: %d images but %d labels", name, n, len(y))
	}
	if err := checkLabels(name, y, classes); err != nil {
		return nil, err
	}
	if classNames != nil && len(classNames) != classes {
		return nil, fmt.Errorf("data: %s: %d class names for %d classes", name, len(classNames), classes)
	}
	plane := h * w
	for i, v := range x.Data {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			s, r := i/(c*plane), i%(c*plane)
			return nil, fmt.Errorf("data: %s: pixel %d (image %d, channel %d, row %d, column %d) is %v: images must be finite", name, i, s, r/plane, r%plane/w, r%w, v)
		}
	}
	if mean == nil && std == nil {
		if n == 0 {
			return nil, fmt.Errorf("data: %s: cannot compute mean and std of an empty data set; pass them", name)
		}
		mean, std = channelStats(x)
	}
	if len(mean) != c || len(std) != c {
		return nil, fmt.Errorf("data: %s: %d channels but %d means and %d standard deviations", name, c, len(mean), len(std))
	}
	for i := range c {
		m, s := float64(mean[i]), float64(std[i])
		if math.IsNaN(m) || math.IsInf(m, 0) || !(s > 0) || math.IsInf(s, 0) {
			return nil, fmt.Errorf("data: %s: channel %d has mean %v and std %v: want a finite mean and a finite std > 0", name, i, mean[i], std[i])
		}
	}
	out := tensor.New[float32](n, c, h, w)
	for s := range n {
		for ch := range c {
			m, inv := mean[ch], 1/std[ch]
			off := (s*c + ch) * plane
			src, dst := x.Data[off:off+plane], out.Data[off:off+plane]
			for j, v := range src {
				dst[j] = (v - m) * inv
			}
		}
	}
	return &Dataset{
		Name: name, X: out, Y: slices.Clone(y), Classes: classes,
		Mean: slices.Clone(mean), Std: slices.Clone(std), ClassNames: slices.Clone(classNames),
	}, nil
}

// fromBytes builds a data set from raw 8-bit pixels laid out (N, C, H, W),
// scaling to [0, 1] and normalizing with in's statistics. y must already be
// checked.
func fromBytes(name string, in Info, pix []byte, n int, y []int) *Dataset {
	c, h, w := in.Channels, in.Height, in.Width
	plane := h * w
	// One lookup table per channel: byte value → normalized float.
	lut := make([][256]float32, c)
	for ch := range c {
		for v := range 256 {
			lut[ch][v] = (float32(v)/255 - in.Mean[ch]) / in.Std[ch]
		}
	}
	x := tensor.New[float32](n, c, h, w)
	parallel.For(n*c, 256, func(lo, hi int) {
		for p := lo; p < hi; p++ {
			t := &lut[p%c]
			src, dst := pix[p*plane:(p+1)*plane], x.Data[p*plane:(p+1)*plane]
			for j, v := range src {
				dst[j] = t[v]
			}
		}
	})
	return &Dataset{
		Name: name, X: x, Y: y, Classes: in.Classes,
		Mean: slices.Clone(in.Mean), Std: slices.Clone(in.Std), ClassNames: slices.Clone(in.ClassNames),
	}
}

func checkLabels(name string, y []int, classes int) error {
	if classes <= 0 {
		return fmt.Errorf("data: %s: class count %d must be positive", name, classes)
	}
	for i, l := range y {
		if l < 0 || l >= classes {
			return fmt.Errorf("data: %s: label %d at index %d is out of range for %d classes (0..%d)", name, l, i, classes, classes-1)
		}
	}
	return nil
}

// channelStats returns the per-channel mean and (population) standard
// deviation of x (N, C, H, W); a constant channel gets std 1.
func channelStats(x *tensor.Tensor[float32]) (mean, std []float32) {
	n, c, plane := x.Shape[0], x.Shape[1], x.Shape[2]*x.Shape[3]
	mean, std = make([]float32, c), make([]float32, c)
	for ch := range c {
		var sum, sq float64
		for s := range n {
			for _, v := range x.Data[(s*c+ch)*plane : (s*c+ch+1)*plane] {
				sum += float64(v)
				sq += float64(v) * float64(v)
			}
		}
		cnt := float64(n * plane)
		m := sum / cnt
		v := max(sq/cnt-m*m, 0)
		mean[ch] = float32(m)
		std[ch] = float32(math.Sqrt(v))
		if !(std[ch] > 0) {
			std[ch] = 1
		}
	}
	return mean, std
}

// Len returns the number of samples.
func (d *Dataset) Len() int { return len(d.Y) }

// Channels returns C of the (N, C, H, W) images.
func (d *Dataset) Channels() int { return d.X.Shape[1] }

// ImageShape returns (C, H, W).
func (d *Dataset) ImageShape() []int { return slices.Clone(d.X.Shape[1:]) }

// sampleSize is C·H·W.
func (d *Dataset) sampleSize() int { return d.X.Shape[1] * d.X.Shape[2] * d.X.Shape[3] }

// Subset returns a new data set holding copies of the samples idx, in that
// order (repeats allowed). It panics if an index is out of range.
func (d *Dataset) Subset(idx []int) *Dataset {
	x, y := d.Batch(idx)
	return &Dataset{
		Name: d.Name, X: x, Y: y, Classes: d.Classes,
		Mean: slices.Clone(d.Mean), Std: slices.Clone(d.Std), ClassNames: slices.Clone(d.ClassNames),
	}
}

// Slice returns the first n samples (all of them if n ≥ Len, none if n ≤ 0).
// It shares X's memory with d: it is meant for fast tests.
func (d *Dataset) Slice(n int) *Dataset {
	n = max(0, min(n, d.Len()))
	shape := slices.Clone(d.X.Shape)
	shape[0] = n
	return &Dataset{
		Name: d.Name, X: &tensor.Tensor[float32]{Shape: shape, Data: d.X.Data[:n*d.sampleSize()]},
		Y: d.Y[:n:n], Classes: d.Classes,
		Mean: slices.Clone(d.Mean), Std: slices.Clone(d.Std), ClassNames: slices.Clone(d.ClassNames),
	}
}

// ClassIndices returns, for each class, the indices of its samples in
// increasing order.
func (d *Dataset) ClassIndices() [][]int {
	h := d.Histogram()
	out := make([][]int, d.Classes)
	for c := range out {
		out[c] = make([]int, 0, h[c])
	}
	for i, l := range d.Y {
		out[l] = append(out[l], i)
	}
	return out
}

// Histogram returns the number of samples of each class.
func (d *Dataset) Histogram() []int {
	return histogram(d.Y, d.Classes)
}

// Batch copies the samples idx into a new (len(idx), C, H, W) tensor and
// returns it with their labels. It panics if an index is out of range.
func (d *Dataset) Batch(idx []int) (*tensor.Tensor[float32], []int) {
	sz := d.sampleSize()
	n := d.Len()
	shape := slices.Clone(d.X.Shape)
	shape[0] = len(idx)
	x := tensor.New[float32](shape...)
	y := make([]int, len(idx))
	for k, i := range idx {
		if i < 0 || i >= n {
			panic(fmt.Sprintf("data: %s: sample index %d out of range [0, %d)", d.Name, i, n))
		}
		copy(x.Data[k*sz:(k+1)*sz], d.X.Data[i*sz:(i+1)*sz])
		y[k] = d.Y[i]
	}
	return x, y
}

// Denormalize maps normalized images t (N, C, H, W with d's C) back to
// pixel values in [0, 1] scale, in place: v·Std[c] + Mean[c]. Values are not
// clipped.
func (d *Dataset) Denormalize(t *tensor.Tensor[float32]) error {
	if len(t.Shape) != 4 || t.Shape[1] != len(d.Mean) {
		return fmt.Errorf("data: %s: cannot denormalize shape %v: want (N, %d, H, W)", d.Name, t.Shape, len(d.Mean))
	}
	c, plane := t.Shape[1], t.Shape[2]*t.Shape[3]
	for p := range t.Shape[0] * c {
		m, s := d.Mean[p%c], d.Std[p%c]
		for j := p * plane; j < (p+1)*plane; j++ {
			t.Data[j] = t.Data[j]*s + m
		}
	}
	return nil
}

// Validate checks d's invariants: X is (N, C, H, W) with one mean and std
// per channel, len(Y) = N, labels in [0, Classes), and every value finite.
func (d *Dataset) Validate() error {
	if d == nil || d.X == nil {
		return fmt.Errorf("data: nil data set")
	}
	if len(d.X.Shape) != 4 || len(d.X.Data) != tensor.Size(d.X.Shape) {
		return fmt.Errorf("data: %s: images have shape %v and %d values, want (N, C, H, W)", d.Name, d.X.Shape, len(d.X.Data))
	}
	if len(d.Y) != d.X.Shape[0] {
		return fmt.Errorf("data: %s: %d images but %d labels", d.Name, d.X.Shape[0], len(d.Y))
	}
	if len(d.Mean) != d.X.Shape[1] || len(d.Std) != d.X.Shape[1] {
		return fmt.Errorf("data: %s: %d channels but %d means and %d standard deviations", d.Name, d.X.Shape[1], len(d.Mean), len(d.Std))
	}
	if err := checkLabels(d.Name, d.Y, d.Classes); err != nil {
		return err
	}
	for i, v := range d.X.Data {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("data: %s: value %d of X is %v", d.Name, i, v)
		}
	}
	return nil
}

func histogram(y []int, classes int) []int {
	h := make([]int, classes)
	for _, l := range y {
		h[l]++
	}
	return h
}
