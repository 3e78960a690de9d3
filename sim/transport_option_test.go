package sim

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/fedsim/fedsim/federation"
	"github.com/fedsim/fedsim/federation/inproc"
)

// countingTransport wraps a transport and counts its sends and closes.
type countingTransport struct {
	federation.Transport
	sends, closes *atomic.Int32
}

func (c countingTransport) Send(ctx context.Context, to int, f []byte) error {
	c.sends.Add(1)
	return c.Transport.Send(ctx, to, f)
}

func (c countingTransport) Close() error {
	c.closes.Add(1)
	return c.Transport.Close()
}

// eventTransport counts its sends as events, as the gRPC transport counts
// rejected results.
type eventTransport struct{ countingTransport }

func (e eventTransport) Events() map[string]int64 {
	return map[string]int64{"sent": int64(e.sends.Load()), "never": 0}
}

// A transport's event counters reach metrics.jsonl as each round's increase.
func TestTransportEventsInMetrics(t *testing.T) {
	dir := t.TempDir()
	var sends, closes atomic.Int32
	run(t, tiny(t, dir), Options{Transport: func(hs map[int]federation.Handler) (federation.Transport, error) {
		return eventTransport{countingTransport{inproc.New(hs, 1), &sends, &closes}}, nil
	}})
	b, err := os.ReadFile(filepath.Join(dir, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	var ms []Metrics
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var m Metrics
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	if len(ms) != 2 {
		t.Fatalf("%d rounds of metrics, want 2", len(ms))
	}
	var total int64
	for _, m := range ms {
		if _, ok := m.TransportEvents["never"]; ok || m.TransportEvents["sent"] != int64(m.ClientsSampled) {
			t.Errorf("round %d: transport events %v, want sent = %d clients sampled and no zero entries", m.Round, m.TransportEvents, m.ClientsSampled)
		}
		total += m.TransportEvents["sent"]
	}
	if total != int64(sends.Load()) {
		t.Errorf("events add up to %d, the transport sent %d", total, sends.Load())
	}
}

// Options.Transport replaces the in-process transport (the cluster's
// coordinator passes its gRPC one) without changing the results.
func TestOptionsTransportReplacesInproc(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	run(t, tiny(t, a), Options{})
	var sends, closes atomic.Int32
	var got map[int]federation.Handler
	run(t, tiny(t, b), Options{Transport: func(hs map[int]federation.Handler) (federation.Transport, error) {
		got = hs
		return countingTransport{inproc.New(hs, 1), &sends, &closes}, nil
	}})
	if len(got) != 4 || sends.Load() == 0 || closes.Load() != 1 {
		t.Fatalf("factory got %d handlers; %d sends, %d closes", len(got), sends.Load(), closes.Load())
	}
	if ma, mb := metricsWithoutWall(t, a), metricsWithoutWall(t, b); ma != mb {
		t.Fatalf("metrics differ with a custom transport:\n%s\n%s", ma, mb)
	}
}

// Prepare depends on the configuration alone: the workers of a cluster
// rebuild the coordinator's clients from it.
func TestPrepareIsDeterministic(t *testing.T) {
	cfg, err := tiny(t, t.TempDir()).Resolve()
	if err != nil {
		t.Fatal(err)
	}
	p1, err := Prepare(cfg)
	if err != nil {
		t.Skip(err)
	}
	p2, _ := Prepare(cfg)
	if !reflect.DeepEqual(p1.Partition, p2.Partition) || p1.Train.Len() != 2000 || p1.Test.Len() != 500 {
		t.Fatal("two preparations of one configuration differ")
	}
	c, err := p1.Client(3)
	if err != nil || c.ID != 3 || c.Data.Len() != len(p1.Partition.Clients[3]) {
		t.Fatalf("client 3: %v", err)
	}
	if _, err := p1.Client(4); err == nil {
		t.Fatal("client 4 of 4 built")
	}
}
