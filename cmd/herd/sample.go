package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"

	"github.com/herd-llm/herd/model"
	"github.com/herd-llm/herd/worker"
)

func runSample(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sample", flag.ContinueOnError)
	fs.SetOutput(stderr)
	run := fs.String("run", "", "run directory written by herd train (required)")
	prompt := fs.String("prompt", "", "text to continue (empty: start a new document)")
	tokens := fs.Int("tokens", 200, "tokens to generate")
	temp := fs.Float64("temperature", 0.8, "sampling temperature; 0 picks the most likely token every time")
	topP := fs.Float64("top-p", 0.95, "nucleus sampling: draw only from the most likely tokens whose probabilities add up to this")
	seed := fs.Uint64("seed", 1, "random seed of the sampler")
	backend := backendFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: herd sample --run DIR [--prompt TEXT] [flags]")
		fmt.Fprintln(stderr, "\nGenerates text from a trained model with a key/value cache.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *run == "":
		return fmt.Errorf("--run: a run directory is required")
	case *tokens <= 0:
		return fmt.Errorf("--tokens = %d, must be > 0", *tokens)
	case *temp < 0:
		return fmt.Errorf("--temperature = %g, must be >= 0", *temp)
	case !(*topP > 0 && *topP <= 1):
		return fmt.Errorf("--top-p = %g, must be in (0, 1]", *topP)
	}
	r, err := worker.OpenRun(*run)
	if err != nil {
		return err
	}
	m, release, err := loadModel(r, backend())
	if err != nil {
		return err
	}
	defer release()
	ids := append([]int32{r.Tokenizer.EOS()}, r.Tokenizer.Encode([]byte(*prompt))...)
	if len(ids)+*tokens > m.Cfg.MaxSeq {
		return fmt.Errorf("prompt (%d tokens) plus --tokens %d exceeds the model's max_seq %d", len(ids), *tokens, m.Cfg.MaxSeq)
	}
	g, err := m.NewGenerator(len(ids) + *tokens)
	if err != nil {
		return err
	}
	defer g.Close()
	logits, err := g.Feed(ids)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(*seed, 0x5a))
	fmt.Fprint(stdout, *prompt)
	for i := 0; i < *tokens; i++ {
		if err := checkLogits(logits); err != nil {
			return fmt.Errorf("after %d generated tokens: %w", i, err)
		}
		id := model.SampleToken(logits, *temp, *topP, rng)
		stdout.Write(r.Tokenizer.Decode([]int32{id}))
		if i+1 < *tokens {
			if logits, err = g.Feed([]int32{id}); err != nil {
				return err
			}
		}
	}
	fmt.Fprintln(stdout)
	return nil
}

// checkLogits refuses to sample from logits that are not all finite: the model's output is
// then meaningless, and a token drawn from it would be garbage presented as text.
func checkLogits(logits []float32) error {
	for i, x := range logits {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return fmt.Errorf("the model produced a non-finite logit (%v for token %d): its weights are unusable", x, i)
		}
	}
	return nil
}
