package data

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/fedsim/fedsim/tensor"
)

// DefaultMinSize is the usual least number of samples per client for the
// Dirichlet and quantity-skew partitions (as in the NIID-Bench code).
const DefaultMinSize = 10

// MaxAttempts bounds how often the Dirichlet and quantity-skew partitions
// re-draw proportions before giving up with an error.
const MaxAttempts = 1000

// Partition assigns the samples of a data set to clients.
type Partition struct {
	// Clients[i] lists client i's sample indices, in increasing order.
	// Every index of the data set appears exactly once overall.
	Clients [][]int
	// Histograms[i][c] is the number of client i's samples of class c.
	Histograms [][]int
}

// PartitionConfig names a partition method and its parameters; the zero
// values of unused fields are ignored.
type PartitionConfig struct {
	// Method is iid, dirichlet, dirichlet-client, shards or quantity.
	Method  string
	Clients int
	// Alpha is the Dirichlet concentration (dirichlet, dirichlet-client,
	// quantity): smaller is more skewed; 0.1 to 0.5 are common.
	Alpha float64
	// ShardsPerClient is k of the shards method (2 in McMahan et al.).
	ShardsPerClient int
	// MinSize is the least number of samples a client may get (dirichlet,
	// quantity): 0 means DefaultMinSize, a negative value means no minimum.
	MinSize int
}

// PartitionMethods lists the methods PartitionConfig accepts.
var PartitionMethods = []string{"iid", "dirichlet", "dirichlet-client", "shards", "quantity"}

// Partition splits samples with the given labels (each in [0, classes))
// according to c.
func (c PartitionConfig) Partition(labels []int, classes int, rng *tensor.RNG) (*Partition, error) {
	minSize := c.MinSize
	switch {
	case minSize == 0:
		minSize = DefaultMinSize
	case minSize < 0:
		minSize = 0
	}
	switch strings.ToLower(strings.TrimSpace(c.Method)) {
	case "iid":
		return IID(labels, classes, c.Clients, rng)
	case "dirichlet":
		return Dirichlet(labels, classes, c.Clients, c.Alpha, minSize, rng)
	case "dirichlet-client":
		return DirichletClient(labels, classes, c.Clients, c.Alpha, rng)
	case "shards":
		return Shards(labels, classes, c.Clients, c.ShardsPerClient, rng)
	case "quantity":
		return QuantitySkew(labels, classes, c.Clients, c.Alpha, minSize, rng)
	}
	return nil, fmt.Errorf("data: unknown partition method %q: want one of %s", c.Method, strings.Join(PartitionMethods, ", "))
}

// IID shuffles the samples and splits them into clients parts whose sizes
// differ by at most one.
func IID(labels []int, classes, clients int, rng *tensor.RNG) (*Partition, error) {
	if err := checkPartitionArgs("iid", labels, classes, clients, rng); err != nil {
		return nil, err
	}
	perm := rng.Perm(len(labels))
	out := make([][]int, clients)
	for i := range clients {
		lo, hi := i*len(perm)/clients, (i+1)*len(perm)/clients
		out[i] = perm[lo:hi:hi]
	}
	return finish(out, labels, classes), nil
}

// Dirichlet is the label-skew partition of the federated-learning
// benchmarks (NIID-Bench, FedMA, …): for each class, its samples are
// shuffled and split among the clients with proportions drawn from
// Dir(alpha, …, alpha), where clients that already hold at least
// len(labels)/clients samples get no more. The whole draw is repeated
// (at most MaxAttempts times) until every client has at least minSize
// samples. Small alpha (0.1) gives few classes per client; large alpha
// (100) approaches IID.
func Dirichlet(labels []int, classes, clients int, alpha float64, minSize int, rng *tensor.RNG) (*Partition, error) {
	const method = "dirichlet"
	if err := checkPartitionArgs(method, labels, classes, clients, rng); err != nil {
		return nil, err
	}
	if err := checkAlpha(method, alpha); err != nil {
		return nil, err
	}
	if err := checkMinSize(method, len(labels), clients, minSize); err != nil {
		return nil, err
	}
	n := len(labels)
	byClass := make([][]int, classes)
	for i, l := range labels {
		byClass[l] = append(byClass[l], i)
	}
	prop := make([]float64, clients)
	out := make([][]int, clients)
	best := -1
	for range MaxAttempts {
		for i := range out {
			out[i] = out[i][:0]
		}
		for _, idx := range byClass {
			if len(idx) == 0 {
				continue
			}
			rng.Shuffle(len(idx), func(a, b int) { idx[a], idx[b] = idx[b], idx[a] })
			sampleDirichlet(rng, alpha, prop)
			sum := 0.0
			for j := range prop {
				if len(out[j])*clients >= n { // already at its fair share
					prop[j] = 0
				}
				sum += prop[j]
			}
			if !(sum > 0) { // every client is full: only possible at the end
				for j := range prop {
					prop[j] = 1
				}
				sum = float64(clients)
			}
			cum, lo := 0.0, 0
			for j := range clients {
				cum += prop[j]
				hi := len(idx)
				if j < clients-1 {
					hi = min(max(int(cum/sum*float64(len(idx))), lo), len(idx))
				}
				out[j] = append(out[j], idx[lo:hi]...)
				lo = hi
			}
		}
		least := n
		for _, c := range out {
			least = min(least, len(c))
		}
		best = max(best, least)
		if least >= minSize {
			return finish(cloneAll(out), labels, classes), nil
		}
	}
	return nil, fmt.Errorf("data: %s partition: after %d draws some client still had fewer than %d samples (the best draw gave %d); raise alpha (now %g), lower the minimum size, or use fewer clients (now %d)",
		method, MaxAttempts, minSize, best, alpha, clients)
}

// DirichletClient is the label-skew partition of Hsu et al. (2019) as
// most federated-learning code implements it: every client gets an equal
// share of the samples (sizes differ by at most one), and its label mix is
// drawn from Dir(alpha, …, alpha) over the classes; its samples are drawn
// without replacement by that mix, renormalized over the classes that
// still have samples (in proportion to what is left when the mix puts no
// mass there). Unlike Dirichlet it cannot fail: at alpha = 0.01 with 80
// clients (DynaFed's setting) nearly every client holds one class, where
// Dirichlet's per-class split would leave most clients empty.
func DirichletClient(labels []int, classes, clients int, alpha float64, rng *tensor.RNG) (*Partition, error) {
	const method = "dirichlet-client"
	if err := checkPartitionArgs(method, labels, classes, clients, rng); err != nil {
		return nil, err
	}
	if err := checkAlpha(method, alpha); err != nil {
		return nil, err
	}
	n := len(labels)
	byClass := make([][]int, classes)
	for i, l := range labels {
		byClass[l] = append(byClass[l], i)
	}
	for _, idx := range byClass {
		rng.Shuffle(len(idx), func(a, b int) { idx[a], idx[b] = idx[b], idx[a] })
	}
	next := make([]int, classes) // byClass[k][next[k]:] is still free
	mix := make([]float64, classes)
	w := make([]float64, classes)
	out := make([][]int, clients)
	for i := range clients {
		size := (i+1)*n/clients - i*n/clients
		sampleDirichlet(rng, alpha, mix)
		out[i] = make([]int, 0, size)
		for range size {
			sum := 0.0
			for k := range classes {
				w[k] = 0
				if next[k] < len(byClass[k]) {
					w[k] = mix[k]
				}
				sum += w[k]
			}
			if !(sum > 0) { // the mix's classes are used up
				for k := range classes {
					w[k] = float64(len(byClass[k]) - next[k])
					sum += w[k]
				}
			}
			u, k := rng.Float64()*sum, 0
			for ; k < classes-1; k++ {
				if u < w[k] {
					break
				}
				u -= w[k]
			}
			for next[k] >= len(byClass[k]) { // rounding at the edge
				k = (k + classes - 1) % classes
			}
			out[i] = append(out[i], byClass[k][next[k]])
			next[k]++
		}
	}
	return finish(out, labels, classes), nil
}

// Shards is the pathological non-IID partition of McMahan et al. (2017):
// samples are sorted by label (ties in random order), cut into
// clients·shardsPerClient contiguous shards of (almost) equal size, and each
// client gets shardsPerClient shards at random, so it sees at most
// shardsPerClient classes.
func Shards(labels []int, classes, clients, shardsPerClient int, rng *tensor.RNG) (*Partition, error) {
	const method = "shards"
	if err := checkPartitionArgs(method, labels, classes, clients, rng); err != nil {
		return nil, err
	}
	k := shardsPerClient
	switch {
	case k <= 0:
		return nil, fmt.Errorf("data: %s partition: shards per client = %d must be at least 1 (McMahan et al. use 2)", method, k)
	case k > classes:
		return nil, fmt.Errorf("data: %s partition: shards per client = %d exceeds the %d classes; use at most %d", method, k, classes, classes)
	case k*clients > len(labels):
		return nil, fmt.Errorf("data: %s partition: %d clients × %d shards = %d shards but only %d samples; use fewer clients or fewer shards per client (at most %d)",
			method, clients, k, k*clients, len(labels), len(labels)/clients)
	}
	perm := rng.Perm(len(labels))
	slices.SortStableFunc(perm, func(a, b int) int { return cmp.Compare(labels[a], labels[b]) })
	s := clients * k
	order := rng.Perm(s)
	out := make([][]int, clients)
	for i := range clients {
		for _, sh := range order[i*k : (i+1)*k] {
			lo, hi := sh*len(perm)/s, (sh+1)*len(perm)/s
			out[i] = append(out[i], perm[lo:hi]...)
		}
	}
	return finish(out, labels, classes), nil
}

// QuantitySkew gives clients different amounts of data with IID labels:
// client sizes are proportional to a draw from Dir(alpha, …, alpha) over the
// clients, re-drawn (at most MaxAttempts times) until every client has at
// least minSize samples.
func QuantitySkew(labels []int, classes, clients int, alpha float64, minSize int, rng *tensor.RNG) (*Partition, error) {
	const method = "quantity"
	if err := checkPartitionArgs(method, labels, classes, clients, rng); err != nil {
		return nil, err
	}
	if err := checkAlpha(method, alpha); err != nil {
		return nil, err
	}
	if err := checkMinSize(method, len(labels), clients, minSize); err != nil {
		return nil, err
	}
	n := len(labels)
	perm := rng.Perm(n)
	prop := make([]float64, clients)
	cuts := make([]int, clients+1)
	best := -1
	for range MaxAttempts {
		sampleDirichlet(rng, alpha, prop)
		cum := 0.0
		least := n
		for j := range clients {
			cum += prop[j]
			cuts[j+1] = n
			if j < clients-1 {
				cuts[j+1] = min(max(int(cum*float64(n)), cuts[j]), n)
			}
			least = min(least, cuts[j+1]-cuts[j])
		}
		best = max(best, least)
		if least >= minSize {
			out := make([][]int, clients)
			for j := range out {
				out[j] = perm[cuts[j]:cuts[j+1]:cuts[j+1]]
			}
			return finish(out, labels, classes), nil
		}
	}
	return nil, fmt.Errorf("data: %s partition: after %d draws some client still had fewer than %d samples (the best draw gave %d); raise alpha (now %g), lower the minimum size, or use fewer clients (now %d)",
		method, MaxAttempts, minSize, best, alpha, clients)
}

func checkPartitionArgs(method string, labels []int, classes, clients int, rng *tensor.RNG) error {
	switch {
	case rng == nil || rng.Rand == nil:
		return fmt.Errorf("data: %s partition: nil RNG; pass tensor.NewRNG(seed, stream)", method)
	case classes <= 0:
		return fmt.Errorf("data: %s partition: classes = %d must be at least 1", method, classes)
	case clients <= 0:
		return fmt.Errorf("data: %s partition: clients = %d must be at least 1", method, clients)
	case len(labels) == 0:
		return fmt.Errorf("data: %s partition: no samples to partition", method)
	case clients > len(labels):
		return fmt.Errorf("data: %s partition: %d clients but only %d samples; use at most %d clients", method, clients, len(labels), len(labels))
	}
	for i, l := range labels {
		if l < 0 || l >= classes {
			return fmt.Errorf("data: %s partition: label %d at index %d is out of range for %d classes (0..%d)", method, l, i, classes, classes-1)
		}
	}
	return nil
}

func checkAlpha(method string, alpha float64) error {
	if !(alpha > 0) || math.IsInf(alpha, 0) {
		return fmt.Errorf("data: %s partition: alpha = %g must be a positive finite number (smaller is more skewed; 0.1 to 0.5 are common)", method, alpha)
	}
	return nil
}

func checkMinSize(method string, n, clients, minSize int) error {
	if minSize < 0 {
		return fmt.Errorf("data: %s partition: minimum size = %d must be at least 0", method, minSize)
	}
	if minSize > n/clients {
		return fmt.Errorf("data: %s partition: minimum size %d × %d clients exceeds the %d samples; use a minimum size of at most %d or fewer clients",
			method, minSize, clients, n, n/clients)
	}
	return nil
}

// finish sorts each client's indices and computes the histograms.
func finish(clients [][]int, labels []int, classes int) *Partition {
	p := &Partition{Clients: clients, Histograms: make([][]int, len(clients))}
	for i, c := range clients {
		slices.Sort(c)
		p.Histograms[i] = make([]int, classes)
		for _, j := range c {
			p.Histograms[i][labels[j]]++
		}
	}
	return p
}

func cloneAll(s [][]int) [][]int {
	out := make([][]int, len(s))
	for i, c := range s {
		out[i] = slices.Clone(c)
	}
	return out
}

// Sizes returns each client's number of samples.
func (p *Partition) Sizes() []int {
	out := make([]int, len(p.Clients))
	for i, c := range p.Clients {
		out[i] = len(c)
	}
	return out
}

// Check verifies that p assigns every index in [0, n) exactly once and that
// the histograms match the clients' sizes.
func (p *Partition) Check(n int) error {
	seen := make([]bool, n)
	total := 0
	if len(p.Histograms) != len(p.Clients) {
		return fmt.Errorf("data: partition has %d clients but %d histograms", len(p.Clients), len(p.Histograms))
	}
	for i, c := range p.Clients {
		hs := 0
		for _, v := range p.Histograms[i] {
			hs += v
		}
		if hs != len(c) {
			return fmt.Errorf("data: partition: client %d has %d samples but its histogram counts %d", i, len(c), hs)
		}
		for _, j := range c {
			if j < 0 || j >= n {
				return fmt.Errorf("data: partition: client %d has index %d, outside [0, %d)", i, j, n)
			}
			if seen[j] {
				return fmt.Errorf("data: partition: index %d is assigned twice (again to client %d)", j, i)
			}
			seen[j] = true
			total++
		}
	}
	if total != n {
		return fmt.Errorf("data: partition assigns %d of %d samples", total, n)
	}
	return nil
}

// Summary describes the partition for people: overall sizes, then one line
// per client with its size, its number of classes and its class histogram.
func (p *Partition) Summary() string {
	var b strings.Builder
	sizes := p.Sizes()
	total := 0
	for _, s := range sizes {
		total += s
	}
	if len(sizes) == 0 {
		return "0 clients\n"
	}
	sorted := slices.Sorted(slices.Values(sizes))
	fmt.Fprintf(&b, "%d clients, %d samples; client sizes min %d, median %d, max %d\n",
		len(sizes), total, sorted[0], sorted[len(sorted)/2], sorted[len(sorted)-1])
	w := len(fmt.Sprint(sorted[len(sorted)-1]))
	fmt.Fprintf(&b, "%6s %*s %7s  %s\n", "client", max(w, 4), "size", "classes", "samples per class")
	for i, h := range p.Histograms {
		nc := 0
		for _, v := range h {
			if v > 0 {
				nc++
			}
		}
		fmt.Fprintf(&b, "%6d %*d %7d  %v\n", i, max(w, 4), sizes[i], nc, h)
	}
	return b.String()
}

// sampleDirichlet fills out with a draw from Dir(alpha, …, alpha). It works
// with logarithms of the Gamma variates, so tiny alpha (where the variates
// underflow to zero) still gives a valid draw.
func sampleDirichlet(rng *tensor.RNG, alpha float64, out []float64) {
	m := math.Inf(-1)
	for i := range out {
		out[i] = logGammaVariate(rng, alpha)
		m = max(m, out[i])
	}
	sum := 0.0
	for i := range out {
		out[i] = math.Exp(out[i] - m)
		sum += out[i]
	}
	for i := range out {
		out[i] /= sum
	}
}

// logGammaVariate returns log X for X ~ Gamma(alpha, 1), by Marsaglia and
// Tsang's method (2000); for alpha < 1 it uses X = Y·U^(1/alpha) with
// Y ~ Gamma(alpha+1, 1).
func logGammaVariate(rng *tensor.RNG, alpha float64) float64 {
	if alpha < 1 {
		u := rng.Float64()
		for u == 0 {
			u = rng.Float64()
		}
		return logGammaVariate(rng, alpha+1) + math.Log(u)/alpha
	}
	d := alpha - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := rng.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := rng.Float64()
		if u < 1-0.0331*x*x*x*x {
			return math.Log(d * v)
		}
		if u > 0 && math.Log(u) < 0.5*x*x+d*(1-v+math.Log(v)) {
			return math.Log(d * v)
		}
	}
}
