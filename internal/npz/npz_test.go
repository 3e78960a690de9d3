package npz

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func mustNew(t testing.TB, name string, shape []int, data any) *Array {
	t.Helper()
	a, err := New(name, shape, data)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func sampleArrays(t testing.TB) []*Array {
	return []*Array{
		mustNew(t, "w", []int{2, 3}, []float32{1, -2, 3.5, float32(math.Inf(1)), 0, 1e-40}),
		mustNew(t, "loss", []int{}, []float64{2.4238118188384092}),
		mustNew(t, "labels", []int{4}, []int64{0, 9, -1, math.MaxInt64}),
		mustNew(t, "i32", []int{1, 2, 1}, []int32{math.MinInt32, 7}),
		mustNew(t, "pix", []int{2, 2}, []uint8{0, 1, 254, 255}),
		mustNew(t, "empty", []int{0, 5}, []float64{}),
		mustNew(t, "conv0.weight", []int{2, 1, 3, 3}, make([]float64, 18)),
	}
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rt.npz")
	in := sampleArrays(t)
	if err := Write(path, in); err != nil {
		t.Fatal(err)
	}
	got, err := ReadOrdered(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(in) {
		t.Fatalf("got %d arrays, want %d", len(got), len(in))
	}
	for i, a := range in {
		g := got[i]
		if g.Name != a.Name || g.DType != a.DType || !reflect.DeepEqual(g.Shape, a.Shape) {
			t.Errorf("array %d: got %q %s %v, want %q %s %v", i, g.Name, g.DType, g.Shape, a.Name, a.DType, a.Shape)
		}
		if !reflect.DeepEqual(g.Data, a.Data) {
			t.Errorf("array %q: data %v, want %v", a.Name, g.Data, a.Data)
		}
	}
	m, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != len(in) || m["loss"] == nil {
		t.Fatalf("Read map has %d entries", len(m))
	}
	// No temp files left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory has %d entries after Write, want 1", len(ents))
	}
	// Deterministic output.
	var b1, b2 bytes.Buffer
	if err := WriteTo(&b1, in); err != nil {
		t.Fatal(err)
	}
	if err := WriteTo(&b2, in); err != nil {
		t.Fatal(err)
	}
	disk, _ := os.ReadFile(path)
	if !bytes.Equal(b1.Bytes(), b2.Bytes()) || !bytes.Equal(b1.Bytes(), disk) {
		t.Error("output is not deterministic")
	}
}

func TestHeaderAlignment(t *testing.T) {
	for _, shape := range [][]int{{}, {1}, {3, 4}, {1, 2, 3, 4, 5, 6, 7, 8}} {
		n := 1
		for _, d := range shape {
			n *= d
		}
		h := npyHeader(mustNew(t, "a", shape, make([]float32, n)))
		if len(h)%64 != 0 || h[len(h)-1] != '\n' || h[6] != 1 {
			t.Errorf("shape %v: header %q not a 64-aligned v1.0 header", shape, h)
		}
	}
}

func TestWriteOverwritesAtomically(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.npz")
	if err := Write(path, sampleArrays(t)[:1]); err != nil {
		t.Fatal(err)
	}
	// A failing write leaves the old file intact and no temp file.
	bad := &Array{Name: "bad", Shape: []int{3}, DType: "float32", Data: []float32{1}}
	if err := Write(path, []*Array{bad}); err == nil {
		t.Fatal("Write accepted a bad array")
	}
	m, err := Read(path)
	if err != nil || m["w"] == nil {
		t.Fatalf("old file damaged: %v", err)
	}
	if err := Write(path, sampleArrays(t)[1:2]); err != nil {
		t.Fatal(err)
	}
	m, err = Read(path)
	if err != nil || m["loss"] == nil || m["w"] != nil {
		t.Fatalf("overwrite failed: %v %v", m, err)
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Errorf("%d directory entries, want 1", len(ents))
	}
}

func TestReadNumpy(t *testing.T) {
	for _, file := range []string{"numpy.npz", "numpy_compressed.npz"} {
		t.Run(file, func(t *testing.T) {
			m, err := Read(filepath.Join("testdata", file))
			if err != nil {
				t.Fatal(err)
			}
			check := func(name, dtype string, shape []int, data any) {
				t.Helper()
				a := m[name]
				if a == nil {
					t.Fatalf("no array %q", name)
				}
				if a.DType != dtype || !reflect.DeepEqual(a.Shape, shape) || !reflect.DeepEqual(a.Data, data) {
					t.Errorf("%s: got %s %v %v, want %s %v %v", name, a.DType, a.Shape, a.Data, dtype, shape, data)
				}
			}
			check("f32", "float32", []int{2, 3}, []float32{-0.625, -0.375, -0.125, 0.125, 0.375, 0.625})
			check("f64_scalar", "float64", []int{}, []float64{3.141592653589793})
			check("f64", "float64", []int{4}, []float64{1e-300, math.Copysign(0, -1), 1.5, 1 << 60})
			check("i64", "int64", []int{4}, []int64{-(1 << 62), -1, 0, 7})
			check("i32", "int32", []int{2, 2, 2}, []int32{-3, -2, -1, 0, 1, 2, 3, 4})
			check("u8", "uint8", []int{4}, []uint8{0, 1, 128, 255})
			check("empty", "float32", []int{0, 3}, []float32{})
			if len(m) != 7 {
				t.Errorf("%d arrays, want 7", len(m))
			}
			if !math.Signbit(m["f64"].Data.([]float64)[1]) {
				t.Error("-0.0 lost its sign")
			}
		})
	}
}

func TestReadNumpyVersions(t *testing.T) {
	m, err := Read(filepath.Join("testdata", "numpy_v2.npz"))
	if err != nil {
		t.Fatal(err)
	}
	if got := m["v2"].Data; !reflect.DeepEqual(got, []float64{0, 0.5, 1, 1.5, 2}) {
		t.Errorf("v2 = %v", got)
	}
	if got := m["v3"]; !reflect.DeepEqual(got.Data, []int64{1, 2, 3, 4}) || !reflect.DeepEqual(got.Shape, []int{2, 2}) {
		t.Errorf("v3 = %v %v", got.Shape, got.Data)
	}
}

func TestAccessors(t *testing.T) {
	a := mustNew(t, "a", []int{3}, []float64{1, -2, 3})
	f32, err := a.Float32()
	if err != nil || !reflect.DeepEqual(f32, []float32{1, -2, 3}) {
		t.Errorf("Float32 = %v, %v", f32, err)
	}
	i64, err := a.Int64()
	if err != nil || !reflect.DeepEqual(i64, []int64{1, -2, 3}) {
		t.Errorf("Int64 = %v, %v", i64, err)
	}
	ints, err := a.Ints()
	if err != nil || !reflect.DeepEqual(ints, []int{1, -2, 3}) {
		t.Errorf("Ints = %v, %v", ints, err)
	}
	b := mustNew(t, "b", []int{2}, []int64{5, -7})
	f64, err := b.Float64()
	if err != nil || !reflect.DeepEqual(f64, []float64{5, -7}) {
		t.Errorf("Float64 = %v, %v", f64, err)
	}
	u := mustNew(t, "u", []int{2}, []uint8{200, 3})
	if f, _ := u.Float32(); !reflect.DeepEqual(f, []float32{200, 3}) {
		t.Errorf("uint8 Float32 = %v", f)
	}
	frac := mustNew(t, "frac", []int{1}, []float32{1.5})
	if _, err := frac.Int64(); err == nil || !strings.HasPrefix(err.Error(), "npz: ") {
		t.Errorf("Int64 of 1.5: err = %v", err)
	}
	big := mustNew(t, "big", []int{1}, []float64{math.Inf(1)})
	if _, err := big.Int64(); err == nil {
		t.Error("Int64 of +Inf succeeded")
	}
}

func TestNewAndWriteErrors(t *testing.T) {
	cases := []struct {
		name string
		arr  *Array
		want string
	}{
		{"size mismatch", &Array{Name: "a", Shape: []int{2, 2}, DType: "float32", Data: []float32{1}}, "needs 4 elements"},
		{"dtype mismatch", &Array{Name: "a", Shape: []int{1}, DType: "float64", Data: []float32{1}}, "dtype float64 but data is []float32"},
		{"bad dtype", &Array{Name: "a", Shape: []int{1}, DType: "complex64", Data: []float32{1}}, "unsupported dtype"},
		{"bad data", &Array{Name: "a", Shape: []int{1}, DType: "float32", Data: []int{1}}, "unsupported data type"},
		{"negative dim", &Array{Name: "a", Shape: []int{-1}, DType: "float32", Data: []float32{}}, "negative dimension"},
		{"empty name", &Array{Shape: []int{1}, DType: "float32", Data: []float32{1}}, "empty name"},
		{"nil", nil, "nil array"},
	}
	for _, c := range cases {
		var buf bytes.Buffer
		err := WriteTo(&buf, []*Array{c.arr})
		if err == nil || !strings.HasPrefix(err.Error(), "npz: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to contain %q", c.name, err, c.want)
		}
	}
	a := mustNew(t, "dup", []int{1}, []float32{1})
	if err := WriteTo(&bytes.Buffer{}, []*Array{a, a}); err == nil || !strings.Contains(err.Error(), "duplicate") {
		t.Errorf("duplicate names: err = %v", err)
	}
	if _, err := New("x", []int{2}, []float32{1}); err == nil {
		t.Error("New accepted a size mismatch")
	}
	if _, err := New("x", []int{1}, []string{"a"}); err == nil {
		t.Error("New accepted []string")
	}
}

// npyBytes builds a .npy stream with the given header dict and data.
func npyBytes(major byte, header string, data []byte) []byte {
	var b bytes.Buffer
	b.WriteString(npyMagic)
	b.WriteByte(major)
	b.WriteByte(0)
	if major == 1 {
		binary.Write(&b, binary.LittleEndian, uint16(len(header)))
	} else {
		binary.Write(&b, binary.LittleEndian, uint32(len(header)))
	}
	b.WriteString(header)
	b.Write(data)
	return b.Bytes()
}

func zipBytes(t testing.TB, entries ...[2][]byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, e := range entries {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: string(e[0]), Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(e[1])
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func entry(name string, data []byte) [2][]byte { return [2][]byte{[]byte(name), data} }

func TestReadErrors(t *testing.T) {
	good := "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n"
	eight := make([]byte, 8)
	cases := []struct {
		name string
		file []byte
		want string
	}{
		{"not zip", []byte("hello, world"), "not a zip archive"},
		{"bad magic", zipBytes(t, entry("a.npy", []byte("\x93NUMPZ\x01\x00xxxxxxxx"))), `entry "a.npy": bad magic`},
		{"short preamble", zipBytes(t, entry("a.npy", []byte("\x93NU"))), "truncated .npy preamble"},
		{"version", zipBytes(t, entry("a.npy", npyBytes(4, good, eight))), "unsupported .npy format version 4.0"},
		{"big-endian", zipBytes(t, entry("a.npy", npyBytes(1, strings.Replace(good, "<f4", ">f4", 1), eight))), `unsupported dtype ">f4" (big-endian`},
		{"complex", zipBytes(t, entry("a.npy", npyBytes(1, strings.Replace(good, "<f4", "<c8", 1), eight))), `unsupported dtype "<c8"`},
		{"structured", zipBytes(t, entry("a.npy", npyBytes(1, strings.Replace(good, "'<f4'", "[('x', '<f4')]", 1), eight))), "structured dtypes"},
		{"fortran", zipBytes(t, entry("a.npy", npyBytes(1, strings.Replace(good, "False", "True", 1), eight))), "fortran_order True"},
		{"truncated data", zipBytes(t, entry("a.npy", npyBytes(1, good, eight[:5]))), "shape/size mismatch"},
		{"trailing data", zipBytes(t, entry("a.npy", npyBytes(1, good, make([]byte, 12)))), "shape/size mismatch"},
		{"truncated header", zipBytes(t, entry("a.npy", npyBytes(1, good, nil)[:30])), "truncated .npy header"},
		{"missing key", zipBytes(t, entry("a.npy", npyBytes(1, "{'descr': '<f4', 'shape': (2,)}", eight))), `missing key "fortran_order"`},
		{"extra key", zipBytes(t, entry("a.npy", npyBytes(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", eight))), `unexpected key "x"`},
		{"bad shape", zipBytes(t, entry("a.npy", npyBytes(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 'a')}", eight))), "shape element 1"},
		{"negative shape", zipBytes(t, entry("a.npy", npyBytes(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}", eight))), "negative dimension"},
		{"overflow shape", zipBytes(t, entry("a.npy", npyBytes(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296)}", eight))), "overflows"},
		{"huge shape", zipBytes(t, entry("a.npy", npyBytes(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,)}", eight))), "shape/size mismatch"},
		{"garbage header", zipBytes(t, entry("a.npy", npyBytes(1, "{'descr': <f4", eight))), "bad .npy header"},
		{"not npy", zipBytes(t, entry("a.txt", []byte("x"))), `entry "a.txt": not a .npy entry`},
		{"duplicate", zipBytes(t, entry("a.npy", npyBytes(1, good, eight)), entry("a.npy", npyBytes(1, good, eight))), "duplicate array name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ReadFrom(bytes.NewReader(c.file), int64(len(c.file)))
			if err == nil || !strings.HasPrefix(err.Error(), "npz: ") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want it to contain %q", err, c.want)
			}
			// Read names the file.
			path := filepath.Join(t.TempDir(), "bad.npz")
			os.WriteFile(path, c.file, 0o644)
			_, err = Read(path)
			if err == nil || !strings.HasPrefix(err.Error(), "npz: "+path+": ") {
				t.Errorf("Read err = %v, want it to start with npz: %s: ", err, path)
			}
		})
	}
	// A sanity check that the good header in these cases is itself readable.
	ok := zipBytes(t, entry("a.npy", npyBytes(1, good, eight)))
	if m, err := ReadFrom(bytes.NewReader(ok), int64(len(ok))); err != nil || len(m["a"].Data.([]float32)) != 2 {
		t.Errorf("good entry: %v", err)
	}
}

func TestReadNumpyRejects(t *testing.T) {
	for file, want := range map[string]string{
		"numpy_fortran.npz":   `entry "fortran.npy": fortran_order True is not supported`,
		"numpy_bigendian.npz": `entry "big.npy": unsupported dtype ">f4" (big-endian data is not supported)`,
	} {
		path := filepath.Join("testdata", file)
		_, err := Read(path)
		if err == nil || !strings.Contains(err.Error(), "npz: "+path+": "+want) {
			t.Errorf("%s: err = %v, want %q", file, err, want)
		}
	}
	if _, err := Read(filepath.Join("testdata", "missing.npz")); err == nil || !strings.HasPrefix(err.Error(), "npz: ") {
		t.Errorf("missing file: err = %v", err)
	}
}

func TestCorruptCRC(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteTo(&buf, sampleArrays(t)[:1]); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	// Flip a byte of the data (the last float of "w" sits just before the central directory).
	i := bytes.Index(b, []byte{0, 0, 0x80, 0x7f}) // +Inf float32
	if i < 0 {
		t.Fatal("pattern not found")
	}
	b[i+2] ^= 1
	if _, err := ReadFrom(bytes.NewReader(b), int64(len(b))); err == nil {
		t.Error("corrupted data was accepted")
	}
}

func TestNPYRoundTrip(t *testing.T) {
	for _, a := range sampleArrays(t) {
		var buf bytes.Buffer
		if err := WriteNPY(&buf, a); err != nil {
			t.Fatal(err)
		}
		g, err := ReadNPY(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(g.Shape, a.Shape) || !reflect.DeepEqual(g.Data, a.Data) {
			t.Errorf("%s: got %v %v", a.Name, g.Shape, g.Data)
		}
	}
}

func FuzzRead(f *testing.F) {
	var buf bytes.Buffer
	if err := WriteTo(&buf, sampleArrays(f)); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	for _, name := range []string{"numpy.npz", "numpy_compressed.npz", "numpy_v2.npz", "numpy_fortran.npz", "numpy_bigendian.npz"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ReadFrom(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "npz: ") {
				t.Fatalf("error without prefix: %v", err)
			}
			return
		}
		for name, a := range m {
			if err := a.validate(); err != nil {
				t.Fatalf("array %q read but invalid: %v", name, err)
			}
		}
	})
}

// FuzzReadNPY fuzzes the .npy parser directly (zip CRCs make FuzzRead reach it rarely).
func FuzzReadNPY(f *testing.F) {
	for _, a := range sampleArrays(f) {
		var buf bytes.Buffer
		if err := WriteNPY(&buf, a); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Add(npyBytes(2, "{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }\n", make([]byte, 8)))
	f.Add(npyBytes(1, "{'descr': '|u1', 'fortran_order': False, 'shape': ((((1,),),),), }\n", make([]byte, 1)))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ReadNPY(bytes.NewReader(data))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "npz: ") {
				t.Fatalf("error without prefix: %v", err)
			}
			return
		}
		a.Name = "x"
		if err := a.validate(); err != nil {
			t.Fatalf("read but invalid: %v", err)
		}
		// What we read, we can write and read back identically (compared as
		// bytes: NaN payloads must survive, and NaN != NaN for DeepEqual).
		var buf bytes.Buffer
		if err := WriteNPY(&buf, a); err != nil {
			t.Fatal(err)
		}
		first := bytes.Clone(buf.Bytes())
		b, err := ReadNPY(&buf)
		if err != nil {
			t.Fatalf("rewrite round trip: %v", err)
		}
		var buf2 bytes.Buffer
		if err := WriteNPY(&buf2, b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first, buf2.Bytes()) || !reflect.DeepEqual(a.Shape, b.Shape) {
			t.Fatal("rewrite round trip changed the array")
		}
	})
}

func TestReadNPYTruncated(t *testing.T) {
	b := npyBytes(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }\n", make([]byte, 20))
	_, err := ReadNPY(bytes.NewReader(b))
	if err == nil || !strings.Contains(err.Error(), "npz: truncated data: shape [3] of float64 needs 24 bytes, got 20") {
		t.Errorf("err = %v", err)
	}
}

// TestGoldenConvNet checks the PyTorch fixture of scripts/torch/make_fixtures.py
// is readable and has the expected layout.
func TestGoldenConvNet(t *testing.T) {
	path := filepath.Join("..", "..", "testdata", "golden", "convnet.npz")
	if _, err := os.Stat(path); err != nil {
		t.Skip("no golden fixture:", err)
	}
	m, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []struct {
		name string
		c, h int
	}{{"mnist", 1, 28}, {"cifar", 3, 32}} {
		shape := func(key string, want ...int) {
			t.Helper()
			a := m[cfg.name+"_"+key]
			if a == nil {
				t.Fatalf("missing %s_%s", cfg.name, key)
			}
			if want == nil {
				want = []int{}
			}
			if !reflect.DeepEqual(a.Shape, want) {
				t.Errorf("%s_%s: shape %v, want %v", cfg.name, key, a.Shape, want)
			}
		}
		shape("x", 8, cfg.c, cfg.h, cfg.h)
		shape("grad_x", 8, cfg.c, cfg.h, cfg.h)
		shape("y", 8)
		shape("logits", 8, 10)
		shape("loss")
		shape("embed", 8, 512)
		shape("xsyn", 4, cfg.c, cfg.h, cfg.h)
		shape("ysyn", 4)
		shape("gm_loss")
		shape("gm_grad_xsyn", 4, cfg.c, cfg.h, cfg.h)
		shape("dm_loss")
		shape("dm_grad_xsyn", 4, cfg.c, cfg.h, cfg.h)
		shape("param_conv0.weight", 32, cfg.c, 3, 3)
		shape("grad_conv1.weight", 32, 32, 3, 3)
		shape("gm_grad_fc.weight", 10, 512)
		shape("param_norm2.bias", 32)
		if m[cfg.name+"_y"].DType != "int64" || m[cfg.name+"_loss"].DType != "float64" {
			t.Errorf("%s: unexpected dtypes", cfg.name)
		}
	}
	if len(m) != 108 {
		t.Errorf("%d arrays, want 108", len(m))
	}
}
