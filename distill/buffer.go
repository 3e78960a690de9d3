package distill

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// A trajectory buffer is a folder of expert training trajectories for
// trajectory matching (MTT, FTD, TESLA): index.json, and one file
// expert_NNN.traj per expert holding its flattened parameter vector at
// epochs 0 (initialisation) … Epochs, in the model's Params order. Each
// epoch is one chunk: the float32 values (little endian) split into four
// byte planes (which compress better than interleaved floats) and
// deflated (compress/flate). The index gives every chunk's offset, length
// and the CRC-32 (IEEE) of its uncompressed little-endian floats, so a
// truncated or corrupted file is reported, not silently used.
//
// Files are written atomically (temporary file, then rename): an expert's
// file first, then the index that lists it, so an interrupted run leaves a
// valid buffer with the experts finished so far, and TrainExperts
// continues it.

// BufferFormat and BufferVersion identify index.json.
const (
	BufferFormat  = "fedsim-trajectory-buffer"
	BufferVersion = 1
	bufferIndex   = "index.json"
)

// BufferConfig configures TrainExperts. The zero values of LR, BatchSize
// and DSAStrategy select MTT's buffer.py settings (SGD lr 0.01 without
// momentum or weight decay, batch 256, DSA augmentation).
type BufferConfig struct {
	// Model is the expert architecture (a name for nn.New; default
	// "convnet").
	Model string `json:"model"`
	// Experts is the number of expert trajectories; Epochs their length.
	Experts int `json:"experts"`
	Epochs  int `json:"epochs"`
	// LR and BatchSize configure plain SGD (default 0.01 and 256).
	LR        float64 `json:"lr"`
	BatchSize int     `json:"batch_size"`
	// DSAStrategy is the per-sample augmentation of every training batch
	// (default by data set, as for distillation; "none" turns it off).
	DSAStrategy string `json:"dsa_strategy"`
	// Seed: expert e is initialised and trained from streams of (Seed, e).
	Seed uint64 `json:"seed"`

	// Context cancels training between steps (nil: never).
	Context context.Context `json:"-"`
	// Progress, if set, is called after every training step.
	Progress func(expert int, p nn.Progress) `json:"-"`
	// EpochDone, if set, is called after every epoch with the expert's
	// test accuracy (NaN when TrainExperts got no test set).
	EpochDone func(expert, epoch int, testAcc float64) `json:"-"`
}

func (c BufferConfig) withDefaults(dataset string) BufferConfig {
	if c.Model == "" {
		c.Model = "convnet"
	}
	if c.LR == 0 {
		c.LR = 0.01
	}
	if c.BatchSize == 0 {
		c.BatchSize = 256
	}
	if c.DSAStrategy == "" {
		c.DSAStrategy = DefaultDSAStrategy(dataset)
	}
	return c
}

// BufferIndex is index.json.
type BufferIndex struct {
	Format      string      `json:"format"`
	Version     int         `json:"version"`
	Dataset     string      `json:"dataset"`
	TrainImages int         `json:"train_images"`
	ImageShape  []int       `json:"image_shape"`
	Classes     int         `json:"classes"`
	Mean        []float32   `json:"mean"`
	Std         []float32   `json:"std"`
	ZCA         bool        `json:"zca"`
	Model       string      `json:"model"`
	ParamNames  []string    `json:"param_names"`
	ParamShapes [][]int     `json:"param_shapes"`
	NumParams   int         `json:"num_params"`
	Epochs      int         `json:"epochs"`
	LR          float64     `json:"lr"`
	Momentum    float64     `json:"momentum"`
	BatchSize   int         `json:"batch_size"`
	DSAStrategy string      `json:"dsa_strategy"`
	Seed        uint64      `json:"seed"`
	Experts     []ExpertRec `json:"experts"`
}

// ExpertRec is one expert's entry in the index.
type ExpertRec struct {
	File    string     `json:"file"`
	Chunks  []ChunkRec `json:"chunks"` // one per epoch 0 … Epochs
	TestAcc []float64  `json:"test_acc,omitempty"`
}

// ChunkRec locates one epoch's parameters in an expert file.
type ChunkRec struct {
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
	CRC32  uint32 `json:"crc32"`
}

// Buffer is an opened trajectory buffer.
type Buffer struct {
	Dir   string
	Index BufferIndex
}

// Experts returns the number of expert trajectories.
func (b *Buffer) Experts() int { return len(b.Index.Experts) }

// Epochs returns the trajectories' length (each has Epochs+1 checkpoints).
func (b *Buffer) Epochs() int { return b.Index.Epochs }

// TrainExperts trains cfg.Experts experts on real with plain SGD and
// stores their trajectories in dir (created if needed). test, if not nil,
// is used to report each epoch's test accuracy. A buffer already in dir
// with the same settings is continued (its finished experts are kept);
// one with other settings is an error.
func TrainExperts(real, test *data.Dataset, cfg BufferConfig, dir string) (*Buffer, error) {
	cfg = cfg.withDefaults(real.Name)
	if cfg.Experts < 1 || cfg.Epochs < 1 || cfg.BatchSize < 1 || !(cfg.LR > 0) || math.IsInf(cfg.LR, 0) {
		return nil, fmt.Errorf("distill: buffer: experts %d, epochs %d, batch %d must be positive and the learning rate %g finite and positive",
			cfg.Experts, cfg.Epochs, cfg.BatchSize, cfg.LR)
	}
	if err := real.Validate(); err != nil {
		return nil, err
	}
	strategy, err := data.ParseDSAStrategy(cfg.DSAStrategy)
	if err != nil {
		return nil, fmt.Errorf("distill: buffer: %w", err)
	}
	shape := real.ImageShape()
	tmpl, err := nn.New[float32](cfg.Model, shape, real.Classes, tensor.NewRNG(0, 0))
	if err != nil {
		return nil, fmt.Errorf("distill: buffer: %w", err)
	}
	idx := BufferIndex{Format: BufferFormat, Version: BufferVersion, Dataset: real.Name, TrainImages: real.Len(),
		ImageShape: shape, Classes: real.Classes, Mean: slices.Clone(real.Mean), Std: slices.Clone(real.Std),
		Model: cfg.Model, ParamNames: tmpl.ParamNames(), NumParams: nn.NumParams(tmpl), Epochs: cfg.Epochs,
		LR: cfg.LR, BatchSize: cfg.BatchSize, DSAStrategy: cfg.DSAStrategy, Seed: cfg.Seed}
	for _, p := range tmpl.Params() {
		idx.ParamShapes = append(idx.ParamShapes, slices.Clone(p.Shape))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("distill: buffer: %w", err)
	}
	buf := &Buffer{Dir: dir, Index: idx}
	if old, err := OpenBuffer(dir); err == nil {
		want := idx
		want.Experts = old.Index.Experts
		a, _ := json.Marshal(want)
		b, _ := json.Marshal(old.Index)
		if !bytes.Equal(a, b) {
			return nil, fmt.Errorf("distill: buffer: %s holds a buffer with other settings (%s); use another folder", dir, b)
		}
		buf = old
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	ctx := cfg.Context
	if ctx == nil {
		ctx = context.Background()
	}
	var each *data.DSA
	if len(strategy) > 0 {
		each = &data.DSA{Strategy: strategy, Params: data.DefaultDSAParams()}
	}
	for e := buf.Experts(); e < cfg.Experts; e++ {
		rec, err := trainExpert(ctx, real, test, cfg, each, e, dir)
		if err != nil {
			return nil, err
		}
		buf.Index.Experts = append(buf.Index.Experts, rec)
		b, err := json.MarshalIndent(buf.Index, "", " ")
		if err != nil {
			return nil, err
		}
		if err := writeFileAtomic(filepath.Join(dir, bufferIndex), append(b, '\n')); err != nil {
			return nil, err
		}
	}
	return buf, nil
}

func trainExpert(ctx context.Context, real, test *data.Dataset, cfg BufferConfig, each *data.DSA, e int, dir string) (ExpertRec, error) {
	m, err := nn.New[float32](cfg.Model, real.ImageShape(), real.Classes, tensor.NewRNG(cfg.Seed, uint64(2*e)))
	if err != nil {
		return ExpertRec{}, err
	}
	augRNG := tensor.NewRNG(cfg.Seed, uint64(2*e+1))
	rec := ExpertRec{File: fmt.Sprintf("expert_%03d.traj", e)}
	var file bytes.Buffer
	snap := func() error {
		c, err := encodeChunk(m.Params(), int64(file.Len()))
		if err != nil {
			return err
		}
		file.Write(c.data)
		rec.Chunks = append(rec.Chunks, c.rec)
		return nil
	}
	if err := snap(); err != nil {
		return rec, err
	}
	for ep := range cfg.Epochs {
		tc := nn.TrainConfig[float32]{Epochs: 1, BatchSize: cfg.BatchSize, LR: cfg.LR, Seed: augRNG.Uint64(), Context: ctx}
		if each != nil {
			tc.Augment = func(_ *ag.Tape[float32], x *ag.Var[float32]) *ag.Var[float32] {
				s := x.Shape()
				return data.Apply(each.Sample(augRNG, s[0], s[2], s[3]), x)
			}
		}
		var progress func(nn.Progress)
		if cfg.Progress != nil {
			progress = func(p nn.Progress) { p.Epoch, p.Epochs = ep, cfg.Epochs; cfg.Progress(e, p) }
		}
		if err := nn.Train[float32](m, real, tc, progress); err != nil {
			return rec, fmt.Errorf("distill: buffer: expert %d epoch %d: %w", e, ep, err)
		}
		if err := snap(); err != nil {
			return rec, err
		}
		acc := math.NaN()
		if test != nil {
			if acc, _, err = nn.Evaluate[float32](m, test.X, test.Y, 256); err != nil {
				return rec, err
			}
			rec.TestAcc = append(rec.TestAcc, acc)
		}
		if cfg.EpochDone != nil {
			cfg.EpochDone(e, ep, acc)
		}
	}
	if err := writeFileAtomic(filepath.Join(dir, rec.File), file.Bytes()); err != nil {
		return rec, err
	}
	return rec, nil
}

type chunk struct {
	data []byte
	rec  ChunkRec
}

// encodeChunk flattens ps, splits the float32 bytes into four planes and
// deflates them.
func encodeChunk(ps []*tensor.Tensor[float32], offset int64) (chunk, error) {
	n := 0
	for _, p := range ps {
		n += len(p.Data)
	}
	raw := make([]byte, 4*n)
	k := 0
	for _, p := range ps {
		for _, v := range p.Data {
			binary.LittleEndian.PutUint32(raw[4*k:], math.Float32bits(v))
			k++
		}
	}
	crc := crc32.ChecksumIEEE(raw)
	planes := make([]byte, 4*n)
	for i := range n {
		for b := range 4 {
			planes[b*n+i] = raw[4*i+b]
		}
	}
	var out bytes.Buffer
	w, err := flate.NewWriter(&out, flate.DefaultCompression)
	if err != nil {
		return chunk{}, err
	}
	if _, err := w.Write(planes); err != nil {
		return chunk{}, err
	}
	if err := w.Close(); err != nil {
		return chunk{}, err
	}
	return chunk{data: out.Bytes(), rec: ChunkRec{Offset: offset, Length: int64(out.Len()), CRC32: crc}}, nil
}

// OpenBuffer reads and validates dir/index.json and checks that every
// expert file is present and long enough. A missing index wraps
// fs.ErrNotExist.
func OpenBuffer(dir string) (*Buffer, error) {
	b, err := os.ReadFile(filepath.Join(dir, bufferIndex))
	if err != nil {
		return nil, fmt.Errorf("distill: trajectory buffer %s: %w (create one with `fedsim distill buffer`)", dir, err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("distill: trajectory buffer %s: "+format, append([]any{dir}, args...)...)
	}
	var idx BufferIndex
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, bad("index.json: %v", err)
	}
	if idx.Format != BufferFormat || idx.Version != BufferVersion {
		return nil, bad("index.json has format %q version %d, want %q version %d", idx.Format, idx.Version, BufferFormat, BufferVersion)
	}
	if len(idx.ImageShape) != 3 || idx.Classes < 1 || idx.Epochs < 1 || idx.Model == "" {
		return nil, bad("index.json: image shape %v, %d classes, %d epochs, model %q", idx.ImageShape, idx.Classes, idx.Epochs, idx.Model)
	}
	if len(idx.ParamNames) != len(idx.ParamShapes) {
		return nil, bad("index.json: %d parameter names for %d shapes", len(idx.ParamNames), len(idx.ParamShapes))
	}
	n := 0
	for _, s := range idx.ParamShapes {
		for _, d := range s {
			if d < 1 {
				return nil, bad("index.json: parameter shape %v", s)
			}
		}
		n += tensor.Size(s)
	}
	if n != idx.NumParams || n == 0 {
		return nil, bad("index.json: parameter shapes hold %d values but num_params is %d", n, idx.NumParams)
	}
	for e, x := range idx.Experts {
		if len(x.Chunks) != idx.Epochs+1 {
			return nil, bad("expert %d has %d checkpoints, want %d (epochs 0…%d)", e, len(x.Chunks), idx.Epochs+1, idx.Epochs)
		}
		if x.File != filepath.Base(x.File) || x.File == "" {
			return nil, bad("expert %d: file name %q", e, x.File)
		}
		st, err := os.Stat(filepath.Join(dir, x.File))
		if err != nil {
			return nil, bad("expert %d: %v", e, err)
		}
		for ep, c := range x.Chunks {
			if c.Offset < 0 || c.Length <= 0 || c.Offset+c.Length > st.Size() {
				return nil, bad("expert %d epoch %d: chunk [%d, +%d) lies outside %s (%d bytes): the file is truncated", e, ep, c.Offset, c.Length, x.File, st.Size())
			}
		}
	}
	return &Buffer{Dir: dir, Index: idx}, nil
}

// CheckModel reports whether the buffer's trajectories belong to the
// model name for images of shape (C, H, W) and classes classes, with the
// normalization mean and std: same architecture (parameter names and
// shapes), same images and classes.
func (b *Buffer) CheckModel(model string, shape []int, classes int, mean, std []float32) error {
	ix := &b.Index
	if !slices.Equal(shape, ix.ImageShape) || classes != ix.Classes {
		return fmt.Errorf("distill: trajectory buffer %s was trained on %v images of %d classes (%s), not %v images of %d classes",
			b.Dir, ix.ImageShape, ix.Classes, ix.Dataset, shape, classes)
	}
	for c := range mean {
		if c >= len(ix.Mean) || c >= len(ix.Std) || math.Abs(float64(mean[c]-ix.Mean[c])) > 1e-4 || math.Abs(float64(std[c]-ix.Std[c])) > 1e-4 {
			return fmt.Errorf("distill: trajectory buffer %s was trained on data normalized with mean %v std %v, this data uses %v %v", b.Dir, ix.Mean, ix.Std, mean, std)
		}
	}
	m, err := nn.New[float32](model, shape, classes, tensor.NewRNG(0, 0))
	if err != nil {
		return fmt.Errorf("distill: %w", err)
	}
	names, ps := m.ParamNames(), m.Params()
	same := len(ps) == len(ix.ParamShapes)
	for i := 0; same && i < len(ps); i++ {
		same = names[i] == ix.ParamNames[i] && slices.Equal(ps[i].Shape, ix.ParamShapes[i])
	}
	if !same {
		return fmt.Errorf("distill: trajectory buffer %s holds %q experts (%d parameters in %d tensors); model %q has %d parameters in %d tensors with other names or shapes",
			b.Dir, ix.Model, ix.NumParams, len(ix.ParamShapes), model, nn.NumParams(m), len(ps))
	}
	return nil
}

// Params returns expert e's parameters after epoch ep (0: initialisation)
// as tensors in Params order. It reads one chunk and checks its length
// and checksum.
func (b *Buffer) Params(e, ep int) ([]*tensor.Tensor[float32], error) {
	ix := &b.Index
	if e < 0 || e >= len(ix.Experts) || ep < 0 || ep > ix.Epochs {
		return nil, fmt.Errorf("distill: trajectory buffer %s has %d experts of epochs 0…%d; asked for expert %d epoch %d", b.Dir, len(ix.Experts), ix.Epochs, e, ep)
	}
	x := ix.Experts[e]
	c := x.Chunks[ep]
	bad := func(format string, args ...any) error {
		return fmt.Errorf("distill: trajectory buffer %s: %s epoch %d: "+format, append([]any{b.Dir, x.File, ep}, args...)...)
	}
	f, err := os.Open(filepath.Join(b.Dir, x.File))
	if err != nil {
		return nil, bad("%v", err)
	}
	defer f.Close()
	comp := make([]byte, c.Length)
	if _, err := f.ReadAt(comp, c.Offset); err != nil {
		return nil, bad("reading: %v", err)
	}
	n := ix.NumParams
	planes := make([]byte, 4*n+1)
	r := flate.NewReader(bytes.NewReader(comp))
	k, err := io.ReadFull(r, planes)
	if err != io.ErrUnexpectedEOF || k != 4*n {
		return nil, bad("decompressed to %d bytes (%v), want %d: the file is corrupted", k, err, 4*n)
	}
	raw := make([]byte, 4*n)
	for i := range n {
		for j := range 4 {
			raw[4*i+j] = planes[j*n+i]
		}
	}
	if crc := crc32.ChecksumIEEE(raw); crc != c.CRC32 {
		return nil, bad("checksum %08x, the index says %08x: the file is corrupted", crc, c.CRC32)
	}
	out := make([]*tensor.Tensor[float32], len(ix.ParamShapes))
	off := 0
	for i, s := range ix.ParamShapes {
		t := tensor.New[float32](s...)
		for j := range t.Data {
			t.Data[j] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*(off+j):]))
		}
		if tensor.FirstNonFinite(t.Data) >= 0 {
			return nil, bad("parameter %s has a non-finite value", ix.ParamNames[i])
		}
		off += len(t.Data)
		out[i] = t
	}
	return out, nil
}
