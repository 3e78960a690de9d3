// Package inproc is the in-process Transport: task frames go to client
// handlers run by a bounded pool of worker goroutines (one per compute
// worker by default, so concurrent clients share internal/parallel's pool
// without oversubscribing the cores), and their result frames come back on
// a channel. Frames are real encoded bytes, so byte counts are those of a
// networked run.
package inproc

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/fedsim/fedsim/federation"
	"github.com/fedsim/fedsim/internal/parallel"
)

type job struct {
	ctx   context.Context
	to    int
	frame []byte
}

// Transport is the in-process federation.Transport.
type Transport struct {
	handlers map[int]federation.Handler
	replies  chan federation.Reply

	mu      sync.Mutex
	cond    *sync.Cond
	queue   []job
	pending []federation.Reply
	running int
	closed  bool
	wg      sync.WaitGroup
}

var _ federation.Transport = (*Transport)(nil)

// New starts a transport serving handlers (keyed by client id) with
// workers goroutines (≤ 0: parallel.Workers()).
func New(handlers map[int]federation.Handler, workers int) *Transport {
	if workers <= 0 {
		workers = parallel.Workers()
	}
	t := &Transport{handlers: handlers, replies: make(chan federation.Reply)}
	t.cond = sync.NewCond(&t.mu)
	for range workers {
		t.wg.Add(1)
		go t.work()
	}
	t.wg.Add(1)
	go t.deliver()
	return t
}

// Send implements federation.Transport.
func (t *Transport) Send(ctx context.Context, to int, frame []byte) error {
	if _, ok := t.handlers[to]; !ok {
		return fmt.Errorf("inproc: no client %d", to)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errors.New("inproc: transport is closed")
	}
	t.queue = append(t.queue, job{ctx: ctx, to: to, frame: frame})
	t.cond.Broadcast()
	return nil
}

// Replies implements federation.Transport.
func (t *Transport) Replies() <-chan federation.Reply { return t.replies }

// Close implements federation.Transport: queued tasks not yet started are
// answered with an error, running ones finish, and Replies is closed once
// every reply has been read.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	for _, j := range t.queue {
		t.pending = append(t.pending, federation.Reply{From: j.to, Err: errors.New("inproc: transport closed before the task ran")})
	}
	t.queue = nil
	t.cond.Broadcast()
	t.mu.Unlock()
	return nil
}

func (t *Transport) work() {
	defer t.wg.Done()
	for {
		t.mu.Lock()
		for len(t.queue) == 0 && !t.closed {
			t.cond.Wait()
		}
		if len(t.queue) == 0 {
			t.mu.Unlock()
			return
		}
		j := t.queue[0]
		t.queue = t.queue[1:]
		t.running++
		t.mu.Unlock()

		r := federation.Reply{From: j.to}
		if err := j.ctx.Err(); err != nil {
			r.Err = err
		} else {
			r.Frame, r.Err = t.handlers[j.to].Handle(j.ctx, j.frame)
		}
		t.mu.Lock()
		t.pending = append(t.pending, r)
		t.running--
		t.cond.Broadcast()
		t.mu.Unlock()
	}
}

// deliver moves finished replies to the unbuffered channel, so workers
// never block on a slow reader.
func (t *Transport) deliver() {
	defer t.wg.Done()
	for {
		t.mu.Lock()
		for len(t.pending) == 0 && !(t.closed && len(t.queue) == 0 && t.idle()) {
			t.cond.Wait()
		}
		if len(t.pending) == 0 {
			t.mu.Unlock()
			close(t.replies)
			return
		}
		r := t.pending[0]
		t.pending = t.pending[1:]
		t.mu.Unlock()
		t.replies <- r
	}
}

// idle reports (with mu held) whether no worker is running a handler.
func (t *Transport) idle() bool { return t.running == 0 }
