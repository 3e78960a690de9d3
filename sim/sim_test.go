package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedsim/fedsim/client"
	"github.com/fedsim/fedsim/distill"
	"github.com/fedsim/fedsim/internal/npz"
)

// tiny is a fast experiment on a small MNIST slice.
func tiny(t *testing.T, out string) Config {
	c := DefaultConfig()
	c.TrainLimit, c.TestLimit = 2000, 500
	c.Clients, c.Rounds, c.Fraction = 4, 2, 0.5
	c.Model, c.IPC, c.DistillIters, c.BatchReal = "convnet-w8", 2, 3, 32
	c.ServerSteps, c.ServerBatch = 4, 64
	c.LocalBatch = 64
	c.Out = out
	return c
}

func run(t *testing.T, c Config, opt Options) *Summary {
	t.Helper()
	s, err := Run(context.Background(), c, opt)
	if err != nil {
		if strings.Contains(err.Error(), "go mod download") {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	return s
}

func metricsWithoutWall(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	return BlankTimings(string(b))
}

func TestEndToEndWritesOutputs(t *testing.T) {
	dir := t.TempDir()
	s := run(t, tiny(t, dir), Options{})
	if s.Rounds != 2 || s.UploadBytes <= 0 || s.DownloadBytes <= 0 || s.Strategy != "oneshot" {
		t.Fatalf("summary %+v", s)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, MetricsFile))
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d metrics lines, want 2", len(lines))
	}
	var m Metrics
	if err := json.Unmarshal([]byte(lines[1]), &m); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"round", "test_acc", "test_loss", "upload_bytes", "download_bytes", "clients_ok", "clients_dropped", "wall_s"} {
		if !strings.Contains(lines[1], `"`+key+`"`) {
			t.Errorf("metrics line lacks %s: %s", key, lines[1])
		}
	}
	if m.Round != 2 || m.ClientsOK != 2 || m.SyntheticImages == 0 || m.CumUploadBytes != s.UploadBytes {
		t.Fatalf("round 2 metrics %+v", m)
	}
	var cl []ClientInfo
	b, _ := os.ReadFile(filepath.Join(dir, ClientsFile))
	if err := json.Unmarshal(b, &cl); err != nil || len(cl) != 4 || len(cl[0].Histogram) != 10 {
		t.Fatalf("clients.json: %v %+v", err, cl)
	}
	total := 0
	for _, c := range cl {
		total += c.Samples
	}
	if total != 2000 {
		t.Fatalf("histograms count %d samples, want 2000", total)
	}
	pngs := 0
	for _, f := range s.Files {
		p := filepath.Join(dir, f)
		st, err := os.Stat(p)
		if err != nil || st.Size() == 0 {
			t.Fatalf("output %s: %v", f, err)
		}
		if strings.HasSuffix(f, ".png") {
			fh, _ := os.Open(p)
			if _, err := png.DecodeConfig(fh); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			fh.Close()
			pngs++
		}
	}
	if pngs != 2+3 { // two plots, three clients' grids (2 rounds × 2 clients)
		t.Fatalf("%d PNG files in %v", pngs, s.Files)
	}
	// A second run into the same folder must not overwrite it silently.
	if _, err := Run(context.Background(), tiny(t, dir), Options{}); err == nil || !strings.Contains(err.Error(), "resume") {
		t.Fatalf("rerun into a used folder: %v", err)
	}
}

// sameFile reports whether file name holds the same bytes in folders a
// and b (it fails the test if either is missing).
func sameFile(t *testing.T, a, b, name string) bool {
	t.Helper()
	fa, err := os.ReadFile(filepath.Join(a, name))
	if err != nil {
		t.Fatal(err)
	}
	fb, err := os.ReadFile(filepath.Join(b, name))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(fa, fb)
}

func TestSameSeedSameMetrics(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	run(t, tiny(t, a), Options{})
	run(t, tiny(t, b), Options{Workers: 1})
	if ma, mb := metricsWithoutWall(t, a), metricsWithoutWall(t, b); ma != mb {
		t.Fatalf("same seed, different metrics:\n%s\n%s", ma, mb)
	}
	c := t.TempDir()
	cfg := tiny(t, c)
	cfg.Seed = 2
	run(t, cfg, Options{})
	if metricsWithoutWall(t, a) == metricsWithoutWall(t, c) {
		t.Fatal("seeds 1 and 2 gave identical metrics")
	}
}

func TestResumeEqualsUninterrupted(t *testing.T) {
	for _, strategy := range []string{"oneshot", "fedavg", "dynafed", "dynafed-soft", "feddm-dp"} {
		t.Run(strategy, func(t *testing.T) {
			full, part := t.TempDir(), t.TempDir()
			cfg := tiny(t, full)
			switch strategy {
			case "feddm-dp":
				// Private distillation every round: the clients' spent ε
				// (metrics' epsilon_clients) must continue across the
				// resume, not restart from zero.
				cfg.Strategy, cfg.DPNoise, cfg.DPClip, cfg.DPSampleRate, cfg.Fraction = "feddm", 1, 1, 0.5, 0.5
			case "fedavg":
				cfg.Distill = "none"
			case "dynafed":
				// Two recorded rounds: the resume after round 1 must bring
				// the trajectory back, and round 2 distills and fine-tunes.
				cfg.Distill, cfg.Strategy = "none", "dynafed"
				cfg.ServerTMRounds, cfg.ServerTMSpan, cfg.ServerTMIters, cfg.ServerTMSynSteps, cfg.ServerTMIPC, cfg.ServerTMSteps = 2, 1, 3, 2, 1, 3
			case "dynafed-soft":
				// The set and its learned labels are made after round 1:
				// the checkpoint must carry the labels into round 2's
				// fine-tuning.
				cfg.Distill, cfg.Strategy, cfg.ServerTMSoftLabels, cfg.ServerTMLRLabel = "none", "dynafed", true, 50
				cfg.ServerTMRounds, cfg.ServerTMSpan, cfg.ServerTMIters, cfg.ServerTMSynSteps, cfg.ServerTMIPC, cfg.ServerTMSteps = 1, 1, 3, 2, 1, 3
			}
			run(t, cfg, Options{})
			cfg.Out, cfg.Rounds = part, 1
			run(t, cfg, Options{})
			// A metrics line written after the checkpoint (a crash between
			// the two) must not survive the resume.
			f, _ := os.OpenFile(filepath.Join(part, MetricsFile), os.O_APPEND|os.O_WRONLY, 0)
			f.WriteString(`{"round":2,"stale":true}` + "\n")
			f.Close()
			cfg.Rounds = 2
			s := run(t, cfg, Options{Resume: true})
			if s.ResumedAfter != 1 {
				t.Fatalf("resumed after %d rounds, want 1", s.ResumedAfter)
			}
			if a, b := metricsWithoutWall(t, full), metricsWithoutWall(t, part); a != b {
				t.Fatalf("resumed run differs:\n%s\n%s", a, b)
			}
			if !sameFile(t, full, part, GlobalFile) {
				t.Fatal("resumed run ends with different weights")
			}
			if strings.HasPrefix(strategy, "dynafed") {
				syn, err := distill.ReadSynthetic(filepath.Join(part, ServerSetFile), 0)
				if err != nil {
					t.Fatalf("server set: %v", err)
				}
				if soft := syn.YSoft != nil; soft != cfg.ServerTMSoftLabels {
					t.Fatalf("server set with soft labels %v, want %v", soft, cfg.ServerTMSoftLabels)
				}
			}
			cfg.Model = "convnet-w4"
			if _, err := Run(context.Background(), cfg, Options{Resume: true}); err == nil {
				t.Fatal("resume with a different model accepted")
			}
		})
	}
}

func TestFailuresDropoutAndStragglers(t *testing.T) {
	dir := t.TempDir()
	cfg := tiny(t, dir)
	cfg.Distill, cfg.Strategy, cfg.Mu = "none", "fedprox", 0.1
	cfg.Clients, cfg.Fraction, cfg.Rounds = 8, 1, 2
	cfg.Dropout, cfg.Stragglers = 0.2, 0.2
	s := run(t, cfg, Options{FailClient: func(tk *client.Task) error {
		if tk.Client == 3 {
			return errors.New("injected failure")
		}
		return nil
	}})
	if s.Strategy != "fedprox" {
		t.Fatalf("strategy %s", s.Strategy)
	}
	b, _ := os.ReadFile(filepath.Join(dir, MetricsFile))
	var offline, late int
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var m Metrics
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		if m.ClientsOK+m.ClientsDropped != m.ClientsSampled || m.ClientsDropped != m.ClientsFailed+m.ClientsLate+m.ClientsOffline {
			t.Fatalf("inconsistent counts %+v", m)
		}
		offline += m.ClientsOffline
		late += m.ClientsLate
	}
	if offline == 0 || late == 0 {
		t.Fatalf("no offline (%d) or late (%d) client in 16 draws at 0.2", offline, late)
	}
	found := false
	for _, f := range s.Failures {
		if f.Client == 3 && strings.Contains(f.Error, "injected failure") {
			found = true
		}
	}
	if !found && offline+late < 4 {
		t.Fatalf("client 3's failure not reported: %+v", s.Failures)
	}
}

func TestFedDMGradientMatching(t *testing.T) {
	cfg := tiny(t, t.TempDir())
	cfg.Distill, cfg.Strategy, cfg.Rounds, cfg.IPC, cfg.DistillIters = "gm", "feddm", 2, 1, 2
	s := run(t, cfg, Options{})
	if s.Strategy != "feddm" || len(s.Failures) != 0 {
		t.Fatalf("%+v", s)
	}
	b, _ := os.ReadFile(filepath.Join(cfg.Out, MetricsFile))
	var m Metrics
	json.Unmarshal(bytes.SplitN(b, []byte("\n"), 2)[0], &m)
	if m.DownloadBytes < 1000 {
		t.Fatalf("feddm tasks carry the global model, but round 1 downloaded %d bytes", m.DownloadBytes)
	}
}

// TestOneShotWithDistillMethods runs clients with methods of package
// distill (a kernel method and a coreset) through the whole simulation.
func TestOneShotWithDistillMethods(t *testing.T) {
	for _, method := range []string{"kip", "herding"} {
		cfg := tiny(t, t.TempDir())
		cfg.Distill, cfg.Rounds, cfg.IPC, cfg.DistillIters = method, 1, 1, 2
		s := run(t, cfg, Options{})
		if s.Strategy != "oneshot" {
			t.Fatalf("%s: %+v", method, s)
		}
		b, _ := os.ReadFile(filepath.Join(cfg.Out, MetricsFile))
		var m Metrics
		json.Unmarshal(bytes.SplitN(b, []byte("\n"), 2)[0], &m)
		if m.ClientsOK == 0 || m.UploadBytes == 0 {
			t.Fatalf("%s: round 1 heard %d clients and uploaded %d bytes", method, m.ClientsOK, m.UploadBytes)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Rounds = -1 }, "rounds -1"},
		{func(c *Config) { c.Fraction = 0 }, "fraction 0"},
		{func(c *Config) { c.Fraction = 1.5 }, "fraction 1.5"},
		{func(c *Config) { c.TrainLimit, c.Clients = 10, 20 }, "more clients than the 10 training samples"},
		{func(c *Config) { c.Partition = "zipf" }, `partition "zipf"`},
		{func(c *Config) { c.Strategy = "dynafed" }, "use distill none"},
		{func(c *Config) { c.ServerTM, c.ServerTMRounds, c.ServerTMSpan = true, 1, 2 }, "server_tm_rounds 1 and server_tm_span 2"},
		{func(c *Config) { c.ServerTM, c.ServerTMImgOptim = true, "rmsprop" }, `server_tm_img_optim "rmsprop": want sgd or adam`},
		{func(c *Config) { c.LocalOptim = "rmsprop" }, `local_optim "rmsprop": want sgd or adam`},
		{func(c *Config) { c.ServerTM, c.ServerTMAverage = true, 3 }, "server_tm_average 3: want 0 (off) to server_tm_span 2"},
		{func(c *Config) { c.ServerTM, c.ServerTMLRImg = true, -1 }, "server_tm_lr_img -1"},
		{func(c *Config) { c.Distill, c.Strategy = "none", "oneshot" }, "needs distillation"},
		{func(c *Config) { c.Model = "transformer" }, "transformer"},
		{func(c *Config) { c.Dropout = 1 }, "dropout 1"},
		{func(c *Config) { c.Out = "" }, "out"},
		{func(c *Config) { c.DistillInit = "zeros" }, `distill_init "zeros"`},
		{func(c *Config) { c.DistillInit, c.DPEpsilon, c.DPClip = "real", 10, 1 }, "real images would be released"},
		{func(c *Config) { c.DistillInit, c.Distill = "noise", "none" }, "no distillation to start"},
		{func(c *Config) { c.DPCenter = true }, "dp_center without differential privacy"},
		{func(c *Config) { c.DPCenter, c.Distill, c.DPEpsilon, c.DPClip = true, "gm", 10, 1 }, "not distill gm"},
		{func(c *Config) { c.DPEpsilon, c.DPClip, c.Model = 10, 1, "convnet-bn" }, "batch norm"},
		{func(c *Config) { c.Distill = "flow" }, `distill "flow": unknown distillation method`},
		{func(c *Config) { c.Distill = "tesla" }, "expert trajectories"},
		{func(c *Config) { c.Distill, c.Strategy = "kip", "feddm" }, "use oneshot with distill kip"},
		{func(c *Config) { c.Distill, c.DPEpsilon, c.DPClip = "kip", 10, 1 }, "distill kip has no private variant"},
		{func(c *Config) { c.DPMinClass = 50 }, "dp_min_class 50"},
		{func(c *Config) { c.DPMinClass, c.DPEpsilon, c.DPClip = -1, 10, 1 }, "dp_min_class -1"},
		{func(c *Config) { c.DistillInit, c.Distill = "mean", "gm" }, "one-shot dm"},
		{func(c *Config) { c.ImageSteps = -1 }, "image_steps -1"},
		{func(c *Config) { c.DPProject = 8 }, "dp_project 8"},
		{func(c *Config) { c.DPProject, c.DPEpsilon, c.DPClip = -2, 10, 1 }, "dp_project -2"},
		{func(c *Config) { c.DPProject, c.Distill, c.DPEpsilon, c.DPClip = 8, "gm", 10, 1 }, "random projection is for private distribution matching"},
		{func(c *Config) { c.ImageSteps, c.Distill = 3, "gm" }, "image_steps 3"},
		{func(c *Config) { c.ImageSteps, c.Strategy = 2, "feddm" }, "image_steps 2"},
		{func(c *Config) { c.DistillInit, c.Strategy = "mean", "feddm" }, "one-shot dm"},
		{func(c *Config) { c.DistillInit, c.DPEpsilon, c.DPClip, c.DPInitNoise = "mean", 10, 1, 0 }, "dp_init_noise 0"},
		{func(c *Config) { c.DistillInit, c.DPEpsilon, c.DPClip, c.DPInitNoise = "mean", 1, 1, 0.3 }, "releases before the steps"},
	}
	for _, tc := range cases {
		c := DefaultConfig()
		tc.edit(&c)
		if _, err := c.Resolve(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error mentioning %q, got %v", tc.want, err)
		}
	}
	c := DefaultConfig()
	if err := ParseConfig([]byte("clients: 10\nrounds: 3\nalpah: 0.1\n"), "x.yaml", &c); err == nil || !strings.Contains(err.Error(), "alpah") {
		t.Errorf("unknown key: %v", err)
	}
	if err := ParseConfig([]byte("clients: ten\n"), "x.yaml", &c); err == nil {
		t.Error("wrong type accepted")
	}
	// The class-mean release is paid for from the budget: more noise on
	// the iterations than without it.
	c = DefaultConfig()
	c.DPEpsilon, c.DPClip, c.DPSampleRate, c.DistillIters = 10, 1, 0.5, 200
	plain, err := c.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	c.DistillInit = "mean"
	mean, err := c.Resolve()
	if err != nil || !(mean.DPNoise > plain.DPNoise) {
		t.Errorf("σ with the class-mean release %g (%v), without %g: want more", mean.DPNoise, err, plain.DPNoise)
	}
	c = DefaultConfig()
	c.Distill, c.Strategy = "none", "dynafed"
	if r, err := c.Resolve(); err != nil || r.Strategy != "fedavg" || !r.ServerTM {
		t.Errorf("strategy dynafed resolved to %q, server_tm %v (%v): want fedavg with server_tm", r.Strategy, r.ServerTM, err)
	}
	c = DefaultConfig()
	if err := ParseConfig([]byte("clients: 10\nfraction: 0.5\n"), "x.yaml", &c); err != nil || c.Clients != 10 || c.Fraction != 0.5 || c.Rounds != DefaultConfig().Rounds {
		t.Errorf("overlay: %v %+v", err, c)
	}
}

// The experiment files in configs/ must stay valid.
func TestShippedConfigs(t *testing.T) {
	files, _ := filepath.Glob("../configs/*.yaml")
	if len(files) == 0 {
		t.Fatal("no configs/*.yaml")
	}
	for _, f := range files {
		c := DefaultConfig()
		if err := ReadConfigFile(f, &c); err != nil {
			t.Error(err)
			continue
		}
		if _, err := c.Resolve(); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestResumeWithinServerDistillation stops a run in the middle of the
// server's distillation (after its progress is saved at iteration 20 of
// 25) and resumes it: the resumed run must end exactly as an uninterrupted
// one, and leave no progress file behind. With a one-round trajectory the
// stop comes before any checkpoint, so the run is started again rather
// than resumed; with two it comes after round 1's checkpoint.
func TestResumeWithinServerDistillation(t *testing.T) {
	for _, record := range []int{1, 2} {
		t.Run(fmt.Sprintf("trajectory of %d rounds", record), func(t *testing.T) {
			full, part := t.TempDir(), t.TempDir()
			cfg := tiny(t, full)
			cfg.Distill, cfg.Strategy, cfg.Rounds = "none", "dynafed", 3
			cfg.ServerTMImgOptim, cfg.ServerTMLRImg, cfg.ServerTMSoftLabels, cfg.ServerTMLRLabel = "adam", 0.05, true, 0.05
			cfg.ServerTMRounds, cfg.ServerTMSpan, cfg.ServerTMIters, cfg.ServerTMSynSteps, cfg.ServerTMIPC, cfg.ServerTMSteps = record, 1, 25, 2, 1, 3
			var saves []int
			run(t, cfg, Options{serverProgressSaved: func(done int) { saves = append(saves, done) }})
			if fmt.Sprint(saves) != "[10 20]" {
				t.Fatalf("progress saved after iterations %v, want [10 20]", saves)
			}
			if _, err := os.Stat(filepath.Join(full, ServerProgressFile)); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("a finished run left its progress file (%v)", err)
			}

			cfg.Out = part
			ctx, stop := context.WithCancel(context.Background())
			_, err := Run(ctx, cfg, Options{serverProgressSaved: func(done int) {
				if done == 20 {
					stop()
				}
			}})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("stopped run: %v, want a cancellation", err)
			}
			if _, err := os.Stat(filepath.Join(part, ServerProgressFile)); err != nil {
				t.Fatalf("no progress file after the stop: %v", err)
			}
			saves = nil
			run(t, cfg, Options{Resume: record > 1, serverProgressSaved: func(done int) { saves = append(saves, done) }})
			if len(saves) != 0 {
				t.Fatalf("the resumed distillation saved progress after %v, want no save (it continued from 20)", saves)
			}
			if a, b := metricsWithoutWall(t, full), metricsWithoutWall(t, part); a != b {
				t.Fatalf("resumed run differs:\n%s\n%s", a, b)
			}
			if !sameFile(t, full, part, ServerSetFile) {
				t.Fatal("the resumed run made another server set")
			}
			if _, err := os.Stat(filepath.Join(part, ServerProgressFile)); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("the resumed run left its progress file (%v)", err)
			}
		})
	}
}

// TestServerProgressFileErrors checks that a damaged progress file is
// refused with a message naming the array and the fix, and that progress
// of another distillation is set aside with a note (the run stops in round
// 1, so it is started again, not resumed).
func TestServerProgressFileErrors(t *testing.T) {
	dir := t.TempDir()
	cfg := tiny(t, dir)
	cfg.Distill, cfg.Strategy, cfg.Rounds = "none", "dynafed", 2
	cfg.ServerTMRounds, cfg.ServerTMSpan, cfg.ServerTMIters, cfg.ServerTMSynSteps, cfg.ServerTMIPC, cfg.ServerTMSteps = 1, 1, 15, 2, 1, 3
	path := filepath.Join(dir, ServerProgressFile)
	ctx, stop := context.WithCancel(context.Background())
	_, err := Run(ctx, cfg, Options{serverProgressSaved: func(int) { stop() }})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "progress is saved in "+path+": start the same run again") {
		t.Fatalf("stopped run: %v, want a cancellation that says how to continue", err)
	}
	p, err := loadServerProgress(path)
	if err != nil || p.Done != 10 || p.Velocity == nil || p.X == nil || p.ImageAdam.Steps != 0 {
		t.Fatalf("progress read back: %+v, %v", p, err)
	}
	kept, err := npz.ReadOrdered(path)
	if err != nil {
		t.Fatal(err)
	}
	// edited returns the saved arrays with name's replaced by a (or dropped
	// if a is nil).
	edited := func(name string, a *npz.Array) []*npz.Array {
		var out []*npz.Array
		for _, k := range kept {
			switch {
			case k.Name != name:
				out = append(out, k)
			case a != nil:
				a.Name = name
				out = append(out, a)
			}
		}
		return out
	}
	arr := func(shape []int, data any) *npz.Array {
		a, err := npz.New("_", shape, data)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	x := p.X.Data
	for _, c := range []struct {
		name   string
		arrays []*npz.Array // nil: garbage bytes
		want   []string
	}{
		{"not an npz", nil, []string{"delete the file to distill afresh"}},
		{"no images", edited("x", nil), []string{"no x array", "delete the file"}},
		{"done as float64", edited("done", arr([]int{1}, []float64{10})), []string{"done is float64 [1], want int64"}},
		{"lr of one value", edited("lr", arr([]int{1}, []float64{0.01})), []string{"lr has shape [1], want 2 values"}},
		{"images' shape", edited("x", arr([]int{1, len(x)}, x)), []string{"images has shape [1 ", ServerProgressFile + ": delete it to distill afresh"}},
		{"step size", edited("lr", arr([]int{2}, []float64{-1, 0})), []string{"step size -1", "delete it to distill afresh"}},
	} {
		if c.arrays == nil {
			if err := os.WriteFile(path, []byte("garbage"), 0o644); err != nil {
				t.Fatal(err)
			}
		} else if err := npz.Write(path, c.arrays); err != nil {
			t.Fatal(err)
		}
		_, err := Run(context.Background(), cfg, Options{})
		for _, want := range c.want {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %v, want one containing %q", c.name, err, want)
			}
		}
	}

	// Progress of another distillation: set aside with a note, and the
	// run distills afresh.
	if err := npz.Write(path, edited("key", arr([]int{4}, []uint8("abcd")))); err != nil {
		t.Fatal(err)
	}
	var notes []string
	run(t, cfg, Options{Observer: Observer{Note: func(msg string) { notes = append(notes, msg) }}})
	if len(notes) != 1 || !strings.Contains(notes[0], "saved by another distillation") {
		t.Fatalf("notes %q, want one about progress of another distillation", notes)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the finished run left the set-aside progress (%v)", err)
	}

	// Progress left behind after a checkpoint that holds the set (a stop
	// between the two): a resume removes it without reading it.
	if err := os.WriteFile(path, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Rounds = 3
	run(t, cfg, Options{Resume: true})
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a resume after the set was made left the progress file (%v)", err)
	}
}
