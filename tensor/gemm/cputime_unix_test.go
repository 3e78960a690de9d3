//go:build unix

package gemm

import "syscall"

// cpuSeconds reports the process's user+system CPU time, used to report
// per-core efficiency next to wall-clock GFLOP/s on shared machines.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
