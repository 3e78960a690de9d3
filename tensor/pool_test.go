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
