package rpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/fedsim/fedsim/federation"
	"github.com/fedsim/fedsim/federation/rpc/rpcpb"
)

// WorkerConfig configures the Worker service.
type WorkerConfig struct {
	// Name identifies the worker in Info and logs.
	Name string
	// Slots is the number of tasks run at once (≥ 1); more wait.
	Slots int
	// Host returns the handler of client id, or an error if this worker
	// cannot host it (the caller gets NOT_FOUND). It may build the client
	// on first use; it is called concurrently.
	Host func(id int) (federation.Handler, error)
	// ChunkSize (≤ 0: DefaultChunkSize) and MaxFrame (≤ 0:
	// DefaultMaxFrame) bound the stream; the Transport's must match.
	ChunkSize int
	MaxFrame  int
	// OnTask, if set, is called when a task starts and ends (progress
	// displays; tests use it to kill a worker mid-task).
	OnTask func(client, round int, done bool)
	// Log, if set, receives one line per rejected call.
	Log func(format string, args ...any)
}

// Worker is the Worker gRPC service: it hosts client handlers and runs the
// tasks the coordinator sends them, at most Slots at once.
type Worker struct {
	rpcpb.UnimplementedWorkerServer
	cfg     WorkerConfig
	slots   chan struct{}
	running atomic.Int32
	served  atomic.Int64
	stats   Stats

	mu     sync.Mutex
	closed bool
}

var _ rpcpb.WorkerServer = (*Worker)(nil)

// NewWorker checks cfg and returns the service.
func NewWorker(cfg WorkerConfig) (*Worker, error) {
	if cfg.Slots < 1 {
		return nil, fmt.Errorf("rpc: worker slots %d: want at least 1 (tasks run at once)", cfg.Slots)
	}
	if cfg.Host == nil {
		return nil, errors.New("rpc: worker needs a Host function that returns a client's handler")
	}
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = DefaultMaxFrame
	}
	return &Worker{cfg: cfg, slots: make(chan struct{}, cfg.Slots)}, nil
}

// Register adds the service to s.
func (w *Worker) Register(s *grpc.Server) { rpcpb.RegisterWorkerServer(s, w) }

// Stats returns the worker's counters of rejected calls.
func (w *Worker) Stats() *Stats { return &w.stats }

// Drain makes the worker refuse new tasks with UNAVAILABLE (so the
// coordinator re-sends them elsewhere) before it stops.
func (w *Worker) Drain() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

func (w *Worker) draining() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closed
}

// Info implements rpcpb.WorkerServer.
func (w *Worker) Info(context.Context, *rpcpb.InfoRequest) (*rpcpb.InfoResponse, error) {
	return &rpcpb.InfoResponse{Name: w.cfg.Name, Slots: int32(w.cfg.Slots), Running: w.running.Load(),
		Served: w.served.Load(), Rejected: w.stats.Snapshot()}, nil
}

// Run implements rpcpb.WorkerServer: it receives a task frame, checks it,
// runs the client's handler in a free slot and streams the result back.
func (w *Worker) Run(stream rpcpb.Worker_RunServer) error {
	ctx := stream.Context()
	if w.draining() {
		return w.reject(ReasonNotReady, codes.Unavailable, "worker %s is shutting down; send the task to another worker", w.cfg.Name)
	}
	a := assembler{maxFrame: w.cfg.MaxFrame}
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// The caller went away or the message broke a limit; grpc
			// already chose the status.
			if s, ok := status.FromError(err); ok && s.Code() == codes.ResourceExhausted {
				w.stats.Add(ReasonOversized)
			}
			return err
		}
		if reason, code, msg := a.add(c.GetClient(), c.GetRound(), c.GetSize(), c.GetData()); reason != "" {
			return w.reject(reason, code, "task stream: %s", msg)
		}
	}
	if reason, code, msg := a.complete(); reason != "" {
		return w.reject(reason, code, "task stream: %s", msg)
	}
	t, err := federation.DecodeTask(a.buf)
	if err != nil {
		return w.reject(ReasonBadFrame, codes.InvalidArgument, "task frame for client %d: %v", a.client, err)
	}
	if t.Client != a.client {
		return w.reject(ReasonWrongClient, codes.InvalidArgument, "task frame is for client %d, the call names client %d", t.Client, a.client)
	}
	if t.Round != a.round {
		return w.reject(ReasonWrongRound, codes.InvalidArgument, "task frame is for round %d, the call names round %d", t.Round, a.round)
	}
	h, err := w.cfg.Host(a.client)
	if err != nil {
		return w.reject(ReasonUnknownClient, codes.NotFound, "worker %s cannot host client %d: %v", w.cfg.Name, a.client, err)
	}
	select {
	case w.slots <- struct{}{}:
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
	w.running.Add(1)
	if w.cfg.OnTask != nil {
		w.cfg.OnTask(a.client, a.round, false)
	}
	res, err := h.Handle(ctx, a.buf)
	w.running.Add(-1)
	<-w.slots
	if w.cfg.OnTask != nil {
		w.cfg.OnTask(a.client, a.round, true)
	}
	if err != nil {
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		return status.Errorf(codes.Internal, "rpc: client %d round %d: %v", a.client, a.round, err)
	}
	if len(res) > w.cfg.MaxFrame {
		return w.reject(ReasonOversized, codes.ResourceExhausted, "result frame of %d bytes exceeds the %d-byte limit", len(res), w.cfg.MaxFrame)
	}
	w.served.Add(1)
	return splitFrame(res, w.cfg.ChunkSize, a.client, a.round, func(m *chunkMsg) error {
		return stream.Send(&rpcpb.Chunk{Client: int32(m.client), Round: int32(m.round), Size: m.size, Data: m.data})
	})
}

// reject counts, logs and returns a rejection.
func (w *Worker) reject(reason string, code codes.Code, format string, args ...any) error {
	err := reject(&w.stats, reason, code, format, args...)
	if w.cfg.Log != nil {
		w.cfg.Log("%v", err)
	}
	return err
}

// Server is a gRPC server hosting one Worker service (so that callers
// need not import grpc).
type Server struct{ gs *grpc.Server }

// NewServer returns a server for w with mutual TLS (tlsCfg: the server
// side from TLSConfigs) or, with nil, plain text.
func NewServer(w *Worker, tlsCfg *tls.Config) *Server {
	opts := ServerOptions(w.cfg.ChunkSize)
	if tlsCfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	gs := grpc.NewServer(opts...)
	w.Register(gs)
	return &Server{gs: gs}
}

// Serve serves on l until Stop.
func (s *Server) Serve(l net.Listener) error { return s.gs.Serve(l) }

// Stop lets running calls finish for up to grace, then cuts them (their
// callers see UNAVAILABLE and re-send the tasks elsewhere).
func (s *Server) Stop(grace time.Duration) {
	done := make(chan struct{})
	go func() { s.gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		s.gs.Stop()
	}
}
