package data

import (
	"math"
	"slices"
	"testing"

	"github.com/fedsim/fedsim/tensor"
)

// smallSet builds a 2-channel 2×2 data set of n samples whose pixel j of
// sample i is (i*8+j)/255.
func smallSet(t *testing.T, n int) *Dataset {
	t.Helper()
	x := tensor.New[float32](n, 2, 2, 2)
	for i := range x.Data {
		x.Data[i] = float32(i%256) / 255
	}
	y := make([]int, n)
	for i := range y {
		y[i] = i % 3
	}
	d, err := New("small", x, y, 3, []float32{0.5, 0.25}, []float32{0.5, 0.25}, []string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestNewNormalizes(t *testing.T) {
	d := smallSet(t, 4)
	for i, v := range d.X.Data {
		c := i / 4 % 2
		m := []float32{0.5, 0.25}[c]
		want := (float32(i)/255 - m) / m
		if math.Abs(float64(v-want)) > 1e-6 {
			t.Fatalf("X[%d] = %v, want %v", i, v, want)
		}
	}
	x := d.X.Clone()
	if err := d.Denormalize(x); err != nil {
		t.Fatal(err)
	}
	for i, v := range x.Data {
		if math.Abs(float64(v)-float64(i)/255) > 1e-6 {
			t.Fatalf("denormalized X[%d] = %v, want %v", i, v, float64(i)/255)
		}
	}
	if err := d.Denormalize(tensor.New[float32](1, 3, 2, 2)); err == nil {
		t.Fatal("Denormalize accepted 3 channels for a 2-channel set")
	}
}

func TestNewComputesStats(t *testing.T) {
	x := tensor.New[float32](3, 1, 1, 2)
	copy(x.Data, []float32{0, 1, 2, 3, 4, 5})
	d, err := New("s", x, []int{0, 1, 0}, 2, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var s, sq float64
	for _, v := range d.X.Data {
		s += float64(v)
		sq += float64(v) * float64(v)
	}
	if math.Abs(s/6) > 1e-6 || math.Abs(sq/6-1) > 1e-5 {
		t.Fatalf("normalized mean %v, var %v; want 0, 1", s/6, sq/6)
	}
	if x.Data[5] != 5 {
		t.Fatal("New modified its input")
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	good := func() *tensor.Tensor[float32] { return tensor.New[float32](2, 1, 2, 2) }
	nan := good()
	nan.Data[6] = float32(math.NaN())
	inf := good()
	inf.Data[1] = float32(math.Inf(1))
	one := []float32{0.5}
	cases := []struct {
		name string
		x    *tensor.Tensor[float32]
		y    []int
		mean []float32
		std  []float32
		want string
	}{
		{"nan", nan, []int{0, 1}, one, one, "pixel 6 (image 1, channel 0, row 1, column 0) is NaN"},
		{"inf", inf, []int{0, 1}, one, one, "pixel 1 (image 0, channel 0, row 0, column 1) is +Inf"},
		{"nil", nil, nil, one, one, "no images"},
		{"rank", tensor.New[float32](2, 4), []int{0, 1}, one, one, "want rank 4"},
		{"labels", good(), []int{0}, one, one, "2 images but 1 labels"},
		{"label-range", good(), []int{0, 2}, one, one, "label 2 at index 1 is out of range for 2 classes"},
		{"std", good(), []int{0, 1}, one, []float32{0}, "std > 0"},
		{"channels", good(), []int{0, 1}, []float32{0, 0}, []float32{1, 1}, "1 channels but 2 means"},
		{"bad-data", &tensor.Tensor[float32]{Shape: []int{2, 1, 2, 2}, Data: make([]float32, 3)}, []int{0, 1}, one, one, "need 8 values, tensor has 3"},
		{"neg", &tensor.Tensor[float32]{Shape: []int{-2, 1, 2, 2}}, nil, one, one, "negative dimension"},
	}
	for _, tc := range cases {
		_, err := New("user", tc.x, tc.y, 2, tc.mean, tc.std, nil)
		wantErr(t, err, "data: user: ", tc.want)
	}
}

func TestDatasetHelpers(t *testing.T) {
	d := smallSet(t, 7)
	if h := d.Histogram(); !slices.Equal(h, []int{3, 2, 2}) {
		t.Fatalf("histogram %v", h)
	}
	ci := d.ClassIndices()
	if !slices.Equal(ci[0], []int{0, 3, 6}) || !slices.Equal(ci[1], []int{1, 4}) || !slices.Equal(ci[2], []int{2, 5}) {
		t.Fatalf("class indices %v", ci)
	}
	sub := d.Subset([]int{5, 1, 5})
	if !slices.Equal(sub.X.Shape, []int{3, 2, 2, 2}) || !slices.Equal(sub.Y, []int{2, 1, 2}) {
		t.Fatalf("subset shape %v labels %v", sub.X.Shape, sub.Y)
	}
	if !slices.Equal(sub.X.Data[:8], d.X.Data[40:48]) || !slices.Equal(sub.X.Data[8:16], d.X.Data[8:16]) {
		t.Fatal("subset copied the wrong samples")
	}
	sub.X.Data[0] = 99
	if d.X.Data[40] == 99 {
		t.Fatal("Subset shares memory with the data set")
	}
	if err := sub.Validate(); err != nil {
		t.Fatal(err)
	}
	x, y := d.Batch([]int{6})
	if !slices.Equal(x.Shape, []int{1, 2, 2, 2}) || !slices.Equal(y, []int{0}) || !slices.Equal(x.Data, d.X.Data[48:56]) {
		t.Fatalf("batch %v %v", x, y)
	}
	s := d.Slice(2)
	if s.Len() != 2 || !slices.Equal(s.X.Shape, []int{2, 2, 2, 2}) || len(s.X.Data) != 16 || !slices.Equal(s.Y, []int{0, 1}) {
		t.Fatalf("slice %v %v", s.X.Shape, s.Y)
	}
	if d.Slice(100).Len() != 7 || d.Slice(-1).Len() != 0 {
		t.Fatal("Slice does not clamp n")
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := d.ImageShape(); !slices.Equal(got, []int{2, 2, 2}) || d.Channels() != 2 {
		t.Fatalf("image shape %v", got)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("Batch with an out-of-range index did not panic")
			}
		}()
		d.Batch([]int{7})
	}()
}

func TestLookup(t *testing.T) {
	in, err := Lookup("CIFAR10")
	if err != nil {
		t.Fatal(err)
	}
	if in.Channels != 3 || in.Mean[2] != 0.4465 || in.Std[0] != 0.2023 {
		t.Fatalf("cifar10 info %+v", in)
	}
	in.Mean[0] = 1 // must not leak into the table
	again, _ := Lookup("cifar10")
	if again.Mean[0] != 0.4914 {
		t.Fatal("Lookup returned the table's own slices")
	}
	m, _ := Lookup("mnist")
	f, _ := Lookup("fmnist")
	if m.Mean[0] != 0.1307 || m.Std[0] != 0.3081 || f.Mean[0] != 0.2861 || f.Std[0] != 0.3530 {
		t.Fatalf("mnist %v %v, fmnist %v %v", m.Mean, m.Std, f.Mean, f.Std)
	}
	if !slices.Equal(Names(), []string{"mnist", "fmnist", "cifar10"}) {
		t.Fatalf("names %v", Names())
	}
}
