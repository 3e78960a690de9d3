package cluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/fedsim/fedsim/federation/rpc"
)

// Directory is the coordinator's view of which worker hosts which client:
// the ready workers memberlist reports, minus those a call found
// unreachable (for DownFor, or until memberlist reports them again), fed
// to Assign. It implements rpc.Directory.
type Directory struct {
	clients int
	downFor time.Duration
	now     func() time.Time

	mu      sync.Mutex
	members map[string]Member
	down    map[string]time.Time // name → until
	assign  []string             // cached Assign of the live members
	live    int
	changed chan struct{} // closed and replaced on every change
}

var _ rpc.Directory = (*Directory)(nil)

// NewDirectory returns an empty directory for clients clients; a worker
// found unreachable is left out for downFor (≤ 0: 10 s) unless memberlist
// reports it alive again sooner.
func NewDirectory(clients int, downFor time.Duration) *Directory {
	if downFor <= 0 {
		downFor = 10 * time.Second
	}
	return &Directory{clients: clients, downFor: downFor, now: time.Now, members: map[string]Member{},
		down: map[string]time.Time{}, changed: make(chan struct{})}
}

// Put adds or updates a ready worker (memberlist join or update) and
// clears any unreachable mark: the node is alive as far as gossip knows.
func (d *Directory) Put(m Member) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.members[m.Name] = m
	delete(d.down, m.Name)
	d.touch()
}

// Remove drops a worker (memberlist leave or failure, or not ready).
func (d *Directory) Remove(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.members[name]; ok {
		delete(d.members, name)
		delete(d.down, name)
		d.touch()
	}
}

// touch (with mu held) invalidates the assignment and wakes waiters.
func (d *Directory) touch() {
	d.assign = nil
	close(d.changed)
	d.changed = make(chan struct{})
}

// Members returns the known workers (ready, reachable or not).
func (d *Directory) Members() []Member {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Member, 0, len(d.members))
	for _, m := range d.members {
		out = append(out, m)
	}
	return out
}

// Unreachable implements rpc.Directory.
func (d *Directory) Unreachable(addr string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, m := range d.members {
		if m.Addr == addr {
			d.down[name] = d.now().Add(d.downFor)
			d.touch()
		}
	}
}

// Lookup implements rpc.Directory: it waits while no worker is live.
func (d *Directory) Lookup(ctx context.Context, id int) (string, error) {
	if id < 0 || id >= d.clients {
		return "", fmt.Errorf("cluster: no client %d (ids are 0 to %d)", id, d.clients-1)
	}
	for {
		d.mu.Lock()
		addr, wake, ch := d.lookupLocked(id)
		d.mu.Unlock()
		if addr != "" {
			return addr, nil
		}
		var timer <-chan time.Time
		var t *time.Timer
		if wake > 0 {
			t = time.NewTimer(wake)
			timer = t.C
		}
		select {
		case <-ch:
		case <-timer:
		case <-ctx.Done():
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return "", fmt.Errorf("cluster: waiting for a worker for client %d: %w", id, ctx.Err())
		}
	}
}

// lookupLocked returns client id's worker address, or "" with how long
// until an unreachable mark expires (0: none) and the change channel.
func (d *Directory) lookupLocked(id int) (string, time.Duration, chan struct{}) {
	now := d.now()
	var wake time.Duration
	for name, until := range d.down {
		if !now.Before(until) {
			delete(d.down, name)
			d.assign = nil
		} else if w := until.Sub(now); wake == 0 || w < wake {
			wake = w
		}
	}
	if d.assign == nil {
		live := make([]Member, 0, len(d.members))
		for name, m := range d.members {
			if _, dn := d.down[name]; !dn {
				live = append(live, m)
			}
		}
		d.assign, d.live = Assign(d.clients, live), len(live)
	}
	name := d.assign[id]
	if name == "" {
		return "", wake, d.changed
	}
	return d.members[name].Addr, 0, d.changed
}
