package data

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/fedsim/fedsim/tensor"
)

// randLabels returns n labels in [0, classes) with uneven class sizes.
func randLabels(rng *tensor.RNG, n, classes int) []int {
	y := make([]int, n)
	for i := range y {
		// Squaring skews the class frequencies.
		u := rng.Float64()
		y[i] = int(u * u * float64(classes))
	}
	return y
}

// checkPartition verifies the partition's invariants for labels.
func checkPartition(t testing.TB, p *Partition, labels []int, classes, clients int) {
	t.Helper()
	if err := p.Check(len(labels)); err != nil {
		t.Fatal(err)
	}
	if len(p.Clients) != clients {
		t.Fatalf("%d clients, want %d", len(p.Clients), clients)
	}
	for i, c := range p.Clients {
		if !slices.IsSorted(c) {
			t.Fatalf("client %d's indices are not sorted", i)
		}
		h := make([]int, classes)
		for _, j := range c {
			h[labels[j]]++
		}
		if !slices.Equal(h, p.Histograms[i]) {
			t.Fatalf("client %d histogram %v, want %v", i, p.Histograms[i], h)
		}
	}
}

func TestPartitionProperties(t *testing.T) {
	rng := tensor.NewRNG(1, 0)
	gaveUp := 0
	for trial := range 300 {
		classes := 1 + rng.IntN(12)
		n := 1 + rng.IntN(2000)
		clients := 1 + rng.IntN(min(n, 60))
		labels := randLabels(rng, n, classes)
		alpha := math.Exp(rng.Float64()*8 - 5) // 0.007 … 20
		seed := rng.Uint64()
		cfg := PartitionConfig{Clients: clients, Alpha: alpha, MinSize: -1}
		switch trial % 4 {
		case 0:
			cfg.Method = "iid"
		case 1:
			cfg.Method = "dirichlet"
			cfg.MinSize = smallMin(rng, n, clients)
		case 2:
			cfg.Method = "shards"
			cfg.ShardsPerClient = 1 + rng.IntN(min(classes, n/clients))
		case 3:
			cfg.Method = "quantity"
			cfg.MinSize = smallMin(rng, n, clients)
		}
		p, err := cfg.Partition(labels, classes, tensor.NewRNG(seed, 0))
		if err != nil {
			// Only an unlucky min-size search may fail.
			if !strings.Contains(err.Error(), "draws") || cfg.MinSize < 0 {
				t.Fatalf("%+v n=%d classes=%d: %v", cfg, n, classes, err)
			}
			gaveUp++
			continue
		}
		checkPartition(t, p, labels, classes, clients)
		if min := max(cfg.MinSize, 0); cfg.Method == "dirichlet" || cfg.Method == "quantity" {
			for i, c := range p.Clients {
				if len(c) < min {
					t.Fatalf("%+v: client %d has %d < %d samples", cfg, i, len(c), min)
				}
			}
		}
		// Same seed, same partition.
		q, err := cfg.Partition(labels, classes, tensor.NewRNG(seed, 0))
		if err != nil {
			t.Fatal(err)
		}
		for i := range p.Clients {
			if !slices.Equal(p.Clients[i], q.Clients[i]) {
				t.Fatalf("%+v: not reproducible from the seed", cfg)
			}
		}
	}
	// Small alpha with many clients can make a minimum size unreachable:
	// those configurations must fail with the give-up error, not loop.
	t.Logf("%d of 300 configurations gave up on their minimum size", gaveUp)
}

// smallMin returns no minimum (-1) half the time, else a minimum of at
// most a quarter of the fair share.
func smallMin(rng *tensor.RNG, n, clients int) int {
	if rng.IntN(2) == 0 {
		return -1
	}
	return 1 + rng.IntN(n/clients/4+1)
}

func TestIIDBalanced(t *testing.T) {
	labels := randLabels(tensor.NewRNG(2, 0), 1003, 10)
	p, err := IID(labels, 10, 10, tensor.NewRNG(3, 0))
	if err != nil {
		t.Fatal(err)
	}
	checkPartition(t, p, labels, 10, 10)
	for _, s := range p.Sizes() {
		if s != 100 && s != 101 {
			t.Fatalf("sizes %v, want 100 or 101 each", p.Sizes())
		}
	}
}

// classesPerClient is the mean number of classes a client holds.
func classesPerClient(p *Partition) float64 {
	total := 0
	for _, h := range p.Histograms {
		for _, v := range h {
			if v > 0 {
				total++
			}
		}
	}
	return float64(total) / float64(len(p.Histograms))
}

func TestDirichletSkew(t *testing.T) {
	labels := make([]int, 10000)
	for i := range labels {
		labels[i] = i % 10
	}
	skewed, err := Dirichlet(labels, 10, 20, 0.1, DefaultMinSize, tensor.NewRNG(4, 0))
	if err != nil {
		t.Fatal(err)
	}
	flat, err := Dirichlet(labels, 10, 20, 1000, DefaultMinSize, tensor.NewRNG(4, 0))
	if err != nil {
		t.Fatal(err)
	}
	checkPartition(t, skewed, labels, 10, 20)
	checkPartition(t, flat, labels, 10, 20)
	if c := classesPerClient(skewed); c > 5 {
		t.Errorf("alpha 0.1 gives %.1f classes per client, want few", c)
	}
	if c := classesPerClient(flat); c != 10 {
		t.Errorf("alpha 1000 gives %.1f classes per client, want 10", c)
	}
	for i, h := range flat.Histograms {
		for c, v := range h {
			if v < 30 || v > 70 {
				t.Fatalf("alpha 1000: client %d has %d of class %c, want about 50", i, v, c)
			}
		}
	}
	// The usual benchmark setting: 60000 samples, 100 clients, alpha 0.1.
	big := make([]int, 60000)
	for i := range big {
		big[i] = i % 10
	}
	bp, err := Dirichlet(big, 10, 100, 0.1, DefaultMinSize, tensor.NewRNG(4, 1))
	if err != nil {
		t.Fatal(err)
	}
	checkPartition(t, bp, big, 10, 100)
	for i, s := range skewed.Sizes() {
		if s < DefaultMinSize {
			t.Fatalf("client %d has %d samples", i, s)
		}
	}
}

func TestShardsPathological(t *testing.T) {
	labels := make([]int, 6000)
	for i := range labels {
		labels[i] = (i * 7) % 10
	}
	p, err := Shards(labels, 10, 100, 2, tensor.NewRNG(5, 0))
	if err != nil {
		t.Fatal(err)
	}
	checkPartition(t, p, labels, 10, 100)
	for i, h := range p.Histograms {
		nc := 0
		for _, v := range h {
			if v > 0 {
				nc++
			}
		}
		if nc > 2 || len(p.Clients[i]) != 60 {
			t.Fatalf("client %d: %d samples of %d classes, want 60 of at most 2", i, len(p.Clients[i]), nc)
		}
	}
}

func TestQuantitySkew(t *testing.T) {
	labels := randLabels(tensor.NewRNG(6, 0), 5000, 10)
	p, err := QuantitySkew(labels, 10, 10, 0.5, DefaultMinSize, tensor.NewRNG(7, 0))
	if err != nil {
		t.Fatal(err)
	}
	checkPartition(t, p, labels, 10, 10)
	sizes := slices.Sorted(slices.Values(p.Sizes()))
	if sizes[0] < DefaultMinSize || sizes[9] < 2*sizes[0] {
		t.Fatalf("sizes %v: want at least %d each and visibly unequal", sizes, DefaultMinSize)
	}
}

func TestPartitionErrors(t *testing.T) {
	labels := []int{0, 1, 2, 0, 1, 2, 0, 1, 2, 0}
	rng := tensor.NewRNG(8, 0)
	cases := []struct {
		name string
		err  func() error
		want []string
	}{
		{"alpha0", func() error { _, e := Dirichlet(labels, 3, 2, 0, 0, rng); return e }, []string{"alpha = 0 must be a positive"}},
		{"alphaNeg", func() error { _, e := QuantitySkew(labels, 3, 2, -1, 0, rng); return e }, []string{"quantity", "alpha = -1"}},
		{"alphaNaN", func() error { _, e := Dirichlet(labels, 3, 2, math.NaN(), 0, rng); return e }, []string{"alpha = NaN"}},
		{"clients0", func() error { _, e := IID(labels, 3, 0, rng); return e }, []string{"clients = 0 must be at least 1"}},
		{"tooMany", func() error { _, e := IID(labels, 3, 11, rng); return e }, []string{"11 clients but only 10 samples; use at most 10 clients"}},
		{"nilRNG", func() error { _, e := IID(labels, 3, 2, nil); return e }, []string{"nil RNG"}},
		{"label", func() error { _, e := IID([]int{0, 3}, 3, 1, rng); return e }, []string{"label 3 at index 1 is out of range for 3 classes"}},
		{"empty", func() error { _, e := IID(nil, 3, 1, rng); return e }, []string{"no samples"}},
		{"k0", func() error { _, e := Shards(labels, 3, 2, 0, rng); return e }, []string{"shards per client = 0 must be at least 1"}},
		{"kClasses", func() error { _, e := Shards(labels, 3, 2, 4, rng); return e }, []string{"shards per client = 4 exceeds the 3 classes"}},
		{"kSamples", func() error { _, e := Shards(labels, 3, 4, 3, rng); return e }, []string{"4 clients × 3 shards = 12 shards but only 10 samples"}},
		{"minSize", func() error { _, e := Dirichlet(labels, 3, 4, 1, 3, rng); return e }, []string{"minimum size 3 × 4 clients exceeds the 10 samples", "at most 2"}},
		{"minNeg", func() error { _, e := QuantitySkew(labels, 3, 4, 1, -1, rng); return e }, []string{"minimum size = -1"}},
		{"method", func() error { _, e := PartitionConfig{Method: "zipf", Clients: 2}.Partition(labels, 3, rng); return e }, []string{`unknown partition method "zipf"`, "iid, dirichlet, dirichlet-client, shards, quantity"}},
		{"impossible", func() error {
			_, e := Dirichlet(make([]int, 1000), 1, 100, 0.001, 10, rng)
			return e
		}, []string{"after 1000 draws", "raise alpha (now 0.001)"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantErr(t, tc.err(), tc.want...) })
	}
}

func TestSummary(t *testing.T) {
	labels := []int{0, 1, 2, 0, 1, 2, 0, 1, 2, 0}
	p, err := Shards(labels, 3, 2, 2, tensor.NewRNG(9, 0))
	if err != nil {
		t.Fatal(err)
	}
	s := p.Summary()
	if !strings.Contains(s, "2 clients, 10 samples") || strings.Count(s, "\n") != 4 {
		t.Fatalf("summary:\n%s", s)
	}
}

func TestDirichletClientSkew(t *testing.T) {
	// DynaFed's extreme setting, where the per-class split cannot work:
	// 80 clients, alpha 0.01.
	labels := make([]int, 60000)
	for i := range labels {
		labels[i] = i % 10
	}
	p, err := DirichletClient(labels, 10, 80, 0.01, tensor.NewRNG(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	checkPartition(t, p, labels, 10, 80)
	for i, c := range p.Clients {
		if len(c) != 750 {
			t.Fatalf("client %d has %d samples, want 750 (equal shares)", i, len(c))
		}
	}
	if c := classesPerClient(p); c > 2 {
		t.Errorf("alpha 0.01 gives %.2f classes per client, want about 1", c)
	}
	flat, err := DirichletClient(labels, 10, 20, 1000, tensor.NewRNG(2, 0))
	if err != nil {
		t.Fatal(err)
	}
	checkPartition(t, flat, labels, 10, 20)
	for i, h := range flat.Histograms {
		for c, v := range h {
			if v < 200 || v > 400 {
				t.Fatalf("alpha 1000: client %d has %d of class %d, want about 300", i, v, c)
			}
		}
	}
	again, _ := DirichletClient(labels, 10, 80, 0.01, tensor.NewRNG(1, 0))
	for i := range p.Clients {
		if !slices.Equal(p.Clients[i], again.Clients[i]) {
			t.Fatal("same seed, different partition")
		}
	}
	if _, err := DirichletClient(labels, 10, 5, -1, tensor.NewRNG(1, 0)); err == nil || !strings.Contains(err.Error(), "alpha") {
		t.Fatalf("negative alpha: %v", err)
	}
	cfg := PartitionConfig{Method: "dirichlet-client", Clients: 8, Alpha: 0.5}
	if _, err := cfg.Partition(labels[:800], 10, tensor.NewRNG(3, 0)); err != nil {
		t.Fatal(err)
	}
}

func TestSampleDirichletMoments(t *testing.T) {
	rng := tensor.NewRNG(10, 0)
	for _, alpha := range []float64{0.05, 0.5, 1, 3, 50} {
		const k, draws = 4, 20000
		var sum, sq [k]float64
		p := make([]float64, k)
		for range draws {
			sampleDirichlet(rng, alpha, p)
			tot := 0.0
			for i, v := range p {
				if !(v >= 0) {
					t.Fatalf("alpha %g: component %v", alpha, v)
				}
				sum[i] += v
				sq[i] += v * v
				tot += v
			}
			if math.Abs(tot-1) > 1e-9 {
				t.Fatalf("alpha %g: draw sums to %v", alpha, tot)
			}
		}
		// Dir(α…α) over k: mean 1/k, variance (k−1)/(k²(kα+1)).
		wantVar := float64(k-1) / (k * k * (k*alpha + 1))
		for i := range k {
			m := sum[i] / draws
			v := sq[i]/draws - m*m
			if math.Abs(m-1.0/k) > 0.01 || math.Abs(v-wantVar) > 0.06*wantVar+1e-5 {
				t.Errorf("alpha %g component %d: mean %.4f var %.5f, want %.4f %.5f", alpha, i, m, v, 1.0/k, wantVar)
			}
		}
	}
}

func FuzzPartition(f *testing.F) {
	f.Add(uint8(0), uint16(100), uint8(5), uint8(10), 0.5, uint8(2), uint64(1))
	f.Add(uint8(1), uint16(50), uint8(3), uint8(7), 0.01, uint8(1), uint64(2))
	f.Add(uint8(2), uint16(500), uint8(10), uint8(50), 1.0, uint8(2), uint64(3))
	f.Add(uint8(3), uint16(30), uint8(2), uint8(30), 100.0, uint8(0), uint64(4))
	f.Fuzz(func(t *testing.T, method uint8, n uint16, classes, clients uint8, alpha float64, k uint8, seed uint64) {
		nn, nc := int(n)%3000, int(classes)
		var labels []int
		if nc > 0 {
			labels = randLabels(tensor.NewRNG(seed, 1), nn, nc)
		}
		cfg := PartitionConfig{
			Method: PartitionMethods[int(method)%len(PartitionMethods)], Clients: int(clients),
			Alpha: alpha, ShardsPerClient: int(k), MinSize: -1 + int(k)%4,
		}
		p, err := cfg.Partition(labels, nc, tensor.NewRNG(seed, 2))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "data: ") {
				t.Fatalf("error %q lacks the prefix", err)
			}
			return
		}
		checkPartition(t, p, labels, nc, int(clients))
		_ = p.Summary()
	})
}
