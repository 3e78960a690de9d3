package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fedsim/fedsim/internal/bench"
)

// BenchOptions are the flags of `fedsim bench`.
type BenchOptions struct {
	Widths    string
	Workloads string
	Batch     int
	Repeats   int
	Warmup    int
	Seed      uint64
	JSON      bool
}

func newBenchCmd(stdout, stderr io.Writer) *cobra.Command {
	o := &BenchOptions{}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the engine on the reference workloads (ConvNet train, DM and GM steps, SGEMM)",
		Long: `bench times the engine's reference workloads on random MNIST-shaped data:
  train_step  ConvNet forward, backward and SGD update
  dm_step     gradient w.r.t. the images of a loss on their mean embedding
  gm_step     exact gradient-matching step (gradient of a gradient distance)
  sgemm       1024×1024×1024 single-precision matrix multiply
scripts/torch/bench.py runs the same workloads in PyTorch (see BENCHMARKS.md).`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return RunBench(o, stdout, stderr) },
	}
	f := cmd.Flags()
	f.StringVar(&o.Widths, "widths", "128,32", "comma-separated ConvNet widths")
	f.StringVar(&o.Workloads, "workloads", strings.Join(bench.Workloads, ","), "comma-separated workloads")
	f.IntVar(&o.Batch, "batch", 256, "images per step")
	f.IntVar(&o.Repeats, "repeats", 5, "timed steps per workload (the median is reported)")
	f.IntVar(&o.Warmup, "warmup", 2, "untimed steps before timing")
	f.Uint64Var(&o.Seed, "seed", 1, "random seed")
	f.BoolVar(&o.JSON, "json", false, "print one JSON object per workload and width")
	return cmd
}

// RunBench runs `fedsim bench` with o.
func RunBench(o *BenchOptions, stdout, stderr io.Writer) error {
	var widths []int
	for _, s := range strings.Split(o.Widths, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		w, err := strconv.Atoi(s)
		if err != nil || w <= 0 {
			return usagef("--widths: %q is not a positive integer (example: --widths 128,32)", s)
		}
		widths = append(widths, w)
	}
	var workloads []string
	for _, s := range strings.Split(o.Workloads, ",") {
		if s = strings.TrimSpace(s); s != "" {
			workloads = append(workloads, s)
		}
	}
	if o.Batch <= 0 || o.Repeats <= 0 || o.Warmup < 0 {
		return usagef("--batch %d and --repeats %d must be positive and --warmup %d not negative", o.Batch, o.Repeats, o.Warmup)
	}
	opts := bench.Options{Widths: widths, Workloads: workloads, Batch: o.Batch, Repeats: o.Repeats, Warmup: o.Warmup, Seed: o.Seed}
	if err := opts.Validate(); err != nil {
		return usageError{err}
	}
	enc := json.NewEncoder(stdout)
	if !o.JSON {
		fmt.Fprintf(stdout, "%-11s %6s %6s %11s %11s %10s\n", "workload", "width", "batch", "ms_median", "peak_rss_mb", "gflops")
	}
	return bench.Run(opts, func(r bench.Result) {
		if o.JSON {
			_ = enc.Encode(r)
			return
		}
		g := ""
		if r.GFLOPs > 0 {
			g = fmt.Sprintf("%.1f", r.GFLOPs)
		}
		fmt.Fprintf(stdout, "%-11s %6d %6d %11.1f %11.0f %10s\n", r.Workload, r.Width, r.Batch, r.MsMedian, r.PeakRSSMB, g)
	})
}
