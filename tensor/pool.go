package tensor

import (
	"slices"
	"sync"
)

// The buffer pool keeps released slices keyed by exact length, one pool per
// element type. Training loops allocate the same shapes every step, so after
// the first step nearly every Get is served from the pool. Each size keeps at
// most maxPerSize free buffers, and the free buffers of all sizes together
// stay under freeCap: a run whose shapes keep changing (a simulator going
// through a thousand clients, each with its own batch sizes) would otherwise
// pin a set of buffers for every shape it ever saw. When a Put takes the pool
// past the cap the pool is emptied, which costs the current loop one round
// of fresh allocations.
//
// maxPerSize only guards the per-size lists against runaway growth; the
// byte cap is what bounds memory. It must exceed the buffers of one size a
// single step holds at once: MTT at IPC 10 keeps 30 unrolled steps of
// activations and their recorded gradients alive, a few hundred buffers of
// each activation size. With 64 per size the surplus went back to the
// garbage collector after every iteration and the next one faulted the
// same gigabytes in again (about a third of its time in the kernel).
const maxPerSize = 4096

// minFreeCap is the least freeCap: 1 GiB of free buffers.
const minFreeCap = 1 << 30

// freeCap (with poolStats held) is the most free bytes the pools keep: twice
// the largest working set seen, and at least minFreeCap.
func freeCap() int64 { return max(minFreeCap, 2*poolStats.peak) }

type bufferPool[T Float] struct {
	sync.Mutex
	free map[int][][]T
}

// Pool accounting in bytes, for memory benchmarks: buffers handed out and
// not yet returned (inUse, with its high-water mark) and buffers held free.
var poolStats struct {
	sync.Mutex
	inUse, peak, free int64
}

// account updates the accounting and reports whether the free bytes are
// now over freeCap.
func account(inUse, free int64) (over bool) {
	poolStats.Lock()
	defer poolStats.Unlock()
	poolStats.inUse += inUse
	poolStats.free += free
	poolStats.peak = max(poolStats.peak, poolStats.inUse)
	return poolStats.free > freeCap()
}

// PoolStats reports the bytes of pooled buffers in use (handed out by Get
// and not yet Put), the most in use at once since the last ResetPoolPeak,
// and the bytes held free for reuse.
func PoolStats() (inUse, peak, free int64) {
	poolStats.Lock()
	defer poolStats.Unlock()
	return poolStats.inUse, poolStats.peak, poolStats.free
}

// ResetPoolPeak starts a new high-water mark for PoolStats.
func ResetPoolPeak() {
	poolStats.Lock()
	poolStats.peak = poolStats.inUse
	poolStats.Unlock()
}

func elemSize[T Float]() int64 {
	var zero T
	if any(zero) == any(float32(0)) {
		return 4
	}
	return 8
}

var (
	pool32 = &bufferPool[float32]{free: map[int][][]float32{}}
	pool64 = &bufferPool[float64]{free: map[int][][]float64{}}
)

func poolFor[T Float]() *bufferPool[T] {
	var zero T
	switch any(zero).(type) {
	case float32:
		return any(pool32).(*bufferPool[T])
	default:
		return any(pool64).(*bufferPool[T])
	}
}

// Get returns a zero-filled tensor of the given shape, reusing a released
// buffer of the same size when one is free.
func Get[T Float](shape ...int) *Tensor[T] {
	t := GetUninit[T](shape...)
	clear(t.Data)
	return t
}

// GetUninit is Get without the zeroing: the values are arbitrary. Use it
// only for destinations a kernel overwrites completely.
func GetUninit[T Float](shape ...int) *Tensor[T] {
	n := Size(shape)
	p := poolFor[T]()
	p.Lock()
	bufs := p.free[n]
	var data []T
	if k := len(bufs); k > 0 {
		data = bufs[k-1]
		p.free[n] = bufs[:k-1]
	}
	p.Unlock()
	bytes := int64(n) * elemSize[T]()
	if data == nil {
		data = make([]T, n)
		account(bytes, 0)
	} else {
		account(bytes, -bytes)
	}
	return &Tensor[T]{Shape: slices.Clone(shape), Data: data}
}

// Put returns t's buffer to the pool. The caller must not use t, or any
// tensor sharing its data, afterwards.
func Put[T Float](t *Tensor[T]) {
	if t == nil || len(t.Data) == 0 {
		return
	}
	n := len(t.Data)
	p := poolFor[T]()
	bytes := int64(n) * elemSize[T]()
	p.Lock()
	kept := len(p.free[n]) < maxPerSize
	if kept {
		p.free[n] = append(p.free[n], t.Data[:n:n])
	}
	p.Unlock()
	switch {
	case !kept:
		account(-bytes, 0)
	case account(-bytes, bytes):
		DrainPool()
	}
	t.Data = nil
}

// DrainPool drops every pooled buffer so the garbage collector can reclaim
// them (between phases with different shapes, or in memory benchmarks).
func DrainPool() {
	for _, p := range []interface{ drain() }{pool32, pool64} {
		p.drain()
	}
}

func (p *bufferPool[T]) drain() {
	p.Lock()
	var bytes int64
	for n, bufs := range p.free {
		bytes += int64(n*len(bufs)) * elemSize[T]()
	}
	clear(p.free)
	p.Unlock()
	account(0, -bytes)
}
