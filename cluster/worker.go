package cluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/fedsim/fedsim/federation"
	"github.com/fedsim/fedsim/federation/membership"
	"github.com/fedsim/fedsim/federation/rpc"
	"github.com/fedsim/fedsim/sim"
)

// WorkerConfig configures the worker role.
type WorkerConfig struct {
	// Name is the node name ("": worker-<host>-<pid>-<random>, so a
	// restarted worker is a new member).
	Name string
	// Join is the coordinator's gossip address (or any member's).
	Join string
	// Bind is this node's gossip address ("": 127.0.0.1:0) and GRPC its
	// data-plane address ("": 127.0.0.1:0); the ports may be 0.
	Bind, GRPC string
	// Slots is the number of tasks run at once.
	Slots int
	// Key is the gossip key, TLS the server side of the data plane's
	// mutual TLS; both nil only with Insecure (loopback only).
	Key      []byte
	TLS      *tls.Config
	Insecure bool
	// DataDir, if set, overrides the data folder of the run's
	// configuration (data sets elsewhere on this machine).
	DataDir string
	// JoinTimeout bounds the first join (≤ 0: 60 s): the coordinator may
	// still be starting.
	JoinTimeout time.Duration
	// Log receives membership and data-plane events.
	Log func(format string, args ...any)
	// OnTask is called when a task starts and ends; OnReady once the
	// worker serves, with its gRPC address.
	OnTask  func(client, round int, done bool)
	OnReady func(name, grpcAddr string)
}

// hostSet is the clients a worker can host for one run configuration.
type hostSet struct {
	key  string
	prep *sim.Prepared
	mu   sync.Mutex
	eps  map[int]federation.Handler
}

func (h *hostSet) host(id int) (federation.Handler, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e, ok := h.eps[id]; ok {
		return e, nil
	}
	c, err := h.prep.Client(id)
	if err != nil {
		return nil, err
	}
	e := &federation.Endpoint{Client: c}
	h.eps[id] = e
	return e, nil
}

// dataKey is what decides a worker's clients: configurations with the
// same key give the same partition.
func dataKey(c sim.Config) string {
	return fmt.Sprintf("%s|%s|%d|%d|%s|%g|%d|%d|%d", c.Dataset, c.DataDir, c.TrainLimit, c.TestLimit, c.Partition, c.Alpha, c.ShardsPerClient, c.Clients, c.Seed)
}

// RunWorker joins the cluster, prepares the run's clients from the
// configuration the coordinator gossips, serves their tasks until ctx
// ends, then leaves (the coordinator re-sends unfinished tasks elsewhere).
// A worker outlives its coordinator: it rejoins when one comes back at
// Join (a server restarted with --resume).
func RunWorker(ctx context.Context, cfg WorkerConfig) error {
	if cfg.Bind == "" {
		cfg.Bind = "127.0.0.1:0"
	}
	if cfg.GRPC == "" {
		cfg.GRPC = "127.0.0.1:0"
	}
	if cfg.Name == "" {
		host, _ := os.Hostname()
		var b [3]byte
		rand.Read(b[:])
		cfg.Name = fmt.Sprintf("worker-%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	if cfg.JoinTimeout <= 0 {
		cfg.JoinTimeout = 60 * time.Second
	}
	logf := func(format string, args ...any) {
		if cfg.Log != nil {
			cfg.Log(format, args...)
		}
	}
	switch {
	case cfg.Slots < 1:
		return fmt.Errorf("cluster: worker slots %d: want at least 1 (tasks run at once)", cfg.Slots)
	case cfg.Join == "":
		return errors.New("cluster: the worker needs the coordinator's gossip address (--join host:port)")
	case cfg.TLS == nil && !cfg.Insecure:
		return errors.New("cluster: the worker needs TLS credentials (fedsim certs), or --insecure on loopback")
	}
	if err := membership.CheckInsecure(cfg.Insecure, cfg.Join, cfg.Bind, cfg.GRPC); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.GRPC)
	if err != nil {
		return fmt.Errorf("cluster: worker gRPC address %s: %w", cfg.GRPC, err)
	}
	defer lis.Close()
	grpcAddr := lis.Addr().String()

	states := make(chan []byte, 1)
	serverUp := make(chan bool, 1)
	node, err := membership.StartNode(membership.NodeConfig{Name: cfg.Name, Bind: cfg.Bind, Key: cfg.Key, Insecure: cfg.Insecure,
		Meta: membership.Meta{Role: membership.RoleWorker, GRPC: grpcAddr, Slots: cfg.Slots}, Log: cfg.Log,
		OnState: func(b []byte) {
			// Keep only the newest state.
			select {
			case <-states:
			default:
			}
			states <- b
		},
		OnEvent: func(ev membership.Event) {
			if ev.Meta.Role == membership.RoleServer {
				select {
				case <-serverUp:
				default:
				}
				serverUp <- ev.Kind != "leave"
			}
		}})
	if err != nil {
		return err
	}
	defer node.Close()

	deadline := time.Now().Add(cfg.JoinTimeout)
	for {
		err := node.Join(cfg.Join)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}

	var hosts *hostSet
	var hmu sync.Mutex
	prepare := func(b []byte) error {
		rc, err := decodeState(b)
		if err != nil {
			return err
		}
		if cfg.DataDir != "" {
			rc.DataDir = cfg.DataDir
		}
		key := dataKey(rc)
		hmu.Lock()
		same := hosts != nil && hosts.key == key
		hmu.Unlock()
		if same {
			return nil
		}
		start := time.Now()
		prep, err := sim.Prepare(rc)
		if err != nil {
			return fmt.Errorf("cluster: preparing the run's clients: %w", err)
		}
		hmu.Lock()
		hosts = &hostSet{key: key, prep: prep, eps: map[int]federation.Handler{}}
		hmu.Unlock()
		node.SetState(b)
		logf("cluster: worker %s prepared %d clients of %s (%d training images) in %.1f s", cfg.Name, rc.Clients, rc.Dataset, prep.Train.Len(), time.Since(start).Seconds())
		return nil
	}
	select {
	case b := <-states:
		if err := prepare(b); err != nil {
			return err
		}
	case <-time.After(30 * time.Second):
		return fmt.Errorf("cluster: joined %s but received no run configuration in 30 s: is it a fedsim server?", cfg.Join)
	case <-ctx.Done():
		return ctx.Err()
	}

	w, err := rpc.NewWorker(rpc.WorkerConfig{Name: cfg.Name, Slots: cfg.Slots, OnTask: cfg.OnTask, Log: cfg.Log,
		Host: func(id int) (federation.Handler, error) {
			hmu.Lock()
			h := hosts
			hmu.Unlock()
			return h.host(id)
		}})
	if err != nil {
		return err
	}
	gs := rpc.NewServer(w, cfg.TLS)
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	defer func() {
		// Refuse new tasks, leave the cluster, then give running calls a
		// moment: the coordinator re-sends what is cut off.
		w.Drain()
		node.Close()
		gs.Stop(2 * time.Second)
	}()
	if err := node.SetMeta(membership.Meta{Role: membership.RoleWorker, GRPC: grpcAddr, Slots: cfg.Slots, Ready: true}); err != nil {
		logf("cluster: announcing readiness: %v", err)
	}
	logf("cluster: worker %s serving %d slots at %s", cfg.Name, cfg.Slots, grpcAddr)
	if cfg.OnReady != nil {
		cfg.OnReady(cfg.Name, grpcAddr)
	}

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	alone := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-served:
			return fmt.Errorf("cluster: worker gRPC server stopped: %w", err)
		case b := <-states:
			if err := prepare(b); err != nil {
				logf("%v", err)
			}
		case up := <-serverUp:
			alone = !up
			if !up {
				logf("cluster: the coordinator left; waiting for it to come back at %s", cfg.Join)
			}
		case <-tick.C:
			if alone {
				if err := node.Join(cfg.Join); err == nil {
					alone = false
					logf("cluster: rejoined the coordinator at %s", cfg.Join)
				}
			}
		}
	}
}
