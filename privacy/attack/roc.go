// Package attack measures privacy empirically: membership inference
// (loss threshold, LiRA online and offline) with ROC metrics and bootstrap
// confidence intervals, gradient inversion (DLG, iDLG) with PSNR/SSIM, and
// the similarity of synthetic images to their nearest real image.
//
// Scores are "higher means member": an attack returns one score per
// example, and the metrics take the scores and the true membership.
package attack

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"slices"
	"sort"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/fedsim/fedsim/internal/atomicfile"
	"github.com/fedsim/fedsim/tensor"
)

// ROC is a receiver operating characteristic curve: the (FPR, TPR) points
// obtained by thresholding the scores at every distinct value, from (0, 0)
// (nothing called member) to (1, 1).
type ROC struct {
	FPR []float64 `json:"fpr"`
	TPR []float64 `json:"tpr"`
}

func checkScores(scores []float64, member []bool) (pos, neg int, err error) {
	if len(scores) != len(member) {
		return 0, 0, fmt.Errorf("attack: %d scores but %d membership labels", len(scores), len(member))
	}
	for i, s := range scores {
		if math.IsNaN(s) {
			return 0, 0, fmt.Errorf("attack: score %d is NaN", i)
		}
		if member[i] {
			pos++
		} else {
			neg++
		}
	}
	if pos == 0 || neg == 0 {
		return 0, 0, fmt.Errorf("attack: %d members and %d non-members: the metrics need both", pos, neg)
	}
	return pos, neg, nil
}

// Curve returns the ROC curve of scores against the true membership. Tied
// scores form one step, so the curve does not depend on their order.
func Curve(scores []float64, member []bool) (ROC, error) {
	pos, neg, err := checkScores(scores, member)
	if err != nil {
		return ROC{}, err
	}
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return scores[idx[a]] > scores[idx[b]] })
	r := ROC{FPR: []float64{0}, TPR: []float64{0}}
	tp, fp := 0, 0
	for i := 0; i < len(idx); {
		j := i
		for j < len(idx) && scores[idx[j]] == scores[idx[i]] {
			if member[idx[j]] {
				tp++
			} else {
				fp++
			}
			j++
		}
		r.FPR = append(r.FPR, float64(fp)/float64(neg))
		r.TPR = append(r.TPR, float64(tp)/float64(pos))
		i = j
	}
	return r, nil
}

// AUC returns the area under the ROC curve: the probability that a random
// member scores above a random non-member, ties counting one half
// (Mann–Whitney U / (n₊n₋)).
func AUC(scores []float64, member []bool) (float64, error) {
	r, err := Curve(scores, member)
	if err != nil {
		return 0, err
	}
	return r.AUC(), nil
}

// AUC integrates the curve with the trapezoidal rule (exact for a step
// curve with ties drawn as diagonals, which is the Mann–Whitney value).
func (r ROC) AUC() float64 {
	var a float64
	for i := 1; i < len(r.FPR); i++ {
		a += (r.FPR[i] - r.FPR[i-1]) * (r.TPR[i] + r.TPR[i-1]) / 2
	}
	return a
}

// TPRAt returns the largest TPR among the curve's points with FPR ≤ fpr,
// the low-FPR metric of Carlini et al. (2022): no interpolation, so an
// attack gets credit only for thresholds it can actually set.
func (r ROC) TPRAt(fpr float64) float64 {
	best := 0.0
	for i, f := range r.FPR {
		if f <= fpr {
			best = max(best, r.TPR[i])
		}
	}
	return best
}

// Interval is an estimate with a bootstrap confidence interval.
type Interval struct {
	Value float64 `json:"value"`
	Lo    float64 `json:"lo"`
	Hi    float64 `json:"hi"`
}

func (iv Interval) String() string {
	return fmt.Sprintf("%.4f [%.4f, %.4f]", iv.Value, iv.Lo, iv.Hi)
}

// Report holds an attack's metrics: AUC, TPR at 1% and 0.1% FPR, each
// with a 95% percentile-bootstrap interval, and the balanced accuracy of
// the best threshold.
type Report struct {
	Members    int      `json:"members"`
	NonMembers int      `json:"non_members"`
	AUC        Interval `json:"auc"`
	TPR1       Interval `json:"tpr_at_1pct_fpr"`
	TPR01      Interval `json:"tpr_at_0.1pct_fpr"`
	BestAcc    float64  `json:"best_balanced_accuracy"`
	Bootstrap  int      `json:"bootstrap"`
	Curve      ROC      `json:"roc"`
}

// Evaluate computes the metrics of scores against member and their 95%
// intervals from boot bootstrap resamples (members and non-members
// resampled separately, so every resample has both) drawn from seed.
func Evaluate(scores []float64, member []bool, boot int, seed uint64) (*Report, error) {
	if boot < 0 {
		return nil, fmt.Errorf("attack: %d bootstrap resamples: want ≥ 0 (200 or more for a 95%% interval)", boot)
	}
	pos, neg, err := checkScores(scores, member)
	if err != nil {
		return nil, err
	}
	r, _ := Curve(scores, member)
	rep := &Report{Members: pos, NonMembers: neg, Bootstrap: boot, Curve: r}
	rep.AUC.Value, rep.TPR1.Value, rep.TPR01.Value = r.AUC(), r.TPRAt(0.01), r.TPRAt(0.001)
	for i := range r.FPR {
		rep.BestAcc = max(rep.BestAcc, (r.TPR[i]+1-r.FPR[i])/2)
	}
	rep.AUC.Lo, rep.AUC.Hi = rep.AUC.Value, rep.AUC.Value
	rep.TPR1.Lo, rep.TPR1.Hi = rep.TPR1.Value, rep.TPR1.Value
	rep.TPR01.Lo, rep.TPR01.Hi = rep.TPR01.Value, rep.TPR01.Value
	if boot == 0 {
		return rep, nil
	}
	var in, out []int
	for i, m := range member {
		if m {
			in = append(in, i)
		} else {
			out = append(out, i)
		}
	}
	rng := tensor.NewRNG(seed, 0)
	aucs, t1, t01 := make([]float64, boot), make([]float64, boot), make([]float64, boot)
	s := make([]float64, 0, len(scores))
	m := make([]bool, 0, len(scores))
	for b := range boot {
		s, m = s[:0], m[:0]
		for range in {
			s, m = append(s, scores[in[rng.IntN(len(in))]]), append(m, true)
		}
		for range out {
			s, m = append(s, scores[out[rng.IntN(len(out))]]), append(m, false)
		}
		c, _ := Curve(s, m)
		aucs[b], t1[b], t01[b] = c.AUC(), c.TPRAt(0.01), c.TPRAt(0.001)
	}
	rep.AUC.Lo, rep.AUC.Hi = percentiles(aucs)
	rep.TPR1.Lo, rep.TPR1.Hi = percentiles(t1)
	rep.TPR01.Lo, rep.TPR01.Hi = percentiles(t01)
	return rep, nil
}

// percentiles returns the 2.5% and 97.5% quantiles (linear interpolation).
func percentiles(v []float64) (lo, hi float64) {
	s := slices.Clone(v)
	slices.Sort(s)
	q := func(p float64) float64 {
		x := p * float64(len(s)-1)
		i := int(x)
		if i+1 >= len(s) {
			return s[len(s)-1]
		}
		return s[i] + (x-float64(i))*(s[i+1]-s[i])
	}
	return q(0.025), q(0.975)
}

// NamedCurve is a curve with its legend entry.
type NamedCurve struct {
	Name  string
	Curve ROC
}

// PlotROC draws the curves on log-log axes (FPR and TPR from 1e-4 to 1;
// smaller values are drawn at 1e-4), with the chance diagonal, as a PNG
// written atomically to path.
func PlotROC(path, title string, curves []NamedCurve) error {
	if len(curves) == 0 {
		return fmt.Errorf("attack: no ROC curve to plot")
	}
	floor := 1e-4
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "false positive rate"
	p.Y.Label.Text = "true positive rate"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker, p.Y.Tick.Marker = plot.LogTicks{Prec: -1}, plot.LogTicks{Prec: -1}
	p.X.Min, p.Y.Min, p.X.Max, p.Y.Max = floor, floor, 1, 1
	p.Add(plotter.NewGrid())
	diag, err := plotter.NewLine(plotter.XYs{{X: floor, Y: floor}, {X: 1, Y: 1}})
	if err != nil {
		return fmt.Errorf("attack: plot: %w", err)
	}
	diag.Dashes = []vg.Length{vg.Points(4), vg.Points(4)}
	diag.Color = color.Gray{Y: 128}
	p.Add(diag)
	palette := []color.Color{
		color.RGBA{B: 200, A: 255}, color.RGBA{R: 200, A: 255}, color.RGBA{G: 150, A: 255},
		color.RGBA{R: 200, G: 120, A: 255}, color.RGBA{R: 120, B: 160, A: 255}, color.RGBA{G: 120, B: 160, A: 255},
		color.RGBA{A: 255}, color.RGBA{R: 140, G: 90, B: 40, A: 255}, color.RGBA{R: 230, G: 90, B: 180, A: 255},
		color.RGBA{R: 120, G: 120, B: 0, A: 255},
	}
	for i, c := range curves {
		pts := make(plotter.XYs, 0, len(c.Curve.FPR))
		for j := range c.Curve.FPR {
			pts = append(pts, plotter.XY{X: math.Max(c.Curve.FPR[j], floor), Y: math.Max(c.Curve.TPR[j], floor)})
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return fmt.Errorf("attack: plot %s: %w", c.Name, err)
		}
		l.Color = palette[i%len(palette)]
		l.Width = vg.Points(1.5)
		if i >= len(palette) { // more curves than colours: dash the repeats
			l.Dashes = []vg.Length{vg.Points(6), vg.Points(2)}
		}
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s (AUC %.3f)", c.Name, c.Curve.AUC()), l)
	}
	p.Legend.Top, p.Legend.Left = false, false
	p.Legend.TextStyle.Font.Size = vg.Points(8)
	w, err := p.WriterTo(5*vg.Inch, 5*vg.Inch, "png")
	if err != nil {
		return fmt.Errorf("attack: plot: %w", err)
	}
	var b bytes.Buffer
	if _, err := w.WriteTo(&b); err != nil {
		return fmt.Errorf("attack: plot: %w", err)
	}
	if err := atomicfile.WriteFile(path, b.Bytes()); err != nil {
		return fmt.Errorf("attack: %w", err)
	}
	return nil
}
