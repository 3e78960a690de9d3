package data

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// IDX magic numbers of the two MNIST file kinds: two zero bytes, the element
// type (0x08, unsigned byte) and the number of dimensions.
const (
	MagicImages uint32 = 0x00000803
	MagicLabels uint32 = 0x00000801
)

// maxIDXBytes bounds the payload an IDX header may claim (16 GiB): larger
// claims are corrupt headers, not data sets this simulator can hold.
const maxIDXBytes = 1 << 34

// IDX is a decoded IDX file of unsigned bytes (the MNIST format): its magic
// number, its dimensions (Dims[0] is the item count) and its row-major
// payload, which has exactly the product of Dims bytes.
type IDX struct {
	Magic uint32
	Dims  []int
	Data  []byte
}

// ReadIDX reads an IDX file of unsigned bytes, gzip-compressed or raw (told
// apart by their first bytes, not by the file name). Errors start with
// "data: " and the path.
func ReadIDX(path string) (*IDX, error) {
	return readIDXFile(path, 0)
}

// ReadIDXImages reads an IDX images file (magic 0x00000803): Dims is
// [count, rows, cols], all positive.
func ReadIDXImages(path string) (*IDX, error) {
	return readIDXFile(path, MagicImages)
}

// ReadIDXLabels reads an IDX labels file (magic 0x00000801) and checks that
// every label is below classes.
func ReadIDXLabels(path string, classes int) ([]int, error) {
	m, err := readIDXFile(path, MagicLabels)
	if err != nil {
		return nil, err
	}
	return idxLabels(path, m, classes)
}

// DecodeIDX decodes an IDX file (gzip-compressed or raw) from r; name is
// used in error messages. want is the required magic number, or 0 to accept
// any unsigned-byte IDX file of 1 to 4 dimensions.
func DecodeIDX(name string, r io.Reader, want uint32) (*IDX, error) {
	return decodeIDX(name, r, want, -1)
}

func readIDXFile(path string, want uint32) (*IDX, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	defer f.Close()
	size := int64(-1)
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		size = st.Size()
	}
	return decodeIDX(path, f, want, size)
}

// idxLabels turns a decoded labels file into ints below classes.
func idxLabels(name string, m *IDX, classes int) ([]int, error) {
	if len(m.Dims) != 1 {
		return nil, fmt.Errorf("data: %s: labels file has %d dimensions, want 1", name, len(m.Dims))
	}
	if classes <= 0 {
		return nil, fmt.Errorf("data: %s: class count %d must be positive", name, classes)
	}
	y := make([]int, len(m.Data))
	for i, v := range m.Data {
		if int(v) >= classes {
			return nil, fmt.Errorf("data: %s: label %d at index %d is out of range for %d classes (0..%d)", name, v, i, classes, classes-1)
		}
		y[i] = int(v)
	}
	return y, nil
}

var idxTypeNames = map[byte]string{
	0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16",
	0x0C: "int32", 0x0D: "float32", 0x0E: "float64",
}

func magicKind(m uint32) string {
	switch m {
	case MagicImages:
		return "images"
	case MagicLabels:
		return "labels"
	}
	return fmt.Sprintf("%d-dimensional", m&0xff)
}

// decodeIDX decodes from r. size is the length of the underlying file when
// known (-1 otherwise); it only sizes buffers.
func decodeIDX(name string, r io.Reader, want uint32, size int64) (*IDX, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	var src io.Reader = br
	compressed := false
	if head, err := br.Peek(2); err == nil && head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("data: %s: corrupt gzip header: %v", name, err)
		}
		defer zr.Close()
		src = zr
		compressed = true
	}

	var hdr [4]byte
	if n, err := io.ReadFull(src, hdr[:]); err != nil {
		if isTruncation(err) {
			return nil, fmt.Errorf("data: %s: truncated: file has %d bytes, too short for an IDX header", name, n)
		}
		return nil, readErr(name, err)
	}
	magic := binary.BigEndian.Uint32(hdr[:])
	if hdr[0] != 0 || hdr[1] != 0 {
		what := "an IDX file"
		if want != 0 {
			what = "an IDX " + magicKind(want) + " file"
		}
		return nil, fmt.Errorf("data: %s: not %s: magic number 0x%08X does not start with two zero bytes", name, what, magic)
	}
	if hdr[2] != 0x08 {
		tn, ok := idxTypeNames[hdr[2]]
		if !ok {
			tn = "unknown"
		}
		return nil, fmt.Errorf("data: %s: IDX element type 0x%02X (%s) is not supported, only unsigned byte (0x08)", name, hdr[2], tn)
	}
	if want != 0 && magic != want {
		return nil, fmt.Errorf("data: %s: wrong magic number 0x%08X (an IDX %s file), want 0x%08X (%s)", name, magic, magicKind(magic), want, magicKind(want))
	}
	nd := int(hdr[3])
	if nd < 1 || nd > 4 {
		return nil, fmt.Errorf("data: %s: IDX file has %d dimensions, want 1 to 4", name, nd)
	}
	dimBytes := make([]byte, 4*nd)
	if n, err := io.ReadFull(src, dimBytes); err != nil {
		if isTruncation(err) {
			return nil, fmt.Errorf("data: %s: truncated: header needs %d bytes, file has %d", name, 4+4*nd, 4+n)
		}
		return nil, readErr(name, err)
	}
	dims := make([]int, nd)
	total := int64(1)
	for i := range dims {
		d := int64(binary.BigEndian.Uint32(dimBytes[4*i:]))
		dims[i] = int(d)
		if total != 0 && d > maxIDXBytes/total { // total stays ≤ maxIDXBytes
			return nil, fmt.Errorf("data: %s: corrupt header: dimensions %s claim more than %d bytes", name, dimString(dimBytes), int64(maxIDXBytes))
		}
		total *= d
	}
	if want == MagicImages && (dims[0] == 0 || dims[1] == 0 || dims[2] == 0) {
		return nil, fmt.Errorf("data: %s: header says %d images of %d×%d: an images file needs at least one image of at least 1×1 pixels", name, dims[0], dims[1], dims[2])
	}
	if want == MagicLabels && dims[0] == 0 {
		return nil, fmt.Errorf("data: %s: header says 0 labels", name)
	}

	hdrLen := int64(4 + 4*nd)
	hint := total
	switch {
	case size >= 0 && !compressed:
		hint = min(total, max(size-hdrLen, 0))
	case size >= 0:
		hint = min(total, 8*size+4096)
	default:
		hint = min(total, 1<<20)
	}
	body, extra, err := readBody(src, total, hint)
	if err != nil && !isTruncation(err) {
		return nil, readErr(name, err)
	}
	if int64(len(body)) < total {
		note := ""
		if compressed {
			note = " (after decompression)"
		}
		return nil, fmt.Errorf("data: %s: truncated: header says %s (%d bytes), file has %d%s", name, describeDims(magic, dims), total, len(body), note)
	}
	if extra {
		return nil, fmt.Errorf("data: %s: size mismatch: header says %s (%d bytes), but more data follows; is the header's count wrong?", name, describeDims(magic, dims), total)
	}
	return &IDX{Magic: magic, Dims: dims, Data: body}, nil
}

// readBody reads exactly total bytes into a buffer that starts with capacity
// hint and grows as data arrives (so a corrupt header cannot make it
// allocate more than the file holds). It reports whether data follows; a
// short body comes back with the error that ended it.
func readBody(r io.Reader, total, hint int64) (body []byte, extra bool, err error) {
	buf := make([]byte, 0, max(hint, 0))
	for int64(len(buf)) < total {
		if len(buf) == cap(buf) {
			grow := min(total-int64(len(buf)), max(int64(cap(buf)), 1<<16))
			buf = slices.Grow(buf, int(grow))
		}
		end := min(int64(cap(buf)), total)
		n, rerr := r.Read(buf[len(buf):end])
		buf = buf[:len(buf)+n]
		if rerr == io.EOF {
			return buf, false, io.ErrUnexpectedEOF
		}
		if rerr != nil {
			return buf, false, rerr
		}
	}
	// Read on to EOF by one byte: this both detects trailing data and makes
	// a gzip reader verify its checksum.
	var one [1]byte
	for {
		n, rerr := r.Read(one[:])
		if n > 0 {
			return buf, true, nil
		}
		if rerr == io.EOF {
			return buf, false, nil
		}
		if rerr != nil {
			return buf, false, rerr
		}
	}
}

func isTruncation(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

func readErr(name string, err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("data: %w", err)
	}
	if errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) || strings.HasPrefix(err.Error(), "flate:") {
		return fmt.Errorf("data: %s: corrupt gzip data: %v", name, err)
	}
	return fmt.Errorf("data: %s: %w", name, err)
}

func dimString(b []byte) string {
	parts := make([]string, len(b)/4)
	for i := range parts {
		parts[i] = fmt.Sprint(binary.BigEndian.Uint32(b[4*i:]))
	}
	return strings.Join(parts, "×")
}

// describeDims says what a header claims: "60000 images of 28×28",
// "60000 labels", or "dimensions 2×3×4".
func describeDims(magic uint32, dims []int) string {
	switch {
	case magic == MagicImages && len(dims) == 3:
		return fmt.Sprintf("%d images of %d×%d", dims[0], dims[1], dims[2])
	case magic == MagicLabels && len(dims) == 1:
		return fmt.Sprintf("%d labels", dims[0])
	}
	parts := make([]string, len(dims))
	for i, d := range dims {
		parts[i] = fmt.Sprint(d)
	}
	return "dimensions " + strings.Join(parts, "×")
}
