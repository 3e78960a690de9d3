package bench

import (
	"strconv"
	"strings"
	"testing"
)

// The workloads as Go benchmarks, for profiling:
//
//	go test -run '^$' -bench TrainStep/128 -cpuprofile cpu.out ./internal/bench
func BenchmarkWorkloads(b *testing.B) {
	for _, wl := range []string{"train_step", "dm_step", "gm_step"} {
		for _, width := range []int{128, 32} {
			var step func() error
			var err error
			switch wl {
			case "train_step":
				step, err = trainStep(width, 256, 1)
			case "dm_step":
				step, err = dmStep(width, 256, 1)
			case "gm_step":
				step, err = gmStep(width, 256, 1)
			}
			if err != nil {
				b.Fatal(err)
			}
			b.Run(wl+"/"+strconv.Itoa(width), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					if err := step(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// Every workload runs and reports a positive time; an unknown workload is
// an error that names it.
func TestRunSmall(t *testing.T) {
	var got []Result
	err := Run(Options{Widths: []int{4}, Batch: 8, Repeats: 1, Warmup: 1}, func(r Result) { got = append(got, r) })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("got %d results, want 4", len(got))
	}
	for _, r := range got {
		if r.MsMedian <= 0 {
			t.Errorf("%s: time %v", r.Workload, r.MsMedian)
		}
	}
	if err := Run(Options{Workloads: []string{"nope"}}, func(Result) {}); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("unknown workload: %v", err)
	}
}
