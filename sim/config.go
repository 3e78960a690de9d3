// Package sim wires a federated simulation together — data partitions →
// clients → transport → server — and runs it round by round, writing
// metrics.jsonl, summary.json, per-client label histograms, plots, grids of
// synthetic sets and an atomic checkpoint after every round (a resumed run
// continues with no lost or repeated round and gives the same metrics).
package sim

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/fedsim/fedsim/client"
	"github.com/fedsim/fedsim/data"
	"github.com/fedsim/fedsim/distill"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/privacy"
	"github.com/fedsim/fedsim/server"
	"github.com/fedsim/fedsim/tensor"
)

// Config is one experiment. Its YAML keys (configs/*.yaml) are the field
// tags; the command-line flags have the same names with '-' for '_'.
type Config struct {
	Dataset    string `yaml:"dataset" json:"dataset"`
	DataDir    string `yaml:"data_dir" json:"data_dir,omitempty"`
	TrainLimit int    `yaml:"train_limit" json:"train_limit,omitempty"`
	TestLimit  int    `yaml:"test_limit" json:"test_limit,omitempty"`

	Partition       string  `yaml:"partition" json:"partition"`
	Alpha           float64 `yaml:"alpha" json:"alpha"`
	ShardsPerClient int     `yaml:"shards_per_client" json:"shards_per_client"`
	Clients         int     `yaml:"clients" json:"clients"`

	Rounds   int     `yaml:"rounds" json:"rounds"`
	Fraction float64 `yaml:"fraction" json:"fraction"`
	// Distill is dm, gm or none (none: FedAvg/FedProx).
	Distill string `yaml:"distill" json:"distill"`
	// Strategy is fedavg, fedprox, oneshot, feddm or dynafed (fedavg with
	// ServerTM); "" picks oneshot when distilling and fedavg otherwise.
	Strategy string `yaml:"strategy" json:"strategy"`
	// Model is the global model (and the clients' matching network).
	Model string `yaml:"model" json:"model"`

	IPC          int `yaml:"ipc" json:"ipc"`
	DistillIters int `yaml:"distill_iters" json:"distill_iters"`
	BatchReal    int `yaml:"batch_real" json:"batch_real"`
	// LRImg is the synthetic images' learning rate (0: dm 1.0, gm 0.1).
	LRImg float64 `yaml:"lr_img" json:"lr_img"`
	// ImageSteps (one-shot dm) is how many SGD steps the images take
	// against each iteration's targets (0 or 1: one; see
	// distill.Config.ImageSteps). With DP the extra steps are free.
	ImageSteps int     `yaml:"image_steps" json:"image_steps,omitempty"`
	Perturb    float64 `yaml:"perturb" json:"perturb"`
	// DistillInit is where the clients' synthetic images start: real
	// (random real images of the class), noise, or mean (the class mean
	// image, pooled and jittered; one-shot dm only; with differential
	// privacy released by the Gaussian mechanism of DPInitClip and
	// DPInitNoise, charged to the budget); "" is real, or noise with
	// differential privacy.
	DistillInit string `yaml:"distill_init" json:"distill_init,omitempty"`

	LocalEpochs int     `yaml:"local_epochs" json:"local_epochs"`
	LocalBatch  int     `yaml:"local_batch" json:"local_batch"`
	LocalLR     float64 `yaml:"local_lr" json:"local_lr"`
	// LocalOptim is the clients' local optimizer: sgd (momentum 0.9) or
	// adam (PyTorch's defaults; the DynaFed authors' clients use it at lr
	// 0.001). "" is sgd, the default, so that checkpoints written before
	// the option existed still resume.
	LocalOptim string  `yaml:"local_optim" json:"local_optim,omitempty"`
	Mu         float64 `yaml:"mu" json:"mu"`

	// ServerSteps is the number of SGD steps per round of the server's
	// training on the synthetic union (distillation strategies).
	ServerSteps int     `yaml:"server_steps" json:"server_steps"`
	ServerBatch int     `yaml:"server_batch" json:"server_batch"`
	ServerLR    float64 `yaml:"server_lr" json:"server_lr"`
	ServerDSA   string  `yaml:"server_dsa" json:"server_dsa"`

	// ServerTM turns on server-side trajectory matching (DynaFed, see
	// server.DynaFed): the global models of the first ServerTMRounds
	// rounds form a trajectory, the server distills ServerTMIPC images per
	// class from it (ServerTMIters matching iterations of ServerTMSynSteps
	// student steps against the model ServerTMSpan rounds ahead, or with
	// ServerTMAverage ≥ 1 against a mean of at least that many of the
	// models 1 … ServerTMSpan rounds ahead; images'
	// learning rate ServerTMLRImg, initial student step size ServerTMLR),
	// then fine-tunes every aggregated model on them for ServerTMSteps SGD
	// steps with learning rate ServerTMFineLR. ServerTMSoftLabels learns
	// the set's labels too (learning rate ServerTMLRLabel).
	// ServerTMImgOptim is the images' (and learned labels') optimizer:
	// "sgd" (momentum 0.5, MTT's) or "adam" (the DynaFed authors' scripts,
	// with an image learning rate near 0.05); "" means sgd.
	ServerTM           bool    `yaml:"server_tm" json:"server_tm"`
	ServerTMRounds     int     `yaml:"server_tm_rounds" json:"server_tm_rounds"`
	ServerTMSpan       int     `yaml:"server_tm_span" json:"server_tm_span"`
	ServerTMAverage    int     `yaml:"server_tm_average" json:"server_tm_average"`
	ServerTMSynSteps   int     `yaml:"server_tm_syn_steps" json:"server_tm_syn_steps"`
	ServerTMIPC        int     `yaml:"server_tm_ipc" json:"server_tm_ipc"`
	ServerTMIters      int     `yaml:"server_tm_iters" json:"server_tm_iters"`
	ServerTMLRImg      float64 `yaml:"server_tm_lr_img" json:"server_tm_lr_img"`
	ServerTMLR         float64 `yaml:"server_tm_lr" json:"server_tm_lr"`
	ServerTMSteps      int     `yaml:"server_tm_steps" json:"server_tm_steps"`
	ServerTMFineLR     float64 `yaml:"server_tm_fine_lr" json:"server_tm_fine_lr"`
	ServerTMSoftLabels bool    `yaml:"server_tm_soft_labels" json:"server_tm_soft_labels"`
	ServerTMLRLabel    float64 `yaml:"server_tm_lr_label" json:"server_tm_lr_label"`
	ServerTMImgOptim   string  `yaml:"server_tm_img_optim" json:"server_tm_img_optim"`

	// Dropout is the probability that a sampled client never answers;
	// Stragglers the probability that it answers after the deadline.
	Dropout    float64 `yaml:"dropout" json:"dropout"`
	Stragglers float64 `yaml:"stragglers" json:"stragglers"`

	// Differential privacy (off unless dp_noise or dp_epsilon is given):
	// example-level DP distillation on the clients (DP-DM / DP gradient
	// matching, every iteration a Poisson sample of rate DPSampleRate) or
	// client-level DP-FedAvg (rate: the sampled fraction). DPNoise is σ; or
	// DPEpsilon is the budget ε at DPDelta, σ then found by the accountant
	// (both: σ runs until a client's budget would be exceeded). DPClip is
	// the clipping norm C. Resolve fills DPNoise when only DPEpsilon is
	// given.
	DPNoise      float64 `yaml:"dp_noise" json:"dp_noise,omitempty"`
	DPEpsilon    float64 `yaml:"dp_epsilon" json:"dp_epsilon,omitempty"`
	DPClip       float64 `yaml:"dp_clip" json:"dp_clip,omitempty"`
	DPDelta      float64 `yaml:"dp_delta" json:"dp_delta,omitempty"`
	DPSampleRate float64 `yaml:"dp_sample_rate" json:"dp_sample_rate,omitempty"`
	// DPCenter (private DM) clips each real embedding's offset from the
	// synthetic class mean instead of the embedding (distill.DPConfig).
	DPCenter bool `yaml:"dp_center" json:"dp_center,omitempty"`
	// DPProject (private DM) projects the embeddings onto that many random
	// directions before clipping and noise (distill.DPConfig.Project).
	DPProject int `yaml:"dp_project" json:"dp_project,omitempty"`
	// DPInitClip and DPInitNoise are the clipping norm and noise
	// multiplier of the class-mean release of distill_init mean.
	DPInitClip  float64 `yaml:"dp_init_clip" json:"dp_init_clip,omitempty"`
	DPInitNoise float64 `yaml:"dp_init_noise" json:"dp_init_noise,omitempty"`
	// DPMinClass leaves out of private distillation the classes a client
	// holds fewer real examples of (client.DPTask.MinClass).
	DPMinClass int `yaml:"dp_min_class" json:"dp_min_class,omitempty"`

	Seed uint64 `yaml:"seed" json:"seed"`
	Out  string `yaml:"out" json:"out"`
	// Grids is how many clients' synthetic sets are drawn as PNG grids.
	Grids int `yaml:"grids" json:"grids"`
}

// Strategies lists the strategy names.
var Strategies = []string{"fedavg", "fedprox", "oneshot", "feddm", "dynafed"}

// DefaultConfig returns the defaults of `fedsim run`: one-shot DM on MNIST
// with 50 clients (Dirichlet α = 0.5), 10 clients per round over 5 rounds,
// each distilling 10 images per class it holds, and a width-32 ConvNet
// trained on the union of the synthetic sets with DSA augmentation.
func DefaultConfig() Config {
	return Config{
		Dataset: "mnist", Partition: "dirichlet", Alpha: 0.5, ShardsPerClient: 2, Clients: 50,
		Rounds: 5, Fraction: 0.2, Distill: "dm", Model: "convnet-w32",
		IPC: 10, DistillIters: 20, BatchReal: 64, Perturb: 0.01,
		LocalEpochs: 1, LocalBatch: 32, LocalLR: 0.01, Mu: 0.01,
		ServerSteps: 150, ServerBatch: 256, ServerLR: 0.05, ServerDSA: "auto",
		ServerTMRounds: 5, ServerTMSpan: 2, ServerTMSynSteps: 20, ServerTMIPC: 10, ServerTMIters: 100,
		ServerTMLRImg: 100, ServerTMLR: 0.01, ServerTMSteps: 50, ServerTMFineLR: 0.01, ServerTMLRLabel: 2,
		ServerTMImgOptim: "sgd", DPDelta: 1e-5, DPSampleRate: 1, DPInitClip: distill.DefaultDPInitClip, DPInitNoise: distill.DefaultDPInitNoise,
		Seed: 1, Out: "fedsim-out", Grids: 3,
	}
}

// ReadConfigFile overlays the keys of a YAML file on cfg. Unknown keys,
// repeated documents and values of the wrong type are errors.
func ReadConfigFile(path string, cfg *Config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("sim: config: %w", err)
	}
	return ParseConfig(b, path, cfg)
}

// ParseConfig overlays YAML b (named name in errors) on cfg.
func ParseConfig(b []byte, name string, cfg *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	c := *cfg
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("sim: config %s: %v", name, strings.ReplaceAll(err.Error(), "yaml: ", ""))
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return fmt.Errorf("sim: config %s: want one YAML document", name)
	}
	*cfg = c
	return nil
}

// Resolve fills the strategy from the distillation method and the DSA
// strategy of the server ("auto": by data set) and validates everything
// that can be checked without reading data. Errors name the key.
func (c Config) Resolve() (Config, error) {
	c.Dataset = strings.ToLower(strings.TrimSpace(c.Dataset))
	c.Partition = strings.ToLower(strings.TrimSpace(c.Partition))
	c.Distill = strings.ToLower(strings.TrimSpace(c.Distill))
	c.Strategy = strings.ToLower(strings.TrimSpace(c.Strategy))
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	info, err := data.Lookup(c.Dataset)
	if err != nil {
		bad("dataset: %v", err)
	}
	if !slices.Contains(data.PartitionMethods, c.Partition) {
		bad("partition %q: want one of %s", c.Partition, strings.Join(data.PartitionMethods, ", "))
	}
	if (c.Partition == "dirichlet" || c.Partition == "dirichlet-client" || c.Partition == "quantity") && (!(c.Alpha > 0) || math.IsInf(c.Alpha, 0)) {
		bad("alpha %g: want a positive number (0.1 to 0.5 are common)", c.Alpha)
	}
	if c.Partition == "shards" && c.ShardsPerClient < 1 {
		bad("shards_per_client %d: want at least 1", c.ShardsPerClient)
	}
	if c.Clients < 1 {
		bad("clients %d: want at least 1", c.Clients)
	}
	if err == nil {
		n := info.TrainSize
		if c.TrainLimit > 0 {
			n = min(n, c.TrainLimit)
		}
		if c.Clients > n {
			bad("clients %d: more clients than the %d training samples of %s", c.Clients, n, c.Dataset)
		}
	}
	if c.Rounds < 1 {
		bad("rounds %d: want at least 1", c.Rounds)
	}
	if !(c.Fraction > 0 && c.Fraction <= 1) {
		bad("fraction %g: want a value in (0, 1]", c.Fraction)
	}
	switch c.Distill {
	case "none":
		switch c.Strategy {
		case "":
			c.Strategy = "fedavg"
		case "fedavg", "fedprox":
		case "dynafed":
			c.Strategy, c.ServerTM = "fedavg", true
		default:
			bad("strategy %q needs distillation: with distill none use fedavg or fedprox", c.Strategy)
		}
	default:
		if err := client.CheckMethod(c.Distill); err != nil {
			bad("distill %q: %v (or none)", c.Distill, err)
			break
		}
		switch c.Strategy {
		case "":
			c.Strategy = "oneshot"
		case "oneshot", "feddm":
		case "dynafed":
			bad("strategy dynafed is FedAvg with server-side trajectory matching: use distill none (or add server_tm to %s's strategy)", c.Distill)
		default:
			bad("strategy %q does not distill: with distill %s use oneshot or feddm (or distill none)", c.Strategy, c.Distill)
		}
		if c.Strategy == "feddm" && c.Distill != client.MethodDM && c.Distill != client.MethodGM {
			bad("strategy feddm matches around the global model, which only dm and gm do: use oneshot with distill %s", c.Distill)
		}
	}
	if c.IPC < 1 {
		bad("ipc %d: want at least 1", c.IPC)
	}
	if c.ImageSteps < 0 || (c.ImageSteps > 1 && (c.Distill != client.MethodDM || c.Strategy == "feddm")) {
		bad("image_steps %d: want 0 or more, and more than 1 only with distill dm and the oneshot strategy", c.ImageSteps)
	}
	if c.DistillIters < 0 {
		bad("distill_iters %d: must not be negative", c.DistillIters)
	}
	if c.BatchReal < 1 {
		bad("batch_real %d: want at least 1", c.BatchReal)
	}
	if !(c.LRImg >= 0) || math.IsInf(c.LRImg, 0) {
		bad("lr_img %g: want a positive number (0: the method's default, dm 1.0, gm 0.1)", c.LRImg)
	}
	if !(c.Perturb >= 0) || math.IsInf(c.Perturb, 0) {
		bad("perturb %g: want a non-negative number", c.Perturb)
	}
	switch c.DistillInit {
	case "":
	case client.InitNoise:
		if c.Distill == "none" {
			bad("distill_init %s: there is no distillation to start (distill none)", c.DistillInit)
		}
	case client.InitReal:
		if c.Distill == "none" {
			bad("distill_init %s: there is no distillation to start (distill none)", c.DistillInit)
		}
		if c.DPEnabled() {
			bad("distill_init real with differential privacy: the real images would be released as they are; use noise (the default with dp)")
		}
	case client.InitMean:
		if c.Distill != client.MethodDM || c.Strategy != "oneshot" {
			bad("distill_init mean: the class-mean start is for one-shot dm (distill dm, strategy oneshot), not distill %s with strategy %s; use noise", c.Distill, c.Strategy)
		}
		if c.DPEnabled() && (!(c.DPInitClip > 0) || math.IsInf(c.DPInitClip, 0) || !(c.DPInitNoise > 0) || math.IsInf(c.DPInitNoise, 0)) {
			bad("dp_init_clip %g and dp_init_noise %g: the private release of the class means needs both positive and finite (defaults %d and %d)", c.DPInitClip, c.DPInitNoise, distill.DefaultDPInitClip, distill.DefaultDPInitNoise)
		}
	default:
		bad("distill_init %q: want real, noise or mean", c.DistillInit)
	}
	if c.DPMinClass < 0 || (c.DPMinClass > 0 && !c.DPEnabled()) {
		bad("dp_min_class %d: a class-size floor for private distillation: want 0 or more, with dp_epsilon or dp_noise", c.DPMinClass)
	}
	if c.DPProject < 0 || (c.DPProject > 0 && !c.DPEnabled()) {
		bad("dp_project %d: a projection dimension for private distillation: want 0 or more, with dp_epsilon or dp_noise", c.DPProject)
	}
	if c.DPCenter && !c.DPEnabled() {
		bad("dp_center without differential privacy: give dp_epsilon or dp_noise, or drop dp_center")
	}
	if c.LocalEpochs < 1 || c.LocalBatch < 1 {
		bad("local_epochs %d and local_batch %d: want at least 1", c.LocalEpochs, c.LocalBatch)
	}
	if !(c.LocalLR > 0) || math.IsInf(c.LocalLR, 0) {
		bad("local_lr %g: want a positive number", c.LocalLR)
	}
	if o := c.LocalOptim; o != "" && o != client.OptimSGD && o != client.OptimAdam {
		bad("local_optim %q: want %s or %s", o, client.OptimSGD, client.OptimAdam)
	}
	if !(c.Mu >= 0) || math.IsInf(c.Mu, 0) {
		bad("mu %g: want a non-negative number", c.Mu)
	}
	if c.ServerSteps < 1 || c.ServerBatch < 1 {
		bad("server_steps %d and server_batch %d: want at least 1", c.ServerSteps, c.ServerBatch)
	}
	if !(c.ServerLR > 0) || math.IsInf(c.ServerLR, 0) {
		bad("server_lr %g: want a positive number", c.ServerLR)
	}
	if c.ServerDSA == "" || c.ServerDSA == "auto" {
		c.ServerDSA = distill.DefaultDSAStrategy(c.Dataset)
	} else if _, err := data.ParseDSAStrategy(c.ServerDSA); err != nil {
		bad("server_dsa: %v", err)
	}
	if c.ServerTM {
		if c.ServerTMSpan < 1 || c.ServerTMRounds < c.ServerTMSpan {
			bad("server_tm_rounds %d and server_tm_span %d: want 1 ≤ span ≤ rounds", c.ServerTMRounds, c.ServerTMSpan)
		}
		if c.ServerTMAverage < 0 || c.ServerTMAverage > c.ServerTMSpan {
			bad("server_tm_average %d: want 0 (off) to server_tm_span %d", c.ServerTMAverage, c.ServerTMSpan)
		}
		if c.ServerTMSynSteps < 1 || c.ServerTMIPC < 1 || c.ServerTMIters < 0 || c.ServerTMSteps < 0 {
			bad("server_tm_syn_steps %d, server_tm_ipc %d, server_tm_iters %d, server_tm_steps %d: want ≥ 1, ≥ 1, ≥ 0, ≥ 0",
				c.ServerTMSynSteps, c.ServerTMIPC, c.ServerTMIters, c.ServerTMSteps)
		}
		if o := c.ServerTMImgOptim; o != "" && o != "sgd" && o != "adam" {
			bad("server_tm_img_optim %q: want sgd or adam", o)
		}
		if c.ServerTMSoftLabels && (!(c.ServerTMLRLabel > 0) || math.IsInf(c.ServerTMLRLabel, 0)) {
			bad("server_tm_lr_label %g: want a positive number", c.ServerTMLRLabel)
		}
		for _, v := range []float64{c.ServerTMLRImg, c.ServerTMLR, c.ServerTMFineLR} {
			if !(v > 0) || math.IsInf(v, 0) {
				bad("server_tm_lr_img %g, server_tm_lr %g, server_tm_fine_lr %g: want positive numbers", c.ServerTMLRImg, c.ServerTMLR, c.ServerTMFineLR)
				break
			}
		}
	}
	if !(c.Dropout >= 0 && c.Dropout < 1) {
		bad("dropout %g: want a probability in [0, 1)", c.Dropout)
	}
	if !(c.Stragglers >= 0 && c.Stragglers < 1) {
		bad("stragglers %g: want a probability in [0, 1)", c.Stragglers)
	}
	if c.TrainLimit < 0 || c.TestLimit < 0 {
		bad("train_limit %d and test_limit %d: must not be negative", c.TrainLimit, c.TestLimit)
	}
	if c.Grids < 0 {
		bad("grids %d: must not be negative", c.Grids)
	}
	if strings.TrimSpace(c.Out) == "" {
		bad("out: the output folder is required")
	}
	if err == nil {
		if _, merr := nn.New[float32](c.Model, []int{info.Channels, info.Height, info.Width}, info.Classes, tensor.NewRNG(0, 0)); merr != nil {
			bad("model: %v", merr)
		}
	}
	if len(errs) == 0 {
		if derr := c.resolveDP(); derr != nil {
			bad("%v", derr)
		}
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("sim: invalid configuration: %w", errors.Join(errs...))
	}
	return c, nil
}

// DPEnabled reports whether the run is differentially private.
func (c Config) DPEnabled() bool {
	return (privacy.Settings{Noise: c.DPNoise, Epsilon: c.DPEpsilon, Clip: c.DPClip}).Enabled()
}

// dpSteps returns the sampling rate of the run's private mechanism, its
// steps per client in the whole run (at most) and in one task.
func (c Config) dpSteps() (q float64, steps, first int) {
	switch c.Strategy {
	case "fedavg", "fedprox":
		// one step per round over the clients; every round's step is
		// certain, so the whole run must fit the budget
		return c.Fraction, c.Rounds, c.Rounds
	case "feddm":
		// a client may be sampled every round: the worst case
		return c.DPSampleRate, c.Rounds * c.DistillIters, c.DistillIters
	}
	return c.DPSampleRate, c.DistillIters, c.DistillIters // oneshot: each client once
}

// resolveDP checks the DP settings (after the strategy is known) and
// fills DPNoise from DPEpsilon with the accountant.
func (c *Config) resolveDP() error {
	if !c.DPEnabled() {
		return nil
	}
	if c.Distill != "none" && (c.Strategy == "oneshot" || c.Strategy == "feddm") && !(c.DPSampleRate > 0 && c.DPSampleRate <= 1) {
		return fmt.Errorf("dp_sample_rate %g: want a rate in (0, 1] (the probability that a real example joins an iteration)", c.DPSampleRate)
	}
	if c.Distill != "none" {
		m, err := nn.New[float32](c.Model, []int{1, 28, 28}, 10, tensor.NewRNG(0, 0))
		if b, ok := m.(nn.Buffered[float32]); err == nil && ok && len(b.Buffers()) > 0 {
			return fmt.Errorf("dp: private distillation clips each example's embedding or gradient, which batch norm mixes with the other examples': use a model without batch norm (e.g. convnet-w32), not %s", c.Model)
		}
	}
	if c.Distill != "none" && c.Distill != client.MethodDM && c.Distill != client.MethodGM {
		return fmt.Errorf("dp: private distillation is dm or gm; distill %s has no private variant (drop the --dp-* flags or use dm)", c.Distill)
	}
	if c.DPCenter && c.Distill != "dm" {
		return fmt.Errorf("dp_center: centered clipping is for private distribution matching (distill dm), not distill %s", c.Distill)
	}
	if c.DPProject > 0 && c.Distill != "dm" {
		return fmt.Errorf("dp_project: the random projection is for private distribution matching (distill dm), not distill %s", c.Distill)
	}
	q, steps, first := c.dpSteps()
	s := privacy.Settings{Noise: c.DPNoise, Epsilon: c.DPEpsilon, Clip: c.DPClip, Delta: c.DPDelta}
	if c.DistillInit == client.InitMean {
		// one release per task; one-shot: each client runs one task
		s.Prior = []privacy.Mechanism{{Q: 1, Sigma: c.DPInitNoise, Steps: 1}}
	}
	sigma, err := s.Resolve(q, steps, first)
	if err != nil {
		return fmt.Errorf("dp: %w", err)
	}
	c.DPNoise = sigma
	return nil
}

// WithDP adds the run's differential privacy to a strategy built from c
// (resolved): client-level DP-FedAvg for fedavg/fedprox, private
// distillation tasks for oneshot/feddm. Without DP it returns s as is.
func (c Config) WithDP(s server.Strategy) server.Strategy {
	if !c.DPEnabled() {
		return s
	}
	switch st := s.(type) {
	case *server.FedAvg:
		st.DP = &server.DPFedAvg{Clip: c.DPClip, Noise: c.DPNoise, Clients: max(1, int(math.Round(c.Fraction*float64(c.Clients)))),
			SampleRate: c.Fraction, Delta: c.DPDelta, Seed: c.Seed}
	case *server.Distill:
		st.DP = &client.DPTask{SampleRate: c.DPSampleRate, Clip: c.DPClip, Noise: c.DPNoise, Delta: c.DPDelta, Budget: c.DPEpsilon,
			Center: c.DPCenter, Project: c.DPProject, MinClass: c.DPMinClass}
		if c.DistillInit == client.InitMean {
			st.DP.InitClip, st.DP.InitNoise = c.DPInitClip, c.DPInitNoise
		}
	}
	return s
}
