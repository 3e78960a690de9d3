package membership

import (
	"context"
	"errors"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"
)

// The directory keeps every worker's tasks within its slots, sends a task
// to a free worker when the client's owner is busy, and makes a task wait
// (not fail) while every slot is taken.
func TestDirectorySchedulesBySlots(t *testing.T) {
	d := NewDirectory(50, 0)
	d.Put(Member{Name: "a", Addr: "addr-a", Slots: 1})
	d.Put(Member{Name: "b", Addr: "addr-b", Slots: 2})
	ctx := context.Background()
	owner := Assign(50, d.Members())
	// Three tasks fill the three slots, whatever their owners.
	var got []string
	for id := range 3 {
		addr, err := d.Lookup(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, addr)
	}
	if fl := d.InFlight(); !maps.Equal(fl, map[string]int{"addr-a": 1, "addr-b": 2}) {
		t.Fatalf("in flight %v after 3 lookups (%v), want a 1 and b 2", fl, got)
	}
	if o := owner[0]; got[0] != "addr-"+o {
		t.Fatalf("client 0 went to %s, its free owner is %s", got[0], o)
	}
	// A fourth waits until a slot is released, then takes that slot.
	done := make(chan string)
	go func() {
		addr, err := d.Lookup(ctx, 3)
		if err != nil {
			addr = err.Error()
		}
		done <- addr
	}()
	select {
	case a := <-done:
		t.Fatalf("a lookup with every slot taken returned %q", a)
	case <-time.After(50 * time.Millisecond):
	}
	d.Release("addr-a")
	select {
	case a := <-done:
		if a != "addr-a" {
			t.Fatalf("the waiting task went to %q, want the freed addr-a", a)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a released slot did not wake the waiting lookup")
	}
	// Releasing an address nobody holds changes nothing.
	d.Release("addr-x")
	if fl := d.InFlight(); !maps.Equal(fl, map[string]int{"addr-a": 1, "addr-b": 2}) {
		t.Fatalf("in flight %v", fl)
	}
}

// Many concurrent tasks never exceed a worker's slots and all complete.
func TestDirectoryConcurrentLookups(t *testing.T) {
	d := NewDirectory(100, 0)
	slots := map[string]int{"w1": 1, "w2": 2, "w3": 3}
	for name, n := range slots {
		d.Put(Member{Name: name, Addr: name, Slots: n})
	}
	var mu sync.Mutex
	inFlight, ran := map[string]int{}, map[string]int{}
	var wg sync.WaitGroup
	for id := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addr, err := d.Lookup(context.Background(), id)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			inFlight[addr]++
			ran[addr]++
			if inFlight[addr] > slots[addr] {
				t.Errorf("%s runs %d tasks, has %d slots", addr, inFlight[addr], slots[addr])
			}
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			inFlight[addr]--
			mu.Unlock()
			d.Release(addr)
		}()
	}
	wg.Wait()
	if len(d.InFlight()) != 0 || ran["w1"]+ran["w2"]+ran["w3"] != 100 {
		t.Fatalf("after all tasks: in flight %v, ran %v", d.InFlight(), ran)
	}
}

// LimitInFlight caps the tasks in flight across all workers below the sum
// of their slots: concurrent tasks never exceed the cap, and all complete.
func TestDirectoryLimitInFlight(t *testing.T) {
	d := NewDirectory(40, 0)
	for _, name := range []string{"w1", "w2", "w3", "w4"} {
		d.Put(Member{Name: name, Addr: name, Slots: 2})
	}
	d.LimitInFlight(3)
	var mu sync.Mutex
	total, peak, ran := 0, 0, 0
	var wg sync.WaitGroup
	for id := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addr, err := d.Lookup(context.Background(), id)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			total++
			ran++
			peak = max(peak, total)
			mu.Unlock()
			time.Sleep(10 * time.Millisecond)
			mu.Lock()
			total--
			mu.Unlock()
			d.Release(addr)
		}()
	}
	wg.Wait()
	if peak != 3 || ran != 40 {
		t.Fatalf("cap 3 over 8 slots: peak %d tasks in flight, %d of 40 ran; want peak 3 and all 40", peak, ran)
	}
	// Lifting the cap wakes a waiting lookup.
	d.LimitInFlight(1)
	a, err := d.Lookup(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		addr string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		addr, err := d.Lookup(context.Background(), 1)
		done <- result{addr, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("a lookup past the cap returned (%q, %v)", r.addr, r.err)
	case <-time.After(50 * time.Millisecond):
	}
	d.LimitInFlight(0)
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatal(r.err)
		}
		d.Release(r.addr)
	case <-time.After(5 * time.Second):
		t.Fatal("lifting the cap did not wake the waiting lookup")
	}
	d.Release(a)
	var b string
	// A task held by a worker that left does not count against the cap.
	d.LimitInFlight(1)
	b, err = d.Lookup(context.Background(), 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"w1", "w2", "w3", "w4"} {
		if name == b {
			d.Remove(name)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := d.Lookup(ctx, 3); err != nil || c == b {
		t.Fatalf("with the cap's one task on a departed worker: lookup gave %q, %v; want another worker at once", c, err)
	}
}

// With no live worker a lookup fails after the directory's limit, naming
// the fix; a cancelled context ends it at once.
func TestDirectoryNoWorker(t *testing.T) {
	d := NewDirectory(4, 0)
	d.noWorkerFor = 20 * time.Millisecond
	_, err := d.Lookup(context.Background(), 1)
	if err == nil || !strings.Contains(err.Error(), "fedsim worker --join") {
		t.Fatalf("no worker: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d.noWorkerFor = time.Hour
	if _, err := d.Lookup(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled lookup: %v", err)
	}
	if _, err := d.Lookup(context.Background(), 4); err == nil {
		t.Fatal("client 4 of 4 looked up")
	}
}
