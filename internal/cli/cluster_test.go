package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fedsim/fedsim/sim"
)

// The multi-process tests run this test binary as fedsim: with
// FEDSIM_TEST_MAIN=1 it is the command line (fedsim cluster starts its
// children through os.Executable, which is this binary).
func TestMain(m *testing.M) {
	if os.Getenv("FEDSIM_TEST_MAIN") == "1" {
		os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// clusterRunArgs is a tiny experiment whose tasks take a little while (so
// a worker can be killed in the middle of one).
func clusterRunArgs(out string, rounds int) []string {
	return []string{"--train-limit", "1200", "--test-limit", "300", "--clients", "6", "--fraction", "1",
		"--rounds", fmt.Sprint(rounds), "--strategy", "feddm", "--model", "convnet-w4", "--ipc", "1",
		"--distill-iters", "40", "--batch-real", "16", "--server-steps", "3", "--server-batch", "32", "--seed", "3", "--out", out, "--grids", "0"}
}

func TestCertsWritesCredentials(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	var out, errb bytes.Buffer
	if code := Main([]string{"certs", "--out", dir}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for name, mode := range map[string]os.FileMode{"ca.pem": 0o644, "ca-key.pem": 0o600, "node.pem": 0o644, "node-key.pem": 0o600, "gossip.key": 0o600} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: %v, mode %v, want %v", name, err, st.Mode().Perm(), mode)
		}
	}
	if code := Main([]string{"certs", "--out", dir}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "--force") {
		t.Fatalf("second certs run: exit %d, %q: want a refusal suggesting --force", code, errb.String())
	}
}

// A local cluster's workers split the cores among the tasks that may run
// at once.
func TestWorkerThreads(t *testing.T) {
	for _, c := range []struct{ cores, maxTasks, workers, slots, want int }{
		{2, 2, 4, 1, 1}, // the benchmark: 4 workers, 2 tasks at once on 2 cores
		{8, 8, 2, 1, 4}, // 2 workers can run only 2 tasks: 4 cores each
		{2, 2, 1, 2, 2}, // one worker runs both tasks
		{8, 3, 4, 1, 2},
		{2, 0, 4, 1, 1}, // no cap: 4 tasks share 2 cores
		{4, 0, 1, 1, 4},
	} {
		if got := workerThreads(c.cores, c.maxTasks, c.workers, c.slots); got != c.want {
			t.Errorf("%d cores, cap %d, %d workers × %d slots: %d threads per worker, want %d", c.cores, c.maxTasks, c.workers, c.slots, got, c.want)
		}
	}
}

func TestClusterFlagErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"worker", "--insecure"}, "--join is required"},
		{[]string{"worker", "--join", "10.0.0.1:7946", "--insecure"}, "loopback addresses only"},
		{[]string{"worker", "--join", "127.0.0.1:7946"}, "no credentials"},
		{[]string{"worker", "--join", "127.0.0.1:7946", "--slots", "0", "--insecure"}, "--slots 0"},
		{[]string{"server", "--listen", "0.0.0.0:7946", "--insecure"}, "loopback addresses only"},
		{[]string{"server", "--listen", "127.0.0.1:0"}, "no credentials"},
		{[]string{"server", "--rounds", "0", "--insecure"}, "rounds 0"},
		{[]string{"server", "--certs", "/nonexistent", "--listen", "127.0.0.1:0"}, "fedsim certs"},
		{[]string{"cluster", "--workers", "0"}, "--workers 0"},
		{[]string{"cluster", "--fraction", "2"}, "fraction 2"},
		{[]string{"cluster", "--max-tasks", "-1"}, "--max-tasks -1"},
		{[]string{"server", "--max-tasks", "-2", "--insecure", "--listen", "127.0.0.1:0"}, "--max-tasks -2"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := Main(c.args, &out, &errb)
		if code == 0 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q: want an error mentioning %q", c.args, code, errb.String(), c.want)
		}
	}
}

// metricsLines returns metrics.jsonl's lines, with the timings blanked
// when blank is set (to compare runs).
func metricsLines(t *testing.T, dir string, blank bool) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, sim.MetricsFile))
	if err != nil {
		return nil
	}
	s := strings.TrimSpace(string(b))
	if blank {
		s = sim.BlankTimings(s)
	}
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// proc is a fedsim child process of a test.
type proc struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	done  chan struct{}
	err   error
}

// spawn starts this binary as fedsim with args, in its own process group,
// and collects its output lines; cleanup kills the group.
func spawn(t *testing.T, args ...string) *proc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "FEDSIM_TEST_MAIN=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		s := bufio.NewScanner(r)
		for s.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, s.Text())
			p.mu.Unlock()
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("output of %v:\n%s", args, strings.Join(p.output(), "\n"))
		}
	})
	return p
}

func (p *proc) output() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// waitFor waits until a line matches re and returns its submatches.
func (p *proc) waitFor(t *testing.T, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, l := range p.output() {
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		}
		select {
		case <-p.done:
			t.Fatalf("process exited (%v) before printing a line matching %s", p.err, re)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no line matching %s within %v", re, timeout)
	return nil
}

func (p *proc) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("process did not finish within %v", timeout)
	}
	return nil
}

var addrRE = regexp.MustCompile(`fedsim server: gossip at ([0-9.:]+);`)

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func makeCerts(t *testing.T) string {
	dir := filepath.Join(t.TempDir(), "certs")
	if err := RunCerts(&CertsOptions{Out: dir, Hosts: []string{"127.0.0.1"}, Days: 1}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Three workers, one killed with SIGKILL while it runs a task: the run
// completes with every round and every client.
func TestClusterSurvivesWorkerKill(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	certs := makeCerts(t)
	out := filepath.Join(t.TempDir(), "out")
	srv := spawn(t, append([]string{"server", "--listen", "127.0.0.1:0", "--certs", certs, "--wait-workers", "3"}, clusterRunArgs(out, 2)...)...)
	join := srv.waitFor(t, addrRE, 60*time.Second)[1]
	var workers []*proc
	for i := range 3 {
		workers = append(workers, spawn(t, "worker", "--join", join, "--certs", certs, "--slots", "1", "--name", fmt.Sprintf("w%d", i)))
	}
	// Kill worker 0 as soon as it starts a task.
	workers[0].waitFor(t, regexp.MustCompile(`round \d+ client \d+ started`), 120*time.Second)
	if err := syscall.Kill(-workers[0].cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := srv.wait(t, 180*time.Second); err != nil {
		if strings.Contains(strings.Join(srv.output(), "\n"), "go mod download") {
			t.Skip("MNIST not available")
		}
		t.Fatalf("server: %v", err)
	}
	lines := metricsLines(t, out, false)
	if len(lines) != 2 {
		t.Fatalf("%d metrics lines, want 2", len(lines))
	}
	for _, l := range lines {
		var m sim.Metrics
		if err := json.Unmarshal([]byte(l), &m); err != nil || m.ClientsOK != 6 {
			t.Fatalf("round %d: %d of 6 clients ok (%v): %s", m.Round, m.ClientsOK, err, l)
		}
	}
	if !strings.Contains(strings.Join(srv.output(), "\n"), "retried") {
		t.Fatal("the server re-sent no task: the worker was not killed mid-task")
	}
}

// kill -9 of the server and a restart with --resume continue from the last
// checkpoint: the metrics equal an uninterrupted in-process run's, with no
// round lost or repeated; the workers rejoin by themselves.
func TestServerResumesAfterKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	ref := filepath.Join(t.TempDir(), "ref")
	var so, se bytes.Buffer
	if code := Main(append([]string{"run", "--quiet"}, clusterRunArgs(ref, 3)...), &so, &se); code != 0 {
		if strings.Contains(se.String(), "go mod download") {
			t.Skip(se.String())
		}
		t.Fatalf("reference run: %s", se.String())
	}
	want := metricsLines(t, ref, true)

	listen := freePort(t)
	out := filepath.Join(t.TempDir(), "out")
	srv := spawn(t, append([]string{"server", "--listen", listen, "--insecure"}, clusterRunArgs(out, 3)...)...)
	srv.waitFor(t, addrRE, 60*time.Second)
	for i := range 2 {
		spawn(t, "worker", "--join", listen, "--insecure", "--slots", "1", "--name", fmt.Sprintf("w%d", i))
	}
	srv.waitFor(t, regexp.MustCompile(`^round 1/3`), 120*time.Second)
	if err := syscall.Kill(-srv.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	srv.wait(t, 10*time.Second)
	done := len(metricsLines(t, out, false))
	if done < 1 || done >= 3 {
		t.Fatalf("%d rounds done when the server was killed: the test wants an interrupted run", done)
	}
	re := spawn(t, "server", "--listen", listen, "--insecure", "--resume", out, "--rounds", "3")
	if err := re.wait(t, 180*time.Second); err != nil {
		t.Fatalf("resumed server: %v", err)
	}
	if !strings.Contains(strings.Join(re.output(), "\n"), fmt.Sprintf("resuming after round %d", done)) {
		t.Fatalf("resumed server did not say it resumed after round %d", done)
	}
	if got := metricsLines(t, out, true); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("resumed cluster run differs from the uninterrupted run:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// fedsim cluster starts a server and workers of this binary with fresh
// credentials, finishes the run, and leaves no process behind.
func TestClusterCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	t.Setenv("FEDSIM_TEST_MAIN", "1")
	out := filepath.Join(t.TempDir(), "out")
	var so, se bytes.Buffer
	args := append([]string{"cluster", "--workers", "2", "--slots", "1"}, clusterRunArgs(out, 1)...)
	code := Main(args, &so, &se)
	if code != 0 {
		if strings.Contains(se.String(), "go mod download") {
			t.Skip(se.String())
		}
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, so.String(), se.String())
	}
	if !strings.Contains(so.String(), "[server] final test accuracy") || len(metricsLines(t, out, false)) != 1 {
		t.Fatalf("stdout:\n%s", so.String())
	}
	// Every child was waited for; none of our process group survives.
	if b, err := exec.Command("pgrep", "-P", fmt.Sprint(os.Getpid())).Output(); err == nil && len(bytes.TrimSpace(b)) > 0 {
		t.Fatalf("child processes left: %s", b)
	}
}

// Ctrl-C on fedsim cluster stops the server and every worker: no process
// of the cluster survives it.
func TestClusterInterruptLeavesNoProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	out := filepath.Join(t.TempDir(), "out")
	c := spawn(t, append([]string{"cluster", "--workers", "2", "--insecure"}, clusterRunArgs(out, 50)...)...)
	c.waitFor(t, regexp.MustCompile(`^\[server\] round 1: `), 120*time.Second)
	kids, err := exec.Command("pgrep", "-P", fmt.Sprint(c.cmd.Process.Pid)).Output()
	if err != nil {
		t.Fatalf("pgrep: %v", err)
	}
	pids := strings.Fields(string(kids))
	if len(pids) != 3 {
		t.Fatalf("cluster runs %d processes (%v), want a server and 2 workers", len(pids), pids)
	}
	if err := c.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := c.wait(t, 60*time.Second); err == nil {
		t.Fatal("interrupted cluster exited 0")
	}
	if !strings.Contains(strings.Join(c.output(), "\n"), "interrupted; every process stopped") {
		t.Fatalf("no interruption message")
	}
	for _, p := range pids {
		var pid int
		fmt.Sscan(p, &pid)
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("process %d of the cluster survived", pid)
		}
	}
}
