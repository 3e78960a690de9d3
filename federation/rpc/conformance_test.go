package rpc

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/test/bufconn"

	"github.com/fedsim/fedsim/client"
	"github.com/fedsim/fedsim/federation"
	"github.com/fedsim/fedsim/federation/inproc"
	"github.com/fedsim/fedsim/tensor"
)

// The Transport contract (federation.Transport), checked the same way
// against every implementation: in-process, gRPC over an in-memory
// listener, and gRPC with mutual TLS over loopback TCP.

// protoHandler answers tasks like a client, driven by the task's Method:
// "echo" returns the task's weights, "fail" returns an error, "pause"
// takes 300 ms, "slow" waits for the context.
type protoHandler struct{ id int }

func (h protoHandler) Handle(ctx context.Context, frame []byte) ([]byte, error) {
	t, err := federation.DecodeTask(frame)
	if err != nil {
		return nil, err
	}
	switch t.Method {
	case "fail":
		return nil, fmt.Errorf("client %d cannot", h.id)
	case "pause":
		time.Sleep(300 * time.Millisecond)
	case "slow":
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Second):
		}
	}
	return federation.EncodeResult(&client.Result{Round: t.Round, Client: h.id, Status: client.StatusOK, NumSamples: 1,
		Loss: float64(1000*t.Round + h.id), Weights: t.Global})
}

func taskFrame(t testing.TB, round, id int, method string, weights int) []byte {
	t.Helper()
	task := &client.Task{Round: round, Client: id, Kind: client.KindTrain, Method: method, Model: "m", Dataset: "d"}
	if weights > 0 {
		rng := tensor.NewRNG(uint64(round), uint64(id))
		x := tensor.New[float32](weights)
		for i := range x.Data {
			x.Data[i] = float32(rng.NormFloat64())
		}
		task.Global = &client.Weights{Names: []string{"w"}, Tensors: []*tensor.Tensor[float32]{x}}
	}
	f, err := federation.EncodeTask(task)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func handlers(n int) map[int]federation.Handler {
	hs := map[int]federation.Handler{}
	for id := range n {
		hs[id] = protoHandler{id}
	}
	return hs
}

// factory starts a transport serving n clients with protoHandlers.
type factory func(t *testing.T, n int) federation.Transport

func hostOf(hs map[int]federation.Handler) func(int) (federation.Handler, error) {
	return func(id int) (federation.Handler, error) {
		if h, ok := hs[id]; ok {
			return h, nil
		}
		return nil, fmt.Errorf("no client %d here", id)
	}
}

// serveWorkers starts k Worker services on listeners and returns them.
func serveWorkers(t *testing.T, n, k int, listen func() net.Listener, opts ...grpc.ServerOption) ([]net.Listener, []*Worker) {
	var ls []net.Listener
	var ws []*Worker
	hs := handlers(n)
	for i := range k {
		w, err := NewWorker(WorkerConfig{Name: fmt.Sprintf("w%d", i), Slots: 2, Host: hostOf(hs)})
		if err != nil {
			t.Fatal(err)
		}
		s := grpc.NewServer(append(ServerOptions(0), opts...)...)
		w.Register(s)
		l := listen()
		go s.Serve(l)
		t.Cleanup(s.Stop)
		ls, ws = append(ls, l), append(ws, w)
	}
	return ls, ws
}

func bufconnFactory(t *testing.T, n int) federation.Transport {
	lis := bufconn.Listen(1 << 20)
	serveWorkers(t, n, 1, func() net.Listener { return lis })
	tr, err := NewTransport(TransportConfig{Clients: n, Directory: StaticDirectory{"passthrough:///bufnet"}, Insecure: true,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) })}})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// testPKI is one CA and a node certificate for 127.0.0.1, made once.
var testPKI = func() func(t testing.TB) (ca, node PEM) {
	var ca, node PEM
	var err error
	return func(t testing.TB) (PEM, PEM) {
		if ca.Cert == nil {
			if ca, err = NewDevCA("test CA", time.Hour); err == nil {
				node, err = IssueNode(ca, "node", []string{"127.0.0.1", "localhost"}, time.Hour)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		return ca, node
	}
}()

func tcpListener(t *testing.T) net.Listener {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func tcpFactory(t *testing.T, n int) federation.Transport {
	ca, node := testPKI(t)
	srvTLS, cliTLS, err := TLSConfigs(ca.Cert, node)
	if err != nil {
		t.Fatal(err)
	}
	// Two workers: clients alternate between them.
	ls, _ := serveWorkers(t, n, 2, func() net.Listener { return tcpListener(t) }, grpc.Creds(credentials.NewTLS(srvTLS)))
	tr, err := NewTransport(TransportConfig{Clients: n, Directory: StaticDirectory{ls[0].Addr().String(), ls[1].Addr().String()}, TLS: cliTLS})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// slotDirectory is a minimal SlotDirectory: the addresses of a
// StaticDirectory with one slot each; a lookup takes a free slot (any
// address) and waits while none is free.
type slotDirectory struct {
	addrs []string
	mu    sync.Mutex
	cond  *sync.Cond
	busy  map[string]int
}

var _ SlotDirectory = (*slotDirectory)(nil)

func (d *slotDirectory) Lookup(ctx context.Context, id int) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for {
		for k := range d.addrs {
			if a := d.addrs[(id+k)%len(d.addrs)]; d.busy[a] == 0 {
				d.busy[a]++
				return a, nil
			}
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		d.cond.Wait()
	}
}

func (d *slotDirectory) Release(addr string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.busy[addr]--; d.busy[addr] < 0 {
		panic("release of a slot never taken: " + addr)
	}
	d.cond.Broadcast()
}

func (d *slotDirectory) Unreachable(string) {}

// slotsFactory is the TCP transport with a SlotDirectory: every slot taken
// must come back by the time the transport is closed.
func slotsFactory(t *testing.T, n int) federation.Transport {
	ca, node := testPKI(t)
	srvTLS, cliTLS, err := TLSConfigs(ca.Cert, node)
	if err != nil {
		t.Fatal(err)
	}
	ls, _ := serveWorkers(t, n, 2, func() net.Listener { return tcpListener(t) }, grpc.Creds(credentials.NewTLS(srvTLS)))
	d := &slotDirectory{addrs: []string{ls[0].Addr().String(), ls[1].Addr().String()}, busy: map[string]int{}}
	d.cond = sync.NewCond(&d.mu)
	tr, err := NewTransport(TransportConfig{Clients: n, Directory: d, TLS: cliTLS})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Replies closes once every call has ended (and released its slot).
		tr.Close()
		for done := time.After(10 * time.Second); ; {
			select {
			case _, ok := <-tr.Replies():
				if ok {
					continue
				}
			case <-done:
				t.Error("slot directory: the transport's replies never closed")
			}
			break
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		for a, b := range d.busy {
			if b != 0 {
				t.Errorf("slot directory: %d slots of %s never released", b, a)
			}
		}
	})
	return tr
}

var transports = []struct {
	name string
	make factory
}{
	{"inproc", func(t *testing.T, n int) federation.Transport { return inproc.New(handlers(n), 3) }},
	{"grpc-bufconn", bufconnFactory},
	{"grpc-tcp-mtls", tcpFactory},
	{"grpc-tcp-slots", slotsFactory},
}

func recv(t *testing.T, tr federation.Transport) federation.Reply {
	t.Helper()
	select {
	case r, ok := <-tr.Replies():
		if !ok {
			t.Fatal("replies channel closed early")
		}
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("no reply within 20 s")
	}
	return federation.Reply{}
}

func drainClosed(t *testing.T, tr federation.Transport) int {
	t.Helper()
	n := 0
	timeout := time.After(20 * time.Second)
	for {
		select {
		case _, ok := <-tr.Replies():
			if !ok {
				return n
			}
			n++
		case <-timeout:
			t.Fatal("replies channel not closed within 20 s of Close")
		}
	}
}

var contract = []struct {
	name string
	run  func(t *testing.T, tr federation.Transport)
}{
	{"every send gets one reply from its client", func(t *testing.T, tr federation.Transport) {
		ctx := context.Background()
		for round := 1; round <= 3; round++ {
			for id := range 8 {
				if err := tr.Send(ctx, id, taskFrame(t, round, id, "echo", 0)); err != nil {
					t.Fatal(err)
				}
			}
		}
		seen := map[[2]int]bool{}
		for range 24 {
			r := recv(t, tr)
			if r.Err != nil {
				t.Fatalf("reply from %d: %v", r.From, r.Err)
			}
			res, err := federation.DecodeResult(r.Frame)
			if err != nil || res.Client != r.From || res.Loss != float64(1000*res.Round+r.From) {
				t.Fatalf("reply from %d: %v %+v", r.From, err, res)
			}
			key := [2]int{res.Round, res.Client}
			if seen[key] {
				t.Fatalf("second reply for %v", key)
			}
			seen[key] = true
		}
		tr.Close()
		if n := drainClosed(t, tr); n != 0 {
			t.Fatalf("%d replies more than sends", n)
		}
	}},
	{"a failing handler gives an error reply", func(t *testing.T, tr federation.Transport) {
		ctx := context.Background()
		tr.Send(ctx, 2, taskFrame(t, 1, 2, "fail", 0))
		tr.Send(ctx, 3, taskFrame(t, 1, 3, "echo", 0))
		got := map[int]error{}
		for range 2 {
			r := recv(t, tr)
			got[r.From] = r.Err
		}
		if got[2] == nil || got[3] != nil {
			t.Fatalf("errors %v: want one for client 2 only", got)
		}
		tr.Close()
	}},
	{"unknown client is refused at send", func(t *testing.T, tr federation.Transport) {
		if err := tr.Send(context.Background(), 99, taskFrame(t, 1, 99, "echo", 0)); err == nil {
			t.Fatal("send to client 99 of 8 accepted")
		}
		tr.Close()
	}},
	{"large frames arrive intact", func(t *testing.T, tr federation.Transport) {
		// 1.5 M float32 of noise: a 6 MB frame, several chunks each way.
		frame := taskFrame(t, 4, 5, "echo", 3<<19)
		if err := tr.Send(context.Background(), 5, frame); err != nil {
			t.Fatal(err)
		}
		r := recv(t, tr)
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		task, _ := federation.DecodeTask(frame)
		res, err := federation.DecodeResult(r.Frame)
		if err != nil || res.Weights == nil || !slices.Equal(res.Weights.Tensors[0].Data, task.Global.Tensors[0].Data) {
			t.Fatalf("weights did not survive the round trip: %v", err)
		}
		if len(r.Frame) < 5<<20 {
			t.Fatalf("result frame of %d bytes: the test meant to exceed the chunk size", len(r.Frame))
		}
		tr.Close()
	}},
	{"a cancelled context gives an error reply", func(t *testing.T, tr federation.Transport) {
		ctx, cancel := context.WithCancel(context.Background())
		if err := tr.Send(ctx, 1, taskFrame(t, 1, 1, "slow", 0)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		cancel()
		if r := recv(t, tr); r.Err == nil || r.From != 1 {
			t.Fatalf("reply %+v: want client 1's cancellation error", r)
		}
		tr.Close()
	}},
	{"close answers what is in flight and closes replies", func(t *testing.T, tr federation.Transport) {
		ctx := context.Background()
		for id := range 5 {
			if err := tr.Send(ctx, id, taskFrame(t, 1, id, "pause", 0)); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(50 * time.Millisecond)
		tr.Close()
		if err := tr.Send(ctx, 0, taskFrame(t, 1, 0, "echo", 0)); err == nil {
			t.Fatal("send after close accepted")
		}
		if n := drainClosed(t, tr); n != 5 {
			t.Fatalf("%d replies after close, want one per send (5)", n)
		}
	}},
}

func TestTransportConformance(t *testing.T) {
	for _, impl := range transports {
		for _, c := range contract {
			t.Run(impl.name+"/"+c.name, func(t *testing.T) {
				tr := impl.make(t, 8)
				defer tr.Close()
				c.run(t, tr)
			})
		}
	}
}
