package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/model"
	"github.com/herd-llm/herd/plan"
	"github.com/herd-llm/herd/worker"
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
	// With --tp: one tensor-parallel rank's share (rank 0, which holds the largest vocabulary
	// shard), and the bytes it sends per micro-batch (forward and backward) on a ring.
	TP *tensorReport `json:"tensor_parallel,omitempty"`
}

// tensorReport is what one tensor-parallel rank holds and sends.
type tensorReport struct {
	Size                 int     `json:"tp"`
	SequenceParallel     bool    `json:"sequence_parallel"`
	ParamsPerRank        int     `json:"params_per_rank"`
	ActivationBytes      int64   `json:"activation_bytes_per_rank"`
	CommBytesPerMicro    float64 `json:"comm_bytes_per_micro_batch"`
	TrainingBytesPerRank int64   `json:"training_bytes_per_rank"`
}

func parseDType(s string) (kernels.DType, error) {
	for _, dt := range []kernels.DType{kernels.Float32, kernels.BFloat16, kernels.Float64} {
		if strings.EqualFold(s, dt.String()) {
			return dt, nil
		}
	}
	return 0, fmt.Errorf("--dtype %q: allowed values are float32, bfloat16, float64", s)
}

// planFlags are the flags of `herd plan`. Without --gpus it prints the per-replica table of a
// preset; with --gpus it plans a run on that many GPUs.
type planFlags struct {
	fs                                         *flag.FlagSet
	seqParallel                                *bool
	preset, remat, dtype                       *string
	seq, batch                                 *int
	asJSON                                     *bool
	gpus, zero, tp, microBatch                 *int
	gpu, fabric, batchTokens, tokens, hardware *string
	calibrate                                  *string
	llamaTable                                 *bool
}

func newPlanFlags(stderr io.Writer) *planFlags {
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := &planFlags{fs: fs}
	f.preset = fs.String("preset", "tiny", "model preset: "+strings.Join(model.PresetNames(), ", "))
	f.remat = fs.String("remat", string(model.RematHybrid), "activation rematerialization policy: none, hybrid (LLaMA's), full")
	f.seq = fs.Int("seq", 0, "sequence length T (default: the preset's max_seq)")
	f.batch = fs.Int("batch", 1, "sequences per micro-batch B of the per-replica table (with --gpus: --micro-batch)")
	f.dtype = fs.String("dtype", "float32", "activation element type of the per-replica table: float32 (CPU), bfloat16 (GPU), float64 (with --gpus: bfloat16)")
	f.asJSON = fs.Bool("json", false, "print JSON instead of a table")
	f.gpus = fs.Int("gpus", 0, "plan a run on this many GPUs: memory per GPU, step time, tokens/s/GPU, MFU, GPU-hours")
	f.gpu = fs.String("gpu", "a100-80g", "GPU from the hardware table: "+strings.Join(slices.Sorted(maps.Keys(plan.Builtin().GPUs)), ", "))
	f.fabric = fs.String("fabric", "", "inter-node fabric: "+strings.Join(slices.Sorted(maps.Keys(plan.Builtin().Fabrics)), ", ")+" (default: the GPU's)")
	f.zero = fs.Int("zero", 0, "ZeRO stage: 0 plain data parallelism, 1 shards optimizer state and fp32 masters, 2 and gradients, 3 and parameters")
	f.tp = fs.Int("tp", 1, "tensor-parallel size: the per-replica table adds one rank's parameters, kept activations and traffic; with --gpus the size inside a node (herd train --tp runs it on the cpu backend)")
	f.seqParallel = fs.Bool("sequence-parallel", true, "with --tp in the per-replica table: the stream, norms and their statistics split by sequence over the tp ranks")
	f.microBatch = fs.Int("micro-batch", 0, "sequences per forward and backward pass on a data-parallel rank (default: the largest that fits)")
	f.batchTokens = fs.String("batch-tokens", "4M", "tokens per optimizer step; K, M, G, T are powers of 1024 (4M = 2048 sequences of 2048)")
	f.tokens = fs.String("tokens", "1T", "training tokens for GPU-hours and days; K, M, G, T are powers of 1000 (1.4T = 1.4e12)")
	f.hardware = fs.String("hardware", "", "YAML file that extends or overrides the GPU and fabric table")
	f.calibrate = fs.String("calibrate", "", "a measured run's metrics.jsonl (run.json beside it): fit the GPU's achievable fraction of peak and the step overhead to it")
	f.llamaTable = fs.Bool("llama-table", false, "print the LLaMA paper's training cost beside the planner's prediction, with the assumptions")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: herd plan [flags]\n\nPrints the exact parameter count, model FLOPs per token and the activation memory that")
		fmt.Fprintln(stderr, "each rematerialization policy keeps between forward and backward. With --gpus, plans a")
		fmt.Fprintln(stderr, "run: memory per GPU, predicted step time, tokens/s/GPU, MFU and cost.\n\nFlags:")
		fs.PrintDefaults()
	}
	return f
}

// set returns the flags given on the command line.
func (f *planFlags) set() map[string]bool {
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	return set
}

// refuse returns an error naming the first of names that was given.
func refuse(set map[string]bool, names []string, why string) error {
	for _, n := range names {
		if set[n] {
			return fmt.Errorf("--%s %s", n, why)
		}
	}
	return nil
}

func runPlan(args []string, stdout, stderr io.Writer) error {
	f := newPlanFlags(stderr)
	if err := parseFlags(f.fs, args); err != nil {
		return err
	}
	set := f.set()
	plannerOnly := []string{"gpu", "fabric", "zero", "micro-batch", "batch-tokens", "tokens", "calibrate"}
	switch {
	case *f.llamaTable:
		if err := refuse(set, slices.Concat(plannerOnly, []string{"tp", "sequence-parallel", "gpus", "preset", "remat", "seq", "batch", "dtype"}), "does not apply to --llama-table (it takes --hardware and --json)"); err != nil {
			return err
		}
		return runLLaMATable(f, stdout)
	case set["gpus"]:
		if err := refuse(set, []string{"batch", "dtype", "sequence-parallel"}, "applies to the per-replica table; with --gpus the micro-batch is --micro-batch, activations are bfloat16 and sequence parallelism is on"); err != nil {
			return err
		}
		return runCapacity(f, stdout)
	}
	if err := refuse(set, slices.Concat(plannerOnly, []string{"hardware"}), "needs --gpus"); err != nil {
		return err
	}
	return runReplicaPlan(f, stdout)
}

func runReplicaPlan(f *planFlags, stdout io.Writer) error {
	c, err := model.Preset(*f.preset)
	if err != nil {
		return err
	}
	if c.Remat, err = model.ParseRemat(*f.remat); err != nil {
		return err
	}
	seq := *f.seq
	if seq == 0 {
		seq = c.MaxSeq
	}
	if err := c.CheckSeq(seq); err != nil {
		return err
	}
	if *f.batch <= 0 {
		return fmt.Errorf("--batch = %d, must be > 0", *f.batch)
	}
	dt, err := parseDType(*f.dtype)
	if err != nil {
		return err
	}
	r := buildPlan(strings.ToLower(*f.preset), c, seq, *f.batch, dt)
	if *f.tp != 1 {
		if err := model.CheckTensorParallel(c, *f.tp); err != nil {
			return fmt.Errorf("--tp: %w", err)
		}
		if *f.seqParallel && (seq*(*f.batch))%*f.tp != 0 {
			return fmt.Errorf("--tp %d: sequence parallelism needs --batch x --seq (%d x %d) divisible by it", *f.tp, *f.batch, seq)
		}
		r.TP = tensorPlan(c, seq*(*f.batch), *f.tp, *f.seqParallel, dt, r)
	}
	if *f.asJSON {
		return writeJSON(stdout, r)
	}
	printPlan(stdout, r)
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
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

// tensorPlan returns one tensor-parallel rank's share of the replica r.
func tensorPlan(c model.Config, n, tp int, seq bool, dt kernels.DType, r planReport) *tensorReport {
	l, _ := model.NewShardLayout(c, 0, tp)
	t := &tensorReport{Size: tp, SequenceParallel: seq, ParamsPerRank: l.Size,
		ActivationBytes:   model.TensorActivationBytes(c, c.Remat, dt, n, tp, seq),
		CommBytesPerMicro: model.TensorCommBytes(c, c.Remat, dt, n, tp, seq)}
	state := int64(l.Size) * 16 // float32 params, grads and two moments
	if dt.Size() < 4 {
		state += int64(l.Size) * int64(dt.Size())
	}
	t.TrainingBytesPerRank = state + t.ActivationBytes
	return t
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
	if t := r.TP; t != nil {
		sp := "off"
		if t.SequenceParallel {
			sp = "on"
		}
		fmt.Fprintf(w, "\ntensor parallel %d, sequence parallelism %s, per rank (rank 0, the largest vocabulary shard):\n", t.Size, sp)
		fmt.Fprintf(w, "  parameters %d; activations kept %s (%.2fx less than one process); state + activations %s\n",
			t.ParamsPerRank, humanBytes(t.ActivationBytes), float64(r.ActivationBytes)/float64(t.ActivationBytes), humanBytes(t.TrainingBytesPerRank))
		fmt.Fprintf(w, "  sends %s per micro-batch of B=%d T=%d over the tensor-parallel ring (forward and backward; formula in docs/architecture.md)\n",
			humanBytes(int64(t.CommBytesPerMicro)), r.Batch, r.Seq)
	}
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

// capacityReport is what `herd plan --gpus N --json` prints.
type capacityReport struct {
	Plan         plan.Result       `json:"plan"`
	Fits         bool              `json:"fits"`
	Calibration  *plan.Calibration `json:"calibration,omitempty"`
	CalibratedOn *calibratedRun    `json:"calibrated_on,omitempty"`
	Suggestions  []plan.Suggestion `json:"suggestions,omitempty"`
	// Faster is the fastest layout that fits on the same GPUs, when the plan does not fit or
	// when it is more than 5% faster than the plan.
	Faster *plan.Suggestion `json:"faster_layout,omitempty"`
	Notes  []string         `json:"notes"`
}

func runCapacity(f *planFlags, stdout io.Writer) error {
	hw, err := loadHardware(*f.hardware)
	if err != nil {
		return err
	}
	c, err := capacityConfig(f, hw)
	if err != nil {
		return err
	}
	rep := capacityReport{}
	if *f.calibrate != "" {
		cal, run, err := calibrate(*f.calibrate, c)
		if err != nil {
			return err
		}
		rep.Calibration, rep.CalibratedOn, c = &cal, &run, cal.Apply(c)
	}
	if err := fillCapacity(&rep, c); err != nil {
		return err
	}
	if *f.asJSON {
		return writeJSON(stdout, rep)
	}
	printCapacity(stdout, rep)
	return nil
}

// fillCapacity predicts c and, when it does not fit, what would; when it fits, a faster
// layout on the same GPUs if there is one.
func fillCapacity(rep *capacityReport, c plan.Config) error {
	r, err := plan.Estimate(c)
	if err != nil {
		return err
	}
	rep.Plan, rep.Fits = r, r.Fits()
	if rep.Suggestions, err = plan.Suggest(c); err != nil {
		return err
	}
	if best, ok, _ := plan.Fastest(c); ok && (!rep.Fits || best.TokensPerSPerGPU > 1.05*r.TokensPerSPerGPU) {
		rep.Faster = &plan.Suggestion{Change: layoutFlags(best), Result: best}
	}
	rep.Notes = append(rep.Notes, "every figure is a prediction of herd's analytic model, not a measurement")
	if usesTP(rep) {
		rep.Notes = append(rep.Notes, "herd's runtime runs tensor parallelism on the cpu backend only so far (herd train --tp): on GPUs --tp is modelled only")
	}
	return nil
}

// usesTP reports whether the plan or a layout it proposes uses tensor parallelism.
func usesTP(rep *capacityReport) bool {
	tp := rep.Plan.Config.TP > 1 || (rep.Faster != nil && rep.Faster.Result.Config.TP > 1)
	for _, s := range rep.Suggestions {
		tp = tp || s.Result.Config.TP > 1
	}
	return tp
}

func layoutFlags(r plan.Result) string {
	return fmt.Sprintf("--zero %d --tp %d --micro-batch %d", r.Config.ZeRO, r.Config.TP, r.MicroBatch)
}

func loadHardware(path string) (plan.Hardware, error) {
	hw := plan.Builtin()
	if path == "" {
		return hw, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return plan.Hardware{}, fmt.Errorf("--hardware: %w", err)
	}
	if hw, err = plan.ParseHardware(hw, raw); err != nil {
		return plan.Hardware{}, fmt.Errorf("--hardware %s: %w", path, err)
	}
	return hw, nil
}

// capacityConfig builds the planned run from the flags; plan.Estimate validates it.
func capacityConfig(f *planFlags, hw plan.Hardware) (plan.Config, error) {
	m, err := model.Preset(*f.preset)
	if err != nil {
		return plan.Config{}, err
	}
	if m.Remat, err = model.ParseRemat(*f.remat); err != nil {
		return plan.Config{}, err
	}
	seq := *f.seq
	if seq == 0 {
		seq = m.MaxSeq
	}
	g, err := hw.GPU(*f.gpu)
	if err != nil {
		return plan.Config{}, err
	}
	fabric := *f.fabric
	if fabric == "" {
		fabric = g.Fabric
	}
	fb, err := hw.Fabric(fabric)
	if err != nil {
		return plan.Config{}, err
	}
	batch, tokens, err := parseBudget(*f.batchTokens, *f.tokens)
	if err != nil {
		return plan.Config{}, err
	}
	return plan.Config{Preset: strings.ToLower(*f.preset), Model: m, GPUs: *f.gpus, GPU: g, Fabric: fb, ZeRO: *f.zero, TP: *f.tp,
		Seq: seq, BatchTokens: batch, MicroBatch: *f.microBatch, Tokens: tokens, Assume: plan.DefaultAssumptions()}, nil
}

// parseBudget parses --batch-tokens (binary suffixes, a whole number) and --tokens (decimal).
func parseBudget(batchFlag, tokensFlag string) (int64, float64, error) {
	b, err := plan.ParseSize("--batch-tokens", batchFlag, plan.Binary)
	if err != nil {
		return 0, 0, err
	}
	if b != math.Trunc(b) || b > math.MaxInt64/2 {
		return 0, 0, fmt.Errorf("--batch-tokens %q = %g is not a whole number of tokens", batchFlag, b)
	}
	t, err := plan.ParseSize("--tokens", tokensFlag, plan.Decimal)
	return int64(b), t, err
}

// calibratedRun says which run a plan was calibrated on.
type calibratedRun struct {
	Metrics    string `json:"metrics"`
	Dim        int    `json:"dim"`
	Layers     int    `json:"layers"`
	GPUs       int    `json:"gpus"`
	Batch      int    `json:"batch"`
	Seq        int    `json:"seq"`
	MicroBatch int    `json:"micro_batch"`
}

// calibrate fits the planned GPU to the run whose metrics.jsonl is at path (or in the
// directory path), reading the run's config from run.json beside it. The run used herd's
// runtime: plain data parallelism, no tensor parallelism, on the planned kind of GPU.
func calibrate(path string, planned plan.Config) (plan.Calibration, calibratedRun, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		path = filepath.Join(path, worker.MetricsName)
	}
	rc, err := readRunConfig(filepath.Join(filepath.Dir(path), worker.RunConfigName))
	if err != nil {
		return plan.Calibration{}, calibratedRun{}, err
	}
	steps, err := readStepMetrics(path)
	if err != nil {
		return plan.Calibration{}, calibratedRun{}, err
	}
	c := planned
	c.Preset, c.Model, c.GPUs, c.ZeRO, c.TP = "", rc.Model, max(rc.World, 1), 0, 1
	c.Seq, c.BatchTokens, c.MicroBatch = rc.Seq, int64(rc.Batch)*int64(rc.Seq), rc.MicroBatch
	run := calibratedRun{Metrics: path, Dim: rc.Model.Dim, Layers: rc.Model.Layers, GPUs: c.GPUs, Batch: rc.Batch, Seq: rc.Seq, MicroBatch: rc.MicroBatch}
	cal, err := plan.Calibrate(plan.Measurement{Config: c, Steps: steps})
	return cal, run, err
}

func readRunConfig(path string) (worker.RunConfig, error) {
	var rc worker.RunConfig
	raw, err := os.ReadFile(path)
	if err != nil {
		return rc, fmt.Errorf("--calibrate: the run's config: %w", err)
	}
	if err := json.Unmarshal(raw, &rc); err != nil {
		return rc, fmt.Errorf("--calibrate: %s: %w", path, err)
	}
	return rc, nil
}

// readStepMetrics reads the training-step lines of a metrics.jsonl, skipping validation lines.
func readStepMetrics(path string) ([]plan.StepSample, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--calibrate: %w", err)
	}
	defer fh.Close()
	var out []plan.StepSample
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		var line struct {
			worker.StepMetrics
			Val json.RawMessage `json:"val"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return nil, fmt.Errorf("--calibrate: %s:%d: %w", path, n, err)
		}
		if line.Val == nil {
			sm := line.StepMetrics
			out = append(out, plan.StepSample{Step: sm.Step, ElapsedS: sm.ElapsedS, TokensPerSPerGPU: sm.TokensPerSPerDevice, CommWaitS: sm.CommWaitS, MFU: sm.MFU})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--calibrate: %s: %w", path, err)
	}
	return out, nil
}

func printCapacity(w io.Writer, rep capacityReport) {
	r := rep.Plan
	printLayout(w, r)
	fraction := "assumed"
	if rep.Calibration != nil {
		printCalibration(w, *rep.Calibration, *rep.CalibratedOn)
		fraction = "calibrated"
	}
	printMemory(w, r)
	printStepTime(w, r)
	printThroughput(w, r)
	printOutcome(w, rep)
	printAssumptions(w, r.Config, fraction)
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

func printLayout(w io.Writer, r plan.Result) {
	c := r.Config
	fmt.Fprintf(w, "plan: %s (%s parameters) on %d x %s, %d per node", c.Preset, humanCount(r.Params), c.GPUs, c.GPU.Name, c.GPU.GPUsPerNode)
	if c.GPUs > c.GPU.GPUsPerNode {
		fmt.Fprintf(w, ", %s between nodes", c.Fabric.Name)
	}
	fmt.Fprintf(w, "\nlayout: data parallel %d x tensor parallel %d, %s, remat %s\n", c.DP(), c.TP, zeroName(c.ZeRO), c.Model.Remat)
	fmt.Fprintf(w, "batch: %s tokens = %d sequences of %d per step; %d per data-parallel rank in %s of micro-batch %d\n\n",
		commas(float64(c.BatchTokens)), c.Sequences(), c.Seq, c.SequencesPerRank(), passes(r.MicroBatches), r.MicroBatch)
}

func zeroName(stage int) string {
	if stage == 0 {
		return "plain data parallelism (ZeRO-0)"
	}
	return fmt.Sprintf("ZeRO-%d", stage)
}

func printCalibration(w io.Writer, cal plan.Calibration, run calibratedRun) {
	fmt.Fprintf(w, "calibrated on %s: d=%d, %d layers on %s, %d x %d tokens per step in micro-batches of %d\n",
		run.Metrics, run.Dim, run.Layers, plural(run.GPUs, "GPU"), run.Batch, run.Seq, run.MicroBatch)
	fmt.Fprintf(w, "  measured: %s tokens/s/GPU and %.1f%% MFU since it (re)started, %d step times\n", commas(cal.TokensPerSPerGPU), 100*cal.MFU, cal.Steps)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  GEMM fraction\t%.3f -> %.3f\tthe model's step equals the median step, %s\n", cal.PriorFraction, cal.GEMMFraction, secs(cal.MedianStepS))
	fmt.Fprintf(tw, "  step overhead\t0 -> %.1f%%\tthe mean step, %s, with start-up, validation and save stalls\n", 100*cal.StepOverhead, secs(cal.MeanStepS))
	fmt.Fprintf(tw, "  comm wait\tmeasured %s\tthe model's exposed communication %s (the fraction absorbs any gap)\n", secs(cal.MeasuredCommWaitS), secs(cal.ModelCommS))
	tw.Flush()
	fmt.Fprintln(w)
}

func printMemory(w io.Writer, r plan.Result) {
	c, m := r.Config, r.Memory
	share := func(stage int) string {
		if c.ZeRO >= stage && c.DP() > 1 {
			return fmt.Sprintf(", 1/%d of them (ZeRO-%d)", c.DP(), c.ZeRO)
		}
		return ""
	}
	working := "bf16 working copy"
	if c.ZeRO == 3 {
		working = "bf16 blocks gathered when used (comm buffers)"
	}
	tpNote := ""
	if c.TP > 1 {
		tpNote = fmt.Sprintf(" / tp %d", c.TP)
	}
	fmt.Fprintln(w, "memory per GPU (predicted)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(name string, b int64, what string) { fmt.Fprintf(tw, "  %s\t%s\t%s\n", name, humanBytes(b), what) }
	row("parameters", m.Params, "fp32 masters"+share(1)+"; "+working)
	row("gradients", m.Grads, "fp32"+share(2))
	row("optimizer state", m.Optimizer, "AdamW m and v, fp32"+share(1))
	row("activations", m.Activations, fmt.Sprintf("%s remat, bf16, %d x %d tokens%s, and one block's recompute workspace", c.Model.Remat, r.MicroBatch, c.Seq, tpNote))
	row("comm buffers", m.CommBuffers, "ZeRO-2/3 gradient buckets, ZeRO-3 gathered blocks, sequence-parallel gathers")
	row("reserve", m.Reserve, fmt.Sprintf("%s runtime + %.0f%% of HBM (CUDA context, cuBLASLt and NCCL workspaces, fragmentation)", humanBytes(c.Assume.ReserveBytes), 100*c.Assume.ReserveFraction))
	verdict := fmt.Sprintf("of %s HBM: fits, %s free", humanBytes(m.HBM), humanBytes(m.HBM-m.Total))
	if !m.Fits() {
		verdict = fmt.Sprintf("of %s HBM: DOES NOT FIT, %s over", humanBytes(m.HBM), humanBytes(m.Total-m.HBM))
	}
	row("total", m.Total, verdict)
	tw.Flush()
	fmt.Fprintln(w)
}

func printStepTime(w io.Writer, r plan.Result) {
	c, t := r.Config, r.Time
	fmt.Fprintln(w, "step time (predicted)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  compute\t%s\t%d x (forward %s + backward %s) at %.0f%% of %.0f TFLOP/s\n",
		secs(t.Compute), r.MicroBatches, secs(t.Forward), secs(t.Backward), 100*c.GPU.GEMMFraction, c.GPU.PeakFLOPS/1e12)
	fmt.Fprintf(tw, "  communication\t%s\texposed; %s\n", secs(t.Comm.Exposed), commDetail(c, t.Comm))
	fmt.Fprintf(tw, "  overhead\t%s\toptimizer %s, non-matmul ops %s, stalls %s\n", secs(t.Overhead), secs(t.Optimizer), secs(t.Elementwise), secs(t.Stall))
	fmt.Fprintf(tw, "  step\t%s\n", secs(t.Step))
	tw.Flush()
	fmt.Fprintln(w)
}

func commDetail(c plan.Config, cm plan.Comm) string {
	parts := []string{"no data-parallel collectives"}
	if c.DP() > 1 {
		parts[0] = fmt.Sprintf("data parallel %s (%s per GPU per step over %s at %.1f GB/s), %s of it behind compute",
			secs(cm.DP), humanBytes(int64(cm.Bytes)), cm.Link, cm.Bandwidth/1e9, secs(cm.DPHidden))
	}
	if c.TP > 1 {
		parts = append(parts, fmt.Sprintf("tensor parallel %s over NVLink", secs(cm.TP)))
	}
	return strings.Join(parts, "; ")
}

func printThroughput(w io.Writer, r plan.Result) {
	c := r.Config
	fmt.Fprintln(w, "throughput and cost (predicted)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  tokens/s/GPU\t%s\n", commas(r.TokensPerSPerGPU))
	fmt.Fprintf(tw, "  MFU\t%.1f%%\t%.4g FLOPs per token (6*(N-N_emb) + 12*L*T*d) against %.0f TFLOP/s dense bf16\n",
		100*r.MFU, r.FLOPsPerToken, c.GPU.PeakFLOPS/1e12)
	fmt.Fprintf(tw, "  %s tokens\t%s GPU-hours\t%.1f days on %s\n", humanTokens(c.Tokens), commas(r.GPUHours), r.Days, plural(c.GPUs, "GPU"))
	tw.Flush()
	fmt.Fprintln(w)
}

func printOutcome(w io.Writer, rep capacityReport) {
	if !rep.Fits {
		if len(rep.Suggestions) == 0 {
			fmt.Fprintf(w, "does not fit, and no change within reach (more GPUs, ZeRO-3, full remat, tensor parallelism up to a node) makes it fit\n\n")
			return
		}
		fmt.Fprintln(w, "does not fit; each of these would:")
		printSuggestions(w, rep.Suggestions)
	}
	if rep.Faster != nil {
		fmt.Fprintf(w, "the fastest layout that fits on %d GPUs:\n", rep.Plan.Config.GPUs)
		printSuggestions(w, []plan.Suggestion{*rep.Faster})
	}
}

func printSuggestions(w io.Writer, ss []plan.Suggestion) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, s := range ss {
		r := s.Result
		fmt.Fprintf(tw, "  %s\t%s of %s\t%s tokens/s/GPU, %.1f%% MFU, %s GPU-hours\n", s.Change,
			humanBytes(r.Memory.Total), humanBytes(r.Memory.HBM), commas(r.TokensPerSPerGPU), 100*r.MFU, commas(r.GPUHours))
	}
	tw.Flush()
	fmt.Fprintln(w)
}

// printAssumptions lists what the prediction rests on; fraction says where the GPU's
// achievable fraction of peak came from ("assumed" or "calibrated").
func printAssumptions(w io.Writer, c plan.Config, fraction string) {
	a := c.Assume
	fmt.Fprintln(w, "assumptions")
	fmt.Fprintf(w, "  %s: %.0f TFLOP/s dense bf16, %s HBM at %.0f GB/s, NVLink %.0f GB/s per direction (datasheet); the model's FLOPs at %.0f%% of peak (%s)\n",
		c.GPU.Name, c.GPU.PeakFLOPS/1e12, humanBytes(c.GPU.HBMBytes), c.GPU.HBMBandwidth/1e9, c.GPU.NVLinkBandwidth/1e9, 100*c.GPU.GEMMFraction, fraction)
	fmt.Fprintf(w, "  links: ring collectives at %.0f%% of NVLink", 100*c.GPU.NVLinkEfficiency)
	if c.GPUs > c.GPU.GPUsPerNode {
		fmt.Fprintf(w, " and %.0f%% of %s (%.0f Gb/s per node)", 100*c.Fabric.Efficiency, c.Fabric.Name, c.Fabric.NodeBandwidth*8/1e9)
	}
	fmt.Fprintln(w, ", assumed")
	fmt.Fprintf(w, "  overlap: %.0f%% of data-parallel communication can hide behind compute (ZeRO-1/2's all-gather after the optimizer step and tensor-parallel collectives do not)\n", 100*a.Overlap)
	fmt.Fprintf(w, "  collectives: gradients reduced in %d-byte elements, parameters gathered in %d-byte elements\n", a.ReduceBytes, a.GatherBytes)
	fmt.Fprintf(w, "  memory-bound work at %.0f%% of HBM bandwidth: AdamW %.0f bytes per parameter, non-matmul ops %.0fx a block's activations per token\n",
		100*a.MemoryEfficiency, a.OptimizerBytes, a.ElementwiseTraffic)
}

// secs writes a duration in seconds, or milliseconds below one second.
func secs(v float64) string {
	switch {
	case v == 0:
		return "0 s"
	case v < 1:
		return fmt.Sprintf("%.3g ms", v*1e3)
	}
	return fmt.Sprintf("%.2f s", v)
}

func passes(n int) string {
	if n == 1 {
		return "1 pass"
	}
	return fmt.Sprintf("%d passes", n)
}

// humanTokens writes a token count with a decimal suffix: 1.4T, 300G.
func humanTokens(n float64) string {
	for _, u := range []struct {
		v float64
		s string
	}{{1e12, "T"}, {1e9, "G"}, {1e6, "M"}, {1e3, "K"}} {
		if n >= u.v {
			return fmt.Sprintf("%.4g%s", n/u.v, u.s)
		}
	}
	return fmt.Sprintf("%.0f", n)
}

// commas writes v rounded to an integer with thousands separators.
func commas(v float64) string {
	s := fmt.Sprintf("%.0f", math.Round(v))
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

// llamaReport is what `herd plan --llama-table --json` prints.
type llamaReport struct {
	Setup plan.LLaMASetup `json:"setup"`
	Rows  []plan.LLaMARow `json:"rows"`
}

func runLLaMATable(f *planFlags, stdout io.Writer) error {
	hw, err := loadHardware(*f.hardware)
	if err != nil {
		return err
	}
	setup := plan.DefaultLLaMASetup()
	rows, err := plan.LLaMATable(hw, setup)
	if err != nil {
		return err
	}
	if *f.asJSON {
		return writeJSON(stdout, llamaReport{Setup: setup, Rows: rows})
	}
	printLLaMATable(stdout, hw, setup, rows)
	return nil
}

func printLLaMATable(w io.Writer, hw plan.Hardware, s plan.LLaMASetup, rows []plan.LLaMARow) {
	fmt.Fprintln(w, "LLaMA's training cost (arXiv 2302.13971) beside the planner's prediction (a prediction, not a measurement)")
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "model\ttokens\tpaper GPU-hours\tpredicted\tratio\tpaper tokens/s/GPU\tpredicted\tMFU\tlayout\t")
	for _, r := range rows {
		p := r.Result
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.2f\t%s\t%s\t%.1f%%\tZeRO-%d, tp %d, micro-batch %d\t\n", r.Paper.Preset, humanTokens(r.Paper.Tokens),
			commas(r.Paper.GPUHours), commas(p.GPUHours), r.GPUHoursRatio(), commas(r.Paper.TokensPerSPerGPU()), commas(p.TokensPerSPerGPU),
			100*p.MFU, p.Config.ZeRO, p.Config.TP, p.MicroBatch)
	}
	tw.Flush()
	fmt.Fprintln(w, "\none set of assumptions for all four models:")
	fmt.Fprintf(w, "  from the paper: A100-80GB, 2048 GPUs for 65B, batches of %s tokens (%d sequences of %d), %s remat\n",
		commas(float64(s.BatchTokens)), s.BatchTokens/int64(s.Seq), s.Seq, s.Remat)
	fmt.Fprintln(w, "    (it keeps the outputs of the linear layers), model and sequence parallelism")
	fmt.Fprintf(w, "  assumed: the same %d GPUs for every model, in nodes of 8 with %s between them\n", s.GPUs, s.Fabric)
	fmt.Fprintf(w, "  layout: %s\n", s.Layout)
	if len(rows) > 0 {
		printAssumptions(w, rows[0].Result.Config, "assumed")
	}
}
