package distill

import (
	"context"
	"fmt"
	"testing"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/tensor"
)

// BenchmarkStep times one outer iteration of the image-matching methods at
// the reference settings of MNIST IPC 1, and of IPC 10 for dc and dsa
// (ConvNet width 128, 256 real images per class, the method's default
// loops: at IPC 10, 10 outer × 50 inner steps, about 2 minutes each), on seeded random MNIST-shaped
// data (10 classes × 300 images), so the time does not depend on the data
// files. Profile one method with
//
//	go test ./distill/ -run '^$' -bench 'Step/dc' -benchtime 3x -cpuprofile /tmp/dc.prof
func BenchmarkStep(b *testing.B) {
	const classes, perClass = 10, 300
	rng := tensor.NewRNG(7, 1)
	x := tensor.New[float32](classes*perClass, 1, 28, 28)
	tensor.FillNormal(rng, x, 0, 1)
	y := make([]int, classes*perClass)
	for i := range y {
		y[i] = i % classes
	}
	real := &data.Dataset{Name: "mnist", X: x, Y: y, Classes: classes, Mean: []float32{0}, Std: []float32{1}}
	cases := []struct {
		method string
		ipc    int
	}{{MethodDC, 1}, {MethodDSA, 1}, {MethodDM, 1}, {MethodDC, 10}, {MethodDSA, 10}}
	for _, c := range cases {
		method := c.method
		b.Run(fmt.Sprintf("%s-ipc%d", method, c.ipc), func(b *testing.B) {
			d, err := New(Config{Method: method, IPC: c.ipc, Seed: 1}, "mnist")
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			if err := d.Init(ctx, real); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := d.Step(ctx, i); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
