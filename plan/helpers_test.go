package plan

import (
	"math"
	"testing"

	"github.com/herd-llm/herd/model"
)

// config returns a plan of preset on gpus A100-80GB in DGX A100 nodes with LLaMA's batch.
func config(t *testing.T, preset string, gpus, zero, tp int) Config {
	t.Helper()
	m, err := model.Preset(preset)
	if err != nil {
		t.Fatal(err)
	}
	hw := Builtin()
	return Config{Preset: preset, Model: m, GPUs: gpus, GPU: hw.GPUs["a100-80g"], Fabric: hw.Fabrics["ib-8x200"],
		ZeRO: zero, TP: tp, Seq: 2048, BatchTokens: 4 << 20, Tokens: 1e12, Assume: DefaultAssumptions()}
}

func mustEstimate(t *testing.T, c Config) Result {
	t.Helper()
	r, err := Estimate(c)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func near(a, b, rel float64) bool { return math.Abs(a-b) <= rel*math.Max(math.Abs(a), math.Abs(b)) }
