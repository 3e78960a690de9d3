// Package membership is the memberlist adapter of the multi-process
// cluster: a Node joins hashicorp/memberlist gossip (encrypted with a shared
// key) and publishes its role, gRPC address and capacity (slots) as node
// metadata; join, leave and failure events reach the owner as Events. The
// Directory turns the live workers into the client → worker routing the
// gRPC transport asks for (rpc.Directory), with Assign, a pure rendezvous
// hash, so that a worker's departure moves only its own clients.
//
// Only this package imports memberlist. The process loops that use it (the
// coordinator and the worker) are in package cluster.
package membership

import (
	"cmp"
	"encoding/binary"
	"hash/fnv"
	"math"
	"slices"
)

// Member is a worker as assignment sees it.
type Member struct {
	// Name is the worker's memberlist node name (unique in the cluster).
	Name string
	// Addr is its gRPC address.
	Addr string
	// Slots is how many tasks it runs at once: its weight.
	Slots int
}

// Assign maps clients 0 … clients-1 to workers by weighted rendezvous
// (highest random weight) hashing: each client goes to the worker with the
// highest score −slots / ln(u), u a hash of (worker name, client) in (0, 1).
// It is a pure function of the client count and the set of workers (their
// order does not matter); a worker gets clients in proportion to its slots
// on average; and when a worker leaves only its own clients move, each to
// its second choice, so a failure reshuffles nothing else. Workers with
// fewer than one slot get none. The result has one worker name per client
// ("" for every client when there is no worker).
func Assign(clients int, workers []Member) []string {
	ws := slices.Clone(workers)
	ws = slices.DeleteFunc(ws, func(m Member) bool { return m.Slots < 1 })
	// Sorting makes ties (equal scores) independent of the input order.
	slices.SortFunc(ws, func(a, b Member) int { return cmp.Compare(a.Name, b.Name) })
	out := make([]string, max(clients, 0))
	for id := range out {
		best := math.Inf(-1)
		for _, w := range ws {
			if s := score(w, id); s > best {
				best, out[id] = s, w.Name
			}
		}
	}
	return out
}

// score is the weighted rendezvous score of client id on worker w.
func score(w Member, id int) float64 {
	h := fnv.New64a()
	h.Write([]byte(w.Name))
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(id))
	h.Write(b[:])
	x := mix(h.Sum64())
	u := (float64(x>>11) + 0.5) / (1 << 53) // in (0, 1)
	return -float64(w.Slots) / math.Log(u)
}

// mix is SplitMix64's finalizer: FNV's low bits alone are poorly spread.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}
