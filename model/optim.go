package model

import (
	"fmt"
	"math"

	"github.com/herd-llm/herd/kernels"
)

// OptimConfig holds LLaMA's AdamW settings and gradient clipping.
type OptimConfig struct {
	Beta1       float64 `json:"beta1"`
	Beta2       float64 `json:"beta2"`
	Eps         float64 `json:"eps"`
	WeightDecay float64 `json:"weight_decay"` // applied to matrices only
	ClipNorm    float64 `json:"clip_norm"`    // global gradient norm limit; 0 disables clipping
}

// DefaultOptim returns the paper's settings: beta1 0.9, beta2 0.95, eps 1e-8, weight decay
// 0.1, clipping at 1.0.
func DefaultOptim() OptimConfig {
	return OptimConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, ClipNorm: 1.0}
}

// Validate names the first bad field.
func (o OptimConfig) Validate() error {
	switch {
	case !(o.Beta1 >= 0 && o.Beta1 < 1):
		return fmt.Errorf("%w: beta1 = %g, must be in [0, 1)", ErrConfig, o.Beta1)
	case !(o.Beta2 >= 0 && o.Beta2 < 1):
		return fmt.Errorf("%w: beta2 = %g, must be in [0, 1)", ErrConfig, o.Beta2)
	case !(o.Eps > 0):
		return fmt.Errorf("%w: eps = %g, must be > 0", ErrConfig, o.Eps)
	case !(o.WeightDecay >= 0):
		return fmt.Errorf("%w: weight_decay = %g, must be >= 0", ErrConfig, o.WeightDecay)
	case !(o.ClipNorm >= 0):
		return fmt.Errorf("%w: clip_norm = %g, must be >= 0", ErrConfig, o.ClipNorm)
	}
	return nil
}

// Optimizer is AdamW over a model's flat buffers. Its moments share the parameter layout.
type Optimizer struct {
	cfg    OptimConfig
	model  *Model
	m, v   kernels.Buffer
	groups []group
	step   int
}

// group is a run of consecutive tensors with the same weight-decay flag.
type group struct {
	off, n int
	decay  bool
}

// NewOptimizer allocates the moments of m.
func NewOptimizer(m *Model, cfg OptimConfig) (*Optimizer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := &Optimizer{cfg: cfg, model: m, m: m.allocMaster(m.Layout.Size), v: m.allocMaster(m.Layout.Size)}
	for _, s := range m.Layout.Specs {
		if k := len(o.groups) - 1; k >= 0 && o.groups[k].decay == s.Decay {
			o.groups[k].n += s.Size
			continue
		}
		o.groups = append(o.groups, group{off: s.Offset, n: s.Size, decay: s.Decay})
	}
	return o, nil
}

// Moments returns the first and second moment buffers (for checkpoints).
func (o *Optimizer) Moments() (m, v kernels.Buffer) { return o.m, o.v }

// Steps returns the number of updates applied so far.
func (o *Optimizer) Steps() int { return o.step }

// SetSteps sets the update count, for resuming from a checkpoint.
func (o *Optimizer) SetSteps(n int) { o.step = n }

// GradNorm returns the global L2 norm of the model's gradients multiplied by gradScale.
func (o *Optimizer) GradNorm(gradScale float64) float64 {
	return math.Sqrt(o.model.be.SumSquares(o.model.grads)) * gradScale
}

// Step applies one AdamW update with learning rate lr to the model's gradients multiplied by
// gradScale (for example 1/accumulation steps), clipping their global norm to ClipNorm first.
// It returns the norm before clipping. A NaN or infinite norm changes nothing (no update, no
// step counted): the caller sees the norm and decides.
func (o *Optimizer) Step(lr, gradScale float64) float64 {
	return o.update(lr, gradScale, o.GradNorm(gradScale))
}

// StepSharded is Step for a tensor-parallel rank, whose gradients are its share of the
// network's: reduce receives this rank's sums of squares of the split tensors' gradients and
// of the whole ones' (Model.SquaresSplit) and returns the network's sum of squares, from
// which the global norm is clipped as one process would.
func (o *Optimizer) StepSharded(lr, gradScale float64, reduce func(split, whole float64) (float64, error)) (float64, error) {
	sq, err := reduce(o.model.SquaresSplit())
	if err != nil {
		return 0, err
	}
	return o.update(lr, gradScale, math.Sqrt(sq)*gradScale), nil
}

// update applies the AdamW update given the gradients' norm (times gradScale).
func (o *Optimizer) update(lr, gradScale, norm float64) float64 {
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return norm
	}
	scale := gradScale
	if o.cfg.ClipNorm > 0 && norm > o.cfg.ClipNorm {
		scale *= o.cfg.ClipNorm / norm
	}
	o.step++
	be := o.model.be
	for _, g := range o.groups {
		wd := 0.0
		if g.decay {
			wd = o.cfg.WeightDecay
		}
		sl := func(b kernels.Buffer) kernels.Buffer { return be.Slice(b, g.off, g.n) }
		hp := kernels.AdamW{
			LR: lr, Beta1: o.cfg.Beta1, Beta2: o.cfg.Beta2, Eps: o.cfg.Eps,
			WeightDecay: wd, Step: o.step, GradScale: scale,
		}
		if mx := o.model.mixed; mx != nil {
			mx.AdamWUpdateCast(sl(o.model.work), sl(o.model.params), sl(o.model.grads), sl(o.m), sl(o.v), hp)
			continue
		}
		be.AdamWUpdate(sl(o.model.params), sl(o.model.grads), sl(o.m), sl(o.v), hp)
	}
	return norm
}

// Close frees the moments.
func (o *Optimizer) Close() {
	o.model.be.Free(o.m)
	o.model.be.Free(o.v)
}
