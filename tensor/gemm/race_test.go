//go:build race

package gemm

// raceEnabled trims the slow float64 references under the race detector.
const raceEnabled = true
