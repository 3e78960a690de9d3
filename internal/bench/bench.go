// Package bench runs the engine's reference workloads: the ConvNet training
// step, the distribution-matching step, the exact gradient-matching step and
// SGEMM. scripts/torch/bench.py runs the same workloads in PyTorch, with the
// same JSON schema, so one table compares both (BENCHMARKS.md).
package bench

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/distill"
	"github.com/fedsim/fedsim/internal/parallel"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
	"github.com/fedsim/fedsim/tensor/gemm"
)

// Workloads lists the workload names in the order they run.
var Workloads = []string{"train_step", "dm_step", "gm_step", "sgemm"}

// Options selects what to run.
type Options struct {
	Widths    []int    // ConvNet widths; default 128 and 32
	Batch     int      // images per step; default 256
	Repeats   int      // timed steps per workload; default 5
	Warmup    int      // untimed steps first; default 2
	Workloads []string // default all
	Seed      uint64
}

// Result is one workload's measurement; its JSON form is the schema shared
// with scripts/torch/bench.py.
type Result struct {
	Impl      string  `json:"impl"`
	Workload  string  `json:"workload"`
	Width     int     `json:"width,omitempty"`
	Batch     int     `json:"batch,omitempty"`
	MsMedian  float64 `json:"ms_median"`
	MsMin     float64 `json:"ms_min"`
	PeakRSSMB float64 `json:"peak_rss_mb"`
	// PeakTensorMB is the most memory held by live tensors from the pool at
	// once: the engine's own figure, without the runtime and free buffers.
	PeakTensorMB float64 `json:"peak_tensor_mb"`
	GFLOPs       float64 `json:"gflops,omitempty"`
	Threads      int     `json:"threads"`
	Kernel       string  `json:"kernel"`
}

func (o Options) withDefaults() Options {
	if len(o.Widths) == 0 {
		o.Widths = []int{128, 32}
	}
	if o.Batch == 0 {
		o.Batch = 256
	}
	if o.Repeats == 0 {
		o.Repeats = 5
	}
	if o.Warmup == 0 {
		o.Warmup = 2
	}
	if len(o.Workloads) == 0 {
		o.Workloads = Workloads
	}
	return o
}

// Validate reports the first invalid option.
func (o Options) Validate() error {
	for _, w := range o.Workloads {
		if !slices.Contains(Workloads, w) {
			return fmt.Errorf("bench: unknown workload %q (choose from %s)", w, strings.Join(Workloads, ", "))
		}
	}
	for _, w := range o.Widths {
		if w <= 0 {
			return fmt.Errorf("bench: width %d must be positive", w)
		}
	}
	if o.Batch < 0 || o.Repeats < 0 || o.Warmup < 0 {
		return fmt.Errorf("bench: batch %d, repeats %d and warmup %d must not be negative", o.Batch, o.Repeats, o.Warmup)
	}
	return nil
}

// Run measures every selected workload and calls emit with each result.
func Run(opts Options, emit func(Result)) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	opts = opts.withDefaults()
	for _, wl := range opts.Workloads {
		widths := opts.Widths
		if wl == "sgemm" {
			widths = []int{0}
		}
		for _, width := range widths {
			r, err := runOne(wl, width, opts)
			if err != nil {
				return err
			}
			emit(r)
		}
	}
	return nil
}

func runOne(workload string, width int, o Options) (Result, error) {
	tensor.DrainPool()
	runtime.GC()
	debug.FreeOSMemory()
	resetPeakRSS()
	tensor.ResetPoolPeak()
	var step func() error
	var err error
	res := Result{Impl: "fedsim", Workload: workload, Width: width, Batch: o.Batch, Threads: parallel.Workers(), Kernel: gemm.KernelName()}
	switch workload {
	case "train_step":
		step, err = trainStep(width, o.Batch, o.Seed)
	case "dm_step":
		step, err = dmStep(width, o.Batch, o.Seed)
	case "gm_step":
		step, err = gmStep(width, o.Batch, o.Seed)
	case "sgemm":
		res.Width, res.Batch = 0, 0
		step = sgemmStep(1024, o.Seed)
	}
	if err != nil {
		return res, err
	}
	for i := 0; i < o.Warmup; i++ {
		if err := step(); err != nil {
			return res, err
		}
	}
	times := make([]float64, o.Repeats)
	for i := range times {
		start := time.Now()
		if err := step(); err != nil {
			return res, err
		}
		times[i] = float64(time.Since(start).Microseconds()) / 1000
	}
	slices.Sort(times)
	res.MsMedian = times[len(times)/2]
	res.MsMin = times[0]
	res.PeakRSSMB = peakRSSMB()
	_, peak, _ := tensor.PoolStats()
	res.PeakTensorMB = float64(peak) / (1 << 20)
	if workload == "sgemm" {
		res.GFLOPs = 2 * 1024 * 1024 * 1024 / (res.MsMedian / 1000) / 1e9
	}
	return res, nil
}

func mnistConvNet(width int, seed uint64) (*nn.ConvNet[float32], error) {
	return nn.NewConvNet[float32](nn.ConvNetConfig{InChannels: 1, Height: 28, Width: 28, Classes: 10, NetWidth: width}, tensor.NewRNG(seed, 1))
}

func batch(n int, seed uint64) (*tensor.Tensor[float32], []int) {
	rng := tensor.NewRNG(seed, 2)
	x := tensor.New[float32](n, 1, 28, 28)
	tensor.FillNormal(rng, x, 0, 1)
	y := make([]int, n)
	for i := range y {
		y[i] = rng.IntN(10)
	}
	return x, y
}

func trainStep(width, n int, seed uint64) (func() error, error) {
	m, err := mnistConvNet(width, seed)
	if err != nil {
		return nil, err
	}
	x, y := batch(n, seed)
	opt := &nn.SGD[float32]{LR: 0.01, Momentum: 0.9}
	grads := make([]*tensor.Tensor[float32], len(m.Params()))
	tp := ag.NewTape[float32]()
	return func() error {
		defer tp.Release()
		ps := nn.Bind(tp, m)
		loss := ag.CrossEntropy(m.Forward(tp.Const(x), ps), y)
		gs, err := tp.Grad([]*ag.Var[float32]{loss}, nil, ps, false)
		if err != nil {
			return err
		}
		for i, g := range gs {
			grads[i] = g.Value
		}
		return opt.Step(m.Params(), grads)
	}, nil
}

func dmStep(width, n int, seed uint64) (func() error, error) {
	m, err := mnistConvNet(width, seed)
	if err != nil {
		return nil, err
	}
	x, _ := batch(n, seed)
	target := tensor.New[float32](m.FeatureSize())
	tensor.FillNormal(tensor.NewRNG(seed, 3), target, 0, 1)
	tp := ag.NewTape[float32]()
	return func() error {
		defer tp.Release()
		ps := nn.BindConst(tp, m)
		xv := tp.Param(x)
		mean := ag.MeanAxes(m.Embed(xv, ps), []int{0}, false)
		loss := ag.Sum(ag.Square(ag.Sub(mean, tp.Const(target))))
		_, err := tp.Grad([]*ag.Var[float32]{loss}, nil, []*ag.Var[float32]{xv}, false)
		return err
	}, nil
}

func gmStep(width, n int, seed uint64) (func() error, error) {
	m, err := mnistConvNet(width, seed)
	if err != nil {
		return nil, err
	}
	xr, yr := batch(n, seed+1)
	x, y := batch(n, seed)
	// The target gradient comes from a real batch, computed once.
	var target []*tensor.Tensor[float32]
	{
		tp := ag.NewTape[float32]()
		ps := nn.Bind(tp, m)
		gs, err := tp.Grad([]*ag.Var[float32]{ag.CrossEntropy(m.Forward(tp.Const(xr), ps), yr)}, nil, ps, false)
		if err != nil {
			return nil, err
		}
		for _, g := range gs {
			target = append(target, g.Value.Clone())
		}
		tp.Release()
	}
	tp := ag.NewTape[float32]()
	return func() error {
		defer tp.Release()
		ps := nn.Bind(tp, m)
		xv := tp.Param(x)
		gS, err := tp.Grad([]*ag.Var[float32]{ag.CrossEntropy(m.Forward(xv, ps), y)}, nil, ps, true)
		if err != nil {
			return err
		}
		gT := make([]*ag.Var[float32], len(target))
		for i, t := range target {
			gT[i] = tp.Const(t)
		}
		dist := distill.LayerwiseGradDistance(gS, gT)
		_, err = tp.Grad([]*ag.Var[float32]{dist}, nil, []*ag.Var[float32]{xv}, false)
		return err
	}, nil
}

func sgemmStep(n int, seed uint64) func() error {
	rng := tensor.NewRNG(seed, 4)
	a, b, c := tensor.New[float32](n, n), tensor.New[float32](n, n), tensor.New[float32](n, n)
	tensor.FillNormal(rng, a, 0, 1)
	tensor.FillNormal(rng, b, 0, 1)
	return func() error {
		tensor.Gemm(false, false, n, n, n, 1, a.Data, n, b.Data, n, 0, c.Data, n)
		return nil
	}
}

// resetPeakRSS resets the kernel's peak-RSS counter (VmHWM) of this process
// so each workload reports its own peak. It is best effort: without
// /proc/self/clear_refs the peak is the process's.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

func peakRSSMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}
