// Package openblas wraps OpenBLAS's cblas_sgemm so that gemm's benchmarks can
// compare against it. Its code is only built with the openblas build tag and
// cgo (needs libopenblas-dev on Debian); without the tag the package is
// empty, so the default build needs neither cgo nor OpenBLAS. It is separate
// from gemm because a package cannot mix cgo with Go assembly.
//
//	go test -tags openblas -bench . ./tensor/gemm/
package openblas
