package worker

import (
	"context"
	"fmt"
	"hash/crc32"
	"math"
	"time"
	"unsafe"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu"
	"github.com/herd-llm/herd/model"
)

// ZeRO shards the training state across the data-parallel ranks instead of replicating it.
// The flat buffers are cut into the model's units (model.Layout.Units: the embedding, each
// block, the head), and every unit is split among the ranks as the collectives split a
// buffer (collective.Partition): rank r owns chunk r of every unit, and its shard is the
// concatenation of its chunks.
//
//	stage 1: the AdamW moments are sharded. Gradients are reduce-scattered unit by unit as
//	         backward finishes each, on the last micro-batch (the volume of an all-reduce);
//	         each rank updates the parameters of its chunks, and the parameters are
//	         all-gathered after the step.
//	stage 2: the gradients are sharded too. The model accumulates each unit's gradient of a
//	         micro-batch into a buffer lent for that unit only (model.Residency), which is
//	         reduce-scattered as soon as backward finishes the unit and added into this
//	         rank's gradient shard; no rank ever holds the whole gradient.
//	stage 3: the parameters are sharded as well (FSDP). Each unit's parameters are
//	         all-gathered just before its forward and again before its backward, and freed
//	         right after; the next unit's gather is started while this one computes. The
//	         optimizer updates the shard in place; nothing is gathered after the step.
//
// The model knows nothing of ranks: it only borrows storage through model.Residency. The
// state lives in host memory, so ZeRO runs on the CPU backend.

// zeroUnit is a unit of the layout and this rank's chunk of it.
type zeroUnit struct {
	off, n       int // the unit in the flat layout
	ownOff, ownN int // this rank's chunk, in the flat layout
	shardOff     int // where the chunk lives in the shard buffers
}

// zeroGroup is a run of this rank's chunks with one weight-decay flag.
type zeroGroup struct {
	off, n   int // in the flat layout
	shardOff int // in the shard buffers
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
	bucket      int // elements of the largest unit
}

// newZeroPlan partitions layout among world ranks for the given stage.
func newZeroPlan(l model.Layout, stage, world, rank int) (*zeroPlan, error) {
	p := &zeroPlan{stage: stage, world: world, rank: rank, elems: l.Size}
	for _, u := range l.Units() {
		if u.Size < world {
			return nil, fmt.Errorf("%w: --zero %d over %d ranks leaves a rank with an empty range: a unit of the model has only %d elements",
				ErrConfig, stage, world, u.Size)
		}
		lo, hi := collective.Partition(u.Size, world, rank)
		p.units = append(p.units, zeroUnit{off: u.Offset, n: u.Size, ownOff: u.Offset + lo, ownN: hi - lo, shardOff: p.size})
		p.size += hi - lo
		p.bucket = max(p.bucket, u.Size)
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
				p.groups = append(p.groups, zeroGroup{off: a, n: b - a, shardOff: u.shardOff + a - lo, decay: s.Decay})
			}
		}
	}
	return p, nil
}

// zeroState is one rank's sharded training state and, for stages 2 and 3, the model's
// Residency.
type zeroState struct {
	stage  int
	cfg    model.OptimConfig
	be     kernels.Backend
	layout model.Layout
	plan   *zeroPlan
	comm   collective.Communicator
	mod    *model.Model

	params kernels.Buffer // stage 1: nil (the model's); 2: the whole parameters; 3: the shard
	grads  kernels.Buffer // stages 2, 3: the gradient shard
	m, v   kernels.Buffer // the moment shards
	steps  int
	holds  bool // the shards hold a state (of step steps): set by init, adopt and assemble

	// What a pass has in flight (stages 2, 3).
	ctx        context.Context
	pool       []kernels.Buffer  // free communication buffers, for reuse
	gathers    map[int]*inFlight // stage 3: a unit's parameters, gathering or gathered
	scatters   []*inFlight       // gradients being reduce-scattered
	lent       map[int]pooled    // gradient buffers lent to the model, by unit
	err        error             // the first collective failure of the pass
	gatherWait time.Duration     // time the passes waited for a gather (stage 3)
	poolBytes  int64             // bytes of the communication buffers allocated
	noPrefetch bool              // stage 3: gather each unit only when it is needed
}

// pooled is a communication buffer lent for one unit: the view of the unit's size into a
// pool buffer that may be larger.
type pooled struct{ base, view kernels.Buffer }

// inFlight is a unit's buffer and the collective working on it.
type inFlight struct {
	unit int
	buf  pooled
	h    collective.Handle
}

var _ model.Residency = (*zeroState)(nil)

// newZeroState makes the sharded state of stage for a model laid out by l. Stages 2 and 3
// lend the model its storage: build the model with model.NewResident(z).
func newZeroState(stage int, cfg model.OptimConfig, be kernels.Backend, l model.Layout) (*zeroState, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if _, ok := be.(*cpu.Backend[float32]); !ok {
		return nil, fmt.Errorf("%w: --zero runs on the cpu backend only so far (the %s backend keeps its state in device memory)", ErrConfig, be.Name())
	}
	z := &zeroState{stage: stage, cfg: cfg, be: be, layout: l, gathers: map[int]*inFlight{},
		lent: map[int]pooled{}, ctx: context.Background()}
	if stage == 2 {
		z.params = be.Alloc(l.Size)
	}
	return z, nil
}

// shard partitions the state among comm's ranks and allocates this rank's shards. A state
// already sharded for another group is not carried over: the caller loads or initializes it.
func (z *zeroState) shard(mod *model.Model, comm collective.Communicator) error {
	world, rank := 1, 0
	if comm != nil {
		world, rank = comm.Size(), comm.Rank()
	} else {
		comm = collective.NewInMemGroup(1)[0]
	}
	plan, err := newZeroPlan(z.layout, z.stage, world, rank)
	if err != nil {
		return err
	}
	z.freeShards()
	z.holds = false
	z.plan, z.comm, z.mod = plan, comm, mod
	z.m, z.v = z.be.Alloc(plan.size), z.be.Alloc(plan.size)
	if z.stage >= 2 {
		z.grads = z.be.Alloc(plan.size)
	}
	if z.stage == 3 {
		z.params = z.be.Alloc(plan.size)
	}
	return nil
}

func (z *zeroState) freeShards() {
	for _, b := range []*kernels.Buffer{&z.m, &z.v, &z.grads} {
		if *b != nil {
			z.be.Free(*b)
			*b = nil
		}
	}
	if z.stage == 3 && z.params != nil {
		z.be.Free(z.params)
		z.params = nil
	}
}

// Close frees everything.
func (z *zeroState) Close() {
	z.freeShards()
	if z.stage == 2 && z.params != nil {
		z.be.Free(z.params)
	}
	for _, b := range z.pool {
		z.be.Free(b)
	}
	z.pool = nil
}

func (z *zeroState) Steps() int     { return z.steps }
func (z *zeroState) SetSteps(n int) { z.steps = n }

// whole returns the buffer of whole parameters (stages 1 and 2).
func (z *zeroState) whole() kernels.Buffer {
	if z.stage == 1 {
		return z.mod.Params()
	}
	return z.params
}

// host views a host buffer as float32s.
func host(b kernels.Buffer) []float32 { return cpu.Data[float32](b) }

// zeroMemory is what one rank holds, in bytes.
type zeroMemory struct {
	Params, Grads, Optimizer int64
	Comm                     int64 // unit-sized buffers: gradients before their reduce-scatter, gathered parameters
}

// held returns the bytes of this rank's buffers by kind: the shards, the whole buffers a
// stage keeps, and the communication buffers the passes have needed at most at once.
func (z *zeroState) held() zeroMemory {
	size := func(b kernels.Buffer) int64 {
		if b == nil {
			return 0
		}
		return 4 * int64(b.Len())
	}
	mem := zeroMemory{Params: size(z.params), Grads: size(z.grads), Optimizer: size(z.m) + size(z.v), Comm: z.poolBytes}
	if z.stage == 1 {
		mem.Params, mem.Grads = size(z.mod.Params()), size(z.mod.Grads())
	}
	return mem
}

// --- The passes (model.Residency, stages 2 and 3) ---

// begin starts passes whose collectives ctx bounds.
func (z *zeroState) begin(ctx context.Context) { z.ctx, z.err = ctx, nil }

// zeroGrads zeroes the gradient shard before a step's first micro-batch.
func (z *zeroState) zeroGrads() {
	if z.grads != nil {
		z.be.Zero(z.grads)
	}
}

// buffer returns a communication buffer for n elements: a view of a pool buffer of the
// largest unit's size, so that any unit fits any buffer and the pool holds only as many
// buffers as the passes use at once: two gradients (one reduce-scattering while the next
// accumulates) and, in stage 3, two gathered units (the one in use and the next, prefetched).
func (z *zeroState) buffer(n int) pooled {
	var b kernels.Buffer
	if k := len(z.pool); k > 0 {
		b, z.pool = z.pool[k-1], z.pool[:k-1]
	} else {
		b = z.be.Alloc(z.plan.bucket)
		z.poolBytes += 4 * int64(z.plan.bucket)
	}
	return pooled{base: b, view: z.be.Slice(b, 0, n)}
}

func (z *zeroState) recycle(p pooled) { z.pool = append(z.pool, p.base) }

func (z *zeroState) fail(err error) {
	if err != nil && z.err == nil {
		z.err = err
	}
}

// Params implements model.Residency.
func (z *zeroState) Params(u, next int) (kernels.Buffer, kernels.Buffer) {
	if z.stage == 2 {
		un := z.plan.units[u]
		b := z.be.Slice(z.params, un.off, un.n)
		return b, b
	}
	g := z.gathers[u]
	if g == nil {
		g = z.gather(u)
	}
	if next >= 0 && !z.noPrefetch && z.gathers[next] == nil {
		z.gather(next) // prefetch: it gathers while this unit computes
	}
	start := time.Now()
	if err := g.h.Wait(z.ctx); err != nil {
		z.fail(fmt.Errorf("gathering the parameters of unit %d: %w", u, err))
	}
	z.gatherWait += time.Since(start)
	return g.buf.view, g.buf.view
}

// gather starts the all-gather of unit u's parameters from the ranks' shards.
func (z *zeroState) gather(u int) *inFlight {
	un := z.plan.units[u]
	buf := z.buffer(un.n)
	dst := host(buf.view)
	copy(dst[un.ownOff-un.off:un.ownOff-un.off+un.ownN], host(z.params)[un.shardOff:un.shardOff+un.ownN])
	g := &inFlight{unit: u, buf: buf, h: z.comm.AllGatherAsync(z.ctx, dst)}
	z.gathers[u] = g
	return g
}

// ReleaseParams implements model.Residency: a gathered unit is freed.
func (z *zeroState) ReleaseParams(u int) {
	if z.stage != 3 {
		return
	}
	if g := z.gathers[u]; g != nil {
		g.h.Wait(z.ctx)
		z.recycle(g.buf)
		delete(z.gathers, u)
	}
}

// Grads implements model.Residency: a zeroed buffer for one unit's gradient.
func (z *zeroState) Grads(u int) kernels.Buffer {
	b := z.buffer(z.plan.units[u].n)
	z.be.Zero(b.view)
	z.lent[u] = b
	return b.view
}

// ReleaseGrads implements model.Residency: the unit's gradient starts its reduce-scatter
// once the previous unit's has finished (it had this unit's backward to do so), which is
// added into the gradient shard.
func (z *zeroState) ReleaseGrads(u int) {
	b := z.lent[u]
	delete(z.lent, u)
	z.reap()
	z.scatters = append(z.scatters, &inFlight{unit: u, buf: b, h: z.comm.ReduceScatterAsync(z.ctx, host(b.view), collective.Sum)})
}

// reap waits for the reduce-scatters in flight, adds this rank's chunks of their sums into
// the gradient shard and recycles their buffers.
func (z *zeroState) reap() {
	for _, s := range z.scatters {
		if err := s.h.Wait(z.ctx); err != nil {
			z.fail(fmt.Errorf("reduce-scattering the gradient of unit %d: %w", s.unit, err))
		} else {
			un := z.plan.units[s.unit]
			src := host(s.buf.view)[un.ownOff-un.off : un.ownOff-un.off+un.ownN]
			dst := host(z.grads)[un.shardOff : un.shardOff+un.ownN]
			for i, g := range src {
				dst[i] += g
			}
		}
		z.recycle(s.buf)
	}
	z.scatters = z.scatters[:0]
}

// endPass waits for the gradients of the pass and returns the first collective failure.
func (z *zeroState) endPass() error {
	z.reap()
	for u, g := range z.gathers { // a pass that failed midway may leave gathers behind
		g.h.Wait(z.ctx)
		z.recycle(g.buf)
		delete(z.gathers, u)
	}
	return z.err
}

// --- The optimizer ---

// Step clips by the global gradient norm (the squares of every rank's chunks summed across
// ranks), updates this rank's chunks and, in stages 1 and 2, all-gathers the parameters. The
// gradients of this rank's chunks must hold the sums over ranks.
func (z *zeroState) Step(ctx context.Context, lr, gradScale float64) (float64, error) {
	grads, gOff := z.grads, func(g zeroGroup) int { return g.shardOff }
	if z.stage == 1 {
		grads, gOff = z.mod.Grads(), func(g zeroGroup) int { return g.off }
	}
	var ss float64
	for _, g := range z.plan.groups {
		ss += z.be.SumSquares(z.be.Slice(grads, gOff(g), g.n))
	}
	// float64 across ranks as two float32 halves: the high parts carry the value, the low
	// parts what float32 rounded off.
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
	for _, g := range z.plan.groups {
		wd := 0.0
		if g.decay {
			wd = z.cfg.WeightDecay
		}
		hp := kernels.AdamW{LR: lr, Beta1: z.cfg.Beta1, Beta2: z.cfg.Beta2, Eps: z.cfg.Eps, WeightDecay: wd, Step: z.steps, GradScale: scale}
		var p kernels.Buffer
		if z.stage == 3 {
			p = z.be.Slice(z.params, g.shardOff, g.n)
		} else {
			p = z.be.Slice(z.whole(), g.off, g.n)
		}
		z.be.AdamWUpdate(p, z.be.Slice(grads, gOff(g), g.n), z.be.Slice(z.m, g.shardOff, g.n), z.be.Slice(z.v, g.shardOff, g.n), hp)
	}
	if z.stage == 3 {
		return norm, nil
	}
	return norm, z.gatherWhole(ctx, host(z.whole()))
}

// gatherWhole fills dst (whole parameters) from every rank's chunks: in stages 1 and 2 dst
// is the parameter buffer, whose own chunks are current; in stage 3 a temporary.
func (z *zeroState) gatherWhole(ctx context.Context, dst []float32) error {
	if z.stage == 3 {
		p := host(z.params)
		for _, u := range z.plan.units {
			copy(dst[u.ownOff:u.ownOff+u.ownN], p[u.shardOff:u.shardOff+u.ownN])
		}
	}
	hs := make([]collective.Handle, 0, len(z.plan.units))
	for _, u := range z.plan.units {
		hs = append(hs, z.comm.AllGatherAsync(ctx, dst[u.off:u.off+u.n]))
	}
	for _, h := range hs {
		if err := h.Wait(ctx); err != nil {
			return fmt.Errorf("gathering parameters: %w", err)
		}
	}
	if z.stage == 1 {
		z.mod.ParamsUpdated()
	}
	return nil
}

// wholeParams returns the whole parameters: a view in stages 1 and 2, a gathered copy in
// stage 3 (every rank must call it).
func (z *zeroState) wholeParams(ctx context.Context) ([]float32, error) {
	if z.stage < 3 {
		return host(z.whole()), nil
	}
	dst := make([]float32, z.plan.elems)
	return dst, z.gatherWhole(ctx, dst)
}

// checksum returns the CRC-32C of the whole parameters, as checkParams compares it across
// ranks: in stage 3 over the parameters the ranks gather.
func (z *zeroState) checksum(ctx context.Context) (uint32, error) {
	p, err := z.wholeParams(ctx)
	if err != nil || len(p) == 0 {
		return 0, err
	}
	return crc32.Checksum(unsafe.Slice((*byte)(unsafe.Pointer(&p[0])), 4*len(p)), crc32.MakeTable(crc32.Castagnoli)), nil
}

// --- Checkpoints and initialization ---

// spans returns this rank's chunks with their parameters and moments, for a checkpoint.
func (z *zeroState) spans() []checkpoint.Span {
	m, v := host(z.m), host(z.v)
	var out []checkpoint.Span
	for _, u := range z.plan.units {
		sp := checkpoint.Span{Offset: int64(u.ownOff), M: m[u.shardOff : u.shardOff+u.ownN], V: v[u.shardOff : u.shardOff+u.ownN]}
		if z.stage == 3 {
			sp.Params = host(z.params)[u.shardOff : u.shardOff+u.ownN]
		} else {
			sp.Params = host(z.whole())[u.ownOff : u.ownOff+u.ownN]
		}
		out = append(out, sp)
	}
	return out
}

// adopt takes a whole state (a loaded checkpoint, or fresh weights with zero moments): the
// whole parameters in stages 1 and 2, this rank's chunks of the rest.
func (z *zeroState) adopt(st checkpoint.State) {
	if z.stage < 3 {
		copy(host(z.whole()), st.Params)
		if z.stage == 1 {
			z.mod.ParamsUpdated()
		}
	}
	m, v := host(z.m), host(z.v)
	for _, u := range z.plan.units {
		copy(m[u.shardOff:u.shardOff+u.ownN], st.M[u.ownOff:u.ownOff+u.ownN])
		copy(v[u.shardOff:u.shardOff+u.ownN], st.V[u.ownOff:u.ownOff+u.ownN])
		if z.stage == 3 {
			copy(host(z.params)[u.shardOff:u.shardOff+u.ownN], st.Params[u.ownOff:u.ownOff+u.ownN])
		}
	}
	z.holds = true
}

// --- Rounds of a cluster ---

// zeroKept is what a rank keeps of its shard across a change of partition: its chunks laid
// into whole buffers (zeros elsewhere) when it is the holder the round names for its shard.
type zeroKept struct {
	state      checkpoint.State
	held       bool
	world      int // the partition the round assembles from
	shard      int // the shard this rank held in it
	step       int
	holderRank int // this rank in the new round
}

// keep sets this rank's shard aside for a round that assembles the state of rs.Start from the
// shards of a partition over rs.ShardWorld ranks; newRank is this rank in the new round.
func (z *zeroState) keep(rs RoundStart, newRank int) zeroKept {
	k := zeroKept{world: rs.ShardWorld, shard: -1, step: rs.Start, holderRank: newRank}
	if z.plan == nil || !z.holds || z.plan.world != rs.ShardWorld || z.steps != rs.Start {
		return k
	}
	if r := z.plan.rank; r < len(rs.Holders) && rs.Holders[r] == newRank {
		n := z.plan.elems
		k.state = checkpoint.State{Params: make([]float32, n), M: make([]float32, n), V: make([]float32, n)}
		for _, sp := range z.spans() {
			off := int(sp.Offset)
			copy(k.state.Params[off:], sp.Params)
			copy(k.state.M[off:], sp.M)
			copy(k.state.V[off:], sp.V)
		}
		k.held, k.shard = true, r
	}
	return k
}

// assemble puts the state together from the shards the ranks kept: every rank adds its
// chunks (zeros elsewhere) across the new group, which makes the whole state on every rank
// since the shards do not overlap, and keeps its part of the new partition. It first checks
// that every shard has exactly one holder.
func (z *zeroState) assemble(ctx context.Context, k zeroKept) error {
	count := make([]float32, k.world)
	if k.held {
		count[k.shard] = 1
	}
	if err := z.comm.AllReduce(ctx, count, collective.Sum); err != nil {
		return fmt.Errorf("worker: assembling the sharded state: %w", err)
	}
	for i, c := range count {
		if c != 1 {
			return fmt.Errorf("worker: assembling the state of step %d: shard %d of %d is held by %v ranks of the round, want 1", k.step, i, k.world, c)
		}
	}
	st := k.state
	if !k.held {
		n := z.plan.elems
		st = checkpoint.State{Params: make([]float32, n), M: make([]float32, n), V: make([]float32, n)}
	}
	for i, buf := range [][]float32{st.Params, st.M, st.V} {
		if err := z.comm.AllReduce(ctx, buf, collective.Sum); err != nil {
			return fmt.Errorf("worker: assembling %s: %w", checkpoint.Buffers[i], err)
		}
	}
	z.adopt(st)
	return nil
}

// shardCRC returns a CRC-32C of this rank's chunks of the parameters.
func (z *zeroState) shardCRC() uint32 {
	tab := crc32.MakeTable(crc32.Castagnoli)
	var sum uint32
	for _, sp := range z.spans() {
		if len(sp.Params) > 0 {
			sum = crc32.Update(sum, tab, unsafe.Slice((*byte)(unsafe.Pointer(&sp.Params[0])), 4*len(sp.Params)))
		}
	}
	return sum
}

// init sets fresh weights from seed and zero moments (each rank draws the whole
// initialization and keeps what it owns).
func (z *zeroState) init(c model.Config, seed uint64) {
	n := z.plan.elems
	st := checkpoint.State{Params: make([]float32, n), M: make([]float32, n), V: make([]float32, n)}
	model.InitParams(c, z.layout, seed, st.Params)
	z.adopt(st)
	z.steps = 0
}
