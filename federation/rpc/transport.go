package rpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/fedsim/fedsim/federation"
	"github.com/fedsim/fedsim/federation/rpc/rpcpb"
)

// Directory tells the Transport which worker hosts a client. The cluster
// package implements it with memberlist membership.
type Directory interface {
	// Lookup returns the gRPC address of the worker that hosts client id,
	// waiting (until ctx ends) while no worker is available.
	Lookup(ctx context.Context, id int) (string, error)
	// Unreachable reports that a call to addr failed for a reason of the
	// connection (the worker died, restarted or is shutting down): the
	// directory should move that worker's clients elsewhere until it is
	// known to be back.
	Unreachable(addr string)
}

// SlotDirectory is a Directory that schedules: Lookup also takes one of the
// chosen worker's slots, waiting (without the transport's LookupTimeout,
// which the directory applies itself while no worker is live) when every
// slot is taken, and Release gives the slot back when the call ends. Tasks
// then run where a slot is free instead of queueing behind a busy worker.
type SlotDirectory interface {
	Directory
	Release(addr string)
}

// StaticDirectory spreads the clients over fixed addresses: client id
// lives at d[id % len(d)].
type StaticDirectory []string

// Lookup implements Directory.
func (d StaticDirectory) Lookup(_ context.Context, id int) (string, error) {
	if len(d) == 0 {
		return "", errors.New("rpc: static directory has no worker address")
	}
	return d[id%len(d)], nil
}

// Unreachable implements Directory (a static directory has nowhere else to
// send the clients).
func (StaticDirectory) Unreachable(string) {}

// TransportConfig configures the coordinator's side of the data plane.
type TransportConfig struct {
	// Clients is the number of clients; ids are 0 … Clients-1.
	Clients int
	// Directory maps clients to workers.
	Directory Directory
	// TLS is the client side of mutual TLS: the coordinator's certificate
	// and the CA that signs the workers'. Nil requires Insecure.
	TLS *tls.Config
	// Insecure allows plain-text connections (the caller checks that the
	// addresses are loopback).
	Insecure bool
	// DialOptions are added to every connection (tests dial in-memory
	// listeners with them).
	DialOptions []grpc.DialOption
	// CallTimeout is the deadline of one task call (≤ 0:
	// DefaultCallTimeout). LookupTimeout bounds the wait for a worker
	// (≤ 0: 5 minutes; a SlotDirectory bounds its own waits).
	CallTimeout   time.Duration
	LookupTimeout time.Duration
	// ChunkSize and MaxFrame must match the workers' (≤ 0: defaults).
	ChunkSize int
	MaxFrame  int
	// MaxAttempts bounds how often a task is sent when workers are
	// unreachable (≤ 0: 10); Backoff is the first pause between attempts
	// (≤ 0: 100 ms), doubled up to 2 s.
	MaxAttempts int
	Backoff     time.Duration
	// Log, if set, receives one line per retried or rejected call.
	Log func(format string, args ...any)
}

// Transport is the gRPC federation.Transport: every Send becomes one Run
// call to the worker the Directory names; when that worker is unreachable
// the task goes to the next one the Directory names, so a worker's death
// costs a re-sent task, not a lost client.
type Transport struct {
	cfg    TransportConfig
	ctx    context.Context
	cancel context.CancelFunc
	stats  Stats

	replies chan federation.Reply

	mu       sync.Mutex
	cond     *sync.Cond
	pending  []federation.Reply
	inflight int
	closed   bool
	conns    map[string]*grpc.ClientConn
}

var (
	_ federation.Transport    = (*Transport)(nil)
	_ federation.EventCounter = (*Transport)(nil)
)

// NewTransport checks cfg and returns a transport; connections are made on
// first use.
func NewTransport(cfg TransportConfig) (*Transport, error) {
	switch {
	case cfg.Clients < 1:
		return nil, fmt.Errorf("rpc: transport for %d clients: want at least 1", cfg.Clients)
	case cfg.Directory == nil:
		return nil, errors.New("rpc: transport needs a Directory (which worker hosts which client)")
	case cfg.TLS == nil && !cfg.Insecure:
		return nil, errors.New("rpc: transport needs a TLS configuration (mutual TLS), or Insecure for plain text on loopback")
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.LookupTimeout <= 0 {
		cfg.LookupTimeout = 5 * time.Minute
	}
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = DefaultMaxFrame
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 10
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 100 * time.Millisecond
	}
	t := &Transport{cfg: cfg, replies: make(chan federation.Reply), conns: map[string]*grpc.ClientConn{}}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.cond = sync.NewCond(&t.mu)
	go t.deliver()
	return t, nil
}

// Stats returns the coordinator's counters of rejected results and
// retried tasks.
func (t *Transport) Stats() *Stats { return &t.stats }

// Events returns a copy of the counters (federation.EventCounter).
func (t *Transport) Events() map[string]int64 { return t.stats.Snapshot() }

func (t *Transport) logf(format string, args ...any) {
	if t.cfg.Log != nil {
		t.cfg.Log(format, args...)
	}
}

// Send implements federation.Transport.
func (t *Transport) Send(ctx context.Context, to int, frame []byte) error {
	if to < 0 || to >= t.cfg.Clients {
		return fmt.Errorf("rpc: no client %d (ids are 0 to %d)", to, t.cfg.Clients-1)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errors.New("rpc: transport is closed")
	}
	t.inflight++
	go t.run(ctx, to, frame)
	return nil
}

// Replies implements federation.Transport.
func (t *Transport) Replies() <-chan federation.Reply { return t.replies }

// Close implements federation.Transport: calls in flight are cancelled and
// answered with an error, and Replies is closed once every reply has been
// read.
func (t *Transport) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		t.closed = true
		t.cancel()
		t.cond.Broadcast()
	}
	return nil
}

func (t *Transport) finish(r federation.Reply) {
	t.mu.Lock()
	t.pending = append(t.pending, r)
	t.inflight--
	t.cond.Broadcast()
	t.mu.Unlock()
}

// deliver moves replies to the unbuffered channel so that calls never wait
// for a slow reader, and releases the connections at the end.
func (t *Transport) deliver() {
	for {
		t.mu.Lock()
		for len(t.pending) == 0 && !(t.closed && t.inflight == 0) {
			t.cond.Wait()
		}
		if len(t.pending) == 0 {
			conns := t.conns
			t.conns = nil
			t.mu.Unlock()
			for _, c := range conns {
				c.Close()
			}
			close(t.replies)
			return
		}
		r := t.pending[0]
		t.pending = t.pending[1:]
		t.mu.Unlock()
		t.replies <- r
	}
}

// run delivers one task, retrying on other workers while the one it was
// sent to is unreachable, and records exactly one reply.
func (t *Transport) run(ctx context.Context, to int, frame []byte) {
	r := federation.Reply{From: to}
	defer func() { t.finish(r) }()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(t.ctx, cancel)
	defer stop()

	task, err := federation.DecodeTask(frame)
	if err != nil {
		r.Err = fmt.Errorf("rpc: task frame for client %d: %w", to, err)
		return
	}
	if task.Client != to {
		r.Err = fmt.Errorf("rpc: task frame is for client %d, sent to client %d", task.Client, to)
		return
	}
	pause := t.cfg.Backoff
	slots, scheduled := t.cfg.Directory.(SlotDirectory)
	for attempt := 1; ; attempt++ {
		lctx, lcancel := ctx, context.CancelFunc(func() {})
		if !scheduled {
			lctx, lcancel = context.WithTimeout(ctx, t.cfg.LookupTimeout)
		}
		addr, err := t.cfg.Directory.Lookup(lctx, to)
		lcancel()
		if err != nil {
			switch {
			case t.ctx.Err() != nil:
				r.Err = fmt.Errorf("rpc: client %d round %d: transport closed before a worker was found", to, task.Round)
			case ctx.Err() != nil:
				r.Err = fmt.Errorf("rpc: client %d round %d: %w", to, task.Round, ctx.Err())
			case scheduled:
				r.Err = fmt.Errorf("rpc: client %d round %d: %w", to, task.Round, err)
			default:
				r.Err = fmt.Errorf("rpc: no worker for client %d round %d after %v: %w (start workers with `fedsim worker --join`)", to, task.Round, t.cfg.LookupTimeout, err)
			}
			return
		}
		out, err := t.call(ctx, addr, to, task.Round, frame)
		if scheduled {
			slots.Release(addr)
		}
		if err == nil {
			r.Frame = out
			return
		}
		if status.Code(err) != codes.Unavailable || ctx.Err() != nil || attempt >= t.cfg.MaxAttempts {
			if ctx.Err() == nil {
				t.stats.Add(ReasonCallFailed)
			}
			r.Err = fmt.Errorf("rpc: client %d round %d on worker %s (attempt %d): %w", to, task.Round, addr, attempt, err)
			t.logf("rpc: client %d round %d: %v", to, task.Round, r.Err)
			return
		}
		t.stats.Add(ReasonRetried)
		t.cfg.Directory.Unreachable(addr)
		t.logf("rpc: worker %s unreachable for client %d round %d (%v); re-sending the task (attempt %d of %d)", addr, to, task.Round, status.Convert(err).Message(), attempt+1, t.cfg.MaxAttempts)
		select {
		case <-time.After(pause):
		case <-ctx.Done():
		}
		pause = min(2*pause, 2*time.Second)
	}
}

func (t *Transport) conn(addr string) (*grpc.ClientConn, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conns == nil {
		return nil, status.Error(codes.Canceled, "rpc: transport is closed")
	}
	if c, ok := t.conns[addr]; ok {
		return c, nil
	}
	creds := insecure.NewCredentials()
	if t.cfg.TLS != nil {
		creds = credentials.NewTLS(t.cfg.TLS)
	}
	lim := msgLimit(t.cfg.ChunkSize)
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(lim), grpc.MaxCallSendMsgSize(lim)),
		// Find a dead peer within ~40 s even when the kernel does not say
		// so (a machine that vanished); a killed process is seen at once.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	}, t.cfg.DialOptions...)
	c, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "rpc: worker address %q: %v", addr, err)
	}
	t.conns[addr] = c
	return c, nil
}

// call runs one Run call and returns the checked result frame.
func (t *Transport) call(ctx context.Context, addr string, client, round int, frame []byte) ([]byte, error) {
	conn, err := t.conn(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.CallTimeout)
	defer cancel()
	stream, err := rpcpb.NewWorkerClient(conn).Run(ctx)
	if err != nil {
		return nil, err
	}
	err = splitFrame(frame, t.cfg.ChunkSize, client, round, func(m *chunkMsg) error {
		return stream.Send(&rpcpb.Chunk{Client: int32(m.client), Round: int32(m.round), Size: m.size, Data: m.data})
	})
	// On a broken stream Send returns io.EOF and Recv the real status.
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if err == nil {
		if err := stream.CloseSend(); err != nil {
			return nil, err
		}
	}
	a := assembler{maxFrame: t.cfg.MaxFrame}
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if a.started && len(a.buf) == a.size {
			return nil, t.rejectResult(addr, ReasonDuplicate, fmt.Sprintf("worker sent a second result for client %d round %d", client, round))
		}
		if reason, _, msg := a.add(c.GetClient(), c.GetRound(), c.GetSize(), c.GetData()); reason != "" {
			return nil, t.rejectResult(addr, reason, "result stream: "+msg)
		}
	}
	if reason, _, msg := a.complete(); reason != "" {
		return nil, t.rejectResult(addr, reason, "result stream: "+msg)
	}
	if a.client != client {
		return nil, t.rejectResult(addr, ReasonWrongClient, fmt.Sprintf("result stream names client %d, the task was for client %d", a.client, client))
	}
	if a.round != round {
		return nil, t.rejectResult(addr, ReasonWrongRound, fmt.Sprintf("result stream names round %d, the task was for round %d", a.round, round))
	}
	if reason, err := checkResult(a.buf, client, round); err != nil {
		return nil, t.rejectResult(addr, reason, err.Error())
	}
	return a.buf, nil
}

// rejectResult counts a result that breaks the protocol; it is answered as
// a failed task (not retried: the worker is reachable but wrong).
func (t *Transport) rejectResult(addr, reason, msg string) error {
	t.stats.Add(reason)
	return status.Errorf(codes.InvalidArgument, "rpc: rejected result from worker %s: %s [%s]", addr, msg, reason)
}

// Info asks the worker at addr for its capacity and counters (a small
// message, sent zstd-compressed).
func (t *Transport) Info(ctx context.Context, addr string) (*rpcpb.InfoResponse, error) {
	conn, err := t.conn(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, InfoTimeout)
	defer cancel()
	return rpcpb.NewWorkerClient(conn).Info(ctx, &rpcpb.InfoRequest{}, grpc.UseCompressor(CompressorName))
}
