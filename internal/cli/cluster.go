package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/fedsim/fedsim/cluster"
	"github.com/fedsim/fedsim/federation/membership"
	"github.com/fedsim/fedsim/federation/rpc"
	"github.com/fedsim/fedsim/internal/atomicfile"
	"github.com/fedsim/fedsim/sim"
)

// Credentials of a cluster (fedsim certs --out DIR): the CA and a node
// certificate for mutual TLS, and the gossip key.

// CertsOptions are the flags of `fedsim certs`.
type CertsOptions struct {
	Out   string
	Hosts []string
	Days  int
	Force bool
}

func newCertsCmd(stdout io.Writer) *cobra.Command {
	o := &CertsOptions{}
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Create development credentials for a cluster: a CA, a node certificate and a gossip key",
		Long: `certs writes into --out a development certificate authority (ca.pem,
ca-key.pem), one node certificate signed by it for --hosts (node.pem,
node-key.pem; ECDSA P-256, valid as server and client certificate), and a
random 256-bit gossip key (gossip.key). Copy the folder (without ca-key.pem)
to every machine of the cluster and pass it with --certs to fedsim server and
fedsim worker. For production, issue one certificate per node from your own CA.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return RunCerts(o, stdout) },
	}
	f := cmd.Flags()
	f.StringVar(&o.Out, "out", "fedsim-certs", "output folder")
	f.StringSliceVar(&o.Hosts, "hosts", []string{"127.0.0.1", "localhost"}, "IP addresses and DNS names the node certificate is valid for")
	f.IntVar(&o.Days, "days", 365, "validity in days")
	f.BoolVar(&o.Force, "force", false, "replace existing credentials")
	return cmd
}

// RunCerts runs `fedsim certs`.
func RunCerts(o *CertsOptions, stdout io.Writer) error {
	if o.Days < 1 {
		return usagef("--days %d: want at least 1", o.Days)
	}
	if len(o.Hosts) == 0 {
		return usagef("--hosts is empty: give the IP addresses or names the nodes are reached at")
	}
	if err := os.MkdirAll(o.Out, 0o700); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	names := []string{rpc.CAFile, rpc.CAKeyFile, rpc.NodeFile, rpc.NodeKeyFile, membership.GossipKeyFile}
	if !o.Force {
		for _, n := range names {
			if _, err := os.Stat(filepath.Join(o.Out, n)); err == nil {
				return fmt.Errorf("certs: %s already exists: use --force to replace the credentials (running nodes keep the old ones)", filepath.Join(o.Out, n))
			}
		}
	}
	validity := time.Duration(o.Days) * 24 * time.Hour
	ca, err := rpc.NewDevCA("fedsim development CA", validity)
	if err != nil {
		return err
	}
	node, err := rpc.IssueNode(ca, "fedsim node", o.Hosts, validity)
	if err != nil {
		return err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("certs: gossip key: %w", err)
	}
	files := []struct {
		name    string
		b       []byte
		private bool
	}{{rpc.CAFile, ca.Cert, false}, {rpc.CAKeyFile, ca.Key, true}, {rpc.NodeFile, node.Cert, false},
		{rpc.NodeKeyFile, node.Key, true}, {membership.GossipKeyFile, membership.EncodeKey(key), true}}
	for _, f := range files {
		p := filepath.Join(o.Out, f.name)
		if err := atomicfile.WriteFile(p, f.b); err != nil {
			return fmt.Errorf("certs: %w", err)
		}
		if f.private {
			// The folder is 0700, so the key was never readable by others.
			if err := os.Chmod(p, 0o600); err != nil {
				return fmt.Errorf("certs: %w", err)
			}
		}
	}
	_, err = fmt.Fprintf(stdout, "credentials for %s written to %s (CA, node certificate, gossip key)\n", strings.Join(o.Hosts, ", "), o.Out)
	return err
}

// creds loads a credentials folder, or checks that plain text is allowed.
func creds(dir string, insecure bool, addrs ...string) (key []byte, srv, cli *tls.Config, err error) {
	if insecure {
		if dir != "" {
			return nil, nil, nil, usagef("--certs and --insecure exclude each other")
		}
		if err := membership.CheckInsecure(true, addrs...); err != nil {
			return nil, nil, nil, usageError{err}
		}
		return nil, nil, nil, nil
	}
	if dir == "" {
		return nil, nil, nil, usagef("no credentials: pass --certs DIR (create it with `fedsim certs --out DIR`), or --insecure on loopback addresses")
	}
	key, err = membership.ReadKeyFile(filepath.Join(dir, membership.GossipKeyFile))
	if err != nil {
		return nil, nil, nil, err
	}
	srv, cli, err = rpc.LoadTLSDir(dir)
	return key, srv, cli, err
}

// clusterFlags are the flags the cluster commands add to the run flags.
var clusterFlags = map[string]bool{"listen": true, "certs": true, "insecure": true, "wait-workers": true, "call-timeout": true, "slots": true, "workers": true,
	"max-tasks": true}

// addRunFlagsExceptWorkers adds the run flags without --workers (the
// clients run at once in one process; in a cluster the workers' --slots
// decide that, and `fedsim cluster` uses --workers for processes).
func addRunFlagsExceptWorkers(f *pflag.FlagSet, o *RunOptions) {
	tmp := pflag.NewFlagSet("run", pflag.ContinueOnError)
	addRunFlags(tmp, o)
	tmp.VisitAll(func(fl *pflag.Flag) {
		if fl.Name != "workers" {
			f.AddFlag(fl)
		}
	})
}

// runChanged returns the run flags given (not the cluster ones).
func runChanged(f *pflag.FlagSet) map[string]bool {
	ch := changedFlags(f)
	for name := range clusterFlags {
		delete(ch, name)
	}
	return ch
}

// ServerOptions are the flags of `fedsim server`.
type ServerOptions struct {
	Run         RunOptions
	Listen      string
	Certs       string
	Insecure    bool
	WaitWorkers int
	CallTimeout time.Duration
	MaxTasks    int
}

func newServerCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &ServerOptions{}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the coordinator of a multi-process cluster (same flags as run)",
		Long: `server runs a federated simulation like fedsim run, but its clients live in
worker processes (fedsim worker --join ADDR): it listens for gossip at
--listen, sends workers the run's configuration when they join, and sends each
task over gRPC to the worker hosting the client. A worker that fails mid-round
loses nothing: its tasks go to the other workers. --resume DIR continues a
run after the server was stopped or killed; workers rejoin by themselves.

Credentials: --certs DIR (from fedsim certs) for the gossip key and mutual
TLS; --insecure allows plain text on loopback addresses only.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			o.Run.Changed = runChanged(c.Flags())
			return RunServer(c.Context(), o, stdout, stderr)
		},
	}
	f := cmd.Flags()
	addRunFlagsExceptWorkers(f, &o.Run)
	f.StringVar(&o.Listen, "listen", "127.0.0.1:7946", "gossip address workers join (host:port; port 0 picks one)")
	f.StringVar(&o.Certs, "certs", "", "credentials folder from fedsim certs (gossip key, CA, node certificate)")
	f.BoolVar(&o.Insecure, "insecure", false, "no encryption or authentication (loopback addresses only)")
	f.IntVar(&o.WaitWorkers, "wait-workers", 1, "workers to wait for before the first round")
	f.DurationVar(&o.CallTimeout, "call-timeout", rpc.DefaultCallTimeout, "deadline of one client task")
	f.IntVar(&o.MaxTasks, "max-tasks", 0, "tasks in flight across all workers (0: the sum of their slots; set it to the cores when the workers share one machine)")
	return cmd
}

// RunServer runs `fedsim server`.
func RunServer(ctx context.Context, o *ServerOptions, stdout, stderr io.Writer) error {
	cfg, resume, err := resolveRunConfig(&o.Run)
	if err != nil {
		return err
	}
	if o.WaitWorkers < 0 {
		return usagef("--wait-workers %d must not be negative", o.WaitWorkers)
	}
	if o.MaxTasks < 0 {
		return usagef("--max-tasks %d must not be negative (0: no cap beyond the workers' slots)", o.MaxTasks)
	}
	key, _, cliTLS, err := creds(o.Certs, o.Insecure, o.Listen)
	if err != nil {
		return err
	}
	logf := lineLogger(stderr, "server")
	coord, err := cluster.StartCoordinator(cluster.CoordinatorConfig{Bind: o.Listen, Key: key, TLS: cliTLS, Insecure: o.Insecure,
		Run: cfg, CallTimeout: o.CallTimeout, MaxTasks: o.MaxTasks, Log: logf})
	if err != nil {
		return err
	}
	defer coord.Close()
	// The first line names the address (fedsim cluster reads it).
	fmt.Fprintf(stdout, "fedsim server: gossip at %s; %d clients, %d rounds → %s\n", coord.Addr(), cfg.Clients, cfg.Rounds, cfg.Out)
	if o.WaitWorkers > 0 {
		fmt.Fprintf(stdout, "waiting for %d worker(s): fedsim worker --join %s --slots K\n", o.WaitWorkers, coord.Addr())
		if err := coord.WaitWorkers(ctx, o.WaitWorkers); err != nil {
			return err
		}
	}
	sum, err := sim.Run(ctx, cfg, sim.Options{Resume: resume, Transport: coord.Transport, Observer: roundPrinter(stdout, cfg.Rounds)})
	if st := coord.Stats(); len(st) > 0 {
		fmt.Fprintf(stderr, "fedsim server: data plane events: %v\n", st)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "final test accuracy %.4f (best %.4f at round %d); upload %s, download %s; %d client failures; %.1f s; outputs in %s\n",
		sum.FinalTestAcc, sum.BestTestAcc, sum.BestRound, fmtBytes(sum.UploadBytes), fmtBytes(sum.DownloadBytes), len(sum.Failures), sum.WallS, cfg.Out)
	return err
}

// roundPrinter prints one line per round (a server's output is a log).
func roundPrinter(w io.Writer, rounds int) sim.Observer {
	return sim.Observer{
		Start: func(first, _ int) {
			if first > 1 {
				fmt.Fprintf(w, "resuming after round %d\n", first-1)
			}
		},
		RoundStart: func(r, n int) { fmt.Fprintf(w, "round %d: %d tasks sent\n", r, n) },
		Note:       func(msg string) { fmt.Fprintf(w, "note: %s\n", msg) },
		RoundEnd: func(m sim.Metrics) {
			fmt.Fprintf(w, "round %d/%d  test acc %.4f  loss %.4f  clients ok %d/%d  up %s  down %s  %.1f s\n",
				m.Round, rounds, m.TestAcc, m.TestLoss, m.ClientsOK, m.ClientsSampled, fmtBytes(m.UploadBytes), fmtBytes(m.DownloadBytes), m.WallS)
		},
	}
}

// lineLogger writes log lines with a prefix and the time.
func lineLogger(w io.Writer, who string) func(string, ...any) {
	var mu sync.Mutex
	return func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(w, "%s %s: %s\n", time.Now().Format("15:04:05.000"), who, fmt.Sprintf(format, args...))
	}
}

// WorkerOptions are the flags of `fedsim worker`.
type WorkerOptions struct {
	Join     string
	Slots    int
	Listen   string
	GRPC     string
	Certs    string
	Insecure bool
	DataDir  string
	Name     string
}

func newWorkerCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &WorkerOptions{}
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Host simulated clients for a fedsim server",
		Long: `worker joins the cluster of the server at --join, receives the run's
configuration, loads the data set and the partition from it, and runs the
tasks of the clients the server assigns to it, --slots at a time. It runs
until interrupted, and rejoins when a restarted server comes back.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return RunWorker(c.Context(), o, stdout, stderr) },
	}
	f := cmd.Flags()
	f.StringVar(&o.Join, "join", "", "the server's gossip address (host:port)")
	f.IntVar(&o.Slots, "slots", 1, "tasks run at once")
	f.StringVar(&o.Listen, "listen", "127.0.0.1:0", "this worker's gossip address")
	f.StringVar(&o.GRPC, "grpc", "127.0.0.1:0", "this worker's gRPC address (tasks arrive here)")
	f.StringVar(&o.Certs, "certs", "", "credentials folder from fedsim certs")
	f.BoolVar(&o.Insecure, "insecure", false, "no encryption or authentication (loopback addresses only)")
	f.StringVar(&o.DataDir, "data-dir", "", "data folder on this machine (overrides the server's)")
	f.StringVar(&o.Name, "name", "", "node name (default: host, process id and a random suffix)")
	return cmd
}

// RunWorker runs `fedsim worker`.
func RunWorker(ctx context.Context, o *WorkerOptions, stdout, stderr io.Writer) error {
	if o.Join == "" {
		return usagef("--join is required: the server's gossip address, as fedsim server prints it")
	}
	if o.Slots < 1 {
		return usagef("--slots %d: want at least 1", o.Slots)
	}
	key, srvTLS, _, err := creds(o.Certs, o.Insecure, o.Join, o.Listen, o.GRPC)
	if err != nil {
		return err
	}
	logf := lineLogger(stderr, "worker")
	err = cluster.RunWorker(ctx, cluster.WorkerConfig{Name: o.Name, Join: o.Join, Bind: o.Listen, GRPC: o.GRPC, Slots: o.Slots,
		Key: key, TLS: srvTLS, Insecure: o.Insecure, DataDir: o.DataDir, Log: logf,
		OnTask: func(client, round int, done bool) {
			if !done {
				logf("round %d client %d started", round, client)
			}
		}})
	if err == nil || errors.Is(err, context.Canceled) {
		fmt.Fprintln(stdout, "fedsim worker: stopped")
		return nil
	}
	return err
}

// ClusterOptions are the flags of `fedsim cluster`.
type ClusterOptions struct {
	Run      RunOptions
	Workers  int
	Slots    int
	MaxTasks int
	Insecure bool
	// RunArgs are the run flags given, passed on to the server process.
	RunArgs []string
}

func newClusterCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &ClusterOptions{}
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Run a simulation as a local cluster: a server and --workers worker processes (same flags as run)",
		Long: `cluster starts a fedsim server and --workers fedsim worker processes of this
binary on loopback, with fresh credentials (gossip key and mutual TLS, unless
--insecure), runs the experiment given by the run flags, streams the server's
progress and the workers' logs, and stops every process at the end or on
Ctrl-C (each child in its own process group, terminated, then killed).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			o.Run.Changed = runChanged(c.Flags())
			o.RunArgs = nil
			c.Flags().Visit(func(fl *pflag.Flag) {
				if !clusterFlags[fl.Name] {
					o.RunArgs = append(o.RunArgs, "--"+fl.Name+"="+fl.Value.String())
				}
			})
			return RunCluster(c.Context(), o, stdout, stderr)
		},
	}
	f := cmd.Flags()
	addRunFlagsExceptWorkers(f, &o.Run)
	f.IntVar(&o.Workers, "workers", 2, "worker processes")
	f.IntVar(&o.Slots, "slots", 1, "tasks each worker runs at once")
	f.IntVar(&o.MaxTasks, "max-tasks", runtime.GOMAXPROCS(0), "tasks in flight across all workers (default: the cores, as fedsim run's --workers; 0: every slot)")
	f.BoolVar(&o.Insecure, "insecure", false, "plain text on loopback (default: fresh credentials)")
	return cmd
}

// workerThreads is a local cluster worker's GOMAXPROCS: its share of the
// cores, by the tasks it may run at once (its slots, or fewer under the
// cap) among all the tasks that may run at once (at least one thread).
func workerThreads(cores, maxTasks, workers, slots int) int {
	total := workers * slots
	if maxTasks > 0 {
		total = min(total, maxTasks)
	}
	total = max(total, 1)
	return max(1, cores*min(slots, total)/total)
}

// child is a process of the local cluster.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func startChild(name string, args, env []string, out, errw io.Writer, onLine func(string)) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("cluster: finding this program to start %s: %w", name, err)
	}
	cmd := exec.Command(exe, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	// Own process group: a terminal's Ctrl-C reaches only us, and we stop
	// each child with everything it started. Pdeathsig: no orphan if we
	// are killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	cmd.Stderr = &prefixWriter{w: errw, prefix: "[" + name + "] "}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cluster: starting %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			line := s.Text()
			fmt.Fprintf(out, "[%s] %s\n", name, line)
			if onLine != nil {
				onLine(line)
			}
		}
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// stop terminates the child's process group and kills it after grace.
func (c *child) stop(grace time.Duration) {
	select {
	case <-c.done:
		return
	default:
	}
	syscall.Kill(-c.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
}

// prefixWriter prefixes every line (children's logs share our stderr).
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.buf[:i])
		p.buf = p.buf[i+1:]
	}
}

// lockedWriter serializes writes (one line at a time) to a writer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// RunCluster runs `fedsim cluster`.
func RunCluster(ctx context.Context, o *ClusterOptions, stdout, stderr io.Writer) error {
	if o.Workers < 1 || o.Slots < 1 {
		return usagef("--workers %d and --slots %d: want at least 1", o.Workers, o.Slots)
	}
	if o.MaxTasks < 0 {
		return usagef("--max-tasks %d must not be negative (0: every worker slot at once)", o.MaxTasks)
	}
	// Check the experiment here, before any process starts.
	cfg, _, err := resolveRunConfig(&o.Run)
	if err != nil {
		return err
	}
	// Every child's output goes through these, from several goroutines.
	stdout, stderr = &lockedWriter{w: stdout}, &lockedWriter{w: stderr}
	credArgs := []string{"--insecure"}
	if !o.Insecure {
		dir, err := os.MkdirTemp("", "fedsim-certs-")
		if err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		defer os.RemoveAll(dir)
		if err := RunCerts(&CertsOptions{Out: dir, Hosts: []string{"127.0.0.1", "localhost"}, Days: 1, Force: true}, io.Discard); err != nil {
			return err
		}
		credArgs = []string{"--certs", dir}
	}
	addr := make(chan string, 1)
	// The processes share this machine's cores: the server runs at most
	// --max-tasks tasks at once across the workers, as fedsim run does.
	args := append([]string{"server", "--listen", "127.0.0.1:0", "--wait-workers", fmt.Sprint(o.Workers), "--max-tasks", fmt.Sprint(o.MaxTasks)}, credArgs...)
	srv, err := startChild("server", append(args, o.RunArgs...), nil, stdout, stderr, func(line string) {
		if a, ok := strings.CutPrefix(line, "fedsim server: gossip at "); ok {
			a, _, _ = strings.Cut(a, ";")
			select {
			case addr <- a:
			default:
			}
		}
	})
	if err != nil {
		return err
	}
	var workers []*child
	defer func() {
		// Server first (it checkpoints on the way out), then the workers.
		srv.stop(10 * time.Second)
		for _, w := range workers {
			w.stop(5 * time.Second)
		}
	}()
	var join string
	select {
	case join = <-addr:
	case <-srv.done:
		return fmt.Errorf("cluster: the server exited before listening: %v", srv.err)
	case <-time.After(60 * time.Second):
		return errors.New("cluster: the server did not start listening within 60 s")
	case <-ctx.Done():
		return ctx.Err()
	}
	// A worker's kernels split across GOMAXPROCS threads. With at most
	// --max-tasks tasks at once on this machine, a worker gets the share of
	// the cores of the tasks it may run, as clients do in one process (where
	// they share one pool of threads); more threads than cores make the
	// kernels' chunks wait for each other. A GOMAXPROCS set by the user wins.
	var workerEnv []string
	if _, set := os.LookupEnv("GOMAXPROCS"); !set && o.MaxTasks > 0 {
		workerEnv = []string{fmt.Sprintf("GOMAXPROCS=%d", workerThreads(runtime.GOMAXPROCS(0), o.MaxTasks, o.Workers, o.Slots))}
	}
	for i := range o.Workers {
		name := fmt.Sprintf("worker %d", i+1)
		wargs := append([]string{"worker", "--join", join, "--slots", fmt.Sprint(o.Slots), "--name", fmt.Sprintf("worker-%d", i+1)}, credArgs...)
		w, err := startChild(name, wargs, workerEnv, stdout, stderr, nil)
		if err != nil {
			return err
		}
		workers = append(workers, w)
	}
	fmt.Fprintf(stdout, "fedsim cluster: server and %d workers running (outputs in %s)\n", o.Workers, cfg.Out)
	select {
	case <-srv.done:
		if srv.err != nil {
			return fmt.Errorf("cluster: the server failed: %v", srv.err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cluster: interrupted; every process stopped (resume with fedsim cluster --resume %s): %w", cfg.Out, ctx.Err())
	}
}
