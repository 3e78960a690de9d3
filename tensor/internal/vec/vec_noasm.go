//go:build !amd64 || noasm

package vec

// Without assembly every kernel runs its Go reference: the *Asm hooks
// process nothing.

// Impl names the kernel set in use: "go" here.
func Impl() string { return "go" }

func sumSqShiftAsm(x []float32, k float64) (n int, s1, s2 float64)                       { return 0, 0, 0 }
func gradSumsAsm(g, x []float32, mu float64) (n int, sg, sgx float64)                    { return 0, 0, 0 }
func normRowAsm(y, x []float32, mu, a, b float32) int                                    { return 0 }
func normBackRowAsm(dx, g, x []float32, mu, a, bc, d float32) int                        { return 0 }
func reluAsm(dst, src []float32) int                                                     { return 0 }
func reluBackAsm(dst, g, x []float32) int                                                { return 0 }
func axpyAsm(a float32, x, y []float32) int                                              { return 0 }
func affineAsm(dst, src []float32, a, b float32) int                                     { return 0 }
func fillAsm(dst []float32, v float32) int                                               { return 0 }
func weightedRowsAsm(dst, rows []float32, ld int, w []float32, b float32, bias bool) int { return 0 }
func avgPool2x2Asm(dst, src []float32, w, rows int, inv float32) bool                    { return false }
func avgPool2x2BackAsm(dst, g []float32, w, rows int, inv float32) bool                  { return false }
func winogradInputOK(w int) bool                                                         { return false }
func winogradInputAsm(v []float32, stride int, x []float32, h, w int)                    {}

func levels() []string { return []string{"go"} }

func setLevel(string) (restore func()) { return func() {} }
