package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"sort"

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
	trace := fs.String("trace", "", "also write FILE: one JSON line per generated token with its id and the 5 highest logits, for comparing backends token for token (with --temperature 0)")
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
	ids := append(r.Tokenizer.Boundary(), r.Tokenizer.Encode([]byte(*prompt))...)
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
	var tw *json.Encoder
	if *trace != "" {
		f, err := os.Create(*trace)
		if err != nil {
			return fmt.Errorf("--trace: %w", err)
		}
		defer f.Close()
		tw = json.NewEncoder(f)
	}
	rng := rand.New(rand.NewPCG(*seed, 0x5a))
	fmt.Fprint(stdout, *prompt)
	for i := 0; i < *tokens; i++ {
		if err := checkLogits(logits); err != nil {
			return fmt.Errorf("after %d generated tokens: %w", i, err)
		}
		id := model.SampleToken(logits, *temp, *topP, rng)
		if tw != nil {
			if err := tw.Encode(traceLine{Index: i, Token: id, Top: topLogits(logits, 5)}); err != nil {
				return fmt.Errorf("--trace: %w", err)
			}
		}
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

// traceLine is one generated token in sample's --trace file.
type traceLine struct {
	Index int          `json:"i"`
	Token int32        `json:"token"`
	Top   []tokenLogit `json:"top"` // the highest logits, highest first
}

type tokenLogit struct {
	Token int32   `json:"token"`
	Logit float32 `json:"logit"`
}

// topLogits returns the k highest logits with their token ids, highest first (lower id first
// among equal logits, as greedy sampling picks).
func topLogits(logits []float32, k int) []tokenLogit {
	top := make([]tokenLogit, 0, k+1)
	for i, v := range logits {
		if len(top) == k && v <= top[k-1].Logit {
			continue
		}
		top = append(top, tokenLogit{int32(i), v})
		sort.SliceStable(top, func(a, b int) bool { return top[a].Logit > top[b].Logit })
		if len(top) > k {
			top = top[:k]
		}
	}
	return top
}
