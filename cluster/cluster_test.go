package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedsim/fedsim/client"
	"github.com/fedsim/fedsim/federation"
	"github.com/fedsim/fedsim/federation/membership"
	"github.com/fedsim/fedsim/federation/rpc"
	"github.com/fedsim/fedsim/sim"
)

// tiny is a fast experiment on a small MNIST slice.
func tiny(out string) sim.Config {
	c := sim.DefaultConfig()
	c.TrainLimit, c.TestLimit = 1200, 300
	c.Clients, c.Rounds, c.Fraction = 6, 2, 0.5
	c.Model, c.IPC, c.DistillIters, c.BatchReal = "convnet-w4", 1, 2, 16
	c.ServerSteps, c.ServerBatch = 3, 32
	c.Strategy = "feddm"
	c.Out = out
	return c
}

func skipWithoutData(t *testing.T, err error) {
	if err != nil && strings.Contains(err.Error(), "go mod download") {
		t.Skip(err)
	}
}

func metricsWithoutWall(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, sim.MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	return sim.BlankTimings(string(b))
}

type testCluster struct {
	coord   *Coordinator
	cancels []context.CancelFunc
	wg      sync.WaitGroup
	errs    chan error
}

func (tc *testCluster) stop() {
	for _, c := range tc.cancels {
		c()
	}
	tc.wg.Wait()
	tc.coord.Close()
}

// startCluster starts a coordinator and n in-process workers on loopback
// with a gossip key and mutual TLS.
func startCluster(t *testing.T, cfg sim.Config, n int, onTask func(worker int, cancel context.CancelFunc, client, round int, done bool)) *testCluster {
	t.Helper()
	rc, err := cfg.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	key, srvTLS, cliTLS := testCreds(t)
	coord, err := StartCoordinator(CoordinatorConfig{Bind: "127.0.0.1:0", Key: key, TLS: cliTLS, Run: rc, Log: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	tc := &testCluster{coord: coord, errs: make(chan error, n)}
	for i := range n {
		ctx, cancel := context.WithCancel(context.Background())
		tc.cancels = append(tc.cancels, cancel)
		wc := WorkerConfig{Name: fmt.Sprintf("w%d", i), Join: coord.Addr(), Slots: 2, Key: key, TLS: srvTLS, Log: t.Logf}
		if onTask != nil {
			wc.OnTask = func(c, r int, done bool) { onTask(i, cancel, c, r, done) }
		}
		tc.wg.Add(1)
		go func() {
			defer tc.wg.Done()
			if err := RunWorker(ctx, wc); err != nil {
				tc.errs <- err
			}
		}()
	}
	wctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := coord.WaitWorkers(wctx, n); err != nil {
		select {
		case werr := <-tc.errs:
			skipWithoutData(t, werr)
			t.Fatal(werr)
		default:
		}
		t.Fatal(err)
	}
	return tc
}

var credsOnce = sync.OnceValues(func() ([3]any, error) {
	ca, err := rpc.NewDevCA("test", time.Hour)
	if err != nil {
		return [3]any{}, err
	}
	node, err := rpc.IssueNode(ca, "node", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		return [3]any{}, err
	}
	s, c, err := rpc.TLSConfigs(ca.Cert, node)
	return [3]any{[]byte("0123456789abcdef0123456789abcdef"), s, c}, err
})

func testCreds(t *testing.T) ([]byte, *tls.Config, *tls.Config) {
	v, err := credsOnce()
	if err != nil {
		t.Fatal(err)
	}
	return v[0].([]byte), v[1].(*tls.Config), v[2].(*tls.Config)
}

// The result of a cluster run equals the in-process run's for the same
// seed: same metrics apart from wall time.
func TestClusterRunEqualsInProcess(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	if _, err := sim.Run(context.Background(), tiny(a), sim.Options{}); err != nil {
		skipWithoutData(t, err)
		t.Fatal(err)
	}
	tc := startCluster(t, tiny(b), 2, nil)
	defer tc.stop()
	if _, err := sim.Run(context.Background(), tiny(b), sim.Options{Transport: tc.coord.Transport}); err != nil {
		t.Fatal(err)
	}
	if ma, mb := metricsWithoutWall(t, a), metricsWithoutWall(t, b); ma != mb {
		t.Fatalf("cluster run differs from the in-process run:\n%s\n%s", ma, mb)
	}
}

// A worker that stops in the middle of a task loses nothing: the task is
// re-sent to the other worker and every client answers.
func TestWorkerLossMidRoundIsReassigned(t *testing.T) {
	cfg := tiny(t.TempDir())
	var once sync.Once
	var killed sync.WaitGroup
	killed.Add(1)
	tc := startCluster(t, cfg, 2, func(worker int, cancel context.CancelFunc, c, r int, done bool) {
		if worker == 0 && !done {
			// Stop the worker and hold the task past the worker's grace
			// period, so the call is cut as by a crash.
			once.Do(func() { cancel(); killed.Done(); time.Sleep(3 * time.Second) })
		}
	})
	defer tc.stop()
	tr, err := tc.coord.Transport(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	rc, _ := cfg.Resolve()
	for id := range rc.Clients {
		task := &client.Task{Round: 1, Client: id, Kind: client.KindDistill, Seed: uint64(id), Model: rc.Model, Dataset: rc.Dataset,
			Method: "dm", IPC: 1, Iterations: 2, BatchReal: 8, LRImg: 1, Nets: client.NetsRandom}
		f, err := federation.EncodeTask(task)
		if err != nil {
			t.Fatal(err)
		}
		if err := tr.Send(context.Background(), id, f); err != nil {
			t.Fatal(err)
		}
	}
	for range rc.Clients {
		select {
		case r := <-tr.Replies():
			if r.Err != nil {
				t.Fatalf("client %d: %v", r.From, r.Err)
			}
			res, err := federation.DecodeResult(r.Frame)
			if err != nil || res.Status != client.StatusOK {
				t.Fatalf("client %d: %v %+v", r.From, err, res)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("a task was lost")
		}
	}
	killed.Wait()
	if got := tc.coord.Stats()[rpc.ReasonRetried]; got == 0 {
		t.Fatal("no task was re-sent: the worker was not stopped mid-task")
	}
}

// Without the gossip key (or with another key) a process cannot join, so
// it never receives the run's configuration, tasks or the model.
func TestJoinNeedsTheGossipKey(t *testing.T) {
	rc, err := tiny(t.TempDir()).Resolve()
	if err != nil {
		t.Fatal(err)
	}
	key, _, cliTLS := testCreds(t)
	coord, err := StartCoordinator(CoordinatorConfig{Bind: "127.0.0.1:0", Key: key, TLS: cliTLS, Run: rc})
	if err != nil {
		t.Fatal(err)
	}
	defer coord.Close()
	for name, k := range map[string][]byte{"no key": nil, "wrong key": []byte("fedcba9876543210fedcba9876543210")} {
		var got []byte
		n, err := membership.StartNode(membership.NodeConfig{Name: "intruder-" + strings.ReplaceAll(name, " ", "-"), Bind: "127.0.0.1:0", Key: k, Insecure: k == nil,
			OnState: func(b []byte) { got = b }})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Join(coord.Addr()); err == nil {
			t.Errorf("%s: joined the cluster", name)
		}
		if got != nil {
			t.Errorf("%s: received the run state", name)
		}
		n.Close()
	}
	if len(coord.node.Members()) != 0 {
		t.Fatalf("coordinator sees members %v", coord.node.Members())
	}
}

func TestInsecureOnlyOnLoopback(t *testing.T) {
	if err := membership.CheckInsecure(true, "127.0.0.1:7946", "[::1]:1", "localhost:80"); err != nil {
		t.Fatal(err)
	}
	err := membership.CheckInsecure(true, "127.0.0.1:1", "10.1.2.3:7946")
	if err == nil || !strings.Contains(err.Error(), "10.1.2.3") || !strings.Contains(err.Error(), "fedsim certs") {
		t.Fatalf("error %v: want a refusal naming the address and the fix", err)
	}
	if _, err := membership.StartNode(membership.NodeConfig{Name: "x", Bind: "0.0.0.0:0", Insecure: true}); err == nil {
		t.Fatal("insecure node bound to every interface")
	}
	if _, err := membership.StartNode(membership.NodeConfig{Name: "x", Bind: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "no gossip key") {
		t.Fatalf("node without key or --insecure: %v", err)
	}
}
