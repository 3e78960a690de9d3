package npz

import (
	"github.com/fedsim/fedsim/internal/atomicfile"

	"archive/zip"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Read reads every array of the .npz file at path, keyed by name (the zip
// entry name without its ".npy" suffix).
func Read(path string) (map[string]*Array, error) {
	list, err := ReadOrdered(path)
	if err != nil {
		return nil, err
	}
	return byName(list), nil
}

// ReadFrom reads every array of an .npz archive of the given size from r.
func ReadFrom(r io.ReaderAt, size int64) (map[string]*Array, error) {
	m, err := readArchive(r, size)
	if err != nil {
		return nil, fmt.Errorf("npz: %w", err)
	}
	return m, nil
}

// ReadOrdered is like Read but returns the arrays in archive order.
func ReadOrdered(path string) ([]*Array, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("npz: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("npz: %w", err)
	}
	list, err := readList(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("npz: %s: %w", path, err)
	}
	return list, nil
}

func readArchive(r io.ReaderAt, size int64) (map[string]*Array, error) {
	list, err := readList(r, size)
	if err != nil {
		return nil, err
	}
	return byName(list), nil
}

func byName(list []*Array) map[string]*Array {
	m := make(map[string]*Array, len(list))
	for _, a := range list {
		m[a.Name] = a
	}
	return m
}

func readList(r io.ReaderAt, size int64) ([]*Array, error) {
	zr, err := zip.NewReader(r, size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		// ErrInsecurePath only reports odd entry names; we never use them as paths.
		return nil, fmt.Errorf("not a zip archive: %v", err)
	}
	var list []*Array
	seen := make(map[string]bool, len(zr.File))
	for _, zf := range zr.File {
		if strings.HasSuffix(zf.Name, "/") {
			continue // directory entry
		}
		name, ok := strings.CutSuffix(zf.Name, ".npy")
		if !ok || name == "" {
			return nil, fmt.Errorf("entry %q: not a .npy entry", zf.Name)
		}
		if seen[name] {
			return nil, fmt.Errorf("entry %q: duplicate array name %q", zf.Name, name)
		}
		seen[name] = true
		a, err := readEntry(zf)
		if err != nil {
			return nil, fmt.Errorf("entry %q: %w", zf.Name, err)
		}
		a.Name = name
		list = append(list, a)
	}
	return list, nil
}

func readEntry(zf *zip.File) (*Array, error) {
	rc, err := zf.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	declared := int64(-1)
	if zf.UncompressedSize64 <= 1<<62 {
		declared = int64(zf.UncompressedSize64)
	}
	a, err := readNPY(rc, declared)
	if err != nil {
		return nil, err
	}
	// Drain so the zip reader verifies the CRC-32 (readNPY stops at the end of the data).
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return nil, fmt.Errorf("reading data: %v", err)
	}
	return a, nil
}

// fixedTime is the modification time of every entry, so output is reproducible.
var fixedTime = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// WriteTo writes the arrays as an .npz archive to w, in the given order, as
// stored (uncompressed) entries named Name+".npy", like numpy.savez.
func WriteTo(w io.Writer, arrays []*Array) error {
	if err := checkArrays(arrays); err != nil {
		return fmt.Errorf("npz: %w", err)
	}
	if err := writeArchive(w, arrays); err != nil {
		return fmt.Errorf("npz: %w", err)
	}
	return nil
}

func checkArrays(arrays []*Array) error {
	seen := make(map[string]bool, len(arrays))
	for i, a := range arrays {
		if err := a.validate(); err != nil {
			return fmt.Errorf("array %d: %w", i, err)
		}
		if seen[a.Name] {
			return fmt.Errorf("duplicate array name %q", a.Name)
		}
		seen[a.Name] = true
	}
	return nil
}

func writeArchive(w io.Writer, arrays []*Array) error {
	zw := zip.NewWriter(w)
	for _, a := range arrays {
		fw, err := zw.CreateHeader(&zip.FileHeader{
			Name:     a.Name + ".npy",
			Method:   zip.Store,
			Modified: fixedTime,
		})
		if err != nil {
			return fmt.Errorf("array %q: %w", a.Name, err)
		}
		if err := writeNPY(fw, a); err != nil {
			return fmt.Errorf("array %q: %w", a.Name, err)
		}
	}
	return zw.Close()
}

// Write writes the arrays to the .npz file at path, in the given order. It
// writes a temporary file in the same directory, syncs it and renames it over
// path, so readers never see a partial file.
func Write(path string, arrays []*Array) (err error) {
	if err := checkArrays(arrays); err != nil {
		return fmt.Errorf("npz: %s: %w", path, err)
	}
	if err := atomicfile.Write(path, func(w io.Writer) error { return writeArchive(w, arrays) }); err != nil {
		return fmt.Errorf("npz: %w", err)
	}
	return nil
}
