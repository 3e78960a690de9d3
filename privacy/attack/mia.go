package attack

import (
	"fmt"
	"math"
	"slices"

	ag "github.com/fedsim/fedsim/autograd"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// Outputs holds a model's per-example loss and logit-scaled confidence.
type Outputs struct {
	// Loss is the cross-entropy −log p_y.
	Loss []float64
	// Confidence is φ = log(p_y / (1 − p_y)), computed from the logits as
	// z_y − log Σ_{k≠y} exp z_k so that it stays finite when p_y rounds to
	// 1 (LiRA's statistic: roughly Gaussian across models).
	Confidence []float64
}

// Query evaluates m (in evaluation mode, no graph) on images x (N, C, H,
// W) with labels y, in batches of batch (≤ 0: 256).
func Query[T tensor.Float](m nn.Model[T], x *tensor.Tensor[T], y []int, batch int) (*Outputs, error) {
	if x == nil || x.Rank() != 4 || x.Shape[0] != len(y) {
		return nil, fmt.Errorf("attack: query needs (N, C, H, W) images and N labels")
	}
	if batch <= 0 {
		batch = 256
	}
	if tm, ok := m.(nn.Trainable); ok {
		prev := tm.Training()
		tm.SetTraining(false)
		defer tm.SetTraining(prev)
	}
	n := x.Shape[0]
	sz := len(x.Data) / max(n, 1)
	out := &Outputs{Loss: make([]float64, n), Confidence: make([]float64, n)}
	tp := ag.NewTape[T]()
	defer tp.Release()
	for lo := 0; lo < n; lo += batch {
		hi := min(n, lo+batch)
		xb := &tensor.Tensor[T]{Shape: append([]int{hi - lo}, x.Shape[1:]...), Data: x.Data[lo*sz : hi*sz]}
		var logits *tensor.Tensor[T]
		tp.NoGrad(func() {
			l := m.Forward(tp.Const(xb), nn.BindConst(tp, m))
			if tp.Err() == nil {
				logits = l.Value
			}
		})
		if err := tp.Err(); err != nil {
			return nil, fmt.Errorf("attack: query: %w", err)
		}
		k := logits.Shape[1]
		for i := range hi - lo {
			row := logits.Data[i*k : (i+1)*k]
			c := y[lo+i]
			if c < 0 || c >= k {
				return nil, fmt.Errorf("attack: label %d of example %d is outside the model's %d classes", c, lo+i, k)
			}
			all, rest := logSumExp(row, -1), logSumExp(row, c)
			zy := float64(row[c])
			out.Loss[lo+i] = all - zy
			out.Confidence[lo+i] = zy - rest
		}
		tp.Release()
	}
	return out, nil
}

// logSumExp returns log Σ_{k≠skip} exp row_k.
func logSumExp[T tensor.Float](row []T, skip int) float64 {
	m := math.Inf(-1)
	for k, v := range row {
		if k != skip {
			m = math.Max(m, float64(v))
		}
	}
	var s float64
	for k, v := range row {
		if k != skip {
			s += math.Exp(float64(v) - m)
		}
	}
	return m + math.Log(s)
}

// LossScores is the loss-threshold attack (Yeom et al. 2018): a member is
// an example with a small loss, so the score is −loss.
func LossScores(o *Outputs) []float64 {
	s := make([]float64, len(o.Loss))
	for i, l := range o.Loss {
		s[i] = -l
	}
	return s
}

// Shadows holds the confidences of K shadow models on the N target
// examples, and which examples each trained on.
type Shadows struct {
	Confidence [][]float64 `json:"confidence"` // K × N
	In         [][]bool    `json:"in"`         // K × N
}

// Add records one shadow model's confidences and training membership.
func (s *Shadows) Add(conf []float64, in []bool) error {
	if len(conf) != len(in) || (len(s.Confidence) > 0 && len(conf) != len(s.Confidence[0])) {
		return fmt.Errorf("attack: shadow model with %d confidences and %d membership flags (want %d each)", len(conf), len(in), s.n())
	}
	s.Confidence = append(s.Confidence, slices.Clone(conf))
	s.In = append(s.In, slices.Clone(in))
	return nil
}

func (s *Shadows) n() int {
	if len(s.Confidence) == 0 {
		return 0
	}
	return len(s.Confidence[0])
}

// LiRAOptions select the variant of the likelihood-ratio attack.
type LiRAOptions struct {
	// Offline uses only the OUT shadows (models that did not train on the
	// example): a one-sided test of how far the target's confidence lies
	// above the OUT distribution. Online (the default) compares the IN and
	// OUT Gaussians.
	Offline bool
	// GlobalVariance uses one variance per side pooled over all examples
	// instead of a per-example one: Carlini et al. recommend it below
	// about 64 shadow models, where per-example variances are noisy.
	GlobalVariance bool
}

// minStd keeps the Gaussians proper when all shadows agree.
const minStd = 1e-6

// LiRA is the likelihood-ratio attack of Carlini et al. (S&P 2022) on the
// target model's confidences conf (N): for each example a Gaussian is fit
// to the shadow models' confidences when it was IN their training set and
// when it was OUT; the online score is log N(φ; μ_in, σ_in²) − log N(φ;
// μ_out, σ_out²), the offline score log Φ((φ − μ_out)/σ_out). Every
// example needs at least one OUT shadow (and online one IN shadow);
// examples with fewer than two of a side use the pooled variance.
func LiRA(conf []float64, sh *Shadows, opt LiRAOptions) ([]float64, error) {
	n := len(conf)
	if sh == nil || len(sh.Confidence) == 0 {
		return nil, fmt.Errorf("attack: LiRA needs shadow models")
	}
	if sh.n() != n {
		return nil, fmt.Errorf("attack: %d target confidences but shadows scored %d examples", n, sh.n())
	}
	muIn, sdIn, nIn := make([]float64, n), make([]float64, n), make([]int, n)
	muOut, sdOut, nOut := make([]float64, n), make([]float64, n), make([]int, n)
	for i := range n {
		var in, out []float64
		for k := range sh.Confidence {
			if sh.In[k][i] {
				in = append(in, sh.Confidence[k][i])
			} else {
				out = append(out, sh.Confidence[k][i])
			}
		}
		if len(out) == 0 || (!opt.Offline && len(in) == 0) {
			return nil, fmt.Errorf("attack: example %d has %d IN and %d OUT shadow models: train more shadows (each on a random half)", i, len(in), len(out))
		}
		muIn[i], sdIn[i], nIn[i] = meanStd(in)
		muOut[i], sdOut[i], nOut[i] = meanStd(out)
	}
	pooled := func(sd []float64, cnt []int) float64 {
		var s float64
		var w int
		for i, v := range sd {
			if cnt[i] >= 2 {
				s += v * v * float64(cnt[i]-1)
				w += cnt[i] - 1
			}
		}
		if w == 0 {
			return 1
		}
		return math.Sqrt(s / float64(w))
	}
	gIn, gOut := pooled(sdIn, nIn), pooled(sdOut, nOut)
	scores := make([]float64, n)
	for i, phi := range conf {
		so := sdOut[i]
		if opt.GlobalVariance || nOut[i] < 2 {
			so = gOut
		}
		so = math.Max(so, minStd)
		if opt.Offline {
			scores[i] = logNormCDF((phi - muOut[i]) / so)
			continue
		}
		si := sdIn[i]
		if opt.GlobalVariance || nIn[i] < 2 {
			si = gIn
		}
		si = math.Max(si, minStd)
		scores[i] = logNormPDF(phi, muIn[i], si) - logNormPDF(phi, muOut[i], so)
	}
	return scores, nil
}

func meanStd(v []float64) (mu, sd float64, n int) {
	if len(v) == 0 {
		return 0, 0, 0
	}
	for _, x := range v {
		mu += x
	}
	mu /= float64(len(v))
	if len(v) < 2 {
		return mu, 0, len(v)
	}
	var ss float64
	for _, x := range v {
		ss += (x - mu) * (x - mu)
	}
	return mu, math.Sqrt(ss / float64(len(v)-1)), len(v)
}

func logNormPDF(x, mu, sd float64) float64 {
	z := (x - mu) / sd
	return -0.5*z*z - math.Log(sd) - 0.5*math.Log(2*math.Pi)
}

// logNormCDF is log Φ(z), accurate in the far left tail through erfc.
func logNormCDF(z float64) float64 {
	if z > -20 {
		return math.Log(0.5 * math.Erfc(-z/math.Sqrt2))
	}
	// Φ(z) ≈ φ(z)/|z| · (1 − 1/z² + 3/z⁴): the asymptotic series.
	z2 := z * z
	return -0.5*z2 - math.Log(-z) - 0.5*math.Log(2*math.Pi) + math.Log(1-1/z2+3/(z2*z2))
}
