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
