package cli

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress shows a long task: a live bar (rate, ETA, a status line) when w
// is a terminal, and otherwise a plain line at most every interval, so logs
// and CI output stay readable.
type progress struct {
	bar      *progressbar.ProgressBar
	w        io.Writer
	label    string
	total    int
	interval time.Duration
	last     time.Time
	start    time.Time
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func newProgress(w io.Writer, label string, total int, quiet bool) *progress {
	p := &progress{w: w, label: label, total: total, interval: 10 * time.Second, start: time.Now()}
	if quiet {
		p.w = io.Discard
		return p
	}
	if isTerminal(w) {
		p.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(label),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionFullWidth(),
		)
	}
	return p
}

// update sets the position (done of total) and the status text.
func (p *progress) update(done int, status string) {
	if p.bar != nil {
		p.bar.Describe(p.label + " " + status)
		_ = p.bar.Set(done)
		return
	}
	if now := time.Now(); done == p.total || now.Sub(p.last) >= p.interval {
		p.last = now
		elapsed := now.Sub(p.start)
		eta := "?"
		if done > 0 {
			eta = (time.Duration(float64(elapsed) * float64(p.total-done) / float64(done))).Round(time.Second).String()
		}
		fmt.Fprintf(p.w, "%s %d/%d %s elapsed %s eta %s\n", p.label, done, p.total, status, elapsed.Round(time.Second), eta)
	}
}

func (p *progress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}
