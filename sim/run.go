package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/fedsim/fedsim/client"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/federation"
	"github.com/fedsim/fedsim/federation/inproc"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/server"
	"github.com/fedsim/fedsim/tensor"
)

// Metrics is one line of metrics.jsonl.
type Metrics struct {
	Round            int     `json:"round"`
	TestAcc          float64 `json:"test_acc"`
	TestLoss         float64 `json:"test_loss"`
	UploadBytes      int64   `json:"upload_bytes"`
	DownloadBytes    int64   `json:"download_bytes"`
	CumUploadBytes   int64   `json:"cum_upload_bytes"`
	CumDownloadBytes int64   `json:"cum_download_bytes"`
	ClientsSampled   int     `json:"clients_sampled"`
	ClientsOK        int     `json:"clients_ok"`
	// ClientsDropped = failed + late + offline: sampled but not aggregated.
	ClientsDropped  int     `json:"clients_dropped"`
	ClientsFailed   int     `json:"clients_failed"`
	ClientsLate     int     `json:"clients_late"`
	ClientsOffline  int     `json:"clients_offline"`
	SyntheticImages int     `json:"synthetic_images,omitempty"`
	TrainLoss       float64 `json:"train_loss"`
	// TransportEvents counts, by reason, what the transport rejected or
	// retried during the round (a cluster's malformed or unexpected results,
	// unreachable workers); empty in process.
	TransportEvents map[string]int64 `json:"transport_events,omitempty"`
	WallS           float64          `json:"wall_s"`
	// ClientsS is the round's client phase (encoding the first task to the
	// last reply in), ServerS the server's aggregation (EndRound: training on the
	// synthetic union, fine-tuning): where a round's time goes, to compare
	// transports. Timings, like WallS.
	ClientsS float64 `json:"clients_s"`
	ServerS  float64 `json:"server_s"`
	// EpsilonMax and EpsilonMean are the ε spent so far at the run's
	// dp_delta by the clients heard from (differentially private runs);
	// EpsilonClients is each one's, by client id.
	EpsilonMax     float64         `json:"epsilon_max,omitempty"`
	EpsilonMean    float64         `json:"epsilon_mean,omitempty"`
	EpsilonClients map[int]float64 `json:"epsilon_clients,omitempty"`
}

// ClientFailure is a failed task, as summary.json lists them.
type ClientFailure struct {
	Round  int    `json:"round"`
	Client int    `json:"client"`
	Error  string `json:"error"`
}

// Summary is summary.json.
type Summary struct {
	Config           Config          `json:"config"`
	Strategy         string          `json:"strategy"`
	Rounds           int             `json:"rounds"`
	TrainSamples     int             `json:"train_samples"`
	TestSamples      int             `json:"test_samples"`
	FinalTestAcc     float64         `json:"final_test_acc"`
	FinalTestLoss    float64         `json:"final_test_loss"`
	BestTestAcc      float64         `json:"best_test_acc"`
	BestRound        int             `json:"best_round"`
	UploadBytes      int64           `json:"upload_bytes"`
	DownloadBytes    int64           `json:"download_bytes"`
	ModelParams      int             `json:"model_params"`
	SyntheticImages  int             `json:"synthetic_images,omitempty"`
	ResumedAfter     int             `json:"resumed_after,omitempty"`
	Failures         []ClientFailure `json:"failures"`
	WallS            float64         `json:"wall_s"`
	Files            []string        `json:"files"`
	ClientsPerRound  int             `json:"clients_per_round"`
	ComputeWorkers   int             `json:"compute_workers"`
	CheckpointFormat string          `json:"checkpoint_format"`
}

// Observer follows a run (for progress displays); any field may be nil.
// Calls come from the run's goroutine.
type Observer struct {
	// Start is called once with the first round to run and the last.
	Start func(first, rounds int)
	// RoundStart is called when a round's tasks go out.
	RoundStart func(round, clients int)
	// ClientDone is called as replies arrive.
	ClientDone func(round, done, total int)
	// RoundEnd is called with each round's metrics.
	RoundEnd func(m Metrics)
	// Note is called with a remark the user should see that is not an
	// error (e.g. saved progress set aside).
	Note func(msg string)
}

// Output file names in Config.Out.
const (
	MetricsFile    = "metrics.jsonl"
	SummaryFile    = "summary.json"
	ClientsFile    = "clients.json"
	CheckpointFile = "checkpoint.fsw"
	GlobalFile     = "global.npz"
	AccRoundPlot   = "accuracy_round.png"
	AccBytesPlot   = "accuracy_upload_bytes.png"
	// ServerSetFile and ServerGridPlot hold the server's synthetic set
	// (server-side trajectory matching).
	ServerSetFile  = "server_synthetic.npz"
	ServerGridPlot = "server_synthetic.png"
)

// Random streams of the simulation (with Config.Seed).
const (
	streamPartition = 1
	streamGlobal    = 2
	streamNetwork   = 3
)

// Options are run-time settings that are not part of the experiment.
type Options struct {
	// Resume continues from Config.Out's checkpoint.
	Resume bool
	// Workers is the number of concurrent clients (≤ 0:
	// parallel.Workers()).
	Workers  int
	Observer Observer
	// FailClient, if set, is asked before each task runs; a non-nil error
	// makes the task fail (tests inject failures with it).
	FailClient func(t *client.Task) error
	// Transport, if set, makes the run's transport instead of the
	// in-process one: the cluster's coordinator returns its gRPC transport
	// (which ignores the local handlers, its workers host the clients).
	// Run closes it at the end.
	Transport func(handlers map[int]federation.Handler) (federation.Transport, error)

	// serverProgressSaved, if set, is called after the server's
	// distillation progress is saved, with the iterations done (tests
	// stop a run there).
	serverProgressSaved func(done int)
}

// Prepared is a run's data: the training and test sets (cut to
// TrainLimit and TestLimit) and the partition of the training set among
// the clients. It depends on the configuration alone, so every process of
// a cluster that prepares the same configuration holds the same clients.
type Prepared struct {
	Train, Test *data.Dataset
	Partition   *data.Partition
}

// Prepare loads cfg's data and partitions it with cfg's seed. cfg must be
// resolved (Config.Resolve).
func Prepare(cfg Config) (*Prepared, error) {
	train, err := data.Load(cfg.Dataset, "train", cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if cfg.TrainLimit > 0 && cfg.TrainLimit < train.Len() {
		train = train.Slice(cfg.TrainLimit)
	}
	test, err := data.Load(cfg.Dataset, "test", cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if cfg.TestLimit > 0 && cfg.TestLimit < test.Len() {
		test = test.Slice(cfg.TestLimit)
	}
	pc := data.PartitionConfig{Method: cfg.Partition, Clients: cfg.Clients, Alpha: cfg.Alpha, ShardsPerClient: cfg.ShardsPerClient}
	part, err := pc.Partition(train.Y, train.Classes, tensor.NewRNG(cfg.Seed, streamPartition))
	if err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	return &Prepared{Train: train, Test: test, Partition: part}, nil
}

// Client returns client id holding its part of the training set.
func (p *Prepared) Client(id int) (*client.Client, error) {
	if id < 0 || id >= len(p.Partition.Clients) {
		return nil, fmt.Errorf("sim: no client %d (the partition has clients 0 to %d)", id, len(p.Partition.Clients)-1)
	}
	c, err := client.New(id, p.Train.Subset(p.Partition.Clients[id]))
	if err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	return c, nil
}

// checkpointMeta is the snapshot's metadata.
type checkpointMeta struct {
	Version  int             `json:"version"`
	Config   Config          `json:"config"`
	Rounds   int             `json:"rounds"`
	Metrics  []Metrics       `json:"metrics"`
	Failures []ClientFailure `json:"failures"`
	WallS    float64         `json:"wall_s"`
	// The server's privacy ledger and record (server.State).
	PrivateSteps    map[int]int     `json:"private_steps,omitempty"`
	PrivateReleases map[int]int     `json:"private_releases,omitempty"`
	Epsilon         map[int]float64 `json:"epsilon,omitempty"`
}

// ReadCheckpointConfig returns the configuration saved in dir's checkpoint
// (to resume a run with its own settings).
func ReadCheckpointConfig(dir string) (Config, int, error) {
	meta, _, err := readCheckpoint(filepath.Join(dir, CheckpointFile))
	if err != nil {
		return Config{}, 0, err
	}
	return meta.Config, meta.Rounds, nil
}

func readCheckpoint(path string) (*checkpointMeta, *federation.Snapshot, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("sim: reading checkpoint: %w", err)
	}
	snap, err := federation.DecodeSnapshot(b)
	if err != nil {
		return nil, nil, fmt.Errorf("sim: checkpoint %s: %w", path, err)
	}
	var meta checkpointMeta
	if err := json.Unmarshal(snap.Meta, &meta); err != nil || meta.Version != 1 {
		return nil, nil, fmt.Errorf("sim: checkpoint %s: unreadable metadata (version %d): %v", path, meta.Version, err)
	}
	if len(meta.Metrics) != meta.Rounds {
		return nil, nil, fmt.Errorf("sim: checkpoint %s: %d rounds but %d metrics lines", path, meta.Rounds, len(meta.Metrics))
	}
	return &meta, snap, nil
}

// Run runs the simulation cfg (resolved with Resolve) and returns its
// summary. Invalid settings are reported before any data is read.
func Run(ctx context.Context, cfg Config, opt Options) (*Summary, error) {
	start := time.Now()
	cfg, err := cfg.Resolve()
	if err != nil {
		return nil, err
	}
	ckPath, progressPath := filepath.Join(cfg.Out, CheckpointFile), filepath.Join(cfg.Out, ServerProgressFile)
	var meta *checkpointMeta
	var snap *federation.Snapshot
	if opt.Resume {
		if meta, snap, err = readCheckpoint(ckPath); err != nil {
			return nil, err
		}
		saved := meta.Config
		saved.Rounds, saved.Out = cfg.Rounds, cfg.Out
		if saved != cfg {
			return nil, fmt.Errorf("sim: resume: the configuration differs from the checkpoint's (only rounds may change)")
		}
		if meta.Rounds > cfg.Rounds {
			return nil, fmt.Errorf("sim: resume: the checkpoint has done %d rounds, more than the %d asked for", meta.Rounds, cfg.Rounds)
		}
	} else if _, err := os.Stat(ckPath); err == nil {
		return nil, fmt.Errorf("sim: %s exists: resume that run, or choose another output folder", ckPath)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("sim: %w", err)
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, fmt.Errorf("sim: output folder: %w", err)
	}

	prep, err := Prepare(cfg)
	if err != nil {
		return nil, err
	}
	train, test, part := prep.Train, prep.Test, prep.Partition
	if err := writeClients(filepath.Join(cfg.Out, ClientsFile), part); err != nil {
		return nil, err
	}

	handlers := map[int]federation.Handler{}
	clients := make([]*client.Client, cfg.Clients)
	for id := range part.Clients {
		c, err := prep.Client(id)
		if err != nil {
			return nil, err
		}
		clients[id] = c
		handlers[id] = &federation.Endpoint{Client: c, Hook: opt.FailClient}
	}
	shape := train.ImageShape()
	global, err := nn.New[float32](cfg.Model, shape, train.Classes, tensor.NewRNG(cfg.Seed, streamGlobal))
	if err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	var refiner server.Refiner
	if d := dynaFedOf(cfg, shape, train.Classes); d != nil {
		d.ProgressEvery = serverProgressEvery
		d.SaveProgress = func(p *server.DistillProgress) error {
			if err := saveServerProgress(progressPath, p); err != nil {
				return err
			}
			if opt.serverProgressSaved != nil {
				opt.serverProgressSaved(p.Done)
			}
			return nil
		}
		// Saved progress is used whenever the distillation starts and
		// finds it there, so that a run stopped in the first round's
		// distillation (before any checkpoint) continues when started
		// again. Progress of another distillation (its key differs: other
		// settings, or a redone round that came out otherwise) is set
		// aside, and overwritten at the next save.
		d.LoadProgress = func(key string) (*server.DistillProgress, error) {
			p, err := loadServerProgress(progressPath)
			if err != nil || p == nil {
				return nil, err
			}
			if p.Key != key {
				if opt.Observer.Note != nil {
					opt.Observer.Note(fmt.Sprintf("%s was saved by another distillation (other settings, or rounds that came out otherwise, as they do when a run is resumed at another GOMAXPROCS than it started with); distilling afresh", progressPath))
				}
				return nil, nil
			}
			return p, nil
		}
		refiner = d
	}
	srv, err := server.New(server.Config{Clients: cfg.Clients, Fraction: cfg.Fraction, Seed: cfg.Seed, Dataset: cfg.Dataset,
		ImageShape: shape, Classes: train.Classes, Model: cfg.Model, Refiner: refiner}, global, cfg.WithDP(strategyOf(cfg)))
	if err != nil {
		return nil, err
	}
	var (
		metrics  []Metrics
		failures = []ClientFailure{}
		wallBase float64
		resumed  int
	)
	if meta != nil {
		st := server.State{Rounds: meta.Rounds, Held: snap.Synthetic, Trajectory: snap.Trajectory, ServerSet: snap.ServerSet,
			PrivateSteps: meta.PrivateSteps, PrivateReleases: meta.PrivateReleases, Epsilon: meta.Epsilon}
		if err := srv.Restore(st, snap.Global); err != nil {
			return nil, err
		}
		if st.ServerSet != nil {
			// Stopped after the checkpoint that holds the set and before
			// the progress was removed.
			if err := removeProgress(progressPath); err != nil {
				return nil, err
			}
		}
		metrics, failures, wallBase, resumed = meta.Metrics, meta.Failures, meta.WallS, meta.Rounds
		if failures == nil {
			failures = []ClientFailure{}
		}
	}
	if err := writeMetrics(filepath.Join(cfg.Out, MetricsFile), metrics); err != nil {
		return nil, err
	}

	var tr federation.Transport
	if opt.Transport != nil {
		if tr, err = opt.Transport(handlers); err != nil {
			return nil, fmt.Errorf("sim: transport: %w", err)
		}
	} else {
		tr = inproc.New(handlers, opt.Workers)
	}
	defer tr.Close()
	wall := func() float64 { return wallBase + time.Since(start).Seconds() }
	var cumUp, cumDown int64
	if n := len(metrics); n > 0 {
		cumUp, cumDown = metrics[n-1].CumUploadBytes, metrics[n-1].CumDownloadBytes
	}
	if opt.Observer.Start != nil {
		opt.Observer.Start(srv.Rounds()+1, cfg.Rounds)
	}
	for srv.Rounds() < cfg.Rounds {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("sim: stopped after round %d (the checkpoint in %s resumes it): %w", srv.Rounds(), cfg.Out, err)
		}
		before := transportEvents(tr)
		m, fails, err := runRound(ctx, cfg, srv, tr, opt)
		if err != nil {
			return nil, progressHint(err, progressPath, srv.Rounds())
		}
		m.TransportEvents = eventsSince(before, transportEvents(tr))
		failures = append(failures, fails...)
		acc, loss, err := nn.Evaluate(srv.Global(), test.X, test.Y, 500)
		if err != nil {
			return nil, fmt.Errorf("sim: evaluating round %d: %w", m.Round, err)
		}
		cumUp += m.UploadBytes
		cumDown += m.DownloadBytes
		m.TestAcc, m.TestLoss, m.CumUploadBytes, m.CumDownloadBytes = acc, loss, cumUp, cumDown
		m.WallS = wall()
		metrics = append(metrics, m)
		if err := appendMetrics(filepath.Join(cfg.Out, MetricsFile), m); err != nil {
			return nil, err
		}
		if err := saveCheckpoint(ckPath, cfg, srv, metrics, failures, m.WallS); err != nil {
			return nil, err
		}
		if srv.State().ServerSet != nil {
			// The checkpoint holds the finished set: the progress is spent.
			if err := removeProgress(progressPath); err != nil {
				return nil, err
			}
		}
		if opt.Observer.RoundEnd != nil {
			opt.Observer.RoundEnd(m)
		}
	}

	name := srv.Strategy().Name()
	if cfg.ServerTM {
		name += "+server_tm"
	}
	sum := &Summary{Config: cfg, Strategy: name, Rounds: cfg.Rounds, TrainSamples: train.Len(), TestSamples: test.Len(),
		UploadBytes: cumUp, DownloadBytes: cumDown, ModelParams: nn.NumParams(global), ResumedAfter: resumed, Failures: failures,
		ClientsPerRound: max(1, int(float64(cfg.Clients)*cfg.Fraction+0.5)), ComputeWorkers: workers(opt.Workers),
		CheckpointFormat: "fedsim wire format v1 snapshot (see package federation)"}
	for _, m := range metrics {
		if m.TestAcc > sum.BestTestAcc || sum.BestRound == 0 {
			sum.BestTestAcc, sum.BestRound = m.TestAcc, m.Round
		}
	}
	if n := len(metrics); n > 0 {
		sum.FinalTestAcc, sum.FinalTestLoss, sum.SyntheticImages = metrics[n-1].TestAcc, metrics[n-1].TestLoss, metrics[n-1].SyntheticImages
	}
	files, err := writeOutputs(cfg, srv, train, metrics)
	if err != nil {
		return nil, err
	}
	sum.Files = append([]string{MetricsFile, SummaryFile, ClientsFile, CheckpointFile}, files...)
	sum.WallS = wall()
	b, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(cfg.Out, SummaryFile), append(b, '\n')); err != nil {
		return nil, err
	}
	return sum, nil
}

func strategyOf(cfg Config) server.Strategy {
	switch cfg.Strategy {
	case "fedavg", "fedprox":
		f := &server.FedAvg{Epochs: cfg.LocalEpochs, BatchSize: cfg.LocalBatch, LR: cfg.LocalLR, Momentum: 0.9, Optimizer: cfg.LocalOptim}
		if cfg.Strategy == "fedprox" {
			f.Mu = cfg.Mu
		}
		return f
	}
	d := &server.Distill{Method: cfg.Distill, IPC: cfg.IPC, Iterations: cfg.DistillIters, BatchReal: cfg.BatchReal,
		LRImg: cfg.LRImg, ImageSteps: cfg.ImageSteps, Nets: client.NetsRandom, Init: cfg.DistillInit,
		Steps: cfg.ServerSteps, BatchSize: cfg.ServerBatch, LR: cfg.ServerLR, Momentum: 0.9, WeightDecay: 5e-4,
		DSAStrategy: cfg.ServerDSA, Seed: cfg.Seed}
	if cfg.Strategy == "feddm" {
		d.Nets, d.Perturb = client.NetsGlobal, cfg.Perturb
	}
	return d
}

// dynaFedOf returns server-side trajectory matching (DynaFed) if cfg asks
// for it, else nil.
func dynaFedOf(cfg Config, shape []int, classes int) *server.DynaFed {
	if !cfg.ServerTM {
		return nil
	}
	return &server.DynaFed{Record: cfg.ServerTMRounds, Span: cfg.ServerTMSpan, TargetAverage: cfg.ServerTMAverage, SynSteps: cfg.ServerTMSynSteps,
		IPC: cfg.ServerTMIPC, Iterations: cfg.ServerTMIters, LRImg: cfg.ServerTMLRImg, LRInit: cfg.ServerTMLR, LRLR: 1e-5, Momentum: 0.5,
		SoftLabels: cfg.ServerTMSoftLabels, LRLabel: cfg.ServerTMLRLabel, ImageAdam: cfg.ServerTMImgOptim == "adam",
		Steps: cfg.ServerTMSteps, BatchSize: cfg.ServerBatch, LR: cfg.ServerTMFineLR, DSAStrategy: cfg.ServerDSA,
		Model: cfg.Model, ImageShape: shape, Classes: classes, Seed: cfg.Seed}
}

// fate is what the simulated network does to one task.
type fate int

const (
	onTime fate = iota
	offline
	late
)

// runRound drives one round: it sends the tasks, collects the replies and
// feeds them to the core in simulated-time order — on-time replies in
// client order, then one tick (the deadline), then the stragglers' — so the
// outcome never depends on which client finished first.
func runRound(ctx context.Context, cfg Config, srv *server.Server, tr federation.Transport, opt Options) (Metrics, []ClientFailure, error) {
	tasks, err := srv.StartRound()
	if err != nil {
		return Metrics{}, nil, err
	}
	round := srv.Round()
	m := Metrics{Round: round, ClientsSampled: len(tasks)}
	if opt.Observer.RoundStart != nil {
		opt.Observer.RoundStart(round, len(tasks))
	}
	rng := tensor.NewRNG(server.RoundSeed(cfg.Seed, round), streamNetwork)
	fates := map[int]fate{}
	inflight := 0
	sent := time.Now()
	for _, t := range tasks {
		u, v := rng.Float64(), rng.Float64()
		f := onTime
		switch {
		case u < cfg.Dropout:
			f = offline
		case v < cfg.Stragglers:
			f = late
		}
		fates[t.Client] = f
		frame, err := federation.EncodeTask(t)
		if err != nil {
			return m, nil, err
		}
		m.DownloadBytes += int64(len(frame))
		if f == offline {
			m.ClientsOffline++
			continue
		}
		if err := tr.Send(ctx, t.Client, frame); err != nil {
			return m, nil, fmt.Errorf("sim: round %d: %w", round, err)
		}
		inflight++
	}
	type reply struct {
		res *client.Result
		err error
	}
	replies := map[int]reply{}
	for done := 0; done < inflight; done++ {
		var r federation.Reply
		select {
		case r = <-tr.Replies():
		case <-ctx.Done():
			return m, nil, fmt.Errorf("sim: round %d interrupted (the last checkpoint is after round %d): %w", round, round-1, ctx.Err())
		}
		m.UploadBytes += int64(len(r.Frame))
		var rp reply
		if r.Err != nil {
			rp.err = r.Err
		} else {
			rp.res, rp.err = federation.DecodeResult(r.Frame)
		}
		replies[r.From] = rp
		if opt.Observer.ClientDone != nil {
			opt.Observer.ClientDone(round, done+1, inflight)
		}
	}
	m.ClientsS = time.Since(sent).Seconds()
	aggregate := time.Now()
	for _, phase := range []fate{onTime, late} {
		for _, t := range tasks {
			if rp, ok := replies[t.Client]; ok && fates[t.Client] == phase {
				srv.Deliver(t.Client, rp.res, rp.err)
			}
		}
		srv.Tick()
	}
	rep, err := srv.EndRound(ctx)
	if err != nil {
		return m, nil, err
	}
	m.ServerS = time.Since(aggregate).Seconds()
	m.ClientsOK, m.ClientsFailed, m.ClientsLate = rep.OK, rep.Failed, rep.Late
	m.ClientsDropped = rep.Dropped()
	m.SyntheticImages, m.TrainLoss = rep.Info.SyntheticImages, rep.Info.TrainLoss
	if p := rep.Info.Privacy; p != nil {
		m.EpsilonMax, m.EpsilonMean, m.EpsilonClients = p.EpsilonMax, p.EpsilonMean, p.PerClient
	}
	var fails []ClientFailure
	for _, f := range rep.Failures {
		fails = append(fails, ClientFailure{Round: round, Client: f.Client, Error: f.Error})
	}
	return m, fails, nil
}

func clientWeights(srv *server.Server) *client.Weights { return client.WeightsOf(srv.Global()) }

// transportEvents returns tr's event counters, or nil if it keeps none.
func transportEvents(tr federation.Transport) map[string]int64 {
	if c, ok := tr.(federation.EventCounter); ok {
		return c.Events()
	}
	return nil
}

// eventsSince returns the counters that grew from before to now, by how
// much (nil if none did).
func eventsSince(before, now map[string]int64) map[string]int64 {
	var d map[string]int64
	for k, v := range now {
		if n := v - before[k]; n > 0 {
			if d == nil {
				d = map[string]int64{}
			}
			d[k] = n
		}
	}
	return d
}
