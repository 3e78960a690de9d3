// Package server is the federated server role as a deterministic core: it
// has no clock, starts no goroutines and does no I/O. A driver (package
// sim, or a networked one) feeds it events — StartRound, Deliver for each
// reply, Tick for the passage of simulated time, EndRound — and moves the
// tasks it returns to the clients. Given the same events the core gives the
// same global model: clients are sampled from a random stream derived from
// the seed and the round, replies are aggregated in increasing client
// order whatever order they arrived in, and the deadline is counted in
// ticks (events), not wall time.
package server

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/fedsim/fedsim/client"
	"github.com/fedsim/fedsim/nn"
	"github.com/fedsim/fedsim/tensor"
)

// Config configures the core.
type Config struct {
	// Clients is the population size (ids 0..Clients−1).
	Clients int
	// Fraction of the population sampled each round, in (0, 1]: at least
	// one client, and at most the clients the strategy finds eligible.
	Fraction float64
	// Seed drives sampling and every task's random stream.
	Seed uint64
	// Deadline is the number of ticks after StartRound during which replies
	// are accepted (default 1: replies delivered before the first Tick).
	Deadline int
	// Dataset names the data set; ImageShape (C, H, W) and Classes describe
	// it, for checking the clients' synthetic sets.
	Dataset    string
	ImageShape []int
	Classes    int
	// Model is the global model's name for nn.New.
	Model string
	// Refiner, if set, runs after every aggregation (the slot for
	// server-side trajectory matching, DynaFed).
	Refiner Refiner
}

// Refiner refines the global model on the server after a round's
// aggregation. DynaFed (Pi et al., 2023) records the trajectory of global
// models, distills a synthetic set from it by trajectory matching (MTT),
// and fine-tunes the global model on that set.
type Refiner interface {
	// Refine sees the global model after round's aggregation (its weights
	// form the trajectory) and may update it in place. Whatever it keeps
	// between rounds goes into st (Trajectory, ServerSet), so that a
	// checkpoint saves it. Round 0 is a call before the first round, with
	// the initial model.
	Refine(ctx context.Context, round int, global nn.Model[float32], st *State) error
}

// Strategy is how the server uses its clients: what it asks them and how it
// folds their answers into the global model.
type Strategy interface {
	// Name identifies the strategy in reports.
	Name() string
	// Eligible reports whether client id may be sampled in the next round.
	Eligible(st *State, id int) bool
	// Task returns the task of a sampled client (round, client and seed are
	// filled in by the core).
	Task(st *State, global nn.Model[float32]) *client.Task
	// Aggregate updates global (and st) from the round's accepted results,
	// given in increasing client order. It returns a short description of
	// what it did and the training loss, if any.
	Aggregate(ctx context.Context, round int, global nn.Model[float32], accepted []*client.Result, st *State) (AggregateInfo, error)
}

// AggregateInfo reports one aggregation.
type AggregateInfo struct {
	// Samples is the number of real samples the accepted results stand for.
	Samples int `json:"samples"`
	// SyntheticImages is the size of the server's training set (distillation
	// strategies).
	SyntheticImages int     `json:"synthetic_images,omitempty"`
	TrainLoss       float64 `json:"train_loss,omitempty"`
	// Privacy is the ε spent so far under differential privacy (dp.go).
	Privacy *PrivacyInfo `json:"privacy,omitempty"`
}

// State is what the core keeps between rounds besides the global model,
// and what a checkpoint must save.
type State struct {
	// Rounds is the number of rounds completed.
	Rounds int
	// Held is the latest synthetic set received from each client
	// (distillation strategies).
	Held map[int]*client.Synthetic
	// Trajectory holds the global models the Refiner recorded (DynaFed:
	// the initial model and the model after each of the first rounds).
	Trajectory []*client.Weights
	// ServerSet is the Refiner's synthetic set (DynaFed: distilled from
	// Trajectory), nil until made.
	ServerSet *client.Synthetic
	// PrivateSteps is the ledger of private tasks: the steps of the run's
	// mechanism the tasks sent so far asked of each client (counted when
	// sent, since the server cannot know whether a silent client ran its
	// task). Tasks carry it as DPTask.PriorSteps.
	PrivateSteps map[int]int
	// PrivateReleases is the ledger of the class-mean releases (tasks
	// with init mean), carried as DPTask.PriorReleases.
	PrivateReleases map[int]int
	// Epsilon is the ε each client reported it had spent, by client id.
	Epsilon map[int]float64
}

// Outcome classifies a delivered reply.
type Outcome int

const (
	Accepted   Outcome = iota // counted in the aggregation
	Failed                    // the client reported a failure, or its reply was invalid
	Late                      // arrived after the deadline
	Unexpected                // not awaited (no open round, not sampled, or a duplicate)
)

func (o Outcome) String() string {
	return [...]string{"accepted", "failed", "late", "unexpected"}[o]
}

// Failure records why a sampled client's reply was not used.
type Failure struct {
	Client int    `json:"client"`
	Error  string `json:"error"`
}

// RoundReport describes a finished round.
type RoundReport struct {
	Round    int           `json:"round"`
	Sampled  []int         `json:"sampled"`
	OK       int           `json:"clients_ok"`
	Failed   int           `json:"clients_failed"`
	Late     int           `json:"clients_late"`
	Missing  int           `json:"clients_missing"`
	Failures []Failure     `json:"failures,omitempty"`
	Info     AggregateInfo `json:"aggregate"`
}

// Dropped is the number of sampled clients whose reply was not aggregated.
func (r *RoundReport) Dropped() int { return r.Failed + r.Late + r.Missing }

// Server is the deterministic core.
type Server struct {
	cfg    Config
	strat  Strategy
	global nn.Model[float32]
	st     State

	open     bool
	round    int
	tick     int
	sampled  []int
	replied  map[int]Outcome
	accepted map[int]*client.Result
	failures []Failure

	refinedInitial bool
}

// Random streams of the core (with Config.Seed).
const (
	streamSample = 1 << 40
	streamTask   = 2 << 40
	streamServer = 3 << 40
)

// TaskSeed returns the seed of client id's task in round r: every (round,
// client) pair has its own stream.
func TaskSeed(seed uint64, round, id int) uint64 {
	return tensor.NewRNG(seed, streamTask+uint64(round)<<20+uint64(id)).Uint64()
}

// RoundSeed returns the seed of the server's own draws in round r.
func RoundSeed(seed uint64, round int) uint64 {
	return tensor.NewRNG(seed, streamServer+uint64(round)).Uint64()
}

// New returns a core with the given global model (which it owns and
// updates) and strategy.
func New(cfg Config, global nn.Model[float32], strat Strategy) (*Server, error) {
	if cfg.Deadline == 0 {
		cfg.Deadline = 1
	}
	switch {
	case cfg.Clients < 1 || cfg.Clients >= 1<<20:
		return nil, fmt.Errorf("server: %d clients: want 1 to %d", cfg.Clients, 1<<20-1)
	case !(cfg.Fraction > 0 && cfg.Fraction <= 1):
		return nil, fmt.Errorf("server: fraction %g must be in (0, 1]", cfg.Fraction)
	case cfg.Deadline < 1:
		return nil, fmt.Errorf("server: deadline %d ticks must be at least 1", cfg.Deadline)
	case global == nil || strat == nil:
		return nil, errors.New("server: nil global model or strategy")
	case len(cfg.ImageShape) != 3 || cfg.Classes < 1:
		return nil, fmt.Errorf("server: image shape %v and %d classes: want (C, H, W) and ≥ 1 class", cfg.ImageShape, cfg.Classes)
	}
	return &Server{cfg: cfg, strat: strat, global: global, st: State{Held: map[int]*client.Synthetic{}}}, nil
}

// Global returns the global model (the core's own: do not modify it while a
// round is open).
func (s *Server) Global() nn.Model[float32] { return s.global }

// Rounds returns the number of completed rounds.
func (s *Server) Rounds() int { return s.st.Rounds }

// Strategy returns the strategy.
func (s *Server) Strategy() Strategy { return s.strat }

// State returns the state a checkpoint saves (with Global): the completed
// rounds and the held synthetic sets (shared, not copied).
func (s *Server) State() State { return s.st }

// Restore replaces the state and the global weights (from a checkpoint).
func (s *Server) Restore(st State, global *client.Weights) error {
	if s.open {
		return errors.New("server: cannot restore while a round is open")
	}
	if err := global.Load(s.global); err != nil {
		return fmt.Errorf("server: checkpoint weights: %w", err)
	}
	if st.Held == nil {
		st.Held = map[int]*client.Synthetic{}
	}
	for id, syn := range st.Held {
		if id < 0 || id >= s.cfg.Clients {
			return fmt.Errorf("server: checkpoint holds a set of client %d, outside 0..%d", id, s.cfg.Clients-1)
		}
		if err := syn.Check(s.cfg.ImageShape, s.cfg.Classes); err != nil {
			return fmt.Errorf("server: checkpoint set of client %d: %w", id, err)
		}
	}
	for k, w := range st.Trajectory {
		if err := w.Matches(s.global); err != nil {
			return fmt.Errorf("server: checkpoint trajectory point %d: %w", k, err)
		}
	}
	if st.ServerSet != nil {
		if err := st.ServerSet.Check(s.cfg.ImageShape, s.cfg.Classes); err != nil {
			return fmt.Errorf("server: checkpoint server set: %w", err)
		}
	}
	for id, n := range st.PrivateSteps {
		if id < 0 || id >= s.cfg.Clients || n < 0 {
			return fmt.Errorf("server: checkpoint privacy ledger: client %d with %d steps (want a client in 0..%d and steps ≥ 0)", id, n, s.cfg.Clients-1)
		}
	}
	for id, n := range st.PrivateReleases {
		if id < 0 || id >= s.cfg.Clients || n < 0 {
			return fmt.Errorf("server: checkpoint privacy ledger: client %d with %d class-mean releases (want a client in 0..%d and releases ≥ 0)", id, n, s.cfg.Clients-1)
		}
	}
	for id, eps := range st.Epsilon {
		if id < 0 || id >= s.cfg.Clients || !(eps >= 0) || math.IsInf(eps, 0) {
			return fmt.Errorf("server: checkpoint privacy record: client %d with ε = %g (want a client in 0..%d and a finite ε ≥ 0)", id, eps, s.cfg.Clients-1)
		}
	}
	s.st = st
	return nil
}

// PerRound returns the number of clients sampled per round while enough
// are eligible: Fraction of the population, at least one.
func (s *Server) PerRound() int {
	return max(1, int(math.Round(s.cfg.Fraction*float64(s.cfg.Clients))))
}

// StartRound opens round Rounds()+1: it samples clients and returns their
// tasks in increasing client order (none if no client is eligible).
func (s *Server) StartRound() ([]*client.Task, error) {
	if s.open {
		return nil, fmt.Errorf("server: round %d is still open", s.round)
	}
	if s.st.Rounds == 0 && s.cfg.Refiner != nil && !s.refinedInitial {
		// The refiner sees the initial model once, before round 1 (not
		// again after a resume, which restores what it kept).
		if err := s.cfg.Refiner.Refine(context.Background(), 0, s.global, &s.st); err != nil {
			return nil, fmt.Errorf("server: refinement before round 1: %w", err)
		}
		s.refinedInitial = true
	}
	s.round = s.st.Rounds + 1
	var eligible []int
	for id := range s.cfg.Clients {
		if s.strat.Eligible(&s.st, id) {
			eligible = append(eligible, id)
		}
	}
	m := 0
	if len(eligible) > 0 {
		m = min(len(eligible), s.PerRound())
	}
	rng := tensor.NewRNG(s.cfg.Seed, streamSample+uint64(s.round))
	perm := rng.Perm(len(eligible))
	s.sampled = make([]int, m)
	for i := range m {
		s.sampled[i] = eligible[perm[i]]
	}
	slices.Sort(s.sampled)
	s.open, s.tick = true, 0
	s.replied, s.accepted, s.failures = map[int]Outcome{}, map[int]*client.Result{}, nil
	tasks := make([]*client.Task, m)
	for i, id := range s.sampled {
		t := s.strat.Task(&s.st, s.global)
		t.Round, t.Client, t.Seed = s.round, id, TaskSeed(s.cfg.Seed, s.round, id)
		if t.Model == "" {
			t.Model = s.cfg.Model
		}
		if t.Dataset == "" {
			t.Dataset = s.cfg.Dataset
		}
		if t.DP != nil {
			dp := *t.DP
			if s.st.PrivateSteps == nil {
				s.st.PrivateSteps = map[int]int{}
			}
			dp.PriorSteps = s.st.PrivateSteps[id]
			s.st.PrivateSteps[id] += t.Iterations
			dp.PriorReleases = s.st.PrivateReleases[id]
			if t.Init == client.InitMean {
				if s.st.PrivateReleases == nil {
					s.st.PrivateReleases = map[int]int{}
				}
				s.st.PrivateReleases[id]++
			}
			t.DP = &dp
		}
		tasks[i] = t
	}
	return tasks, nil
}

// Round returns the open (or last) round's number.
func (s *Server) Round() int { return s.round }

// Sampled returns the clients sampled in the open round.
func (s *Server) Sampled() []int { return slices.Clone(s.sampled) }

// Deliver hands the core client id's reply to the open round: res, or err
// if the transport could not deliver or decode it.
func (s *Server) Deliver(id int, res *client.Result, err error) Outcome {
	if !s.open || !slices.Contains(s.sampled, id) {
		return Unexpected
	}
	if _, dup := s.replied[id]; dup {
		return Unexpected
	}
	o := s.classify(id, res, err)
	s.replied[id] = o
	return o
}

func (s *Server) classify(id int, res *client.Result, err error) Outcome {
	fail := func(e error) Outcome {
		s.failures = append(s.failures, Failure{Client: id, Error: e.Error()})
		return Failed
	}
	if s.tick >= s.cfg.Deadline {
		return Late
	}
	if err != nil {
		return fail(err)
	}
	if res == nil {
		return fail(errors.New("empty reply"))
	}
	if res.Status != client.StatusOK {
		msg := res.Error
		if msg == "" {
			msg = fmt.Sprintf("status %q", res.Status)
		}
		return fail(errors.New(msg))
	}
	if res.Round != s.round || res.Client != id {
		return fail(fmt.Errorf("reply is for client %d round %d, want client %d round %d", res.Client, res.Round, id, s.round))
	}
	if res.NumSamples < 1 {
		return fail(fmt.Errorf("reply claims %d samples", res.NumSamples))
	}
	if res.Weights != nil {
		if err := res.Weights.Matches(s.global); err != nil {
			return fail(fmt.Errorf("invalid weights: %w", err))
		}
	}
	if res.Synthetic != nil {
		if err := res.Synthetic.Check(s.cfg.ImageShape, s.cfg.Classes); err != nil {
			return fail(fmt.Errorf("invalid synthetic set: %w", err))
		}
	}
	s.accepted[id] = res
	return Accepted
}

// Tick advances simulated time by one tick; once Deadline ticks have
// passed, later replies are late. It returns whether the deadline passed.
func (s *Server) Tick() bool {
	if s.open {
		s.tick++
	}
	return s.tick >= s.cfg.Deadline
}

// Waiting returns how many sampled clients have not replied.
func (s *Server) Waiting() int { return len(s.sampled) - len(s.replied) }

// EndRound closes the open round: sampled clients that never replied count
// as missing, and the accepted results are aggregated in increasing client
// order (a round without any leaves the global model as it was).
func (s *Server) EndRound(ctx context.Context) (*RoundReport, error) {
	if !s.open {
		return nil, errors.New("server: no open round")
	}
	rep := &RoundReport{Round: s.round, Sampled: slices.Clone(s.sampled)}
	var acc []*client.Result
	for _, id := range s.sampled {
		o, ok := s.replied[id]
		switch {
		case !ok:
			rep.Missing++
		case o == Accepted:
			rep.OK++
			acc = append(acc, s.accepted[id])
		case o == Failed:
			rep.Failed++
		case o == Late:
			rep.Late++
		}
	}
	rep.Failures = s.failures
	info, err := s.strat.Aggregate(ctx, s.round, s.global, acc, &s.st)
	if err != nil {
		return nil, fmt.Errorf("server: round %d: %s aggregation: %w", s.round, s.strat.Name(), err)
	}
	if s.cfg.Refiner != nil {
		if err := s.cfg.Refiner.Refine(ctx, s.round, s.global, &s.st); err != nil {
			return nil, fmt.Errorf("server: round %d: refinement: %w", s.round, err)
		}
	}
	rep.Info = info
	s.open = false
	s.st.Rounds = s.round
	return rep, nil
}
