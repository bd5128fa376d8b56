// Command herd pre-trains LLaMA-family language models. Run `herd help` for the commands.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
)

// command is one subcommand of herd.
type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
	hidden  bool // run by herd itself, not listed
}

func commands() map[string]command {
	return map[string]command{
		"plan":        {"size a model and plan a run: memory per GPU, step time, tokens/s/GPU, MFU and cost (--gpus)", runPlan, false},
		"prepare":     {"turn text sources into a tokenizer and token shards", runPrepare, false},
		"train":       {"train a model on this machine, in one process or data-parallel in several (--nproc)", runTrain, false},
		"sample":      {"generate text from a trained model", runSample, false},
		"eval":        {"report loss and bits per byte of a trained model on a text", runEval, false},
		"export":      {"write a checkpoint as a Hugging Face LLaMA directory", runExport, false},
		"import":      {"turn a Hugging Face LLaMA directory into a checkpoint", runImport, false},
		"coordinator": {"run a training job's control plane on the head node (etcd membership, Raft job state, rounds)", runCoordinator, false},
		"worker":      {"join a training job's coordinator and train in its rounds, one rank process per device", runWorker, false},
		"worker-rank": {"one rank process of a worker (started by herd worker)", runWorkerRank, true},
		"up":          {"run a whole cluster on this machine: embedded etcd, a coordinator and N CPU workers", runUp, false},
		"status":      {"show a training job's round, step, loss, tokens/s per GPU, workers and ETA", runStatus, false},
		"dashboard":   {"serve the web dashboard of a herd train run directory (a coordinator serves it for cluster jobs)", runDashboard, false},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks an error whose message is already printed along with usage text.
type errUsage struct{ error }

// errHelp ends a command that printed its --help text: exit status 0, nothing more to say.
var errHelp = errors.New("help shown")

// parseFlags parses a command's flags and refuses positional arguments. A flag error has
// already been printed with the usage text by the flag package.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return errUsage{err}
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

func run(args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		if len(args) > 1 {
			if _, ok := cmds[args[1]]; ok {
				return run([]string{args[1], "--help"}, stdout, stderr)
			}
		}
		usage(stdout, cmds)
		return 0
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "herd: unknown command %q\n\n", args[0])
		usage(stderr, cmds)
		return 2
	}
	if err := c.run(args[1:], stdout, stderr); err != nil {
		if errors.Is(err, errHelp) {
			return 0
		}
		if _, isUsage := err.(errUsage); isUsage {
			return 2
		}
		fmt.Fprintf(stderr, "herd %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "herd pre-trains LLaMA-family language models.")
	fmt.Fprintln(w, "\nUsage: herd <command> [flags]\n\nCommands:")
	names := make([]string, 0, len(cmds))
	for n, c := range cmds {
		if !c.hidden {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'herd <command> --help' for the flags of a command.")
}
