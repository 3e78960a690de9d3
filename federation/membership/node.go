package membership

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Roles of a node.
const (
	RoleServer = "server"
	RoleWorker = "worker"
)

// Meta is a node's memberlist metadata (JSON, within memberlist's 512
// bytes).
type Meta struct {
	Role string `json:"role"`
	// GRPC is a worker's gRPC address.
	GRPC string `json:"grpc,omitempty"`
	// Slots is a worker's capacity (tasks at once).
	Slots int `json:"slots,omitempty"`
	// Ready: the worker has loaded the data and serves tasks.
	Ready bool `json:"ready,omitempty"`
}

// NodeConfig configures one memberlist node.
type NodeConfig struct {
	// Name must be unique in the cluster.
	Name string
	// Bind is the gossip address, host:port (port 0: any free port).
	Bind string
	// Key is the shared gossip key (16, 24 or 32 bytes, AES); nil only
	// with Insecure, which is accepted on loopback addresses only.
	Key      []byte
	Insecure bool
	Meta     Meta
	// State is what this node gives a joining node (the coordinator: the
	// run's configuration); it may change later with SetState.
	State []byte
	// OnState receives another node's non-empty State (on join and on the
	// periodic state exchange).
	OnState func([]byte)
	// OnEvent is called on join, update and leave (failure included) of
	// other nodes, with their decoded metadata.
	OnEvent func(ev Event)
	// Log receives memberlist's warnings and errors (nil: dropped).
	Log func(format string, args ...any)
}

// Event is a membership change.
type Event struct {
	Kind string // "join", "update" or "leave"
	Name string
	Addr string // gossip address
	Meta Meta
}

// Node is a running memberlist member.
type Node struct {
	ml    *memberlist.Memberlist
	d     *delegate
	logs  *lineFilter // nil without Config.Log
	once  sync.Once
	close error
}

// delegate implements memberlist's delegates: metadata, state exchange and
// membership events.
type delegate struct {
	cfg   NodeConfig
	mu    sync.Mutex
	meta  []byte
	state []byte
}

var (
	_ memberlist.Delegate      = &delegate{}
	_ memberlist.EventDelegate = &delegate{}
)

func (d *delegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.meta) > limit {
		return nil
	}
	return d.meta
}

func (d *delegate) NotifyMsg([]byte)                {}
func (d *delegate) GetBroadcasts(_, _ int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte     { d.mu.Lock(); defer d.mu.Unlock(); return d.state }
func (d *delegate) MergeRemoteState(buf []byte, _ bool) {
	if len(buf) > 0 && d.cfg.OnState != nil {
		d.cfg.OnState(append([]byte(nil), buf...))
	}
}

func (d *delegate) event(kind string, n *memberlist.Node) {
	if d.cfg.OnEvent == nil || n.Name == d.cfg.Name {
		return
	}
	ev := Event{Kind: kind, Name: n.Name, Addr: n.Address()}
	if err := json.Unmarshal(n.Meta, &ev.Meta); err != nil && d.cfg.Log != nil {
		d.cfg.Log("cluster: node %s has unreadable metadata (%v); ignoring its role", n.Name, err)
	}
	d.cfg.OnEvent(ev)
}

func (d *delegate) NotifyJoin(n *memberlist.Node)   { d.event("join", n) }
func (d *delegate) NotifyLeave(n *memberlist.Node)  { d.event("leave", n) }
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.event("update", n) }

// StartNode creates the memberlist node (it does not join anyone yet).
func StartNode(cfg NodeConfig) (*Node, error) {
	host, port, err := splitHostPort(cfg.Bind)
	if err != nil {
		return nil, err
	}
	if err := CheckKey(cfg.Key, cfg.Insecure, cfg.Bind); err != nil {
		return nil, err
	}
	var mc *memberlist.Config
	if IsLoopback(host) {
		// Fast failure detection on one machine (a dead worker is noticed
		// in about a second instead of several).
		mc = memberlist.DefaultLocalConfig()
		// A metadata update (a worker becoming ready) travels by gossip,
		// which can miss the coordinator; the periodic full-state exchange
		// is the backstop. memberlist's local default of 15 s once held a
		// 4-worker cluster's start for 15 s; on loopback the exchange is
		// cheap, so run it every 2 s.
		mc.PushPullInterval = 2 * time.Second
	} else {
		mc = memberlist.DefaultLANConfig()
	}
	mc.Name, mc.BindAddr, mc.BindPort, mc.AdvertisePort = cfg.Name, host, port, port
	mc.SecretKey = cfg.Key
	mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	mc.Logger = nil
	logs := newLineFilter(cfg.Log)
	mc.LogOutput = io.Discard
	if logs != nil {
		mc.LogOutput = logs
	}
	d := &delegate{cfg: cfg, state: cfg.State}
	if d.meta, err = json.Marshal(cfg.Meta); err != nil {
		return nil, fmt.Errorf("cluster: node metadata: %w", err)
	}
	mc.Delegate, mc.Events = d, d
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("cluster: starting gossip on %s: %w", cfg.Bind, err)
	}
	return &Node{ml: ml, d: d, logs: logs}, nil
}

// Addr is the node's gossip address (with the port chosen if Bind's was 0).
func (n *Node) Addr() string {
	ln := n.ml.LocalNode()
	return ln.Address()
}

// Join contacts an existing member; it fails when the address cannot be
// reached or refuses us (a wrong or missing gossip key).
func (n *Node) Join(addr string) error {
	if _, err := n.ml.Join([]string{addr}); err != nil {
		return fmt.Errorf("cluster: joining %s: %w (is the coordinator running, and do both sides use the same gossip key?)", addr, err)
	}
	return nil
}

// SetMeta changes the node's metadata and gossips it.
func (n *Node) SetMeta(m Meta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	n.d.mu.Lock()
	n.d.meta = b
	n.d.mu.Unlock()
	return n.ml.UpdateNode(5 * time.Second)
}

// SetState changes what joining nodes receive.
func (n *Node) SetState(b []byte) {
	n.d.mu.Lock()
	n.d.state = b
	n.d.mu.Unlock()
}

// Members returns the live members other than this node, with metadata.
func (n *Node) Members() []Event {
	var out []Event
	for _, m := range n.ml.Members() {
		if m.Name == n.d.cfg.Name || m.State != memberlist.StateAlive {
			continue
		}
		ev := Event{Kind: "member", Name: m.Name, Addr: m.Address()}
		_ = json.Unmarshal(m.Meta, &ev.Meta)
		out = append(out, ev)
	}
	return out
}

// Close leaves the cluster (telling the others, so they reassign at once)
// and stops the node.
func (n *Node) Close() error {
	n.once.Do(func() {
		n.close = n.ml.Leave(2 * time.Second)
		if err := n.ml.Shutdown(); n.close == nil {
			n.close = err
		}
		// memberlist's timers may still fire once after Shutdown and log
		// "use of closed network connection"; nothing is forwarded after
		// Close (a test's log function must not be called once it ends).
		n.logs.stop()
	})
	return n.close
}

// IsLoopback reports whether host (an IP address or "localhost") is a
// loopback address.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// CheckInsecure rejects plain-text mode on any address that is not
// loopback: without the gossip key and TLS anyone on the network could
// join, send results or read the model.
func CheckInsecure(insecure bool, addrs ...string) error {
	if !insecure {
		return nil
	}
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			host = a
		}
		if !IsLoopback(host) {
			return fmt.Errorf("cluster: --insecure (no gossip key, no TLS) is allowed on loopback addresses only, not %q: use 127.0.0.1, or create credentials with `fedsim certs` and drop --insecure", a)
		}
	}
	return nil
}

// CheckKey checks a gossip key (or its absence under Insecure on loopback).
func CheckKey(key []byte, insecure bool, bind string) error {
	if insecure {
		if len(key) > 0 {
			return errors.New("cluster: a gossip key was given together with --insecure: drop one of them")
		}
		return CheckInsecure(true, bind)
	}
	switch len(key) {
	case 16, 24, 32:
		return nil
	case 0:
		return errors.New("cluster: no gossip key: pass the key file from `fedsim certs` (or --insecure on loopback)")
	}
	return fmt.Errorf("cluster: gossip key of %d bytes: want 16, 24 or 32 (AES-128/192/256)", len(key))
}

// GossipKeyFile is the gossip key's file name in a credentials folder.
const GossipKeyFile = "gossip.key"

// EncodeKey and DecodeKey give a key's file form (base64, one line).
func EncodeKey(key []byte) []byte { return []byte(base64.StdEncoding.EncodeToString(key) + "\n") }

// DecodeKey parses a key file's content.
func DecodeKey(b []byte) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip key is not base64: %w", err)
	}
	if err := CheckKey(k, false, ""); err != nil {
		return nil, err
	}
	return k, nil
}

// ReadKeyFile reads a gossip key file.
func ReadKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip key: %w (create one with `fedsim certs`)", err)
	}
	k, err := DecodeKey(b)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return k, nil
}

func splitHostPort(addr string) (string, int, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("cluster: address %q: %v (want host:port, e.g. 127.0.0.1:7946)", addr, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("cluster: address %q: port %q is not a number in 0..65535", addr, ps)
	}
	if host == "" {
		return "", 0, fmt.Errorf("cluster: address %q has no host: give the IP address to bind (e.g. 127.0.0.1)", addr)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	return host, port, nil
}

// lineFilter forwards memberlist's warnings and errors, line by line, and
// drops its debug and info chatter; after stop it drops everything.
type lineFilter struct {
	log     func(string, ...any)
	mu      sync.Mutex
	buf     []byte
	stopped bool
}

// newLineFilter returns a filter forwarding to log, or nil for a nil log.
func newLineFilter(log func(string, ...any)) *lineFilter {
	if log == nil {
		return nil
	}
	return &lineFilter{log: log}
}

// stop makes later writes no-ops. It is safe on a nil filter.
func (f *lineFilter) stop() {
	if f == nil {
		return
	}
	f.mu.Lock()
	f.stopped = true
	f.mu.Unlock()
}

func (f *lineFilter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return len(p), nil
	}
	f.buf = append(f.buf, p...)
	for {
		i := bytes.IndexByte(f.buf, '\n')
		if i < 0 {
			break
		}
		line := string(f.buf[:i])
		f.buf = f.buf[i+1:]
		if strings.Contains(line, "[ERR]") || strings.Contains(line, "[WARN]") {
			f.log("%s", line)
		}
	}
	return len(p), nil
}
