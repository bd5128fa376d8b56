package worker

import (
	"context"
	"fmt"
	"math"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu"
	"github.com/herd-llm/herd/model"
)

// ZeRO shards the training state across the data-parallel ranks instead of replicating it.
// The flat buffers are cut into units, the ranges that backward finishes one after another:
// the output head (final norm and output matrix), each block, the token embedding. Every unit
// is split among the ranks as the collectives split a buffer (collective.Partition): rank r
// owns chunk r of every unit, and its shard is the concatenation of its chunks.
//
//	stage 1: the AdamW moments are sharded. Gradients are reduce-scattered unit by unit as
//	         backward finishes each (the same volume as an all-reduce), each rank updates the
//	         parameters of its chunks, and the parameters are all-gathered after the step.
//
// The model knows nothing of this: the worker drives it from outside.

// zeroUnit is a range of the flat buffers and this rank's chunk of it.
type zeroUnit struct {
	off, n       int // the unit in the flat layout
	ownOff, ownN int // this rank's chunk, in the flat layout
}

// zeroGroup is a run of this rank's chunk with one weight-decay flag, and where it lives in
// the shard buffers.
type zeroGroup struct {
	off, n   int // in the flat layout
	shardOff int // in the moment shards
	decay    bool
}

// zeroPlan is one rank's part of the partition.
type zeroPlan struct {
	stage       int
	world, rank int
	units       []zeroUnit
	groups      []zeroGroup
	size        int // elements of this rank's shard
	elems       int // elements of the flat buffers
}

// modelUnits returns the units of a layout: the embedding, each block, the head.
func modelUnits(l model.Layout) [][2]int {
	var units [][2]int
	for i, s := range l.Specs {
		key := s.Layer
		if s.Layer < 0 && i > 0 {
			key = -2 // the final norm and the output head
		}
		if i > 0 {
			prev := l.Specs[i-1]
			pkey := prev.Layer
			if prev.Layer < 0 && i-1 > 0 {
				pkey = -2
			}
			if pkey == key {
				units[len(units)-1][1] += s.Size
				continue
			}
		}
		units = append(units, [2]int{s.Offset, s.Size})
	}
	return units
}

// newZeroPlan partitions layout among world ranks for the given stage.
func newZeroPlan(l model.Layout, stage, world, rank int) (*zeroPlan, error) {
	p := &zeroPlan{stage: stage, world: world, rank: rank, elems: l.Size}
	for _, u := range modelUnits(l) {
		if u[1] < world {
			return nil, fmt.Errorf("%w: --zero %d over %d ranks leaves a rank with an empty range: a unit of the model has only %d elements",
				ErrConfig, stage, world, u[1])
		}
		lo, hi := collective.Partition(u[1], world, rank)
		p.units = append(p.units, zeroUnit{off: u[0], n: u[1], ownOff: u[0] + lo, ownN: hi - lo})
	}
	// Split this rank's chunks where the weight-decay flag changes.
	for _, u := range p.units {
		lo, hi := u.ownOff, u.ownOff+u.ownN
		for _, s := range l.Specs {
			a, b := max(lo, s.Offset), min(hi, s.Offset+s.Size)
			if a >= b {
				continue
			}
			if k := len(p.groups) - 1; k >= 0 && p.groups[k].decay == s.Decay && p.groups[k].off+p.groups[k].n == a {
				p.groups[k].n += b - a
			} else {
				p.groups = append(p.groups, zeroGroup{off: a, n: b - a, shardOff: p.size + a - lo, decay: s.Decay})
			}
		}
		p.size += u.ownN
	}
	return p, nil
}

// zeroOptim is AdamW over this rank's shard: moments of the shard's size, updates of the
// parameters in its chunks, then the all-gather that gives every rank the whole parameters.
type zeroOptim struct {
	plan  *zeroPlan
	cfg   model.OptimConfig
	mod   *model.Model
	be    kernels.Backend
	comm  collective.Communicator
	m, v  kernels.Buffer // shard-sized
	steps int
}

func newZeroOptim(mod *model.Model, cfg model.OptimConfig, plan *zeroPlan, comm collective.Communicator) (*zeroOptim, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !hostBackend(mod) {
		return nil, fmt.Errorf("%w: --zero runs on the cpu backend only so far (the %s backend keeps its state in device memory)", ErrConfig, mod.Backend().Name())
	}
	be := mod.Backend()
	return &zeroOptim{plan: plan, cfg: cfg, mod: mod, be: be, comm: comm, m: be.Alloc(plan.size), v: be.Alloc(plan.size)}, nil
}

func (z *zeroOptim) Steps() int     { return z.steps }
func (z *zeroOptim) SetSteps(n int) { z.steps = n }

func (z *zeroOptim) Close() {
	z.be.Free(z.m)
	z.be.Free(z.v)
}

// Step clips by the global gradient norm (the squares of every rank's chunks summed across
// ranks), updates this rank's chunks and all-gathers the parameters. The gradients' chunks
// must hold the sums over ranks (the reduce-scatter of backward).
func (z *zeroOptim) Step(ctx context.Context, lr, gradScale float64) (float64, error) {
	grads := z.mod.Grads()
	var ss float64
	for _, g := range z.plan.groups {
		ss += z.be.SumSquares(z.be.Slice(grads, g.off, g.n))
	}
	// float64 across ranks as two float32 halves: the sum of the high parts is exact enough,
	// the low parts carry the rest.
	hi := float32(ss)
	buf := []float32{hi, float32(ss - float64(hi))}
	if err := z.comm.AllReduce(ctx, buf, collective.Sum); err != nil {
		return 0, fmt.Errorf("gradient norm: %w", err)
	}
	norm := math.Sqrt(float64(buf[0])+float64(buf[1])) * gradScale
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return norm, nil
	}
	scale := gradScale
	if z.cfg.ClipNorm > 0 && norm > z.cfg.ClipNorm {
		scale *= z.cfg.ClipNorm / norm
	}
	z.steps++
	params := z.mod.Params()
	for _, g := range z.plan.groups {
		wd := 0.0
		if g.decay {
			wd = z.cfg.WeightDecay
		}
		hp := kernels.AdamW{LR: lr, Beta1: z.cfg.Beta1, Beta2: z.cfg.Beta2, Eps: z.cfg.Eps, WeightDecay: wd, Step: z.steps, GradScale: scale}
		z.be.AdamWUpdate(z.be.Slice(params, g.off, g.n), z.be.Slice(grads, g.off, g.n), z.be.Slice(z.m, g.shardOff, g.n), z.be.Slice(z.v, g.shardOff, g.n), hp)
	}
	return norm, z.gatherParams(ctx)
}

// gatherParams gives every rank the parameters of every unit from the rank that owns each
// chunk.
func (z *zeroOptim) gatherParams(ctx context.Context) error {
	p := cpu.Data[float32](z.mod.Params())
	hs := make([]collective.Handle, 0, len(z.plan.units))
	for _, u := range z.plan.units {
		hs = append(hs, z.comm.AllGatherAsync(ctx, p[u.off:u.off+u.n]))
	}
	for _, h := range hs {
		if err := h.Wait(ctx); err != nil {
			return fmt.Errorf("gathering parameters: %w", err)
		}
	}
	z.mod.ParamsUpdated()
	return nil
}

// spans returns this rank's chunks with their parameters and moments, for a checkpoint.
func (z *zeroOptim) spans() []checkpoint.Span {
	p := cpu.Data[float32](z.mod.Params())
	m, v := cpu.Data[float32](z.m), cpu.Data[float32](z.v)
	var out []checkpoint.Span
	at := 0
	for _, u := range z.plan.units {
		out = append(out, checkpoint.Span{Offset: int64(u.ownOff), Params: p[u.ownOff : u.ownOff+u.ownN],
			M: m[at : at+u.ownN], V: v[at : at+u.ownN]})
		at += u.ownN
	}
	return out
}

// adopt takes this rank's chunks of whole moment buffers (a loaded checkpoint).
func (z *zeroOptim) adopt(mom, vel []float32) {
	m, v := cpu.Data[float32](z.m), cpu.Data[float32](z.v)
	at := 0
	for _, u := range z.plan.units {
		copy(m[at:at+u.ownN], mom[u.ownOff:u.ownOff+u.ownN])
		copy(v[at:at+u.ownN], vel[u.ownOff:u.ownOff+u.ownN])
		at += u.ownN
	}
}

// reset zeroes the moments (a fresh start).
func (z *zeroOptim) reset() {
	z.be.Zero(z.m)
	z.be.Zero(z.v)
	z.steps = 0
}
