package federation

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/fedsim/fedsim/client"
	"github.com/fedsim/fedsim/tensor"
)

func testWeights() *client.Weights {
	a, _ := tensor.FromSlice([]float32{1, -2, 3.5, 0, 1e-30, 7}, 2, 3)
	b, _ := tensor.FromSlice([]float32{0.25, 0.5}, 2)
	return &client.Weights{Names: []string{"conv0.weight", "conv0.bias"}, Tensors: []*tensor.Tensor[float32]{a, b}}
}

func testSynthetic() *client.Synthetic {
	x := tensor.New[float32](3, 1, 2, 2)
	for i := range x.Data {
		x.Data[i] = float32(i) / 7
	}
	return &client.Synthetic{X: x, Y: []int{0, 2, 2}, Counts: []int{5, 0, 9}}
}

func testResult() *client.Result {
	return &client.Result{Round: 3, Client: 7, Status: client.StatusOK, NumSamples: 14, Loss: 0.125, Synthetic: testSynthetic()}
}

func TestTaskRoundTrip(t *testing.T) {
	task := &client.Task{Round: 2, Client: 5, Kind: client.KindTrain, Seed: 1<<63 + 5, Model: "convnet-w8", Dataset: "mnist",
		Epochs: 2, BatchSize: 32, LR: 0.01, Momentum: 0.9, Optimizer: client.OptimAdam, Mu: 0.1, Global: testWeights()}
	b, err := EncodeTask(task)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeTask(b)
	if err != nil {
		t.Fatal(err)
	}
	w := got.Global
	got.Global = nil
	want := *task
	want.Global = nil
	if *got != want {
		t.Fatalf("task %+v, want %+v", got, want)
	}
	if !slices.Equal(w.Names, task.Global.Names) {
		t.Fatalf("names %v", w.Names)
	}
	for i, x := range w.Tensors {
		if !slices.Equal(x.Shape, task.Global.Tensors[i].Shape) || !slices.Equal(x.Data, task.Global.Tensors[i].Data) {
			t.Fatalf("tensor %d differs", i)
		}
	}
	b2, _ := EncodeTask(task)
	if !bytes.Equal(b, b2) {
		t.Fatal("encoding the same task twice gave different bytes")
	}
	// A task without weights (one-shot distillation).
	b, _ = EncodeTask(&client.Task{Kind: client.KindDistill, Method: client.MethodDM, IPC: 10})
	if got, err := DecodeTask(b); err != nil || got.Global != nil || got.IPC != 10 {
		t.Fatalf("%+v %v", got, err)
	}
}

func TestResultRoundTrip(t *testing.T) {
	r := testResult()
	r.Weights = testWeights()
	b, err := EncodeResult(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeResult(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Round != 3 || got.Client != 7 || got.NumSamples != 14 || got.Loss != 0.125 || got.Status != client.StatusOK {
		t.Fatalf("%+v", got)
	}
	s := got.Synthetic
	if !slices.Equal(s.X.Data, r.Synthetic.X.Data) || !slices.Equal(s.Y, r.Synthetic.Y) || !slices.Equal(s.Counts, r.Synthetic.Counts) {
		t.Fatal("synthetic set differs")
	}
	if len(got.Weights.Tensors) != 2 {
		t.Fatal("weights lost")
	}
	// Header and checksum are counted: the frame is what goes on the wire.
	if n := binary.LittleEndian.Uint32(b[12:]); int(n) != len(b)-20 {
		t.Fatalf("compressed length %d for a %d-byte frame", n, len(b))
	}
}

// snapshotRoundTrip encodes s (which must succeed) and decodes it.
func snapshotRoundTrip(t *testing.T, s *Snapshot) (*Snapshot, error) {
	t.Helper()
	b, err := EncodeSnapshot(s)
	if err != nil {
		t.Fatal(err)
	}
	return DecodeSnapshot(b)
}

func TestSnapshotRoundTrip(t *testing.T) {
	s := &Snapshot{Meta: []byte(`{"round":4}`), Global: testWeights(), Synthetic: map[int]*client.Synthetic{3: testSynthetic(), 12: testSynthetic()}}
	got, err := snapshotRoundTrip(t, s)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Meta) != `{"round":4}` || len(got.Synthetic) != 2 || got.Synthetic[12] == nil || len(got.Global.Names) != 2 {
		t.Fatalf("%+v", got)
	}
}

func TestSnapshotCarriesServerState(t *testing.T) {
	w0, w1 := testWeights(), testWeights()
	w1.Tensors[0].Data[0] = 42
	s := &Snapshot{Meta: []byte(`{}`), Global: testWeights(), Synthetic: map[int]*client.Synthetic{0: testSynthetic()},
		Trajectory: []*client.Weights{w0, w1}, ServerSet: testSynthetic()}
	got, err := snapshotRoundTrip(t, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Trajectory) != 2 || got.ServerSet == nil || len(got.Synthetic) != 1 {
		t.Fatalf("trajectory %d points, server set %v, %d client sets", len(got.Trajectory), got.ServerSet != nil, len(got.Synthetic))
	}
	if !slices.Equal(got.Trajectory[1].Names, w1.Names) || got.Trajectory[1].Tensors[0].Data[0] != 42 || got.Trajectory[0].Tensors[0].Data[0] == 42 {
		t.Fatalf("trajectory came back as %v / %v", got.Trajectory[0].Tensors[0].Data, got.Trajectory[1].Tensors[0].Data)
	}
	if !slices.Equal(got.ServerSet.Y, s.ServerSet.Y) {
		t.Fatalf("server set labels %v, want %v", got.ServerSet.Y, s.ServerSet.Y)
	}
	// A task or result must not carry a trajectory.
	task, err := EncodeTask(&client.Task{Kind: client.KindTrain})
	if err != nil {
		t.Fatal(err)
	}
	arrays, err := decodeFrame(task, KindTask)
	if err != nil {
		t.Fatal(err)
	}
	arrays = append(arrays, trajArrays(0, testWeights())...)
	bad, err := encodeFrame(KindTask, json.RawMessage(arrays[0].raw), arrays[1:])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeTask(bad); err == nil || !strings.Contains(err.Error(), "trajectory") {
		t.Fatalf("a task with a trajectory decoded (err %v)", err)
	}
	// Trajectory points out of order are corrupt.
	b, err := EncodeSnapshot(s)
	if err != nil {
		t.Fatal(err)
	}
	snap, _ := decodeFrame(b, KindSnapshot)
	var shuffled []array
	for _, a := range snap {
		if strings.HasPrefix(a.name, "traj/0/") {
			a.name = "traj/2/" + strings.TrimPrefix(a.name, "traj/0/")
		}
		shuffled = append(shuffled, a)
	}
	bad, err = encodeFrame(KindSnapshot, json.RawMessage(shuffled[0].raw), shuffled[1:])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeSnapshot(bad); err == nil || !strings.Contains(err.Error(), "traj/") {
		t.Fatalf("an out-of-order trajectory decoded (err %v)", err)
	}
}

// reframe rebuilds a valid frame (compression, lengths, checksum) around a
// hand-made payload, so semantic checks can be reached.
func reframe(kind byte, payload []byte) []byte {
	enc, _ := codecs()
	f := make([]byte, headerSize)
	copy(f, magic)
	f[4], f[5] = version, kind
	binary.LittleEndian.PutUint32(f[8:], uint32(len(payload)))
	f = enc.EncodeAll(payload, f)
	binary.LittleEndian.PutUint32(f[12:], uint32(len(f)-headerSize))
	return binary.LittleEndian.AppendUint32(f, crc32.Checksum(f, castagnoli))
}

func payloadOf(t *testing.T, frame []byte) []byte {
	t.Helper()
	_, dec := codecs()
	p, err := dec.DecodeAll(frame[headerSize:len(frame)-4], nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDecodeErrors(t *testing.T) {
	good, err := EncodeResult(testResult())
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(b []byte) []byte) []byte { return f(slices.Clone(good)) }
	nanResult := testResult()
	nanResult.Synthetic.X.Data[5] = float32(math.Inf(1))
	nanFrame, _ := EncodeResult(nanResult)
	badLabel := testResult()
	badLabel.Synthetic.Y[1] = 3
	badLabelFrame, _ := EncodeResult(badLabel)
	p := payloadOf(t, good)
	// The dtype byte of the first array ("meta": name length 4 at offset 4).
	badDtype := slices.Clone(p)
	badDtype[4+2+4] = 9
	cases := []struct {
		name  string
		frame []byte
		want  string
	}{
		{"empty", nil, "shorter than"},
		{"magic", mutate(func(b []byte) []byte { b[0] = 'X'; return b }), "bad magic"},
		{"version", mutate(func(b []byte) []byte { b[4] = 9; return b }), "unsupported version"},
		{"kind", mutate(func(b []byte) []byte { b[5] = KindTask; return b }), "frame is a task, want a result"},
		{"truncated", good[:len(good)-9], "compressed bytes"},
		{"flipped bit", mutate(func(b []byte) []byte { b[len(b)/2] ^= 4; return b }), "checksum mismatch"},
		{"huge size", mutate(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[8:], MaxPayload+1); return b }), "exceeds"},
		{"infinite pixel", nanFrame, "non-finite"},
		{"label out of range", badLabelFrame, "out of range"},
		{"unknown dtype", reframe(KindResult, badDtype), "unknown dtype"},
		{"trailing bytes", reframe(KindResult, append(slices.Clone(p), 0)), "left over"},
		{"short payload", reframe(KindResult, p[:len(p)-3]), "truncated"},
		{"bad meta", reframe(KindResult, metaPayload(`{"round":"x"}`)), "metadata"},
		{"unknown meta key", reframe(KindResult, metaPayload(`{"rounds":1}`)), "unknown field"},
	}
	for _, c := range cases {
		_, err := DecodeResult(c.frame)
		if err == nil {
			t.Errorf("%s: decoded without error", c.name)
			continue
		}
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q, want ErrCorrupt mentioning %q", c.name, err, c.want)
		}
	}
}

func metaPayload(meta string) []byte {
	var p []byte
	le := binary.LittleEndian
	p = le.AppendUint32(p, 1)
	p = le.AppendUint16(p, 4)
	p = append(p, "meta"...)
	p = append(p, dtBytes, 1)
	p = le.AppendUint32(p, uint32(len(meta)))
	return append(p, meta...)
}

func FuzzDecode(f *testing.F) {
	r, _ := EncodeResult(testResult())
	task, _ := EncodeTask(&client.Task{Kind: client.KindTrain, Global: testWeights()})
	snap, _ := EncodeSnapshot(&Snapshot{Meta: []byte("{}"), Synthetic: map[int]*client.Synthetic{1: testSynthetic()}})
	f.Add(r)
	f.Add(task)
	f.Add(snap)
	f.Add(reframe(KindResult, metaPayload(`{}`)))
	f.Fuzz(func(t *testing.T, b []byte) {
		if res, err := DecodeResult(b); err == nil && res.Synthetic != nil {
			if _, err := EncodeResult(res); err != nil {
				t.Fatalf("decoded result does not re-encode: %v", err)
			}
		}
		_, _ = DecodeTask(b)
		_, _ = DecodeSnapshot(b)
		if len(b) > headerSize+4 {
			// Also reach the payload parser with valid framing.
			_, _ = DecodeResult(reframe(KindResult, b[headerSize:]))
		}
	})
}

// probs returns a (rows, cols) tensor of v.
func probs(v []float32, rows, cols int) *tensor.Tensor[float32] {
	t, err := tensor.FromSlice(v, rows, cols)
	if err != nil {
		panic(err)
	}
	return t
}

// softSynthetic is testSynthetic with soft labels.
func softSynthetic() *client.Synthetic {
	s := testSynthetic()
	s.Soft = probs([]float32{0.8, 0.1, 0.1, 0, 0.25, 0.75, 0.5, 0, 0.5}, 3, 3)
	return s
}

func TestSnapshotCarriesSoftLabels(t *testing.T) {
	s := &Snapshot{Meta: []byte(`{}`), Global: testWeights(), ServerSet: softSynthetic()}
	got, err := snapshotRoundTrip(t, s)
	if err != nil {
		t.Fatal(err)
	}
	if got.ServerSet.Soft == nil || !slices.Equal(got.ServerSet.Soft.Data, s.ServerSet.Soft.Data) || !slices.Equal(got.ServerSet.Soft.Shape, []int{3, 3}) {
		t.Fatalf("soft labels came back as %v", got.ServerSet.Soft)
	}
	// Without soft labels the set comes back without them.
	s.ServerSet = testSynthetic()
	if got, err = snapshotRoundTrip(t, s); err != nil || got.ServerSet.Soft != nil {
		t.Fatalf("hard-labelled set: soft %v, err %v", got.ServerSet.Soft, err)
	}

	for name, soft := range map[string]*tensor.Tensor[float32]{
		"sums to 0.9":    probs([]float32{0.8, 0.1, 0, 0, 0.25, 0.75, 0.5, 0, 0.5}, 3, 3),
		"probability":    probs([]float32{1.5, -0.5, 0, 0, 0.25, 0.75, 0.5, 0, 0.5}, 3, 3),
		"shape [3 2]":    probs([]float32{1, 0, 0, 1, 1, 0}, 3, 2),
		"non-finite NaN": probs([]float32{float32(math.NaN()), 0, 1, 0, 0, 1, 0, 0, 1}, 3, 3),
	} {
		s.ServerSet = softSynthetic()
		s.ServerSet.Soft = soft
		if _, err := snapshotRoundTrip(t, s); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), strings.Fields(name)[0]) {
			t.Errorf("soft labels that fail on %s: %v", name, err)
		}
	}

	// A client result with soft labels is refused, not silently dropped.
	r := testResult()
	r.Synthetic = softSynthetic()
	b, err := EncodeResult(r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeResult(b); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "soft labels") {
		t.Fatalf("result with soft labels: %v", err)
	}
}
