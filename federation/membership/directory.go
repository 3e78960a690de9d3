package membership

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/fedsim/fedsim/federation/rpc"
)

// Directory is the coordinator's view of the workers: the ready ones
// memberlist reports, minus those a call found unreachable (for DownFor, or
// until memberlist reports them again). It places every task on a live
// worker with a free slot (rpc.SlotDirectory), so no worker runs more tasks
// than its slots while another sits idle: a client's task goes to its
// Assign owner when that worker has a free slot, else to the free worker
// next in the client's rendezvous order, and waits while every slot is
// taken or while LimitInFlight's cap of tasks is reached. Any worker can run any client's task (workers rebuild every client
// from the run's configuration, and the only state a client keeps between
// tasks, its privacy ledger, travels with the task), so this changes
// where a task runs, never its result.
type Directory struct {
	clients int
	downFor time.Duration
	// noWorkerFor bounds a Lookup's wait while no worker is live at all
	// (waits for a free slot are not bounded).
	noWorkerFor time.Duration
	now         func() time.Time
	// maxInFlight caps the tasks in flight across all workers (0: the sum
	// of their slots). A one-machine cluster sets it to the cores: more
	// tasks at once than cores only makes them fight for the CPU.
	maxInFlight int

	mu      sync.Mutex
	members map[string]Member
	down    map[string]time.Time // name → until
	busy    map[string]int       // gRPC address → tasks in flight
	live    []Member             // cached live members, sorted by name (nil: stale)
	changed chan struct{}        // closed and replaced on every change
}

var _ rpc.SlotDirectory = (*Directory)(nil)

// NewDirectory returns an empty directory for clients clients; a worker
// found unreachable is left out for downFor (≤ 0: 10 s) unless memberlist
// reports it alive again sooner.
func NewDirectory(clients int, downFor time.Duration) *Directory {
	if downFor <= 0 {
		downFor = 10 * time.Second
	}
	return &Directory{clients: clients, downFor: downFor, noWorkerFor: 5 * time.Minute, now: time.Now, members: map[string]Member{},
		down: map[string]time.Time{}, busy: map[string]int{}, changed: make(chan struct{})}
}

// LimitInFlight caps the tasks in flight across all workers at n (≤ 0:
// no cap beyond the workers' slots). Lookups wait while the cap is reached.
func (d *Directory) LimitInFlight(n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.maxInFlight = max(n, 0)
	d.wake()
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
	d.live = nil
	d.wake()
}

// wake (with mu held) wakes the Lookups waiting for a change.
func (d *Directory) wake() {
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

// Release implements rpc.SlotDirectory: a call Lookup placed on addr has
// ended, and its slot is free. Slots are counted by address, not name, so
// that the calls of a worker that died release its old slots, not those of
// its restarted successor.
func (d *Directory) Release(addr string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.busy[addr] > 0 {
		d.busy[addr]--
		if d.busy[addr] == 0 {
			delete(d.busy, addr)
		}
		d.wake()
	}
}

// InFlight returns the tasks placed and not yet released, by gRPC address.
func (d *Directory) InFlight() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.busy)
}

// Lookup implements rpc.Directory: it returns the worker that runs client
// id's task and takes one of its slots (Release gives it back). It waits
// while every live worker's slots are taken or the in-flight cap is
// reached (LimitInFlight), and for at most five minutes
// while no worker is live.
func (d *Directory) Lookup(ctx context.Context, id int) (string, error) {
	if id < 0 || id >= d.clients {
		return "", fmt.Errorf("cluster: no client %d (ids are 0 to %d)", id, d.clients-1)
	}
	var alone time.Time // since when no worker has been live
	for {
		d.mu.Lock()
		addr, wake, ch, live := d.placeLocked(id)
		d.mu.Unlock()
		if addr != "" {
			return addr, nil
		}
		if live > 0 {
			alone = time.Time{}
		} else {
			if alone.IsZero() {
				alone = d.now()
			}
			left := d.noWorkerFor - d.now().Sub(alone)
			if left <= 0 {
				return "", fmt.Errorf("cluster: no worker for client %d within %v (start workers with `fedsim worker --join`)", id, d.noWorkerFor)
			}
			if wake == 0 || left < wake {
				wake = left
			}
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

// placeLocked takes a slot for client id's task and returns its worker's
// address, or "" with how long until an unreachable mark expires (0:
// none), the change channel and the number of live workers.
func (d *Directory) placeLocked(id int) (string, time.Duration, chan struct{}, int) {
	now := d.now()
	var wake time.Duration
	for name, until := range d.down {
		if !now.Before(until) {
			delete(d.down, name)
			d.live = nil
		} else if w := until.Sub(now); wake == 0 || w < wake {
			wake = w
		}
	}
	if d.live == nil {
		for name, m := range d.members {
			if _, dn := d.down[name]; !dn && m.Slots >= 1 {
				d.live = append(d.live, m)
			}
		}
		// By name, as Assign orders ties.
		slices.SortFunc(d.live, func(a, b Member) int { return cmp.Compare(a.Name, b.Name) })
	}
	if d.maxInFlight > 0 {
		// Only live workers' tasks count: calls still held by a worker that
		// vanished or hangs must not stop the others.
		n := 0
		for _, m := range d.live {
			n += d.busy[m.Addr]
		}
		if n >= d.maxInFlight {
			return "", wake, d.changed, len(d.live)
		}
	}
	// The free worker with the highest rendezvous score: the client's
	// Assign owner when that one is free.
	best, bestScore := "", math.Inf(-1)
	for _, m := range d.live {
		if s := score(m, id); d.busy[m.Addr] < m.Slots && s > bestScore {
			best, bestScore = m.Name, s
		}
	}
	if best == "" {
		return "", wake, d.changed, len(d.live)
	}
	addr := d.members[best].Addr
	d.busy[addr]++
	return addr, 0, d.changed, len(d.live)
}
