// Package cli is fedsim's command-line layer, the only package that imports
// cobra. Each command has an Options struct and a run function that tests
// call directly; the cobra wiring only parses flags into the Options.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/spf13/cobra"
)

// Version is set at build time with -ldflags "-X .../internal/cli.Version=…".
var Version = "dev"

// Main runs fedsim with args and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	root, prof := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(ctx)
	// Stop the profile whether the command failed or not: a profile of a
	// run that ended in an error is still worth reading.
	if perr := prof.stop(); perr != nil && err == nil {
		err = perr
	}
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "fedsim: %v\n", err)
			return 2
		}
		fmt.Fprintf(stderr, "fedsim: %v\n", err)
		return 1
	}
	return 0
}

// usageError marks errors in flags or arguments (exit code 2).
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// cpuProfile is the root's --cpuprofile flag: a CPU profile of the whole
// command (any subcommand), for `go tool pprof`.
type cpuProfile struct {
	path string
	f    *os.File
}

func (p *cpuProfile) start() error {
	if p.path == "" {
		return nil
	}
	f, err := os.Create(p.path)
	if err != nil {
		return usagef("--cpuprofile %q: %v (give a writable file path)", p.path, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("--cpuprofile %q: %v", p.path, err)
	}
	p.f = f
	return nil
}

// stop ends the profile if one was started; it is safe to call twice.
func (p *cpuProfile) stop() error {
	if p.f == nil {
		return nil
	}
	pprof.StopCPUProfile()
	err := p.f.Close()
	p.f = nil
	if err != nil {
		return fmt.Errorf("--cpuprofile %q: %v", p.path, err)
	}
	return nil
}

// newRootCmd builds the command tree, and the --cpuprofile state that Main
// stops once the command has returned.
func newRootCmd(stdout, stderr io.Writer) (*cobra.Command, *cpuProfile) {
	prof := &cpuProfile{}
	root := &cobra.Command{
		Use:           "fedsim",
		Short:         "Federated-learning simulator whose engine is dataset distillation",
		Long:          "fedsim is a federated-learning simulator whose engine is dataset distillation.\nWithout a command it runs `fedsim run` (a federated simulation) with the given flags.",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
	}
	// fedsim alone is fedsim run: the root takes run's flags.
	ro := &RunOptions{}
	addRunFlags(root.Flags(), ro)
	root.RunE = func(c *cobra.Command, _ []string) error {
		ro.Changed = changedFlags(c.Flags())
		return RunRun(c.Context(), ro, stdout, stderr)
	}
	root.PersistentFlags().StringVar(&prof.path, "cpuprofile", "", "write a CPU profile of the command to `FILE` (read it with go tool pprof)")
	root.PersistentPreRunE = func(*cobra.Command, []string) error { return prof.start() }
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newVersionCmd(stdout), newRunCmd(stdout, stderr), newBenchCmd(stdout, stderr), newTrainCmd(stdout, stderr), newDistillCmd(stdout, stderr), newEvalCmd(stdout, stderr), newPrivacyCmd(stdout, stderr))
	root.AddCommand(newAttackCmd(stdout, stderr))
	root.AddCommand(newServerCmd(stdout, stderr), newWorkerCmd(stdout, stderr), newClusterCmd(stdout, stderr), newCertsCmd(stdout))
	return root, prof
}

func newVersionCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print fedsim's version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintf(stdout, "fedsim %s\n", Version)
			return err
		},
	}
}
