package tensor

import (
	"math"
	"math/rand/v2"
)

// RNG is a seeded random source (PCG). fedsim never uses a global random
// generator: every stream is created from a seed and a stream number, so one
// seed reproduces a whole run.
type RNG struct{ *rand.Rand }

// NewRNG returns a PCG generator for the given seed and stream.
func NewRNG(seed, stream uint64) *RNG {
	return &RNG{rand.New(rand.NewPCG(seed, stream))}
}

// FillNormal fills t with samples of N(mean, std²).
func FillNormal[T Float](r *RNG, t *Tensor[T], mean, std float64) {
	for i := range t.Data {
		t.Data[i] = T(mean + std*r.NormFloat64())
	}
}

// FillUniform fills t with samples of U[lo, hi).
func FillUniform[T Float](r *RNG, t *Tensor[T], lo, hi float64) {
	for i := range t.Data {
		t.Data[i] = T(lo + (hi-lo)*r.Float64())
	}
}

// KaimingUniform fills t as PyTorch's default Conv/Linear init does
// (kaiming_uniform with a = sqrt(5)): U(-b, b) with b = 1/sqrt(fanIn).
func KaimingUniform[T Float](r *RNG, t *Tensor[T], fanIn int) {
	b := 1 / math.Sqrt(float64(fanIn))
	FillUniform(r, t, -b, b)
}
