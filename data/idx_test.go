package data

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// idxBytes encodes an unsigned-byte IDX file with the given dims and data.
func idxBytes(dims []int, data []byte) []byte {
	var b bytes.Buffer
	b.Write([]byte{0, 0, 0x08, byte(len(dims))})
	for _, d := range dims {
		binary.Write(&b, binary.BigEndian, uint32(d))
	}
	b.Write(data)
	return b.Bytes()
}

func gz(b []byte) []byte {
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	w.Write(b)
	w.Close()
	return out.Bytes()
}

func writeFile(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// testImages returns n images of rows×cols with deterministic pixels.
func testImages(n, rows, cols int) []byte {
	px := make([]byte, n*rows*cols)
	for i := range px {
		px[i] = byte(i*7 + i/13)
	}
	return px
}

func testLabels(n, classes int) []byte {
	y := make([]byte, n)
	for i := range y {
		y[i] = byte((i*3 + 1) % classes)
	}
	return y
}

func wantErr(t *testing.T, err error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", subs)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "data: ") {
		t.Errorf("error %q does not start with \"data: \"", msg)
	}
	for _, s := range subs {
		if !strings.Contains(msg, s) {
			t.Errorf("error %q does not contain %q", msg, s)
		}
	}
}

func TestReadIDXRoundTrip(t *testing.T) {
	dir := t.TempDir()
	px := testImages(5, 4, 3)
	raw := idxBytes([]int{5, 4, 3}, px)
	for _, tc := range []struct {
		name string
		b    []byte
	}{{"img-raw", raw}, {"img.gz", gz(raw)}, {"gz-named-raw.gz", raw}, {"raw-named-gz", gz(raw)}} {
		p := writeFile(t, dir, tc.name, tc.b)
		m, err := ReadIDXImages(p)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if m.Magic != MagicImages || len(m.Dims) != 3 || m.Dims[0] != 5 || m.Dims[1] != 4 || m.Dims[2] != 3 {
			t.Fatalf("%s: magic %#x dims %v", tc.name, m.Magic, m.Dims)
		}
		if !bytes.Equal(m.Data, px) {
			t.Fatalf("%s: data differs", tc.name)
		}
		if _, err := ReadIDX(p); err != nil {
			t.Fatalf("%s: ReadIDX: %v", tc.name, err)
		}
	}
	lp := writeFile(t, dir, "labels.gz", gz(idxBytes([]int{6}, []byte{0, 1, 2, 9, 3, 0})))
	y, err := ReadIDXLabels(lp, 10)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{0, 1, 2, 9, 3, 0}; !equalInts(y, want) {
		t.Fatalf("labels %v, want %v", y, want)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestReadIDXErrors(t *testing.T) {
	dir := t.TempDir()
	img := idxBytes([]int{3, 28, 28}, testImages(3, 28, 28))
	lbl := idxBytes([]int{3}, []byte{1, 2, 3})
	cases := []struct {
		name   string
		b      []byte
		labels bool
		want   []string
	}{
		{"labels-as-images", lbl, false, []string{"wrong magic number 0x00000801", "labels", "want 0x00000803"}},
		{"images-as-labels", img, true, []string{"wrong magic number 0x00000803", "want 0x00000801"}},
		{"garbage", []byte("hello, world, not idx"), false, []string{"not an IDX images file", "0x68656C6C"}},
		{"empty", nil, false, []string{"truncated", "too short for an IDX header"}},
		{"short-header", img[:9], false, []string{"truncated: header needs 16 bytes, file has 9"}},
		{"truncated-raw", img[:16+1000], false, []string{"truncated: header says 3 images of 28×28 (2352 bytes), file has 1000"}},
		{"truncated-gz-stream", gz(img)[:40], false, []string{"truncated"}},
		{"truncated-gz-data", gz(img[:16+1000]), false, []string{"truncated: header says 3 images of 28×28 (2352 bytes), file has 1000 (after decompression)"}},
		{"trailing", append(append([]byte{}, img...), 1, 2, 3), false, []string{"size mismatch", "3 images of 28×28"}},
		{"trailing-labels", append(append([]byte{}, lbl...), 4), true, []string{"size mismatch", "3 labels"}},
		{"float-type", []byte{0, 0, 0x0D, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0}, false, []string{"0x0D (float32) is not supported"}},
		{"zero-dims", []byte{0, 0, 8, 0}, false, []string{"0x00000800"}},
		{"huge-dims", []byte{0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, false, []string{"corrupt header", "4294967295×4294967295×4294967295"}},
		{"zero-images", idxBytes([]int{0, 28, 28}, nil), false, []string{"0 images of 28×28"}},
		{"zero-labels", idxBytes([]int{0}, nil), true, []string{"0 labels"}},
		{"bad-gzip-checksum", corruptChecksum(gz(img)), false, []string{"corrupt gzip data", "checksum"}},
		{"label-range", idxBytes([]int{4}, []byte{0, 9, 10, 2}), true, []string{"label 10 at index 2 is out of range for 10 classes (0..9)"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, dir, tc.name, tc.b)
			var err error
			if tc.labels {
				_, err = ReadIDXLabels(p, 10)
			} else {
				_, err = ReadIDXImages(p)
			}
			wantErr(t, err, append([]string{p + ": "}, tc.want...)...)
		})
	}
	_, err := ReadIDXImages(filepath.Join(dir, "missing.gz"))
	wantErr(t, err, "missing.gz", "no such file")
}

// corruptChecksum flips a bit of the gzip CRC-32 trailer.
func corruptChecksum(b []byte) []byte {
	b = append([]byte{}, b...)
	b[len(b)-8] ^= 1
	return b
}

func TestDecodeIDXAnyMagic(t *testing.T) {
	b := idxBytes([]int{2, 3, 2, 2}, testImages(2, 6, 2))
	m, err := DecodeIDX("mem", bytes.NewReader(b), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Dims) != 4 || len(m.Data) != 24 || m.Magic != 0x804 {
		t.Fatalf("dims %v, %d bytes, magic %#x", m.Dims, len(m.Data), m.Magic)
	}
	_, err = DecodeIDX("mem", bytes.NewReader(b[:24]), 0)
	wantErr(t, err, "mem: truncated: header says dimensions 2×3×2×2 (24 bytes), file has 4")
}

func FuzzReadIDX(f *testing.F) {
	img := idxBytes([]int{2, 3, 3}, testImages(2, 3, 3))
	lbl := idxBytes([]int{4}, []byte{0, 1, 9, 2})
	f.Add(img)
	f.Add(gz(img))
	f.Add(lbl)
	f.Add(gz(lbl))
	f.Add(img[:10])
	f.Add(gz(img)[:20])
	f.Add([]byte{0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Add([]byte{0, 0, 8, 1, 0x7f, 0xff, 0xff, 0xff, 1})
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, want := range []uint32{0, MagicImages, MagicLabels} {
			m, err := DecodeIDX("fuzz", bytes.NewReader(b), want)
			if err != nil {
				if !strings.HasPrefix(err.Error(), "data: fuzz: ") {
					t.Fatalf("error %q lacks the prefix", err)
				}
				continue
			}
			size := 1
			for _, d := range m.Dims {
				size *= d
			}
			if size != len(m.Data) {
				t.Fatalf("dims %v but %d bytes", m.Dims, len(m.Data))
			}
			if want != 0 && m.Magic != want {
				t.Fatalf("magic %#x accepted, want %#x", m.Magic, want)
			}
			if want == MagicLabels {
				if _, err := idxLabels("fuzz", m, 10); err != nil && !strings.HasPrefix(err.Error(), "data: fuzz: ") {
					t.Fatalf("error %q lacks the prefix", err)
				}
			}
		}
	})
}
