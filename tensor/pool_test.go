package tensor

import "testing"

func TestPoolReusesAndAccounts(t *testing.T) {
	DrainPool()
	in0, _, free0 := PoolStats()
	a := Get[float32](1000)
	a.Data[3] = 7
	buf := &a.Data[0]
	if in, _, _ := PoolStats(); in-in0 != 4000 {
		t.Fatalf("in use grew by %d bytes, want 4000", in-in0)
	}
	Put(a)
	if a.Data != nil {
		t.Fatal("Put left the tensor holding its buffer")
	}
	b := Get[float32](10, 100)
	if &b.Data[0] != buf {
		t.Fatal("Get of the same size did not reuse the released buffer")
	}
	if b.Data[3] != 0 {
		t.Fatal("Get returned a dirty buffer")
	}
	if c := Get[float64](1000); len(c.Data) != 1000 || &c.Data[0] == nil {
		t.Fatal("float64 pool broken")
	}
	Put(b)
	ResetPoolPeak()
	if _, _, free := PoolStats(); free-free0 != 4000 {
		t.Fatalf("free bytes grew by %d, want 4000", free-free0)
	}
	DrainPool()
	if _, _, free := PoolStats(); free != 0 {
		t.Fatalf("DrainPool left %d free bytes", free)
	}
}

// Free buffers of ever-changing sizes stay under the cap: past it the pool
// empties instead of pinning a buffer for every size it has seen.
func TestPoolFreeBytesAreCapped(t *testing.T) {
	DrainPool()
	ResetPoolPeak()
	const n = 16 << 20 // 64 MiB of float32 per buffer
	for k := range 40 {
		Put(Get[float32](n + k)) // 40 sizes, 2.5 GiB if all were kept
		if _, _, free := PoolStats(); free > minFreeCap {
			t.Fatalf("after %d sizes the pool holds %d free bytes, over the %d cap", k+1, free, minFreeCap)
		}
	}
	if _, _, free := PoolStats(); free == 0 {
		t.Fatal("the pool keeps nothing")
	}
	// A working set larger than the minimum raises the cap to twice it.
	big := make([]*Tensor[float32], 20)
	for i := range big {
		big[i] = Get[float32](n) // 1.25 GiB in use at once
	}
	for _, b := range big {
		Put(b)
	}
	if _, _, free := PoolStats(); free < 20*4*n {
		t.Fatalf("a 1.25 GiB working set was not kept whole for reuse: %d free bytes", free)
	}
	DrainPool()
}
