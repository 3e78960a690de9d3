// Package federation moves the protocol's messages between the server and
// the clients: the wire format (this file), the Transport interface, and
// the client endpoint that answers task frames. Adapters live in
// subpackages (federation/inproc: in-process; federation/rpc: gRPC).
//
// # Wire format (version 1)
//
// Every message is one frame; all integers are little-endian:
//
//	offset  size  field
//	0       4     magic "FSW1"
//	4       1     version = 1
//	5       1     kind: 1 task, 2 result, 3 checkpoint snapshot
//	6       2     reserved, 0
//	8       4     payload length before compression (≤ MaxPayload)
//	12      4     compressed length n
//	16      n     the payload, one zstd frame (github.com/klauspost/compress/zstd)
//	16+n    4     CRC-32C (Castagnoli) of bytes [0, 16+n)
//
// The payload is a list of named arrays:
//
//	u32 count
//	count × { u16 name length, name (UTF-8),
//	          u8 dtype (1 float32, 2 int64, 3 bytes),
//	          u8 rank (≤ 8), rank × u32 dimensions,
//	          data: product(dimensions) elements, little-endian }
//
// The first array is always "meta", bytes holding the message's JSON
// (client.Task, client.Result, or the snapshot's metadata). Model weights
// follow as float32 arrays named "w/" + the parameter's PyTorch-style name,
// in the model's order; a synthetic set is "syn/x" float32 (N, C, H, W) in
// the data set's normalized space, "syn/y" int64 (N) and "syn/counts"
// int64 (K), the real samples per class it stands for, and optionally
// "syn/soft" float32 (N, K), learned soft labels (one target distribution
// per image). A snapshot holds several sets, "syn/<client>/x" etc., the
// server's own as "syn/server/x" etc., and the recorded global trajectory,
// point k's weights as "traj/k/w/…".
//
// The byte counts of the simulator (upload_bytes, download_bytes) are the
// lengths of these frames: exactly what a socket would carry.
//
// Decoding checks everything before trusting it: magic, version, kind,
// lengths, checksum, the decompressed size, array names, dtypes, ranks and
// sizes, that float values are finite and labels lie in [0, K); errors say
// which check failed. Decoders never panic on any input (see the fuzz test).
package federation

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/fedsim/fedsim/client"
	"github.com/fedsim/fedsim/tensor"
)

// Frame kinds.
const (
	KindTask     byte = 1
	KindResult   byte = 2
	KindSnapshot byte = 3
)

const (
	magic      = "FSW1"
	version    = 1
	headerSize = 16
	maxRank    = 8
	// MaxPayload bounds a frame's decompressed payload (1 GiB).
	MaxPayload = 1 << 30
)

// Data types of the payload's arrays.
const (
	dtFloat32 byte = 1
	dtInt64   byte = 2
	dtBytes   byte = 3
)

// ErrCorrupt is wrapped by every decoding error caused by the bytes.
var ErrCorrupt = errors.New("federation: corrupt frame")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	codecOnce sync.Once
	encoder   *zstd.Encoder
	decoder   *zstd.Decoder
)

func codecs() (*zstd.Encoder, *zstd.Decoder) {
	codecOnce.Do(func() {
		// One goroutine per call and fixed settings: the same payload always
		// compresses to the same bytes.
		encoder, _ = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
		decoder, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxPayload), zstd.WithDecoderMaxWindow(1<<27))
	})
	return encoder, decoder
}

// array is one named array of a payload.
type array struct {
	name  string
	dtype byte
	shape []int
	f32   []float32
	i64   []int64
	raw   []byte
}

func f32Array(name string, t *tensor.Tensor[float32]) array {
	return array{name: name, dtype: dtFloat32, shape: t.Shape, f32: t.Data}
}

func intArray(name string, v []int) array {
	a := array{name: name, dtype: dtInt64, shape: []int{len(v)}, i64: make([]int64, len(v))}
	for i, x := range v {
		a.i64[i] = int64(x)
	}
	return a
}

// encodeFrame serializes meta (as JSON) and arrays into a compressed frame.
func encodeFrame(kind byte, meta any, arrays []array) ([]byte, error) {
	mj, err := json.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("federation: encoding metadata: %w", err)
	}
	arrays = append([]array{{name: "meta", dtype: dtBytes, shape: []int{len(mj)}, raw: mj}}, arrays...)
	var p bytes.Buffer
	le := binary.LittleEndian
	p.Write(le.AppendUint32(nil, uint32(len(arrays))))
	for _, a := range arrays {
		if len(a.name) > math.MaxUint16 || len(a.shape) > maxRank {
			return nil, fmt.Errorf("federation: array %q: name or rank too large", a.name)
		}
		p.Write(le.AppendUint16(nil, uint16(len(a.name))))
		p.WriteString(a.name)
		p.WriteByte(a.dtype)
		p.WriteByte(byte(len(a.shape)))
		n := 1
		for _, d := range a.shape {
			if d < 0 || d > math.MaxUint32 {
				return nil, fmt.Errorf("federation: array %q: dimension %d out of range", a.name, d)
			}
			p.Write(le.AppendUint32(nil, uint32(d)))
			n *= d
		}
		switch a.dtype {
		case dtFloat32:
			if len(a.f32) != n {
				return nil, fmt.Errorf("federation: array %q: shape %v needs %d values, has %d", a.name, a.shape, n, len(a.f32))
			}
			buf := make([]byte, 4*n)
			for i, v := range a.f32 {
				le.PutUint32(buf[4*i:], math.Float32bits(v))
			}
			p.Write(buf)
		case dtInt64:
			if len(a.i64) != n {
				return nil, fmt.Errorf("federation: array %q: shape %v needs %d values, has %d", a.name, a.shape, n, len(a.i64))
			}
			buf := make([]byte, 8*n)
			for i, v := range a.i64 {
				le.PutUint64(buf[8*i:], uint64(v))
			}
			p.Write(buf)
		case dtBytes:
			if len(a.raw) != n {
				return nil, fmt.Errorf("federation: array %q: shape %v needs %d bytes, has %d", a.name, a.shape, n, len(a.raw))
			}
			p.Write(a.raw)
		}
	}
	if p.Len() > MaxPayload {
		return nil, fmt.Errorf("federation: payload of %d bytes exceeds the %d-byte limit", p.Len(), MaxPayload)
	}
	enc, _ := codecs()
	frame := make([]byte, headerSize, headerSize+p.Len()/2+64)
	copy(frame, magic)
	frame[4], frame[5] = version, kind
	le.PutUint32(frame[8:], uint32(p.Len()))
	frame = enc.EncodeAll(p.Bytes(), frame)
	le.PutUint32(frame[12:], uint32(len(frame)-headerSize))
	return le.AppendUint32(frame, crc32.Checksum(frame, castagnoli)), nil
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// kindName names a frame kind for messages.
func kindName(k byte) string {
	switch k {
	case KindTask:
		return "task"
	case KindResult:
		return "result"
	case KindSnapshot:
		return "snapshot"
	}
	return fmt.Sprintf("kind %d", k)
}

// decodeFrame checks a frame of the wanted kind and returns its arrays
// (meta first).
func decodeFrame(frame []byte, want byte) ([]array, error) {
	le := binary.LittleEndian
	if len(frame) < headerSize+4 {
		return nil, corrupt("%d bytes is shorter than a frame's %d-byte header and checksum", len(frame), headerSize+4)
	}
	if string(frame[:4]) != magic {
		return nil, corrupt("bad magic %q (want %q)", frame[:4], magic)
	}
	if frame[4] != version {
		return nil, corrupt("unsupported version %d (this build reads version %d)", frame[4], version)
	}
	if frame[5] != want {
		return nil, corrupt("frame is a %s, want a %s", kindName(frame[5]), kindName(want))
	}
	if frame[6] != 0 || frame[7] != 0 {
		return nil, corrupt("reserved header bytes are not zero")
	}
	raw, n := le.Uint32(frame[8:]), le.Uint32(frame[12:])
	if uint64(n) != uint64(len(frame)-headerSize-4) {
		return nil, corrupt("header says %d compressed bytes, frame carries %d", n, len(frame)-headerSize-4)
	}
	if raw > MaxPayload {
		return nil, corrupt("payload of %d bytes exceeds the %d-byte limit", raw, MaxPayload)
	}
	body := frame[:len(frame)-4]
	if got, sum := crc32.Checksum(body, castagnoli), le.Uint32(frame[len(frame)-4:]); got != sum {
		return nil, corrupt("checksum mismatch (stored %08x, computed %08x)", sum, got)
	}
	_, dec := codecs()
	p, err := dec.DecodeAll(frame[headerSize:len(frame)-4], make([]byte, 0, min(raw, 1<<24)))
	if err != nil {
		return nil, corrupt("zstd: %v", err)
	}
	if uint32(len(p)) != raw {
		return nil, corrupt("payload decompresses to %d bytes, header says %d", len(p), raw)
	}
	return parsePayload(p)
}

func parsePayload(p []byte) ([]array, error) {
	le := binary.LittleEndian
	off := 0
	need := func(k int, what string) error {
		if k < 0 || len(p)-off < k {
			return corrupt("payload truncated in %s (need %d bytes at offset %d, %d left)", what, k, off, len(p)-off)
		}
		return nil
	}
	if err := need(4, "array count"); err != nil {
		return nil, err
	}
	count := le.Uint32(p)
	off = 4
	if count == 0 || count > 1<<20 {
		return nil, corrupt("payload has %d arrays", count)
	}
	var out []array
	seen := map[string]bool{}
	for i := range int(count) {
		if err := need(2, "array name length"); err != nil {
			return nil, err
		}
		nl := int(le.Uint16(p[off:]))
		off += 2
		if err := need(nl+2, "array name"); err != nil {
			return nil, err
		}
		a := array{name: string(p[off : off+nl])}
		off += nl
		if a.name == "" || seen[a.name] {
			return nil, corrupt("array %d has an empty or repeated name %q", i, a.name)
		}
		seen[a.name] = true
		a.dtype, a.shape = p[off], make([]int, p[off+1])
		off += 2
		if len(a.shape) > maxRank {
			return nil, corrupt("array %q has rank %d (at most %d)", a.name, len(a.shape), maxRank)
		}
		if err := need(4*len(a.shape), "dimensions of "+a.name); err != nil {
			return nil, err
		}
		n := uint64(1)
		for j := range a.shape {
			d := le.Uint32(p[off:])
			off += 4
			a.shape[j] = int(d)
			n *= uint64(d)
			if n > MaxPayload {
				return nil, corrupt("array %q of shape %v is larger than a payload can be", a.name, a.shape[:j+1])
			}
		}
		var esz uint64
		switch a.dtype {
		case dtFloat32:
			esz = 4
		case dtInt64:
			esz = 8
		case dtBytes:
			esz = 1
		default:
			return nil, corrupt("array %q has unknown dtype %d (want 1 float32, 2 int64 or 3 bytes)", a.name, a.dtype)
		}
		if err := need(int(n*esz), "data of "+a.name); err != nil {
			return nil, err
		}
		b := p[off : off+int(n*esz)]
		off += int(n * esz)
		switch a.dtype {
		case dtFloat32:
			a.f32 = make([]float32, n)
			for j := range a.f32 {
				a.f32[j] = math.Float32frombits(le.Uint32(b[4*j:]))
			}
		case dtInt64:
			a.i64 = make([]int64, n)
			for j := range a.i64 {
				a.i64[j] = int64(le.Uint64(b[8*j:]))
			}
		case dtBytes:
			a.raw = slices.Clone(b)
		}
		out = append(out, a)
	}
	if off != len(p) {
		return nil, corrupt("%d bytes left over after the last array", len(p)-off)
	}
	if out[0].name != "meta" || out[0].dtype != dtBytes || len(out[0].shape) != 1 {
		return nil, corrupt("the first array must be \"meta\" (bytes), got %q", out[0].name)
	}
	return out, nil
}

// tensorOf returns a float32 array as a tensor, rejecting non-finite values.
func tensorOf(a array) (*tensor.Tensor[float32], error) {
	if a.dtype != dtFloat32 {
		return nil, corrupt("array %q has dtype %d, want float32", a.name, a.dtype)
	}
	for j, v := range a.f32 {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, corrupt("array %q has a non-finite value %v at index %d", a.name, v, j)
		}
	}
	t, err := tensor.FromSlice(a.f32, slices.Clone(a.shape)...)
	if err != nil {
		return nil, corrupt("array %q: %v", a.name, err)
	}
	return t, nil
}

func intsOf(a array, lo, hi int64) ([]int, error) {
	if a.dtype != dtInt64 || len(a.shape) != 1 {
		return nil, corrupt("array %q is dtype %d rank %d, want int64 rank 1", a.name, a.dtype, len(a.shape))
	}
	out := make([]int, len(a.i64))
	for i, v := range a.i64 {
		if v < lo || v >= hi {
			return nil, corrupt("array %q: value %d at index %d is out of range [%d, %d)", a.name, v, i, lo, hi)
		}
		out[i] = int(v)
	}
	return out, nil
}

func weightArrays(w *client.Weights) []array {
	if w == nil {
		return nil
	}
	out := make([]array, len(w.Tensors))
	for i, t := range w.Tensors {
		out[i] = f32Array("w/"+w.Names[i], t)
	}
	return out
}

func synArrays(prefix string, s *client.Synthetic) []array {
	if s == nil {
		return nil
	}
	out := []array{f32Array(prefix+"x", s.X), intArray(prefix+"y", s.Y), intArray(prefix+"counts", s.Counts)}
	if s.Soft != nil {
		out = append(out, f32Array(prefix+"soft", s.Soft))
	}
	return out
}

// trajArrays names the weights of trajectory point k "traj/k/w/…".
func trajArrays(k int, w *client.Weights) []array {
	out := weightArrays(w)
	for i := range out {
		out[i].name = fmt.Sprintf("traj/%d/%s", k, out[i].name)
	}
	return out
}

// collect sorts a frame's arrays into weights (in order), synthetic sets
// keyed by their prefix ("" for "syn/x", "7/" for "syn/7/x") and
// trajectory points (weights named "traj/k/w/…", in order k = 0, 1, …).
func collect(arrays []array) (*client.Weights, map[string]*client.Synthetic, []*client.Weights, error) {
	var w *client.Weights
	var traj []*client.Weights
	parts := map[string]map[string]array{}
	var order []string
	for _, a := range arrays[1:] {
		switch {
		case strings.HasPrefix(a.name, "w/"):
			t, err := tensorOf(a)
			if err != nil {
				return nil, nil, nil, err
			}
			if w == nil {
				w = &client.Weights{}
			}
			w.Names = append(w.Names, strings.TrimPrefix(a.name, "w/"))
			w.Tensors = append(w.Tensors, t)
		case strings.HasPrefix(a.name, "traj/"):
			rest := strings.TrimPrefix(a.name, "traj/")
			i := strings.Index(rest, "/w/")
			k, err := strconv.Atoi(rest[:max(i, 0)])
			if i < 0 || err != nil || k < 0 || k > len(traj) || strconv.Itoa(k) != rest[:i] {
				return nil, nil, nil, corrupt("trajectory array %q is not named traj/k/w/NAME with k = 0, 1, … in order", a.name)
			}
			t, err := tensorOf(a)
			if err != nil {
				return nil, nil, nil, err
			}
			if k == len(traj) {
				traj = append(traj, &client.Weights{})
			}
			traj[k].Names = append(traj[k].Names, rest[i+3:])
			traj[k].Tensors = append(traj[k].Tensors, t)
		case strings.HasPrefix(a.name, "syn/"):
			rest := strings.TrimPrefix(a.name, "syn/")
			i := strings.LastIndexByte(rest, '/')
			key, field := rest[:i+1], rest[i+1:]
			if parts[key] == nil {
				parts[key] = map[string]array{}
				order = append(order, key)
			}
			parts[key][field] = a
		default:
			return nil, nil, nil, corrupt("unexpected array %q", a.name)
		}
	}
	syns := map[string]*client.Synthetic{}
	for _, key := range order {
		p := parts[key]
		xa, okx := p["x"]
		ya, oky := p["y"]
		ca, okc := p["counts"]
		sa, oks := p["soft"]
		arrays := 3
		if oks {
			arrays = 4
		}
		if !okx || !oky || !okc || len(p) != arrays {
			return nil, nil, nil, corrupt("synthetic set %q needs exactly the arrays x, y and counts (and soft, optional)", "syn/"+key)
		}
		x, err := tensorOf(xa)
		if err != nil {
			return nil, nil, nil, err
		}
		if x.Rank() != 4 || x.Shape[0] < 1 {
			return nil, nil, nil, corrupt("array %q has shape %v, want (N ≥ 1, C, H, W)", xa.name, x.Shape)
		}
		counts, err := intsOf(ca, 0, math.MaxInt32)
		if err != nil {
			return nil, nil, nil, err
		}
		if len(counts) == 0 {
			return nil, nil, nil, corrupt("array %q is empty", ca.name)
		}
		y, err := intsOf(ya, 0, int64(len(counts)))
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%w (labels must lie in [0, %d) for the %d classes of %q)", err, len(counts), len(counts), ca.name)
		}
		if len(y) != x.Shape[0] {
			return nil, nil, nil, corrupt("synthetic set %q has %d images but %d labels", "syn/"+key, x.Shape[0], len(y))
		}
		set := &client.Synthetic{X: x, Y: y, Counts: counts}
		if oks {
			if set.Soft, err = tensorOf(sa); err != nil {
				return nil, nil, nil, err
			}
			if err := client.CheckSoftLabels(set.Soft, len(y), len(counts)); err != nil {
				return nil, nil, nil, corrupt("synthetic set %q: %v", "syn/"+key, err)
			}
		}
		syns[key] = set
	}
	return w, syns, traj, nil
}

func decodeMeta(a array, v any) error {
	d := json.NewDecoder(bytes.NewReader(a.raw))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return corrupt("metadata: %v", err)
	}
	return nil
}

// EncodeTask serializes a task (with its global weights, if any).
func EncodeTask(t *client.Task) ([]byte, error) {
	return encodeFrame(KindTask, t, weightArrays(t.Global))
}

// DecodeTask parses and checks a task frame.
func DecodeTask(frame []byte) (*client.Task, error) {
	arrays, err := decodeFrame(frame, KindTask)
	if err != nil {
		return nil, err
	}
	t := &client.Task{}
	if err := decodeMeta(arrays[0], t); err != nil {
		return nil, err
	}
	w, syns, traj, err := collect(arrays)
	if err != nil {
		return nil, err
	}
	if len(syns) > 0 || len(traj) > 0 {
		return nil, corrupt("a task carries no synthetic set and no trajectory")
	}
	t.Global = w
	return t, nil
}

// EncodeResult serializes a result.
func EncodeResult(r *client.Result) ([]byte, error) {
	return encodeFrame(KindResult, r, append(weightArrays(r.Weights), synArrays("syn/", r.Synthetic)...))
}

// DecodeResult parses and checks a result frame. Whether the weights or
// the synthetic set fit the model and the data set is the server's check.
func DecodeResult(frame []byte) (*client.Result, error) {
	arrays, err := decodeFrame(frame, KindResult)
	if err != nil {
		return nil, err
	}
	r := &client.Result{}
	if err := decodeMeta(arrays[0], r); err != nil {
		return nil, err
	}
	w, syns, traj, err := collect(arrays)
	if err != nil {
		return nil, err
	}
	if len(traj) > 0 {
		return nil, corrupt("a result carries no trajectory")
	}
	r.Weights = w
	for key, s := range syns {
		if key != "" {
			return nil, corrupt("a result carries one synthetic set named syn/x, syn/y, syn/counts (found %q)", "syn/"+key)
		}
		if s.Soft != nil {
			// No client task learns labels, and the server's union of
			// client sets trains on hard labels: refuse them, not drop them.
			return nil, corrupt("a result's synthetic set carries soft labels (syn/soft), which no client task produces")
		}
		r.Synthetic = s
	}
	return r, nil
}

// Snapshot is a server checkpoint's content: metadata (any JSON value),
// global weights, synthetic sets keyed by client id, and the server's own
// state for server-side distillation (DynaFed): the recorded trajectory of
// global models and the synthetic set distilled from it.
type Snapshot struct {
	Meta       json.RawMessage
	Global     *client.Weights
	Synthetic  map[int]*client.Synthetic
	Trajectory []*client.Weights
	ServerSet  *client.Synthetic
}

// serverSetKey is the server set's key among the snapshot's synthetic
// sets ("syn/server/x", …), which are otherwise keyed by client id.
const serverSetKey = "server/"

// EncodeSnapshot serializes a snapshot (sets in increasing client order).
func EncodeSnapshot(s *Snapshot) ([]byte, error) {
	arrays := weightArrays(s.Global)
	ids := make([]int, 0, len(s.Synthetic))
	for id := range s.Synthetic {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		arrays = append(arrays, synArrays(fmt.Sprintf("syn/%d/", id), s.Synthetic[id])...)
	}
	arrays = append(arrays, synArrays("syn/"+serverSetKey, s.ServerSet)...)
	for k, w := range s.Trajectory {
		arrays = append(arrays, trajArrays(k, w)...)
	}
	meta := s.Meta
	if meta == nil {
		meta = json.RawMessage("null")
	}
	return encodeFrame(KindSnapshot, meta, arrays)
}

// DecodeSnapshot parses and checks a snapshot frame.
func DecodeSnapshot(frame []byte) (*Snapshot, error) {
	arrays, err := decodeFrame(frame, KindSnapshot)
	if err != nil {
		return nil, err
	}
	s := &Snapshot{Meta: json.RawMessage(slices.Clone(arrays[0].raw)), Synthetic: map[int]*client.Synthetic{}}
	if !json.Valid(s.Meta) {
		return nil, corrupt("snapshot metadata is not valid JSON")
	}
	w, syns, traj, err := collect(arrays)
	if err != nil {
		return nil, err
	}
	s.Global, s.Trajectory = w, traj
	for key, set := range syns {
		if key == serverSetKey {
			s.ServerSet = set
			continue
		}
		var id int
		if _, err := fmt.Sscanf(key, "%d/", &id); err != nil || fmt.Sprintf("%d/", id) != key || id < 0 {
			return nil, corrupt("snapshot synthetic set %q is not keyed by a client id", "syn/"+key)
		}
		s.Synthetic[id] = set
	}
	return s, nil
}
