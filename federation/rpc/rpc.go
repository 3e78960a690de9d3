// Package rpc is fedsim's gRPC data plane: the Worker service of
// proto/fedsim.proto (generated code in rpcpb), a federation.Transport that
// sends each task to the worker hosting its client (Transport), and the
// service a worker runs to host many client handlers (Worker).
//
// Frames are fedsim wire-format frames (package federation), cut into
// chunks of ChunkSize bytes so that no gRPC message exceeds the message
// size limit, whatever the model's size. Frames are zstd-compressed
// already, so Run streams use no gRPC compressor (compressing them again
// costs CPU and saves nothing); the zstd compressor registered here under
// the name "zstd" (klauspost/compress, the same library as the frames) is
// used for the other calls and is available to every client of the
// service.
//
// Every call has a deadline and every message a size limit; a peer that
// sends a malformed, oversized or inconsistent stream gets a gRPC status
// that says which check failed, and the receiver counts the rejection by
// reason (Stats) and keeps serving.
//
// Which worker hosts which client is the business of a Directory: package
// federation/membership implements it with memberlist; StaticDirectory serves
// tests and fixed deployments. Only this package imports grpc.
package rpc

import (
	"fmt"
	"io"
	"maps"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/fedsim/fedsim/federation"
)

// Defaults of the data plane.
const (
	// DefaultChunkSize is the largest data field of one Chunk message.
	DefaultChunkSize = 1 << 20
	// DefaultMaxFrame bounds a task or result frame (256 MiB): far above
	// any model fedsim builds, far below what would exhaust a worker.
	DefaultMaxFrame = 256 << 20
	// DefaultCallTimeout is the deadline of one task (distilling a large
	// shard on a slow machine takes minutes, not hours).
	DefaultCallTimeout = time.Hour
	// InfoTimeout is the deadline of an Info call.
	InfoTimeout = 10 * time.Second
	// minFrame is the size of an empty frame: header and checksum.
	minFrame = 20
	// msgOverhead is the room a Chunk's other fields and the protobuf
	// framing take beside the data.
	msgOverhead = 4 << 10
)

// CompressorName is the name of the zstd gRPC compressor this package
// registers (use it with grpc.UseCompressor).
const CompressorName = "zstd"

func init() { encoding.RegisterCompressor(&zstdCompressor{}) }

// zstdCompressor implements encoding.Compressor with klauspost/compress.
// Encoders are pooled (they are costly to create); decoders are made per
// message with one goroutine and a bounded window, so a hostile message
// cannot make the receiver allocate more than the gRPC size limit allows
// (grpc-go also stops reading a decompressed message at the receive
// limit).
type zstdCompressor struct{ pool sync.Pool }

type zstdWriter struct {
	*zstd.Encoder
	pool *sync.Pool
}

func (w *zstdWriter) Close() error {
	err := w.Encoder.Close()
	w.pool.Put(w)
	return err
}

func (c *zstdCompressor) Compress(w io.Writer) (io.WriteCloser, error) {
	if zw, ok := c.pool.Get().(*zstdWriter); ok {
		zw.Reset(w)
		return zw, nil
	}
	enc, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		return nil, fmt.Errorf("rpc: zstd encoder: %w", err)
	}
	return &zstdWriter{Encoder: enc, pool: &c.pool}, nil
}

func (c *zstdCompressor) Decompress(r io.Reader) (io.Reader, error) {
	dec, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(8<<20), zstd.WithDecoderMaxMemory(DefaultMaxFrame))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "rpc: zstd message: %v", err)
	}
	return &closingReader{dec}, nil
}

func (c *zstdCompressor) Name() string { return CompressorName }

// closingReader releases the decoder's goroutine at the end of the message.
type closingReader struct{ d *zstd.Decoder }

func (r *closingReader) Read(p []byte) (int, error) {
	if r.d == nil {
		return 0, io.EOF
	}
	n, err := r.d.Read(p)
	if err != nil {
		r.d.Close()
		r.d = nil
	}
	return n, err
}

// Rejection reasons counted by Stats.
const (
	ReasonBadStream     = "bad_stream"     // chunks out of order, header repeated, size mismatch
	ReasonOversized     = "oversized"      // frame above MaxFrame
	ReasonBadFrame      = "bad_frame"      // frame does not decode (federation's checks)
	ReasonWrongClient   = "wrong_client"   // frame for another client than the call's
	ReasonWrongRound    = "wrong_round"    // frame for another round than the task's
	ReasonDuplicate     = "duplicate"      // a second result on one call
	ReasonUnknownClient = "unknown_client" // worker cannot host the client
	ReasonNotReady      = "not_ready"      // worker not (or no longer) serving
	ReasonRetried       = "retried"        // server side: worker unreachable, task re-sent
	ReasonCallFailed    = "call_failed"    // server side: call ended with an error status
)

// Stats counts rejected input by reason; safe for concurrent use.
type Stats struct {
	mu sync.Mutex
	m  map[string]int64
}

// Add counts one event of reason.
func (s *Stats) Add(reason string) {
	s.mu.Lock()
	if s.m == nil {
		s.m = map[string]int64{}
	}
	s.m[reason]++
	s.mu.Unlock()
}

// Snapshot returns a copy of the counters.
func (s *Stats) Snapshot() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.m)
}

// Get returns one counter.
func (s *Stats) Get(reason string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[reason]
}

// reject counts reason and returns a status error with the message.
func reject(st *Stats, reason string, code codes.Code, format string, args ...any) error {
	st.Add(reason)
	return status.Errorf(code, "rpc: "+format+" ["+reason+"]", args...)
}

// msgLimit is the gRPC message size limit for a chunk size.
func msgLimit(chunk int) int { return chunk + msgOverhead }

// ServerOptions returns the options a worker's grpc.Server needs: message
// size limits for chunkSize (≤ 0: DefaultChunkSize) and keepalive rules
// that accept the Transport's pings. Add grpc.Creds for TLS.
func ServerOptions(chunkSize int) []grpc.ServerOption {
	if chunkSize <= 0 {
		chunkSize = DefaultChunkSize
	}
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(msgLimit(chunkSize)),
		grpc.MaxSendMsgSize(msgLimit(chunkSize)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	}
}

// splitFrame cuts a frame into chunks; the first carries the header.
func splitFrame(frame []byte, chunk, client, round int, send func(c *chunkMsg) error) error {
	first := true
	for off := 0; first || off < len(frame); {
		end := min(off+chunk, len(frame))
		m := &chunkMsg{data: frame[off:end]}
		if first {
			m.client, m.round, m.size, m.first = client, round, uint64(len(frame)), true
		}
		if err := send(m); err != nil {
			return err
		}
		first, off = false, end
	}
	return nil
}

type chunkMsg struct {
	first         bool
	client, round int
	size          uint64
	data          []byte
}

// assembler rebuilds a frame from chunks and checks the stream's shape.
type assembler struct {
	maxFrame      int
	client, round int
	size          int
	buf           []byte
	started       bool
}

// add takes the next chunk; it returns a reason and message on a bad stream.
func (a *assembler) add(client, round int32, size uint64, data []byte) (string, codes.Code, string) {
	if !a.started {
		a.started = true
		if size > uint64(a.maxFrame) {
			return ReasonOversized, codes.ResourceExhausted, fmt.Sprintf("frame of %d bytes exceeds the %d-byte limit (raise MaxFrame on both sides, or send a smaller model)", size, a.maxFrame)
		}
		if size < minFrame {
			return ReasonBadStream, codes.InvalidArgument, fmt.Sprintf("first chunk announces a %d-byte frame; a frame has at least %d bytes", size, minFrame)
		}
		if client < 0 || round < 0 {
			return ReasonBadStream, codes.InvalidArgument, fmt.Sprintf("first chunk names client %d round %d; both must be ≥ 0", client, round)
		}
		a.client, a.round, a.size = int(client), int(round), int(size)
		// Grow with the data rather than trusting the announced size.
		a.buf = make([]byte, 0, min(a.size, 4<<20))
	} else if client != 0 || round != 0 || size != 0 {
		return ReasonBadStream, codes.InvalidArgument, "only the first chunk may carry client, round and size"
	}
	if len(a.buf)+len(data) > a.size {
		return ReasonBadStream, codes.InvalidArgument, fmt.Sprintf("chunks carry more than the %d bytes announced", a.size)
	}
	a.buf = append(a.buf, data...)
	return "", codes.OK, ""
}

// complete checks that the announced size arrived.
func (a *assembler) complete() (string, codes.Code, string) {
	if !a.started {
		return ReasonBadStream, codes.InvalidArgument, "stream ended before its first chunk"
	}
	if len(a.buf) != a.size {
		return ReasonBadStream, codes.InvalidArgument, fmt.Sprintf("stream ended after %d of the %d bytes announced", len(a.buf), a.size)
	}
	return "", codes.OK, ""
}

// checkResult decodes a result frame and checks it answers (client, round).
func checkResult(frame []byte, client, round int) (string, error) {
	r, err := federation.DecodeResult(frame)
	if err != nil {
		return ReasonBadFrame, fmt.Errorf("result frame: %w", err)
	}
	if r.Client != client {
		return ReasonWrongClient, fmt.Errorf("result is for client %d, the task was for client %d", r.Client, client)
	}
	if r.Round != round {
		return ReasonWrongRound, fmt.Errorf("result is for round %d, the task was for round %d", r.Round, round)
	}
	return "", nil
}
