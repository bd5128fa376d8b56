package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/model"
)

// planReport is what `herd plan --json` prints. Every figure comes from the same parameter
// spec table and activation table that the model allocates from.
type planReport struct {
	Preset              string           `json:"preset"`
	Config              model.Config     `json:"config"`
	Params              int              `json:"params"`
	NonEmbeddingParams  int              `json:"non_embedding_params"`
	FLOPsPerToken       float64          `json:"flops_per_token"`
	Seq                 int              `json:"seq"`
	Batch               int              `json:"batch"`
	Remat               model.Remat      `json:"remat"`
	DType               string           `json:"activation_dtype"`
	ActPerTokenPerLayer map[string]int64 `json:"activation_bytes_per_token_per_layer"`
	ActPerTokenHead     map[string]int64 `json:"activation_bytes_per_token_head"`
	ActivationBytes     int64            `json:"activation_bytes"`
	KeptActivations     []string         `json:"kept_activations"`
	ParamBytes          int64            `json:"param_bytes"`
	GradBytes           int64            `json:"grad_bytes"`
	OptimizerBytes      int64            `json:"optimizer_bytes"`
	// WorkingCopyBytes is the copy of the weights in the activation type that a mixed-precision
	// backend (bfloat16 activations, float32 masters) computes with; 0 otherwise.
	WorkingCopyBytes       int64 `json:"working_copy_bytes"`
	TrainingBytesPerDevice int64 `json:"training_bytes"`
}

func parseDType(s string) (kernels.DType, error) {
	for _, dt := range []kernels.DType{kernels.Float32, kernels.BFloat16, kernels.Float64} {
		if strings.EqualFold(s, dt.String()) {
			return dt, nil
		}
	}
	return 0, fmt.Errorf("--dtype %q: allowed values are float32, bfloat16, float64", s)
}

func runPlan(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	preset := fs.String("preset", "tiny", "model preset: "+strings.Join(model.PresetNames(), ", "))
	remat := fs.String("remat", string(model.RematHybrid), "activation rematerialization policy: none, hybrid (LLaMA's), full")
	seq := fs.Int("seq", 0, "sequence length T (default: the preset's max_seq)")
	batch := fs.Int("batch", 1, "sequences per micro-batch B")
	dtype := fs.String("dtype", "float32", "activation element type: float32 (CPU), bfloat16 (GPU), float64")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: herd plan [flags]\n\nPrints the exact parameter count, model FLOPs per token and the activation memory that")
		fmt.Fprintln(stderr, "each rematerialization policy keeps between forward and backward.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := model.Preset(*preset)
	if err != nil {
		return err
	}
	if c.Remat, err = model.ParseRemat(*remat); err != nil {
		return err
	}
	if *seq == 0 {
		*seq = c.MaxSeq
	}
	if err := c.CheckSeq(*seq); err != nil {
		return err
	}
	if *batch <= 0 {
		return fmt.Errorf("--batch = %d, must be > 0", *batch)
	}
	dt, err := parseDType(*dtype)
	if err != nil {
		return err
	}
	r := buildPlan(strings.ToLower(*preset), c, *seq, *batch, dt)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	printPlan(stdout, r)
	return nil
}

func buildPlan(name string, c model.Config, seq, batch int, dt kernels.DType) planReport {
	n := model.NumParams(c)
	r := planReport{
		Preset: name, Config: c, Params: n, NonEmbeddingParams: n - model.NumEmbeddingParams(c),
		FLOPsPerToken: model.FLOPsPerToken(c, seq), Seq: seq, Batch: batch, Remat: c.Remat, DType: dt.String(),
		ActPerTokenPerLayer: map[string]int64{}, ActPerTokenHead: map[string]int64{},
		ActivationBytes: model.ActivationBytes(c, c.Remat, dt, seq*batch),
		KeptActivations: model.KeptActivations(c.Remat),
		ParamBytes:      int64(n) * 4, GradBytes: int64(n) * 4, OptimizerBytes: int64(n) * 8,
	}
	for _, p := range model.RematPolicies() {
		r.ActPerTokenPerLayer[string(p)] = model.ActivationBytesPerTokenPerLayer(c, p, dt)
		r.ActPerTokenHead[string(p)] = model.ActivationBytesPerTokenHead(c, p, dt)
	}
	if dt.Size() < 4 {
		r.WorkingCopyBytes = int64(n) * int64(dt.Size())
	}
	r.TrainingBytesPerDevice = r.ParamBytes + r.GradBytes + r.OptimizerBytes + r.WorkingCopyBytes + r.ActivationBytes
	return r
}

func printPlan(w io.Writer, r planReport) {
	c := r.Config
	fmt.Fprintf(w, "preset %s: d=%d layers=%d heads=%d ffn=%d vocab=%d\n", r.Preset, c.Dim, c.Layers, c.Heads, c.FFNHidden, c.Vocab)
	fmt.Fprintf(w, "parameters        %d (%s without the input embedding)\n", r.Params, humanCount(r.NonEmbeddingParams))
	fmt.Fprintf(w, "FLOPs per token   %.4g at T=%d (6*(N-N_emb) + 12*L*T*d)\n\n", r.FLOPsPerToken, r.Seq)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "remat\tbytes/token/layer\tbytes/token head\t%s activations at B=%d T=%d\t\n", r.DType, r.Batch, r.Seq)
	for _, p := range model.RematPolicies() {
		pc := c
		pc.Remat = p
		total := model.ActivationBytes(pc, p, mustDType(r.DType), r.Seq*r.Batch)
		mark := ""
		if p == r.Remat {
			mark = " *"
		}
		fmt.Fprintf(tw, "%s%s\t%d\t%d\t%s\t\n", p, mark, r.ActPerTokenPerLayer[string(p)], r.ActPerTokenHead[string(p)], humanBytes(total))
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%s keeps per block: %s\n", r.Remat, strings.Join(r.KeptActivations, ", "))
	working := ""
	if r.WorkingCopyBytes > 0 {
		working = fmt.Sprintf(" + %s working copy %s", r.DType, humanBytes(r.WorkingCopyBytes))
	}
	fmt.Fprintf(w, "fp32 params %s + grads %s + AdamW moments %s%s + activations %s = %s per replica\n",
		humanBytes(r.ParamBytes), humanBytes(r.GradBytes), humanBytes(r.OptimizerBytes), working, humanBytes(r.ActivationBytes), humanBytes(r.TrainingBytesPerDevice))
}

func mustDType(s string) kernels.DType {
	dt, err := parseDType(s)
	if err != nil {
		panic(err)
	}
	return dt
}

func humanBytes(b int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	v := float64(b)
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

func humanCount(n int) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2fB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	}
	return fmt.Sprint(n)
}
