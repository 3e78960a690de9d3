package distill

import (
	"math"
	"slices"
	"testing"

	"github.com/fedsim/fedsim/tensor"
)

// Evaluation trains on soft labels (logits) when the set has them: logits
// whose softmax is one-hot reproduce hard-label training bit for bit, and
// soft labels that disagree with the hard ones give other models (here:
// swapped classes, so the accuracy collapses).
func TestEvaluateSoftLabels(t *testing.T) {
	train, test := loadMNIST(t)
	real := twoClass(train, 50)
	tst := twoClass(test, 100)
	syn := subsetSet(real, []int{0, 1, 2, 3, 50, 51, 52, 53})
	cfg := DefaultEvalConfig("mnist")
	cfg.Model, cfg.Runs, cfg.Epochs = "convnet-w8", 1, 5
	hard, _, hardAccs, err := Evaluate(syn, tst, cfg)
	if err != nil {
		t.Fatal(err)
	}
	oneHot := func(flip bool) *tensor.Tensor[float32] { // logits: 0 for the class, −10⁴ (exp underflows to 0) elsewhere
		y := tensor.New[float32](syn.Len(), 2)
		y.Fill(-1e4)
		for i, l := range syn.Y {
			if flip {
				l = 1 - l
			}
			y.Data[i*2+l] = 0
		}
		return y
	}
	same := syn.Clone()
	same.YSoft = oneHot(false)
	_, _, sameAccs, err := Evaluate(same, tst, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sameAccs, hardAccs) {
		t.Errorf("one-hot soft labels: accuracies %v, hard labels %v", sameAccs, hardAccs)
	}
	swapped := syn.Clone()
	swapped.YSoft = oneHot(true)
	soft, _, _, err := Evaluate(swapped, tst, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("hard labels %.3f, swapped soft labels %.3f", hard, soft)
	if !(hard > 0.6) || !(soft < 0.4) {
		t.Fatalf("hard-label accuracy %v, swapped soft-label accuracy %v: want the soft labels used", hard, soft)
	}
	// Smoothed soft labels train too, to another model.
	smooth := syn.Clone()
	smooth.YSoft = oneHot(false)
	for i := range smooth.YSoft.Data {
		smooth.YSoft.Data[i] /= 1e4 // logits 0 and −1: targets 0.73 and 0.27
	}
	if p := SoftTargets(smooth.YSoft).Data; math.Abs(float64(p[0]+p[1])-1) > 1e-6 || math.Abs(float64(max(p[0], p[1]))-1/(1+math.Exp(-1))) > 1e-6 {
		t.Fatalf("SoftTargets: %v", p[:2])
	}
	_, _, smoothAccs, err := Evaluate(smooth, tst, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("smoothed soft labels: %v", smoothAccs)
}
