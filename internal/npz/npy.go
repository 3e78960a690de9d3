package npz

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// npyMagic starts every .npy file.
const npyMagic = "\x93NUMPY"

// maxHeaderLen bounds the header we are willing to read (numpy itself refuses
// headers over 10000 bytes by default; v2 allows up to 4 GiB).
const maxHeaderLen = 1 << 20

// ReadNPY reads one .npy array from r (format 1.0, 2.0 or 3.0). The returned
// array has an empty Name. Errors start with "npz: ".
func ReadNPY(r io.Reader) (*Array, error) {
	a, err := readNPY(r, -1)
	if err != nil {
		return nil, fmt.Errorf("npz: %w", err)
	}
	return a, nil
}

// readNPY parses a .npy stream. If size >= 0 it is the stream's total length
// and must match the header exactly. Errors lack the "npz: " prefix.
func readNPY(r io.Reader, size int64) (*Array, error) {
	br := bufio.NewReader(r)
	var pre [8]byte
	if _, err := io.ReadFull(br, pre[:]); err != nil {
		return nil, fmt.Errorf("truncated .npy preamble: %v", noEOF(err))
	}
	if string(pre[:6]) != npyMagic {
		return nil, fmt.Errorf("bad magic %q (not a .npy file)", pre[:6])
	}
	major, minor := pre[6], pre[7]
	var hlen int
	var pos int64
	switch major {
	case 1:
		var b [2]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return nil, fmt.Errorf("truncated .npy header length: %v", noEOF(err))
		}
		hlen = int(binary.LittleEndian.Uint16(b[:]))
		pos = 10
	case 2, 3:
		var b [4]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return nil, fmt.Errorf("truncated .npy header length: %v", noEOF(err))
		}
		h := binary.LittleEndian.Uint32(b[:])
		if h > maxHeaderLen {
			return nil, fmt.Errorf(".npy header length %d too large", h)
		}
		hlen = int(h)
		pos = 12
	default:
		return nil, fmt.Errorf("unsupported .npy format version %d.%d", major, minor)
	}
	if minor != 0 {
		return nil, fmt.Errorf("unsupported .npy format version %d.%d", major, minor)
	}
	if size >= 0 && pos+int64(hlen) > size {
		return nil, fmt.Errorf("truncated .npy header: need %d bytes, entry has %d", pos+int64(hlen), size)
	}
	hdr := make([]byte, hlen)
	if _, err := io.ReadFull(br, hdr); err != nil {
		return nil, fmt.Errorf("truncated .npy header: %v", noEOF(err))
	}
	pos += int64(hlen)
	descr, fortran, shape, err := parseHeader(string(hdr), major == 3)
	if err != nil {
		return nil, fmt.Errorf("bad .npy header %q: %v", truncStr(string(hdr), 200), err)
	}
	var dt dtypeInfo
	found := false
	for _, d := range dtypes {
		if d.descr == descr || (d.size == 1 && descr == "<"+d.descr[1:]) {
			dt, found = d, true
			break
		}
	}
	if !found {
		why := "want <f4, <f8, <i8, <i4 or |u1"
		if strings.HasPrefix(descr, ">") {
			why = "big-endian data is not supported"
		}
		return nil, fmt.Errorf("unsupported dtype %q (%s)", descr, why)
	}
	if fortran {
		return nil, errors.New("fortran_order True is not supported (want C order)")
	}
	n, err := shapeSize(shape)
	if err != nil {
		return nil, err
	}
	if n > math.MaxInt/dt.size {
		return nil, fmt.Errorf("shape %v too large", shape)
	}
	nbytes := n * dt.size
	if size >= 0 && size-pos != int64(nbytes) {
		return nil, fmt.Errorf("shape/size mismatch: shape %v of %s needs %d data bytes, entry has %d",
			shape, dt.name, nbytes, size-pos)
	}
	// Read without trusting the header for the allocation: grow as data arrives.
	var buf bytes.Buffer
	got, err := buf.ReadFrom(io.LimitReader(br, int64(nbytes)+1))
	if err != nil {
		return nil, fmt.Errorf("reading data: %v", err)
	}
	if got < int64(nbytes) {
		return nil, fmt.Errorf("truncated data: shape %v of %s needs %d bytes, got %d", shape, dt.name, nbytes, got)
	}
	if got > int64(nbytes) {
		return nil, fmt.Errorf("shape/size mismatch: trailing bytes after the %d data bytes of shape %v of %s", nbytes, shape, dt.name)
	}
	return &Array{Shape: shape, DType: dt.name, Data: decode(dt.name, buf.Bytes(), n)}, nil
}

func decode(dtype string, b []byte, n int) any {
	le := binary.LittleEndian
	switch dtype {
	case "float32":
		v := make([]float32, n)
		for i := range v {
			v[i] = math.Float32frombits(le.Uint32(b[4*i:]))
		}
		return v
	case "float64":
		v := make([]float64, n)
		for i := range v {
			v[i] = math.Float64frombits(le.Uint64(b[8*i:]))
		}
		return v
	case "int64":
		v := make([]int64, n)
		for i := range v {
			v[i] = int64(le.Uint64(b[8*i:]))
		}
		return v
	case "int32":
		v := make([]int32, n)
		for i := range v {
			v[i] = int32(le.Uint32(b[4*i:]))
		}
		return v
	case "uint8":
		v := make([]uint8, n)
		copy(v, b)
		return v
	}
	panic("npz: unreachable dtype " + dtype)
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func truncStr(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// WriteNPY writes one array as a .npy stream (format 1.0, or 2.0 if the
// header does not fit). The array's Name is not used and may be empty.
func WriteNPY(w io.Writer, a *Array) error {
	if a != nil && a.Name == "" {
		b := *a
		b.Name = "array"
		a = &b
	}
	if err := a.validate(); err != nil {
		return fmt.Errorf("npz: %w", err)
	}
	if err := writeNPY(w, a); err != nil {
		return fmt.Errorf("npz: array %q: %w", a.Name, err)
	}
	return nil
}

func npyHeader(a *Array) []byte {
	dt, _ := dtypeByName(a.DType)
	var sb strings.Builder
	sb.WriteString("{'descr': '")
	sb.WriteString(dt.descr)
	sb.WriteString("', 'fortran_order': False, 'shape': (")
	for i, d := range a.Shape {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(strconv.Itoa(d))
	}
	if len(a.Shape) == 1 {
		sb.WriteString(",")
	}
	sb.WriteString("), }")
	h := sb.String()
	// Pad with spaces and end in '\n' so the data starts 64-byte aligned
	// (format 1.0 has a 10-byte preamble, 2.0 a 12-byte one).
	pre := 10
	pad := (64 - (pre+len(h)+1)%64) % 64
	if len(h)+pad+1 > math.MaxUint16 {
		pre = 12
		pad = (64 - (pre+len(h)+1)%64) % 64
	}
	hdr := h + strings.Repeat(" ", pad) + "\n"
	out := make([]byte, 0, pre+len(hdr))
	out = append(out, npyMagic...)
	if pre == 10 {
		out = append(out, 1, 0)
		out = binary.LittleEndian.AppendUint16(out, uint16(len(hdr)))
	} else {
		out = append(out, 2, 0)
		out = binary.LittleEndian.AppendUint32(out, uint32(len(hdr)))
	}
	return append(out, hdr...)
}

// writeNPY writes a validated array.
func writeNPY(w io.Writer, a *Array) error {
	if _, err := w.Write(npyHeader(a)); err != nil {
		return err
	}
	le := binary.LittleEndian
	const chunk = 1 << 16
	buf := make([]byte, 0, chunk+8)
	flush := func(force bool) error {
		if len(buf) >= chunk || (force && len(buf) > 0) {
			if _, err := w.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
		return nil
	}
	switch v := a.Data.(type) {
	case []float32:
		for _, x := range v {
			buf = le.AppendUint32(buf, math.Float32bits(x))
			if err := flush(false); err != nil {
				return err
			}
		}
	case []float64:
		for _, x := range v {
			buf = le.AppendUint64(buf, math.Float64bits(x))
			if err := flush(false); err != nil {
				return err
			}
		}
	case []int64:
		for _, x := range v {
			buf = le.AppendUint64(buf, uint64(x))
			if err := flush(false); err != nil {
				return err
			}
		}
	case []int32:
		for _, x := range v {
			buf = le.AppendUint32(buf, uint32(x))
			if err := flush(false); err != nil {
				return err
			}
		}
	case []uint8:
		if _, err := w.Write(v); err != nil {
			return err
		}
	}
	return flush(true)
}

// parseHeader parses the Python dict literal of a .npy header, e.g.
// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
func parseHeader(h string, utf8 bool) (descr string, fortran bool, shape []int, err error) {
	p := &pyParser{s: h}
	v, err := p.value(0)
	if err != nil {
		return "", false, nil, err
	}
	p.skipSpace()
	if p.i != len(p.s) {
		return "", false, nil, fmt.Errorf("unexpected %q after the header dict", truncStr(p.s[p.i:], 20))
	}
	d, ok := v.(pyDict)
	if !ok {
		return "", false, nil, errors.New("header is not a dict")
	}
	seen := map[string]bool{}
	for _, kv := range d {
		if seen[kv.key] {
			return "", false, nil, fmt.Errorf("duplicate key %q", kv.key)
		}
		seen[kv.key] = true
		switch kv.key {
		case "descr":
			s, ok := kv.val.(string)
			if !ok {
				return "", false, nil, fmt.Errorf("descr is %s, want a simple dtype string (structured dtypes are not supported)", pyTypeName(kv.val))
			}
			descr = s
		case "fortran_order":
			b, ok := kv.val.(bool)
			if !ok {
				return "", false, nil, fmt.Errorf("fortran_order is %s, want True or False", pyTypeName(kv.val))
			}
			fortran = b
		case "shape":
			t, ok := kv.val.(pyTuple)
			if !ok {
				return "", false, nil, fmt.Errorf("shape is %s, want a tuple", pyTypeName(kv.val))
			}
			shape = make([]int, len(t))
			for i, e := range t {
				n, ok := e.(int)
				if !ok {
					return "", false, nil, fmt.Errorf("shape element %d is %s, want an int", i, pyTypeName(e))
				}
				shape[i] = n
			}
		default:
			return "", false, nil, fmt.Errorf("unexpected key %q", kv.key)
		}
	}
	for _, k := range []string{"descr", "fortran_order", "shape"} {
		if !seen[k] {
			return "", false, nil, fmt.Errorf("missing key %q", k)
		}
	}
	_ = utf8 // v3.0 only allows utf-8 in field names, which we do not support anyway
	return descr, fortran, shape, nil
}

type pyKV struct {
	key string
	val any
}
type pyDict []pyKV
type pyTuple []any
type pyList []any

func pyTypeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case bool:
		return "a bool"
	case int:
		return "an int"
	case pyDict:
		return "a dict"
	case pyTuple:
		return "a tuple"
	case pyList:
		return "a list"
	}
	return fmt.Sprintf("%T", v)
}

// pyParser parses the subset of Python literals found in .npy headers:
// dicts, tuples, lists, strings, ints, True/False.
type pyParser struct {
	s string
	i int
}

const maxDepth = 32

func (p *pyParser) skipSpace() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\n' || p.s[p.i] == '\r') {
		p.i++
	}
}

func (p *pyParser) errorf(format string, args ...any) error {
	return fmt.Errorf("at offset %d: "+format, append([]any{p.i}, args...)...)
}

func (p *pyParser) value(depth int) (any, error) {
	if depth > maxDepth {
		return nil, p.errorf("nested too deeply")
	}
	p.skipSpace()
	if p.i >= len(p.s) {
		return nil, p.errorf("unexpected end of header")
	}
	c := p.s[p.i]
	switch {
	case c == '{':
		p.i++
		var d pyDict
		for {
			p.skipSpace()
			if p.i < len(p.s) && p.s[p.i] == '}' {
				p.i++
				return d, nil
			}
			k, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			ks, ok := k.(string)
			if !ok {
				return nil, p.errorf("dict key is %s, want a string", pyTypeName(k))
			}
			p.skipSpace()
			if p.i >= len(p.s) || p.s[p.i] != ':' {
				return nil, p.errorf("expected ':' after dict key")
			}
			p.i++
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			d = append(d, pyKV{ks, v})
			if err := p.sep('}'); err != nil {
				return nil, err
			}
		}
	case c == '(' || c == '[':
		closer := byte(')')
		if c == '[' {
			closer = ']'
		}
		p.i++
		var items []any
		for {
			p.skipSpace()
			if p.i < len(p.s) && p.s[p.i] == closer {
				p.i++
				if c == '[' {
					return pyList(items), nil
				}
				return pyTuple(items), nil
			}
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			items = append(items, v)
			if err := p.sep(closer); err != nil {
				return nil, err
			}
		}
	case c == '\'' || c == '"':
		p.i++
		start := p.i
		for p.i < len(p.s) && p.s[p.i] != c {
			if p.s[p.i] == '\\' {
				return nil, p.errorf("escape sequences in strings are not supported")
			}
			p.i++
		}
		if p.i >= len(p.s) {
			return nil, p.errorf("unterminated string")
		}
		s := p.s[start:p.i]
		p.i++
		return s, nil
	case c >= '0' && c <= '9' || c == '-' || c == '+':
		start := p.i
		p.i++
		for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
			p.i++
		}
		n, err := strconv.Atoi(p.s[start:p.i])
		if err != nil {
			return nil, p.errorf("bad integer %q", p.s[start:p.i])
		}
		if p.i < len(p.s) && p.s[p.i] == 'L' { // Python 2 long
			p.i++
		}
		return n, nil
	case strings.HasPrefix(p.s[p.i:], "True"):
		p.i += 4
		return true, nil
	case strings.HasPrefix(p.s[p.i:], "False"):
		p.i += 5
		return false, nil
	}
	return nil, p.errorf("unexpected %q", truncStr(p.s[p.i:], 20))
}

// sep consumes a ',' or peeks the closer after a container element.
func (p *pyParser) sep(closer byte) error {
	p.skipSpace()
	if p.i < len(p.s) {
		switch p.s[p.i] {
		case ',':
			p.i++
			return nil
		case closer:
			return nil
		}
	}
	return p.errorf("expected ',' or %q", closer)
}
