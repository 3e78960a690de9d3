package distill

import (
	"testing"

	"github.com/fedsim/fedsim/distill/kernel"
	"github.com/fedsim/fedsim/tensor"
)

// BenchmarkKRRLoss times one loss-and-gradient evaluation of KIP's kernels
// and of RFAD's random-feature kernel at the same size: IPC 10 of 10
// classes (100 support images) against 20 real images per class (200
// targets), MNIST-shaped (1×28×28), seeded random images. Run with
//
//	nice -n 5 go test ./distill/ -run '^$' -bench KRRLoss -benchtime 3x
func BenchmarkKRRLoss(b *testing.B) {
	const classes, ipc, perClass = 10, 10, 20
	rng := tensor.NewRNG(1, 1)
	xs := tensor.New[float32](classes*ipc, 1, 28, 28)
	xt := tensor.New[float32](classes*perClass, 1, 28, 28)
	tensor.FillNormal(rng, xs, 0, 1)
	tensor.FillNormal(rng, xt, 0, 1)
	ys, lt := make([]int, xs.Shape[0]), make([]int, xt.Shape[0])
	for i := range ys {
		ys[i] = i / ipc
	}
	for i := range lt {
		lt[i] = i / perClass
	}
	lab := tensor.New[float32](len(ys), classes)
	copy(lab.Data, kernel.CenteredOneHot[float32](ys, classes))
	yt := tensor.New[float32](len(lt), classes)
	copy(yt.Data, kernel.CenteredOneHot[float32](lt, classes))
	for _, c := range []struct {
		name string
		cfg  Config
	}{
		{"kip-fc3-ntk", Config{Method: MethodKIP}},
		{"kip-conv2-ntk", Config{Method: MethodKIP, KRR: KRRConfig{Kernel: KernelConv}}},
		{"kip-conv3-ntk", Config{Method: MethodKIP, KRR: KRRConfig{Kernel: KernelConv, Depth: 3}}},
		{"rfad-4x64", Config{Method: MethodRFAD}},
	} {
		cfg := c.cfg.Defaults("mnist")
		b.Run(c.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				var err error
				if cfg.Method == MethodRFAD {
					_, err = rfadLossGrad(cfg, classes, tensor.NewRNG(2, uint64(i)), xs, lab, xt, lt, -2.3)
				} else {
					d := &krrDistiller{cfg: cfg}
					_, err = kernel.LossGrad(kernel.Problem[float32]{Kernel: kernel.ArchFunc[float32](d.arch()), Reg: cfg.KRR.Reg, Xs: xs, Ys: lab, Xt: xt, Yt: yt, Chunk: cfg.KRR.Chunk})
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
