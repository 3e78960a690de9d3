package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/fedsim/fedsim/client"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/distill"
	"github.com/fedsim/fedsim/federation"
	"github.com/fedsim/fedsim/internal/atomicfile"
	"github.com/fedsim/fedsim/internal/parallel"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/server"
	"github.com/fedsim/fedsim/tensor"
)

func workers(n int) int {
	if n <= 0 {
		return parallel.Workers()
	}
	return n
}

// ClientInfo is one entry of clients.json.
type ClientInfo struct {
	Client    int   `json:"client"`
	Samples   int   `json:"samples"`
	Classes   int   `json:"classes"`
	Histogram []int `json:"histogram"`
}

func writeClients(path string, p *data.Partition) error {
	out := make([]ClientInfo, len(p.Clients))
	for i, h := range p.Histograms {
		nc := 0
		for _, v := range h {
			if v > 0 {
				nc++
			}
		}
		out[i] = ClientInfo{Client: i, Samples: len(p.Clients[i]), Classes: nc, Histogram: h}
	}
	b, err := json.MarshalIndent(out, "", " ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'))
}

func metricsLine(m Metrics) []byte {
	b, _ := json.Marshal(m)
	return append(b, '\n')
}

// writeMetrics rewrites metrics.jsonl with the given lines (at the start,
// and on resume: a line written after the last checkpoint is dropped, so no
// round appears twice).
func writeMetrics(path string, ms []Metrics) error {
	var b bytes.Buffer
	for _, m := range ms {
		b.Write(metricsLine(m))
	}
	return writeFileAtomic(path, b.Bytes())
}

func appendMetrics(path string, m Metrics) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	if _, err := f.Write(metricsLine(m)); err != nil {
		f.Close()
		return fmt.Errorf("sim: writing metrics: %w", err)
	}
	return f.Close()
}

func saveCheckpoint(path string, cfg Config, srv *server.Server, ms []Metrics, fails []ClientFailure, wall float64) error {
	st := srv.State()
	meta, err := json.Marshal(checkpointMeta{Version: 1, Config: cfg, Rounds: st.Rounds, Metrics: ms, Failures: fails, WallS: wall,
		PrivateSteps: st.PrivateSteps, PrivateReleases: st.PrivateReleases, Epsilon: st.Epsilon})
	if err != nil {
		return err
	}
	b, err := federation.EncodeSnapshot(&federation.Snapshot{Meta: meta, Global: clientWeights(srv), Synthetic: st.Held,
		Trajectory: st.Trajectory, ServerSet: st.ServerSet})
	if err != nil {
		return err
	}
	return writeFileAtomic(path, b)
}

// writeOutputs writes the final weights, the plots and the grids; it
// returns the file names.
func writeOutputs(cfg Config, srv *server.Server, train *data.Dataset, ms []Metrics) ([]string, error) {
	var files []string
	if err := nn.Save(filepath.Join(cfg.Out, GlobalFile), srv.Global()); err != nil {
		return nil, err
	}
	files = append(files, GlobalFile)
	xr, xb := make(plotter.XYs, len(ms)), make(plotter.XYs, len(ms))
	for i, m := range ms {
		xr[i] = plotter.XY{X: float64(m.Round), Y: 100 * m.TestAcc}
		xb[i] = plotter.XY{X: float64(m.CumUploadBytes) / 1e6, Y: 100 * m.TestAcc}
	}
	title := fmt.Sprintf("%s, %d clients, %s (%s)", cfg.Dataset, cfg.Clients, srv.Strategy().Name(), cfg.Distill)
	if err := linePlot(filepath.Join(cfg.Out, AccRoundPlot), title, "round", xr); err != nil {
		return nil, err
	}
	if err := linePlot(filepath.Join(cfg.Out, AccBytesPlot), title, "cumulative upload (MB)", xb); err != nil {
		return nil, err
	}
	files = append(files, AccRoundPlot, AccBytesPlot)
	held := srv.State().Held
	ids := make([]int, 0, len(held))
	for id := range held {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids[:min(cfg.Grids, len(ids))] {
		s := held[id]
		set := &distill.SyntheticSet{X: s.X, Y: s.Y, Mean: train.Mean, Std: train.Std, Classes: train.Classes}
		name := fmt.Sprintf("synthetic_client%d.png", id)
		if err := distill.WriteGrid(filepath.Join(cfg.Out, name), set); err != nil {
			return nil, err
		}
		files = append(files, name)
	}
	if s := srv.State().ServerSet; s != nil {
		names, err := writeServerSet(cfg.Out, s, train)
		if err != nil {
			return nil, err
		}
		files = append(files, names...)
	}
	return files, nil
}

// writeServerSet saves the server's own synthetic set (DynaFed) as
// ServerSetFile, in the contract of fedsim distill's synthetic.npz so
// that fedsim eval scores it, and draws it as ServerGridPlot.
func writeServerSet(dir string, s *client.Synthetic, train *data.Dataset) ([]string, error) {
	set := &distill.SyntheticSet{X: s.X, Y: s.Y, Mean: train.Mean, Std: train.Std, Classes: train.Classes}
	if s.Soft != nil {
		// The file's y_soft holds logits (distill.SyntheticSet); ln p is
		// one whose softmax is p.
		set.YSoft = tensor.New[float32](s.Soft.Shape...)
		for i, p := range s.Soft.Data {
			set.YSoft.Data[i] = float32(math.Log(max(float64(p), 1e-30)))
		}
	}
	if err := set.Save(filepath.Join(dir, ServerSetFile)); err != nil {
		return nil, err
	}
	if err := distill.WriteGrid(filepath.Join(dir, ServerGridPlot), set); err != nil {
		return nil, err
	}
	return []string{ServerSetFile, ServerGridPlot}, nil
}

func linePlot(path, title, xlabel string, pts plotter.XYs) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xlabel
	p.Y.Label.Text = "test accuracy (%)"
	p.Add(plotter.NewGrid())
	l, s, err := plotter.NewLinePoints(pts)
	if err != nil {
		return fmt.Errorf("sim: plot: %w", err)
	}
	l.Color = color.RGBA{B: 200, A: 255}
	s.Color = l.Color
	p.Add(l, s)
	w, err := p.WriterTo(6*vg.Inch, 4*vg.Inch, "png")
	if err != nil {
		return fmt.Errorf("sim: plot: %w", err)
	}
	var b bytes.Buffer
	if _, err := w.WriteTo(&b); err != nil {
		return fmt.Errorf("sim: plot: %w", err)
	}
	return writeFileAtomic(path, b.Bytes())
}

// writeFileAtomic writes b to path atomically (see internal/atomicfile).
func writeFileAtomic(path string, b []byte) error {
	if err := atomicfile.WriteFile(path, b); err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	return nil
}

// timingRE matches metrics.jsonl's timing fields.
var timingRE = regexp.MustCompile(`"(wall_s|clients_s|server_s)":[0-9.e+-]+`)

// BlankTimings returns metrics.jsonl text with every timing field's value
// (wall_s, clients_s, server_s) replaced by "_": two runs of one seed, in
// process or on a cluster, give equal text.
func BlankTimings(metrics string) string {
	return timingRE.ReplaceAllString(metrics, `"$1":_`)
}
