package plan

import (
	"fmt"

	"github.com/herd-llm/herd/model"
)

// Fastest returns the layout of c's model, batch and GPUs with the highest predicted
// tokens/s/GPU that fits: every ZeRO stage, every tensor-parallel size up to a node, and the
// micro-batch Estimate chooses. ok is false when no layout fits.
func Fastest(c Config) (best Result, ok bool, err error) {
	c, err = prepare(c)
	if err != nil {
		return Result{}, false, err
	}
	for _, v := range layouts(c) {
		if r := resolve(v); r.Fits() && r.TokensPerSPerGPU > best.TokensPerSPerGPU {
			best, ok = r, true
		}
	}
	return best, ok, nil
}

// layouts lists the valid variants of c over ZeRO stage and tensor-parallel size, with the
// micro-batch left to Estimate.
func layouts(c Config) []Config {
	var out []Config
	for z := 0; z <= 3; z++ {
		for tp := 1; tp <= c.GPU.GPUsPerNode; tp++ {
			v := c
			v.ZeRO, v.TP, v.MicroBatch = z, tp, 0
			if v.validate() == nil {
				out = append(out, v)
			}
		}
	}
	return out
}

// Suggestion is a change to a plan that does not fit which makes it fit, with the prediction
// for the changed plan.
type Suggestion struct {
	Change string `json:"change"` // the flags to change: "--zero 3", "--gpus 4096 --zero 3"
	Result Result `json:"result"`
}

// Suggest returns, for a plan that does not fit, each single change that makes it fit: the
// smallest GPU count, the lowest higher ZeRO stage, full remat, the smallest larger
// tensor-parallel size, a smaller micro-batch. When no single change is enough it tries them
// together. It returns nothing for a plan that fits.
func Suggest(c Config) ([]Suggestion, error) {
	c, err := prepare(c)
	if err != nil {
		return nil, err
	}
	if resolve(c).Fits() {
		return nil, nil
	}
	var out []Suggestion
	for _, try := range []func(Config) (Suggestion, bool){moreGPUs, higherZeRO, fullRemat, moreTP, smallerMicroBatch} {
		if s, ok := try(c); ok {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		if s, ok := everything(c); ok {
			out = append(out, s)
		}
	}
	return out, nil
}

// fitting returns the suggestion for variant v of c, if v is valid and fits.
func fitting(c, v Config, change string) (Suggestion, bool) {
	if v.validate() != nil {
		return Suggestion{}, false
	}
	r := resolve(v)
	if !r.Fits() {
		return Suggestion{}, false
	}
	if c.MicroBatch > 0 && r.MicroBatch != c.MicroBatch {
		change += fmt.Sprintf(" --micro-batch %d", r.MicroBatch)
	}
	return Suggestion{Change: change, Result: r}, true
}

// moreGPUs finds the smallest larger GPU count that fits, up to one sequence per rank.
func moreGPUs(c Config) (Suggestion, bool) {
	for g := c.GPUs + c.TP; g/c.TP <= c.Sequences(); g += c.TP {
		v := c
		v.GPUs, v.MicroBatch = g, 0
		if s, ok := fitting(c, v, fmt.Sprintf("--gpus %d", g)); ok {
			return s, true
		}
	}
	return Suggestion{}, false
}

func higherZeRO(c Config) (Suggestion, bool) {
	for z := c.ZeRO + 1; z <= 3; z++ {
		v := c
		v.ZeRO, v.MicroBatch = z, 0
		if s, ok := fitting(c, v, fmt.Sprintf("--zero %d", z)); ok {
			return s, true
		}
	}
	return Suggestion{}, false
}

func fullRemat(c Config) (Suggestion, bool) {
	if c.Model.Remat == model.RematFull {
		return Suggestion{}, false
	}
	v := c
	v.Model.Remat, v.MicroBatch = model.RematFull, 0
	return fitting(c, v, "--remat full")
}

func moreTP(c Config) (Suggestion, bool) {
	for tp := c.TP + 1; tp <= c.GPU.GPUsPerNode; tp++ {
		v := c
		v.TP, v.MicroBatch = tp, 0
		if s, ok := fitting(c, v, fmt.Sprintf("--tp %d", tp)); ok {
			return s, true
		}
	}
	return Suggestion{}, false
}

func smallerMicroBatch(c Config) (Suggestion, bool) {
	for mb := c.MicroBatch - 1; mb >= 1; mb-- {
		v := c
		v.MicroBatch = mb
		if s, ok := fitting(c, v, fmt.Sprintf("--micro-batch %d", mb)); ok {
			return s, true
		}
	}
	return Suggestion{}, false
}

// everything combines ZeRO-3, full remat and the largest tensor-parallel size, and then more
// GPUs if that is still not enough.
func everything(c Config) (Suggestion, bool) {
	v := c
	v.ZeRO, v.Model.Remat, v.MicroBatch = 3, model.RematFull, 0
	for tp := c.GPU.GPUsPerNode; tp >= c.TP; tp-- {
		v.TP = tp
		if v.validate() == nil {
			break
		}
	}
	change := fmt.Sprintf("--zero 3 --remat full --tp %d", v.TP)
	if s, ok := fitting(c, v, change); ok {
		return s, true
	}
	if s, ok := moreGPUs(v); ok {
		s.Change = change + " " + s.Change
		return s, true
	}
	return Suggestion{}, false
}
