package inproc

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedsim/fedsim/federation"
)

type echo struct {
	id      int
	running *atomic.Int32
	peak    *atomic.Int32
	mu      *sync.Mutex
}

func (e echo) Handle(_ context.Context, frame []byte) ([]byte, error) {
	n := e.running.Add(1)
	e.mu.Lock()
	if n > e.peak.Load() {
		e.peak.Store(n)
	}
	e.mu.Unlock()
	time.Sleep(2 * time.Millisecond)
	e.running.Add(-1)
	if string(frame) == "fail" {
		return nil, fmt.Errorf("client %d cannot", e.id)
	}
	return append([]byte(fmt.Sprintf("%d:", e.id)), frame...), nil
}

func TestInproc(t *testing.T) {
	var running, peak atomic.Int32
	var mu sync.Mutex
	hs := map[int]federation.Handler{}
	for id := range 8 {
		hs[id] = echo{id: id, running: &running, peak: &peak, mu: &mu}
	}
	tr := New(hs, 3)
	ctx := context.Background()
	// More tasks than workers, sent before any reply is read.
	for round := range 4 {
		for id := range 8 {
			msg := fmt.Sprintf("r%d", round)
			if id == 5 && round == 2 {
				msg = "fail"
			}
			if err := tr.Send(ctx, id, []byte(msg)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tr.Send(ctx, 99, nil); err == nil {
		t.Fatal("send to an unknown client accepted")
	}
	got := map[string]bool{}
	fails := 0
	for range 32 {
		r := <-tr.Replies()
		if r.Err != nil {
			fails++
			continue
		}
		got[string(r.Frame)] = true
	}
	if fails != 1 || len(got) != 31 || !got["3:r1"] {
		t.Fatalf("%d failures, %d distinct replies", fails, len(got))
	}
	if p := peak.Load(); p > 3 || p < 2 {
		t.Fatalf("peak concurrency %d, want 2..3 with 3 workers", p)
	}
	tr.Close()
	if err := tr.Send(ctx, 1, nil); err == nil {
		t.Fatal("send after close accepted")
	}
	if _, ok := <-tr.Replies(); ok {
		t.Fatal("replies channel not closed after Close")
	}
}

func TestCanceledTaskAnswersWithError(t *testing.T) {
	var running, peak atomic.Int32
	var mu sync.Mutex
	tr := New(map[int]federation.Handler{0: echo{running: &running, peak: &peak, mu: &mu}}, 1)
	defer tr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := tr.Send(ctx, 0, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if r := <-tr.Replies(); r.Err == nil || r.From != 0 {
		t.Fatalf("reply %+v, want a cancellation error", r)
	}
}
