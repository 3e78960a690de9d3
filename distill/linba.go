package distill

import (
	"fmt"
	"math"

	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/internal/npz"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// MethodLinBa is Deng & Russakovsky's memory and addressing (survey eq.
// 35), trained with the meta-learning loss of dd (BPTT through the
// unrolled inner loop, with Meta's momentum and segments).
const MethodLinBa = "linba"

// linba holds the factors of a memory-and-addressing set: K bases
// b_1…b_K (each an image, D = C·H·W values) and r addressing matrices
// A_i (classes × K). Image i of class c is s = y_cᵀ A_i [b_1 … b_K]ᵀ =
// Σ_k A_i[c, k]·b_k (eq. 35), so the set holds classes·r images.
//
// Budget: the set is charged for every stored float, K·D + r·classes·K,
// which must not exceed the budget of a plain set at the configured IPC,
// classes·IPC·D; Meta.Bases and Meta.Formations default to r = 4·IPC
// images per class and the largest K that fits.
type linba struct {
	classes, r, k int
	shape         []int                   // (C, H, W)
	bases         *tensor.Tensor[float32] // (K, D)
	addr          *tensor.Tensor[float32] // (r, classes, K)
	opt           *nn.Adam[float32]
}

// linbaSize returns (r, K) for a configuration and data shape, or an
// error if the factors do not fit the budget.
func linbaSize(cfg Config, classes, dim int) (r, k int, err error) {
	budget := classes * cfg.IPC * dim
	r = cfg.Meta.Formations
	if r == 0 {
		r = 4 * cfg.IPC
	}
	k = cfg.Meta.Bases
	if k == 0 {
		k = budget / (dim + r*classes)
	}
	if r < 1 || k < 1 || k*dim+r*classes*k > budget {
		return 0, 0, fmt.Errorf("distill: linba: %d bases of %d values and %d addressing matrices (%d×%d) store %d floats, more than the budget of %d images per class (%d floats): lower --bases or --formations",
			k, dim, r, classes, k, k*dim+r*classes*k, cfg.IPC, budget)
	}
	return r, k, nil
}

// newLinba initialises the bases with K random real images (of any
// class) and the addressing matrices with N(0, 1/K) entries plus 1 on
// the basis of the matching class where there is one, so every initial
// image starts near a real image of its class.
func newLinba(cfg Config, real *data.Dataset, rng *tensor.RNG) (*linba, error) {
	shape := real.ImageShape()
	dim := shape[0] * shape[1] * shape[2]
	r, k, err := linbaSize(cfg, real.Classes, dim)
	if err != nil {
		return nil, err
	}
	l := &linba{classes: real.Classes, r: r, k: k, shape: shape, opt: nn.NewAdam[float32](cfg.LRImg)}
	byClass := real.ClassIndices()
	pick := make([]int, k)
	for j := range k {
		idx := byClass[j%real.Classes]
		pick[j] = idx[rng.IntN(len(idx))]
	}
	x, _ := real.Batch(pick)
	l.bases = &tensor.Tensor[float32]{Shape: []int{k, dim}, Data: x.Data}
	l.addr = tensor.New[float32](r, real.Classes, k)
	tensor.FillNormal(rng, l.addr, 0, 1/math.Sqrt(float64(k)))
	for i := range r {
		for c := range real.Classes {
			// Basis j holds a class-(j mod classes) image; give class c
			// the i-th of its own bases (cycling) where it has one.
			if j := c + (i%max(1, k/real.Classes))*real.Classes; j < k {
				l.addr.Data[(i*real.Classes+c)*k+j] += 1
			}
		}
	}
	return l, nil
}

// decode returns the images (classes·r, C, H, W), class-major, and their
// labels.
func (l *linba) decode() (*tensor.Tensor[float32], []int) {
	dim := l.bases.Shape[1]
	x := tensor.New[float32](append([]int{l.classes * l.r}, l.shape...)...)
	y := make([]int, 0, l.classes*l.r)
	for c := range l.classes {
		for i := range l.r {
			row := x.Data[(c*l.r+i)*dim : (c*l.r+i+1)*dim]
			a := l.addr.Data[(i*l.classes+c)*l.k : (i*l.classes+c+1)*l.k]
			for j, w := range a {
				b := l.bases.Data[j*dim : (j+1)*dim]
				for p := range row {
					row[p] += w * b[p]
				}
			}
			y = append(y, c)
		}
	}
	return x, y
}

// grads returns ∂L/∂bases and ∂L/∂addressing from ∂L/∂images gx (the
// chain rule through decode: ∂b_k = Σ_{c,i} A_i[c,k]·g_{c,i},
// ∂A_i[c,k] = ⟨g_{c,i}, b_k⟩).
func (l *linba) grads(gx *tensor.Tensor[float32]) (gb, ga *tensor.Tensor[float32]) {
	dim := l.bases.Shape[1]
	gb = tensor.New[float32](l.bases.Shape...)
	ga = tensor.New[float32](l.addr.Shape...)
	for c := range l.classes {
		for i := range l.r {
			g := gx.Data[(c*l.r+i)*dim : (c*l.r+i+1)*dim]
			off := (i*l.classes + c) * l.k
			for j := range l.k {
				b := l.bases.Data[j*dim : (j+1)*dim]
				w := l.addr.Data[off+j]
				dst := gb.Data[j*dim : (j+1)*dim]
				var dot float64
				for p, v := range g {
					dst[p] += w * v
					dot += float64(v) * float64(b[p])
				}
				ga.Data[off+j] = float32(dot)
			}
		}
	}
	return gb, ga
}

// step takes one Adam step on the factors from the image gradient gx.
func (l *linba) step(gx *tensor.Tensor[float32]) error {
	gb, ga := l.grads(gx)
	if err := l.opt.Step([]*tensor.Tensor[float32]{l.bases, l.addr}, []*tensor.Tensor[float32]{gb, ga}); err != nil {
		return fmt.Errorf("distill: %w", err)
	}
	return nil
}

// floats returns the number of stored floats (the budget charge).
func (l *linba) floats() int { return len(l.bases.Data) + len(l.addr.Data) }

// pack returns the factors flattened into a tensor of the decoded images'
// shape, zero-padded: Checkpoint has no slot for factors, so they ride in
// its velocity array (which has the images' shape and is otherwise unused
// by the Adam-trained meta methods). The budget guarantees they fit.
func (l *linba) pack() *tensor.Tensor[float32] {
	t := tensor.New[float32](append([]int{l.classes * l.r}, l.shape...)...)
	copy(t.Data, l.bases.Data)
	copy(t.Data[len(l.bases.Data):], l.addr.Data)
	return t
}

func (l *linba) unpack(t *tensor.Tensor[float32]) error {
	if t == nil || len(t.Data) < l.floats() {
		return fmt.Errorf("distill: linba: the checkpoint has no factors (%d values, want %d)", lenOf(t), l.floats())
	}
	copy(l.bases.Data, t.Data[:len(l.bases.Data)])
	copy(l.addr.Data, t.Data[len(l.bases.Data):l.floats()])
	return nil
}

func lenOf(t *tensor.Tensor[float32]) int {
	if t == nil {
		return 0
	}
	return len(t.Data)
}

// SaveFactors writes the factors of a linba run to path (atomically) as
// an .npz file: bases float32 (K, C, H, W), addressing float32 (r,
// classes, K) and floats int64 (1), the number of stored floats the set
// is charged for. It fails for the other methods.
func (d *metaDistiller) SaveFactors(path string) error {
	if d.lin == nil {
		return fmt.Errorf("distill: %s has no factors to save", d.cfg.Method)
	}
	l := d.lin
	var arrays []*npz.Array
	for _, a := range []struct {
		name  string
		shape []int
		data  any
	}{
		{"bases", append([]int{l.k}, l.shape...), append([]float32(nil), l.bases.Data...)},
		{"addressing", []int{l.r, l.classes, l.k}, append([]float32(nil), l.addr.Data...)},
		{"floats", []int{1}, []int64{int64(l.floats())}},
	} {
		arr, err := npz.New(a.name, a.shape, a.data)
		if err != nil {
			return fmt.Errorf("distill: linba factors: %w", err)
		}
		arrays = append(arrays, arr)
	}
	if err := npz.Write(path, arrays); err != nil {
		return fmt.Errorf("distill: writing linba factors: %w", err)
	}
	return nil
}
