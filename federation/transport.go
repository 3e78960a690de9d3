package federation

import (
	"context"
	"fmt"

	"github.com/fedsim/fedsim/client"
)

// Transport carries frames from the server to clients and their replies
// back, in the style of hashicorp/raft's Transport: a small interface the
// server's driver uses, with one implementation per medium (in-process,
// gRPC). Every Send of a task frame produces exactly one Reply on Replies:
// the client's result frame, or Err when the frame could not be delivered
// or answered.
type Transport interface {
	// Send hands a task frame to client to and returns without waiting for
	// the answer. It fails only if the transport is closed or to is not a
	// known client.
	Send(ctx context.Context, to int, frame []byte) error
	// Replies delivers the answers in arrival order (which is not
	// deterministic: the server's core orders them).
	Replies() <-chan Reply
	// Close stops the transport; sends after Close fail.
	Close() error
}

// EventCounter is implemented by transports that count the input they
// rejected and the calls they had to retry (the gRPC transport: results that
// fail the wire checks, unreachable workers). Events returns the counters
// since the transport was made, by reason; the simulator writes each round's
// increase to metrics.jsonl.
type EventCounter interface {
	Events() map[string]int64
}

// Reply is one client's answer to one task frame.
type Reply struct {
	From  int
	Frame []byte
	Err   error
}

// Handler is a client endpoint: it answers one task frame with one result
// frame.
type Handler interface {
	Handle(ctx context.Context, frame []byte) ([]byte, error)
}

// Endpoint adapts a client to the wire: it decodes the task, runs it, and
// encodes the result. A frame that does not decode is answered with a
// failed result, so the server learns what went wrong.
type Endpoint struct {
	Client *client.Client
	// Hook, if set, is called with each decoded task before it runs (the
	// simulator uses it to report progress and inject failures).
	Hook func(t *client.Task) error
}

// Handle implements Handler.
func (e *Endpoint) Handle(ctx context.Context, frame []byte) ([]byte, error) {
	t, err := DecodeTask(frame)
	var res *client.Result
	switch {
	case err != nil:
		res = &client.Result{Client: e.Client.ID, Status: client.StatusFailed, Error: fmt.Sprintf("client %d: bad task frame: %v", e.Client.ID, err)}
	case e.Hook != nil:
		if herr := e.Hook(t); herr != nil {
			res = client.Failed(t, herr)
			break
		}
		fallthrough
	default:
		res = e.Client.Handle(ctx, t)
	}
	return EncodeResult(res)
}
