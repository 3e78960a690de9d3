//go:build !amd64 || noasm

package gemm

// archKernels reports no assembly kernels: only the portable one is used.
func archKernels() []*kernel { return nil }
