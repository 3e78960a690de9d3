package rpc

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	"github.com/fedsim/fedsim/client"
	"github.com/fedsim/fedsim/federation"
	"github.com/fedsim/fedsim/federation/rpc/rpcpb"
	"github.com/fedsim/fedsim/tensor"
)

// rawCall sends chunks to a worker as a hostile or broken coordinator
// would, and returns the call's final status.
func rawCall(t *testing.T, cc *grpc.ClientConn, chunks ...*rpcpb.Chunk) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := rpcpb.NewWorkerClient(cc).Run(ctx)
	if err != nil {
		return err
	}
	for _, c := range chunks {
		if err := s.Send(c); err != nil {
			break
		}
	}
	s.CloseSend()
	for {
		if _, err := s.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func TestWorkerRejectsBadStreams(t *testing.T) {
	lis := bufconn.Listen(1 << 20)
	_, ws := serveWorkers(t, 4, 1, func() net.Listener { return lis })
	w := ws[0]
	cc, err := grpc.NewClient("passthrough:///bufnet", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	good := taskFrame(t, 1, 2, "echo", 0)
	other := taskFrame(t, 1, 3, "echo", 0)
	garbage := []byte(strings.Repeat("x", 64))
	stranger := taskFrame(t, 1, 99, "echo", 0)
	cases := []struct {
		name   string
		chunks []*rpcpb.Chunk
		code   codes.Code
		reason string
	}{
		{"oversized announcement", []*rpcpb.Chunk{{Client: 2, Round: 1, Size: 1 << 40, Data: good[:10]}}, codes.ResourceExhausted, ReasonOversized},
		{"message above the gRPC limit", []*rpcpb.Chunk{{Client: 2, Round: 1, Size: 3 << 20, Data: make([]byte, 2<<20)}}, codes.ResourceExhausted, ReasonOversized},
		{"not a frame", []*rpcpb.Chunk{{Client: 2, Round: 1, Size: uint64(len(garbage)), Data: garbage}}, codes.InvalidArgument, ReasonBadFrame},
		{"flipped byte", []*rpcpb.Chunk{{Client: 2, Round: 1, Size: uint64(len(good)), Data: flip(good, 30)}}, codes.InvalidArgument, ReasonBadFrame},
		{"truncated", []*rpcpb.Chunk{{Client: 2, Round: 1, Size: uint64(len(good)), Data: good[:len(good)-5]}}, codes.InvalidArgument, ReasonBadStream},
		{"too many bytes", []*rpcpb.Chunk{{Client: 2, Round: 1, Size: uint64(len(good)), Data: good}, {Data: []byte{1}}}, codes.InvalidArgument, ReasonBadStream},
		{"header repeated", []*rpcpb.Chunk{{Client: 2, Round: 1, Size: uint64(len(good)), Data: good[:8]}, {Client: 2, Data: good[8:]}}, codes.InvalidArgument, ReasonBadStream},
		{"empty stream", nil, codes.InvalidArgument, ReasonBadStream},
		{"negative client", []*rpcpb.Chunk{{Client: -1, Round: 1, Size: uint64(len(good)), Data: good}}, codes.InvalidArgument, ReasonBadStream},
		{"task for another client", []*rpcpb.Chunk{{Client: 2, Round: 1, Size: uint64(len(other)), Data: other}}, codes.InvalidArgument, ReasonWrongClient},
		{"task for another round", []*rpcpb.Chunk{{Client: 2, Round: 7, Size: uint64(len(good)), Data: good}}, codes.InvalidArgument, ReasonWrongRound},
		{"client not hosted", []*rpcpb.Chunk{{Client: 99, Round: 1, Size: uint64(len(stranger)), Data: stranger}}, codes.NotFound, ReasonUnknownClient},
	}
	for _, c := range cases {
		before := w.Stats().Get(c.reason)
		err := rawCall(t, cc, c.chunks...)
		if status.Code(err) != c.code {
			t.Errorf("%s: status %v, want %v", c.name, err, c.code)
			continue
		}
		if w.Stats().Get(c.reason) != before+1 {
			t.Errorf("%s: %q counted %d times, want once more than %d (%v)", c.name, c.reason, w.Stats().Get(c.reason), before, err)
		}
	}
	// The worker still serves.
	if err := rawCall(t, cc, &rpcpb.Chunk{Client: 2, Round: 1, Size: uint64(len(good)), Data: good}); err != nil {
		t.Fatalf("good call after the bad ones: %v", err)
	}
	info, err := rpcpb.NewWorkerClient(cc).Info(context.Background(), &rpcpb.InfoRequest{}, grpc.UseCompressor(CompressorName))
	if err != nil || info.Served != 1 || info.Rejected[ReasonBadStream] < 4 {
		t.Fatalf("info %v %v", info, err)
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0xff
	return c
}

// liar is a worker that answers with whatever reply builds.
type liar struct {
	rpcpb.UnimplementedWorkerServer
	reply func(client, round int) [][]byte
	calls atomic.Int32
}

func (l *liar) Run(s rpcpb.Worker_RunServer) error {
	l.calls.Add(1)
	a := assembler{maxFrame: DefaultMaxFrame}
	for {
		c, err := s.Recv()
		if err != nil {
			break
		}
		a.add(c.Client, c.Round, c.Size, c.Data)
	}
	for _, f := range l.reply(a.client, a.round) {
		if err := s.Send(&rpcpb.Chunk{Client: int32(a.client), Round: int32(a.round), Size: uint64(len(f)), Data: f}); err != nil {
			return err
		}
	}
	return nil
}

func result(t *testing.T, r *client.Result) []byte {
	t.Helper()
	f, err := federation.EncodeResult(r)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func synth(x float32, labels []int, classes int) *client.Synthetic {
	img := tensor.New[float32](len(labels), 1, 2, 2)
	for i := range img.Data {
		img.Data[i] = x
	}
	counts := make([]int, classes)
	for i := range counts {
		counts[i] = 1
	}
	return &client.Synthetic{X: img, Y: labels, Counts: counts}
}

// A coordinator rejects results that break the protocol, says why, counts
// them, and keeps working.
func TestTransportRejectsBadResults(t *testing.T) {
	ok := func(c, r int) *client.Result {
		return &client.Result{Client: c, Round: r, Status: client.StatusOK, NumSamples: 1, Synthetic: synth(0.5, []int{0, 1}, 3)}
	}
	nanSet := ok(0, 0)
	nanSet.Synthetic = synth(float32(math.NaN()), []int{0}, 3)
	badLabel := ok(0, 0)
	badLabel.Synthetic = synth(0.1, []int{0, 5}, 3)
	// An int64 label array re-typed as float32 (dtype byte of "syn/y").
	wrongDtype := func(c, r int) []byte {
		return retypeArray(t, result(t, ok(c, r)), "syn/y", 1)
	}
	cases := []struct {
		name   string
		reply  func(c, r int) [][]byte
		reason string
	}{
		{"garbage", func(c, r int) [][]byte { return [][]byte{[]byte(strings.Repeat("z", 40))} }, ReasonBadFrame},
		{"another client", func(c, r int) [][]byte { return [][]byte{result(t, ok(c+1, r))} }, ReasonWrongClient},
		{"another round", func(c, r int) [][]byte { return [][]byte{result(t, ok(c, r+1))} }, ReasonWrongRound},
		{"NaN images", func(c, r int) [][]byte { n := *nanSet; n.Client, n.Round = c, r; return [][]byte{result(t, &n)} }, ReasonBadFrame},
		{"label out of range", func(c, r int) [][]byte { b := *badLabel; b.Client, b.Round = c, r; return [][]byte{result(t, &b)} }, ReasonBadFrame},
		{"wrong dtype", func(c, r int) [][]byte { return [][]byte{wrongDtype(c, r)} }, ReasonBadFrame},
		{"duplicate", func(c, r int) [][]byte { return [][]byte{result(t, ok(c, r)), result(t, ok(c, r))} }, ReasonDuplicate},
		{"no result", func(c, r int) [][]byte { return nil }, ReasonBadStream},
	}
	l := &liar{}
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer(ServerOptions(0)...)
	rpcpb.RegisterWorkerServer(s, l)
	go s.Serve(lis)
	defer s.Stop()
	tr, err := NewTransport(TransportConfig{Clients: 4, Directory: StaticDirectory{"passthrough:///bufnet"}, Insecure: true,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) })}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for _, c := range cases {
		l.reply = c.reply
		if err := tr.Send(context.Background(), 1, taskFrame(t, 2, 1, "echo", 0)); err != nil {
			t.Fatal(err)
		}
		r := <-tr.Replies()
		if r.Err == nil || !strings.Contains(r.Err.Error(), "["+c.reason+"]") {
			t.Errorf("%s: reply error %v, want reason %s", c.name, r.Err, c.reason)
		}
		if tr.Stats().Get(c.reason) == 0 {
			t.Errorf("%s: %s not counted", c.name, c.reason)
		}
	}
	l.reply = func(c, r int) [][]byte { return [][]byte{result(t, ok(c, r))} }
	tr.Send(context.Background(), 1, taskFrame(t, 2, 1, "echo", 0))
	if r := <-tr.Replies(); r.Err != nil {
		t.Fatalf("good result after the bad ones: %v", r.Err)
	}
}

// retypeArray changes the dtype byte of a named array in a frame and
// re-encodes it (checksum included), as a buggy or hostile peer would.
func retypeArray(t *testing.T, frame []byte, name string, dtype byte) []byte {
	t.Helper()
	_, dec := federationCodecs()
	le := binary.LittleEndian
	p, err := dec.DecodeAll(frame[16:len(frame)-4], nil)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(p), name)
	if i < 0 {
		t.Fatalf("no array %q", name)
	}
	p[i+len(name)] = dtype
	enc, _ := federationCodecs()
	out := append([]byte(nil), frame[:16]...)
	out = enc.EncodeAll(p, out)
	le.PutUint32(out[12:], uint32(len(out)-16))
	return le.AppendUint32(out, crc32c(out))
}

// Mutual TLS: without a certificate from the cluster's CA a process can
// neither send tasks to a worker (nor so read anything from it), nor pose
// as a worker to receive tasks (with the model) and submit results.
func TestMutualTLSKeepsStrangersOut(t *testing.T) {
	ca, node := testPKI(t)
	srvTLS, cliTLS, err := TLSConfigs(ca.Cert, node)
	if err != nil {
		t.Fatal(err)
	}
	ls, ws := serveWorkers(t, 4, 1, func() net.Listener { return tcpListener(t) }, grpc.Creds(credentials.NewTLS(srvTLS)))
	addr := ls[0].Addr().String()
	otherCA, _ := NewDevCA("other", time.Hour)
	otherNode, _ := IssueNode(otherCA, "intruder", []string{"127.0.0.1"}, time.Hour)
	otherSrv, otherCli, err := TLSConfigs(otherCA.Cert, otherNode)
	if err != nil {
		t.Fatal(err)
	}
	// A stranger's view of the worker: it trusts the worker's CA but has
	// no certificate, or one from another CA.
	_, noCert, _ := TLSConfigs(ca.Cert, node)
	noCert.Certificates = nil
	foreign := otherCli.Clone()
	foreign.RootCAs = cliTLS.RootCAs
	for name, conf := range map[string]*TransportConfig{
		"no certificate":            {TLS: noCert},
		"certificate of another CA": {TLS: foreign},
		"plain text":                {Insecure: true},
	} {
		conf.Clients, conf.Directory, conf.MaxAttempts, conf.LookupTimeout = 4, StaticDirectory{addr}, 2, time.Second
		tr, err := NewTransport(*conf)
		if err != nil {
			t.Fatal(err)
		}
		tr.Send(context.Background(), 1, taskFrame(t, 1, 1, "echo", 0))
		if r := <-tr.Replies(); r.Err == nil || r.Frame != nil {
			t.Errorf("%s: a task reached the worker: %v", name, r.Err)
		}
		if _, err := tr.Info(context.Background(), addr); err == nil {
			t.Errorf("%s: read the worker's info", name)
		}
		tr.Close()
	}
	if ws[0].served.Load() != 0 {
		t.Fatal("the worker ran a stranger's task")
	}
	// An impostor worker with a certificate of another CA never gets the
	// coordinator's task (or its model) and cannot submit a result.
	l := &liar{reply: func(c, r int) [][]byte { return nil }}
	s := grpc.NewServer(append(ServerOptions(0), grpc.Creds(credentials.NewTLS(otherSrv)))...)
	rpcpb.RegisterWorkerServer(s, l)
	il := tcpListener(t)
	go s.Serve(il)
	defer s.Stop()
	tr, err := NewTransport(TransportConfig{Clients: 4, Directory: StaticDirectory{il.Addr().String()}, TLS: cliTLS, MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	tr.Send(context.Background(), 1, taskFrame(t, 1, 1, "echo", 0))
	if r := <-tr.Replies(); r.Err == nil || l.calls.Load() != 0 {
		t.Fatalf("coordinator talked to an impostor: %v, %d calls", r.Err, l.calls.Load())
	}
}

// FuzzChunkStream feeds arbitrary bytes, cut into Chunk messages, to the
// stream checks and the frame decoders: they must reject or accept, never
// panic.
func FuzzChunkStream(f *testing.F) {
	good := taskFrame(f, 1, 2, "echo", 40)
	for _, chunks := range [][]*rpcpb.Chunk{
		{{Client: 2, Round: 1, Size: uint64(len(good)), Data: good}},
		{{Client: 2, Round: 1, Size: uint64(len(good)), Data: good[:100]}, {Data: good[100:]}},
		{{Client: 2, Round: 1, Size: 1 << 40}},
	} {
		f.Add(packChunks(f, chunks))
	}
	f.Add([]byte{})
	f.Add([]byte{5, 0, 0, 0, 1, 2, 3, 4, 5})
	f.Fuzz(func(t *testing.T, b []byte) {
		a := assembler{maxFrame: 1 << 20}
		for len(b) >= 4 {
			n := int(binary.LittleEndian.Uint32(b))
			b = b[4:]
			if n > len(b) {
				n = len(b)
			}
			var c rpcpb.Chunk
			if err := proto.Unmarshal(b[:n], &c); err != nil {
				return
			}
			b = b[n:]
			if reason, _, _ := a.add(c.Client, c.Round, c.Size, c.Data); reason != "" {
				return
			}
		}
		if reason, _, _ := a.complete(); reason != "" {
			return
		}
		if task, err := federation.DecodeTask(a.buf); err == nil && task == nil {
			t.Fatal("nil task without error")
		}
		checkResult(a.buf, a.client, a.round)
	})
}

func packChunks(t testing.TB, chunks []*rpcpb.Chunk) []byte {
	var out []byte
	for _, c := range chunks {
		b, err := proto.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(len(b)))
		out = append(out, b...)
	}
	return out
}

func federationCodecs() (*zstd.Encoder, *zstd.Decoder) {
	enc, _ := zstd.NewWriter(nil)
	dec, _ := zstd.NewReader(nil)
	return enc, dec
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }
