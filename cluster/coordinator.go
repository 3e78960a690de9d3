// Package cluster runs fedsim as a multi-process cluster: a coordinator
// (the server role) and workers that host simulated clients. Membership is
// hashicorp/memberlist gossip, encrypted with a shared key (package
// federation/membership): each node's metadata carries its role, its gRPC
// address and its capacity (slots), and join, leave and failure events
// update the directory that places every task on a live worker with a free
// slot (membership.Directory). Tasks and results travel over gRPC with
// mutual TLS (package federation/rpc).
// Workers need nothing but the coordinator's address and the credentials:
// the run's configuration reaches them with memberlist's state exchange on
// join, and they load the data and cut the partition from it exactly as the
// coordinator does (sim.Prepare), so any worker can host any client and a
// cluster run gives the in-process run's results.
package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/fedsim/fedsim/federation"
	"github.com/fedsim/fedsim/federation/membership"
	"github.com/fedsim/fedsim/federation/rpc"
	"github.com/fedsim/fedsim/sim"
)

// runState is the coordinator's memberlist state: the run's configuration,
// which joining workers prepare their clients from.
type runState struct {
	Version int        `json:"version"`
	Config  sim.Config `json:"config"`
}

const stateVersion = 1

func encodeState(cfg sim.Config) ([]byte, error) {
	return json.Marshal(runState{Version: stateVersion, Config: cfg})
}

func decodeState(b []byte) (sim.Config, error) {
	var st runState
	if err := json.Unmarshal(b, &st); err != nil {
		return sim.Config{}, fmt.Errorf("cluster: unreadable run state from the coordinator: %w", err)
	}
	if st.Version != stateVersion {
		return sim.Config{}, fmt.Errorf("cluster: run state version %d, this build reads version %d: run the same fedsim on every node", st.Version, stateVersion)
	}
	return st.Config, nil
}

// CoordinatorConfig configures the server role of a cluster.
type CoordinatorConfig struct {
	// Name is the coordinator's node name ("": fedsim-server-<pid>; a
	// restarted coordinator is a new node, so the workers see the old one
	// fail at once instead of probing the new one under the old name).
	Name string
	// Bind is the gossip address workers join (host:port).
	Bind string
	// Key is the gossip key; TLS the client side of the data plane's
	// mutual TLS. Both nil only with Insecure (loopback only).
	Key      []byte
	TLS      *tls.Config
	Insecure bool
	// Run is the resolved run configuration, sent to workers on join.
	Run sim.Config
	// CallTimeout is the deadline of one task (≤ 0: rpc's default).
	CallTimeout time.Duration
	// MaxTasks caps the tasks in flight across all workers (≤ 0: the sum
	// of their slots). A cluster on one machine sets it to the cores.
	MaxTasks int
	// Log receives membership changes and data-plane incidents.
	Log func(format string, args ...any)
}

// Coordinator is the server role's membership and data plane: it tracks
// the workers and gives sim.Run a transport that sends each task to the
// worker hosting the client.
type Coordinator struct {
	cfg  CoordinatorConfig
	node *membership.Node
	dir  *membership.Directory
	tr   *rpc.Transport
}

// StartCoordinator starts the coordinator's gossip node.
func StartCoordinator(cfg CoordinatorConfig) (*Coordinator, error) {
	if cfg.Name == "" {
		cfg.Name = fmt.Sprintf("fedsim-server-%d", os.Getpid())
	}
	if cfg.TLS == nil && !cfg.Insecure {
		return nil, errors.New("cluster: the coordinator needs TLS credentials (fedsim certs), or --insecure on loopback")
	}
	if cfg.Run.Clients < 1 {
		return nil, fmt.Errorf("cluster: run configuration with %d clients: resolve it first (sim.Config.Resolve)", cfg.Run.Clients)
	}
	state, err := encodeState(cfg.Run)
	if err != nil {
		return nil, err
	}
	c := &Coordinator{cfg: cfg, dir: membership.NewDirectory(cfg.Run.Clients, 0)}
	c.dir.LimitInFlight(cfg.MaxTasks)
	c.node, err = membership.StartNode(membership.NodeConfig{Name: cfg.Name, Bind: cfg.Bind, Key: cfg.Key, Insecure: cfg.Insecure,
		Meta: membership.Meta{Role: membership.RoleServer}, State: state, OnEvent: c.onEvent, Log: cfg.Log})
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Coordinator) logf(format string, args ...any) {
	if c.cfg.Log != nil {
		c.cfg.Log(format, args...)
	}
}

func (c *Coordinator) onEvent(ev membership.Event) {
	if ev.Meta.Role != membership.RoleWorker {
		return
	}
	if ev.Kind == "leave" || !ev.Meta.Ready || ev.Meta.Slots < 1 {
		if ev.Kind == "leave" {
			c.logf("cluster: worker %s left or failed; its clients move to the other workers", ev.Name)
		}
		c.dir.Remove(ev.Name)
		return
	}
	if c.cfg.Insecure {
		host, _, err := net.SplitHostPort(ev.Meta.GRPC)
		if err != nil || !membership.IsLoopback(host) {
			c.logf("cluster: ignoring worker %s: its gRPC address %q is not loopback, and plain text (--insecure) is allowed on loopback only", ev.Name, ev.Meta.GRPC)
			return
		}
	}
	known := false
	for _, m := range c.dir.Members() {
		known = known || m.Name == ev.Name
	}
	if !known {
		c.logf("cluster: worker %s ready at %s with %d slots", ev.Name, ev.Meta.GRPC, ev.Meta.Slots)
	}
	c.dir.Put(membership.Member{Name: ev.Name, Addr: ev.Meta.GRPC, Slots: ev.Meta.Slots})
}

// Addr is the gossip address workers join.
func (c *Coordinator) Addr() string { return c.node.Addr() }

// Directory returns the client-to-worker directory.
func (c *Coordinator) Directory() *membership.Directory { return c.dir }

// Workers returns the ready workers.
func (c *Coordinator) Workers() []membership.Member { return c.dir.Members() }

// WaitWorkers waits until n workers are ready.
func (c *Coordinator) WaitWorkers(ctx context.Context, n int) error {
	for {
		if len(c.dir.Members()) >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: %d of %d workers ready: %w", len(c.dir.Members()), n, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Transport makes the data plane's transport (for sim.Options.Transport;
// the local handlers are not used: workers host the clients).
func (c *Coordinator) Transport(map[int]federation.Handler) (federation.Transport, error) {
	tr, err := rpc.NewTransport(rpc.TransportConfig{Clients: c.cfg.Run.Clients, Directory: c.dir, TLS: c.cfg.TLS,
		Insecure: c.cfg.Insecure, CallTimeout: c.cfg.CallTimeout, Log: c.cfg.Log})
	if err != nil {
		return nil, err
	}
	c.tr = tr
	return tr, nil
}

// Stats returns the data plane's counters (nil before Transport).
func (c *Coordinator) Stats() map[string]int64 {
	if c.tr == nil {
		return nil
	}
	return c.tr.Stats().Snapshot()
}

// Close leaves the cluster.
func (c *Coordinator) Close() error { return c.node.Close() }
