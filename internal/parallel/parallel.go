// Package parallel owns the process's compute parallelism.
//
// Every kernel that splits work (GEMM, convolution, norms) goes through For,
// and so do the simulator's concurrent clients. The pool holds one token per
// extra core: a chunk runs on a new goroutine only when a token is free and
// runs inline otherwise. Nested or concurrent calls therefore never run more
// than GOMAXPROCS chunks at once, and a call made from inside a chunk cannot
// deadlock waiting for workers that are busy with its parent.
package parallel

import (
	"runtime"
	"sync"
)

var tokens = make(chan struct{}, max(runtime.GOMAXPROCS(0)-1, 0))

// Workers reports how many chunks may run at once (GOMAXPROCS when the pool
// was created).
func Workers() int { return cap(tokens) + 1 }

// For calls fn on disjoint ranges [lo, hi) that cover [0, n), running ranges
// in parallel where cores are free. grain is the smallest range worth a
// goroutine; For splits into at most Workers() ranges. fn must be safe to
// call concurrently on disjoint ranges. For returns when every range is done.
func For(n, grain int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	if grain < 1 {
		grain = 1
	}
	chunks := min(Workers(), (n+grain-1)/grain)
	if chunks <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	step := (n + chunks - 1) / chunks
	// The caller runs the first range itself; the others go to free tokens.
	for lo := step; lo < n; lo += step {
		hi := min(lo+step, n)
		select {
		case tokens <- struct{}{}:
			wg.Add(1)
			go func(lo, hi int) {
				defer func() { <-tokens; wg.Done() }()
				fn(lo, hi)
			}(lo, hi)
		default:
			fn(lo, hi)
		}
	}
	fn(0, min(step, n))
	wg.Wait()
}
