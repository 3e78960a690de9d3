package cli

import (
	"context"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/sim"
)

// RunOptions are the flags of `fedsim run` (and of `fedsim` alone).
type RunOptions struct {
	// Config holds the experiment flags (bound to the flag set); only the
	// flags named in Changed override the config file and the defaults.
	Config  sim.Config
	Changed map[string]bool
	// ConfigFile is a YAML experiment file (configs/*.yaml).
	ConfigFile string
	// Resume continues the run in that folder.
	Resume  string
	Workers int
	Quiet   bool
}

func newRunCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &RunOptions{}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run a federated simulation (the default command)",
		Long:  runLong,
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			o.Changed = changedFlags(c.Flags())
			return RunRun(c.Context(), o, stdout, stderr)
		},
	}
	addRunFlags(cmd.Flags(), o)
	return cmd
}

const runLong = `run simulates federated learning on a real data set: the training split is
partitioned among --clients clients (--partition iid|dirichlet|shards|quantity),
and each round a --fraction of them get a task from the server.

With --distill dm (the default) or gm, clients distill their data into --ipc
synthetic images per class they hold and the server trains the global model
on the union of the synthetic sets. --strategy oneshot (the default) matches
with fresh random networks and asks each client once; feddm matches around
the current global model every round. With --distill none clients train
locally (--strategy fedavg or fedprox with --mu). --server-tm (or --strategy
dynafed) adds DynaFed's server-side trajectory matching: the global models
of the first --server-tm-rounds rounds form a trajectory, the server distills
a synthetic set from it and fine-tunes every later aggregate on that set.

--config FILE reads a YAML experiment (keys are the flag names with '_' for
'-'); flags given on the command line override it. The output folder --out
receives metrics.jsonl (one line per round), summary.json, clients.json (label
histograms), accuracy plots, grids of a few clients' synthetic sets, the final
weights (global.npz) and checkpoint.fsw, written after every round;
--resume DIR continues an interrupted run (--rounds may extend it).`

// flagHelp documents each experiment flag; the flag's name is the Config
// field's YAML key with '-' for '_'.
var flagHelp = map[string]string{
	"dataset":               "data set: " + strings.Join(data.Names(), ", "),
	"data_dir":              "folder with the data set's files (overrides the built-in locations)",
	"train_limit":           "use only the first N training images (0: all)",
	"test_limit":            "test on only the first N test images (0: all)",
	"partition":             "partition: " + strings.Join(data.PartitionMethods, ", "),
	"alpha":                 "Dirichlet concentration (dirichlet, quantity): smaller is more skewed",
	"shards_per_client":     "shards per client (shards partition)",
	"clients":               "number of clients",
	"rounds":                "communication rounds",
	"fraction":              "fraction of the clients sampled per round, in (0, 1]",
	"distill":               "client-side distillation: dm, gm, none (FedAvg), or a method of fedsim distill that needs no expert trajectories and learns no labels (e.g. kip, dsa, dd, herding), run with its defaults on the client's classes with at least ipc images",
	"strategy":              "fedavg, fedprox, oneshot, feddm or dynafed (fedavg with --server-tm; default: oneshot when distilling, fedavg otherwise)",
	"model":                 "global model and matching network (" + strings.Join(nn.ModelNames(), ", ") + ", ConvNet variants such as convnet-w32)",
	"ipc":                   "synthetic images per class a client holds",
	"distill_iters":         "distillation iterations per client task",
	"batch_real":            "real images per class per distillation iteration",
	"lr_img":                "learning rate of the synthetic images (0: dm 1.0, gm 0.1)",
	"image_steps":           "one-shot dm: image updates per iteration against its targets (0 or 1: one; with DP the extra steps cost no privacy)",
	"perturb":               "feddm: relative perturbation of the global model's parameters",
	"local_epochs":          "fedavg/fedprox: local epochs per round",
	"local_batch":           "fedavg/fedprox: local batch size",
	"local_lr":              "fedavg/fedprox: local learning rate",
	"local_optim":           "fedavg/fedprox: local optimizer: sgd (momentum 0.9; the default) or adam (PyTorch's defaults; the DynaFed authors' clients, at local-lr 0.001)",
	"mu":                    "fedprox: proximal coefficient μ",
	"server_steps":          "distillation strategies: server SGD steps per round on the synthetic union (rounded up to whole epochs)",
	"server_batch":          "server training batch size",
	"server_lr":             "server training learning rate (SGD, momentum 0.9, cosine schedule)",
	"server_dsa":            "server training augmentation (auto: by data set; none: off)",
	"server_tm":             "server-side trajectory matching (DynaFed): distill a set from the first rounds' global models and fine-tune every aggregate on it",
	"server_tm_rounds":      "server-tm: rounds of global models recorded before distilling (L)",
	"server_tm_span":        "server-tm: the student matches the global model this many rounds ahead",
	"server_tm_average":     "server-tm: each target is the mean of k ≥ this many of the models 1 … span rounds ahead, drawn with replacement (the DynaFed authors' weight averaging; 0: off)",
	"server_tm_syn_steps":   "server-tm: student SGD steps per matching iteration",
	"server_tm_ipc":         "server-tm: synthetic images per class",
	"server_tm_iters":       "server-tm: matching iterations",
	"server_tm_lr_img":      "server-tm: learning rate of the synthetic images (SGD, momentum 0.5)",
	"server_tm_lr":          "server-tm: initial learnable student step size",
	"server_tm_steps":       "server-tm: fine-tuning SGD steps after every aggregation",
	"server_tm_fine_lr":     "server-tm: fine-tuning learning rate (momentum 0.9, cosine schedule)",
	"server_tm_soft_labels": "server-tm: learn soft labels with the images (as the DynaFed authors' code); the fine-tuning trains on them",
	"server_tm_lr_label":    "server-tm: learning rate of the soft-label logits (SGD, momentum 0.5)",
	"server_tm_img_optim":   "server-tm: optimizer of the images and soft labels: sgd (momentum 0.5, MTT) or adam (the DynaFed authors' scripts: lr-img about 0.05)",
	"distill_init":          "where the clients' synthetic images start: real, noise, or mean (each class's pooled mean image plus jitter; one-shot dm; with --dp-* a private release charged to the budget) (default: real; noise with --dp-*)",
	"dropout":               "probability that a sampled client never answers",
	"stragglers":            "probability that a sampled client answers after the deadline",
	"seed":                  "random seed (one seed gives identical metrics)",
	"out":                   "output folder",
	"grids":                 "number of clients whose synthetic sets are drawn",
	"dp_noise":              "differential privacy: noise multiplier σ (or give --dp-epsilon)",
	"dp_epsilon":            "differential privacy: budget ε per client at --dp-delta (σ from the accountant if --dp-noise is not given)",
	"dp_clip":               "differential privacy: clipping norm C (per example for distillation, per client update for fedavg)",
	"dp_delta":              "differential privacy: δ",
	"dp_sample_rate":        "private distillation: probability that a real example joins an iteration (Poisson sampling)",
	"dp_project":            "private dm: project the embeddings onto N random directions (fresh every iteration) before clipping and noise: less noise per direction (0: none)",
	"dp_center":             "private dm: clip each real embedding's offset from the synthetic class mean, not the embedding (pair with a smaller --dp-clip)",
	"dp_min_class":          "private distillation: leave out the classes a client holds fewer real examples of (their noisy class sums are mostly noise)",
	"dp_init_clip":          "private dm with --distill-init mean: clipping norm of each real image pooled over 4×4 blocks in the class-mean release",
	"dp_init_noise":         "private dm with --distill-init mean: noise multiplier of the class-mean release (one Gaussian mechanism, charged to the budget)",
}

// addRunFlags registers the experiment flags, bound to o.Config (which
// starts at the defaults), by reflection over sim.Config's YAML keys.
func addRunFlags(f *pflag.FlagSet, o *RunOptions) {
	o.Config = sim.DefaultConfig()
	v := reflect.ValueOf(&o.Config).Elem()
	t := v.Type()
	for i := range t.NumField() {
		key := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
		name := strings.ReplaceAll(key, "_", "-")
		help := flagHelp[key]
		switch p := v.Field(i).Addr().Interface().(type) {
		case *string:
			f.StringVar(p, name, *p, help)
		case *int:
			f.IntVar(p, name, *p, help)
		case *float64:
			f.Float64Var(p, name, *p, help)
		case *uint64:
			f.Uint64Var(p, name, *p, help)
		case *bool:
			f.BoolVar(p, name, *p, help)
		default:
			panic("cli: unsupported sim.Config field " + t.Field(i).Name)
		}
	}
	f.StringVar(&o.ConfigFile, "config", "", "YAML experiment file (flags override its keys)")
	f.StringVar(&o.Resume, "resume", "", "continue the run whose output folder is DIR")
	f.IntVar(&o.Workers, "workers", 0, "clients run at once (0: one per core)")
	f.BoolVar(&o.Quiet, "quiet", false, "no progress display")
}

func changedFlags(f *pflag.FlagSet) map[string]bool {
	ch := map[string]bool{}
	f.Visit(func(fl *pflag.Flag) { ch[fl.Name] = true })
	return ch
}

// resolveRunConfig builds the experiment: defaults, then the config file,
// then the flags that were given.
func resolveRunConfig(o *RunOptions) (sim.Config, bool, error) {
	cfg := sim.DefaultConfig()
	resume := o.Resume != ""
	if resume {
		if o.ConfigFile != "" {
			return cfg, false, usagef("--resume takes the run's own configuration; drop --config")
		}
		for name := range o.Changed {
			switch name {
			case "resume", "rounds", "quiet", "workers":
			default:
				return cfg, false, usagef("--resume continues a run with its saved settings; only --rounds may change (not --%s)", name)
			}
		}
		saved, _, err := sim.ReadCheckpointConfig(o.Resume)
		if err != nil {
			return cfg, false, err
		}
		cfg = saved
		cfg.Out = o.Resume
	} else if o.ConfigFile != "" {
		if err := sim.ReadConfigFile(o.ConfigFile, &cfg); err != nil {
			return cfg, false, usageError{err}
		}
	}
	src := reflect.ValueOf(o.Config)
	dst := reflect.ValueOf(&cfg).Elem()
	for i := range src.NumField() {
		key := strings.Split(src.Type().Field(i).Tag.Get("yaml"), ",")[0]
		if o.Changed[strings.ReplaceAll(key, "_", "-")] {
			dst.Field(i).Set(src.Field(i))
		}
	}
	rc, err := cfg.Resolve()
	if err != nil {
		return cfg, false, usageError{err}
	}
	if o.Workers < 0 {
		return cfg, false, usagef("--workers %d must not be negative", o.Workers)
	}
	return rc, resume, nil
}

// RunRun runs `fedsim run` with o.
func RunRun(ctx context.Context, o *RunOptions, stdout, stderr io.Writer) error {
	cfg, resume, err := resolveRunConfig(o)
	if err != nil {
		return err
	}
	mode := cfg.Strategy
	if cfg.Distill != "none" {
		mode = fmt.Sprintf("%s, %s IPC %d, %d iterations per client", cfg.Strategy, cfg.Distill, cfg.IPC, cfg.DistillIters)
	}
	fmt.Fprintf(stdout, "fedsim: %s, %d clients (%s), %d rounds × fraction %g, %s, model %s, seed %d → %s\n",
		cfg.Dataset, cfg.Clients, cfg.Partition, cfg.Rounds, cfg.Fraction, mode, cfg.Model, cfg.Seed, cfg.Out)
	var (
		bar   *progress
		first int
		acc   = -1.0
		round int
	)
	status := func(done, total int) string {
		s := fmt.Sprintf("round %d: clients %d/%d", round, done, total)
		if acc >= 0 {
			s += fmt.Sprintf(" acc %.4f", acc)
		}
		return s
	}
	obs := sim.Observer{
		Start: func(f, rounds int) {
			first = f
			if f > 1 {
				fmt.Fprintf(stdout, "resuming after round %d\n", f-1)
			}
			bar = newProgress(stderr, "fedsim", max(rounds-f+1, 1), o.Quiet)
		},
		RoundStart: func(r, n int) {
			round = r
			bar.update(r-first, status(0, n))
		},
		ClientDone: func(r, done, total int) { bar.update(r-first, status(done, total)) },
		Note:       func(msg string) { fmt.Fprintf(stderr, "fedsim: note: %s\n", msg) },
		RoundEnd: func(m sim.Metrics) {
			acc = m.TestAcc
			bar.update(m.Round-first+1, fmt.Sprintf("round %d done acc %.4f", m.Round, m.TestAcc))
			if bar.bar == nil || o.Quiet {
				fmt.Fprintf(stdout, "round %d/%d  test acc %.4f  loss %.4f  clients ok %d/%d  up %s  down %s  %.1f s\n",
					m.Round, cfg.Rounds, m.TestAcc, m.TestLoss, m.ClientsOK, m.ClientsSampled, fmtBytes(m.UploadBytes), fmtBytes(m.DownloadBytes), m.WallS)
			}
		},
	}
	sum, err := sim.Run(ctx, cfg, sim.Options{Resume: resume, Workers: o.Workers, Observer: obs})
	if bar != nil {
		bar.finish()
	}
	if err != nil {
		return err
	}
	for _, f := range sum.Failures {
		fmt.Fprintf(stderr, "fedsim: round %d client %d failed: %s\n", f.Round, f.Client, f.Error)
	}
	_, err = fmt.Fprintf(stdout, "final test accuracy %.4f (best %.4f at round %d); upload %s, download %s; %d client failures; %.1f s; outputs in %s\n",
		sum.FinalTestAcc, sum.BestTestAcc, sum.BestRound, fmtBytes(sum.UploadBytes), fmtBytes(sum.DownloadBytes), len(sum.Failures), sum.WallS, cfg.Out)
	return err
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
