// Package npz reads and writes NumPy .npz archives: zip files holding one .npy
// array per entry (format versions 1.0, 2.0 and 3.0, little-endian, C order).
//
// Supported dtypes are float32, float64, int64, int32 and uint8. Entries may be
// stored or deflated (np.savez and np.savez_compressed). Writing produces
// stored entries like np.savez, atomically (temp file, fsync, rename).
//
// All errors start with "npz: " and name the file (when known), the entry and
// what is wrong. Malformed input never panics.
package npz

import (
	"errors"
	"fmt"
	"math"
)

// Array is one named n-dimensional array in C (row-major) order.
type Array struct {
	Name  string // key, without the ".npy" suffix of the zip entry
	Shape []int  // empty (not nil after Read) for a 0-d array
	// DType is one of "float32", "float64", "int64", "int32", "uint8".
	DType string
	// Data is []float32, []float64, []int64, []int32 or []uint8 matching DType,
	// with Size() elements.
	Data any
}

// dtype descriptions: Go name, numpy descr, item size.
type dtypeInfo struct {
	name  string
	descr string
	size  int
}

var dtypes = []dtypeInfo{
	{"float32", "<f4", 4},
	{"float64", "<f8", 8},
	{"int64", "<i8", 8},
	{"int32", "<i4", 4},
	{"uint8", "|u1", 1},
}

func dtypeByName(name string) (dtypeInfo, bool) {
	for _, d := range dtypes {
		if d.name == name {
			return d, true
		}
	}
	return dtypeInfo{}, false
}

// New returns an Array with the dtype inferred from data, which must be one
// of []float32, []float64, []int64, []int32, []uint8 with as many elements as
// the shape says. The shape and data are not copied.
func New(name string, shape []int, data any) (*Array, error) {
	a := &Array{Name: name, Shape: shape, Data: data}
	switch data.(type) {
	case []float32:
		a.DType = "float32"
	case []float64:
		a.DType = "float64"
	case []int64:
		a.DType = "int64"
	case []int32:
		a.DType = "int32"
	case []uint8:
		a.DType = "uint8"
	default:
		return nil, fmt.Errorf("npz: array %q: unsupported data type %T", name, data)
	}
	if err := a.validate(); err != nil {
		return nil, fmt.Errorf("npz: %w", err)
	}
	return a, nil
}

// Size is the number of elements the shape describes (1 for a 0-d array).
// It returns -1 for a negative dimension or an overflowing product.
func (a *Array) Size() int {
	n, err := shapeSize(a.Shape)
	if err != nil {
		return -1
	}
	return n
}

func shapeSize(shape []int) (int, error) {
	n := 1
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension %d in shape %v", d, shape)
		}
		if d != 0 && n > math.MaxInt/d {
			return 0, fmt.Errorf("shape %v overflows", shape)
		}
		n *= d
	}
	return n, nil
}

func dataLen(data any) (int, string) {
	switch v := data.(type) {
	case []float32:
		return len(v), "float32"
	case []float64:
		return len(v), "float64"
	case []int64:
		return len(v), "int64"
	case []int32:
		return len(v), "int32"
	case []uint8:
		return len(v), "uint8"
	}
	return -1, ""
}

// validate checks the array is consistent; the error names the array but
// lacks the "npz: " prefix.
func (a *Array) validate() error {
	if a == nil {
		return errors.New("nil array")
	}
	if a.Name == "" {
		return errors.New("array with empty name")
	}
	if _, ok := dtypeByName(a.DType); !ok {
		return fmt.Errorf("array %q: unsupported dtype %q (want float32, float64, int64, int32 or uint8)", a.Name, a.DType)
	}
	n, kind := dataLen(a.Data)
	if n < 0 {
		return fmt.Errorf("array %q: unsupported data type %T", a.Name, a.Data)
	}
	if kind != a.DType {
		return fmt.Errorf("array %q: dtype %s but data is %T", a.Name, a.DType, a.Data)
	}
	size, err := shapeSize(a.Shape)
	if err != nil {
		return fmt.Errorf("array %q: %v", a.Name, err)
	}
	if size != n {
		return fmt.Errorf("array %q: shape %v needs %d elements, data has %d", a.Name, a.Shape, size, n)
	}
	return nil
}

// Float64 returns the data as float64, converting from any dtype. A float64
// array's own slice is returned (not a copy).
func (a *Array) Float64() ([]float64, error) {
	switch v := a.Data.(type) {
	case []float64:
		return v, nil
	case []float32:
		return convert(v, func(x float32) float64 { return float64(x) }), nil
	case []int64:
		return convert(v, func(x int64) float64 { return float64(x) }), nil
	case []int32:
		return convert(v, func(x int32) float64 { return float64(x) }), nil
	case []uint8:
		return convert(v, func(x uint8) float64 { return float64(x) }), nil
	}
	return nil, fmt.Errorf("npz: array %q: unsupported data type %T", a.Name, a.Data)
}

// Float32 returns the data as float32, converting (and rounding) from any
// dtype. A float32 array's own slice is returned (not a copy).
func (a *Array) Float32() ([]float32, error) {
	switch v := a.Data.(type) {
	case []float32:
		return v, nil
	case []float64:
		return convert(v, func(x float64) float32 { return float32(x) }), nil
	case []int64:
		return convert(v, func(x int64) float32 { return float32(x) }), nil
	case []int32:
		return convert(v, func(x int32) float32 { return float32(x) }), nil
	case []uint8:
		return convert(v, func(x uint8) float32 { return float32(x) }), nil
	}
	return nil, fmt.Errorf("npz: array %q: unsupported data type %T", a.Name, a.Data)
}

// Int64 returns the data as int64, converting from any dtype. Floating-point
// values must be integral and in range, or an error is returned. An int64
// array's own slice is returned (not a copy).
func (a *Array) Int64() ([]int64, error) {
	switch v := a.Data.(type) {
	case []int64:
		return v, nil
	case []int32:
		return convert(v, func(x int32) int64 { return int64(x) }), nil
	case []uint8:
		return convert(v, func(x uint8) int64 { return int64(x) }), nil
	case []float64:
		return floatsToInt64(a.Name, v)
	case []float32:
		return floatsToInt64(a.Name, v)
	}
	return nil, fmt.Errorf("npz: array %q: unsupported data type %T", a.Name, a.Data)
}

// Ints returns the data as int (e.g. class labels), with the same rules as Int64.
func (a *Array) Ints() ([]int, error) {
	v, err := a.Int64()
	if err != nil {
		return nil, err
	}
	out := make([]int, len(v))
	for i, x := range v {
		if int64(int(x)) != x {
			return nil, fmt.Errorf("npz: array %q: element %d (%d) does not fit in int", a.Name, i, x)
		}
		out[i] = int(x)
	}
	return out, nil
}

func convert[S, D any](src []S, f func(S) D) []D {
	out := make([]D, len(src))
	for i, x := range src {
		out[i] = f(x)
	}
	return out
}

func floatsToInt64[F float32 | float64](name string, v []F) ([]int64, error) {
	out := make([]int64, len(v))
	for i, x := range v {
		f := float64(x)
		// 2^63 is exactly representable; valid values are in [-2^63, 2^63).
		if f != math.Trunc(f) || f < -(1<<63) || f >= 1<<63 {
			return nil, fmt.Errorf("npz: array %q: element %d (%v) is not an int64 value", name, i, f)
		}
		out[i] = int64(f)
	}
	return out, nil
}
