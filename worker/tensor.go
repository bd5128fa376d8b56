package worker

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu"
	"github.com/herd-llm/herd/model"
)

// Mesh places a rank in a two-dimensional mesh of dp x tp ranks (data x tensor). The world
// (TrainConfig.Comm) numbers the ranks so that the tp ranks of one tensor-parallel group
// are consecutive (rank = dp_index*tp + tp_index: on a real cluster, the GPUs of one node);
// TP is the rank's tensor-parallel group, DP the group of the ranks that hold the same share
// of the model (the same tp_index), across which gradients are summed.
type Mesh struct {
	// Size is the tensor-parallel size and Rank this rank's index in its group (the model's
	// share depends on it); they stay the same for the whole run.
	Size, Rank int
	// TP and DP are the groups' communicators: set from the start by herd train, and for
	// each round in a cluster (RoundStart.Mesh).
	TP, DP collective.Communicator
	// Sequence turns on sequence parallelism inside each tensor-parallel group.
	Sequence bool
}

// tensorGroup runs a model's tensor-parallel collectives (model.TensorGroup) over a
// communicator: in place on the float32 CPU backend, whose buffers are host memory, and
// through a host copy on any other.
type tensorGroup struct {
	ctx        context.Context
	rank, size int
	comm       collective.Communicator // the group's ring; in a cluster, the round's
	be         kernels.Backend
	host       bool
	// waited is the time the passes spent waiting for collectives: the whole of each blocking
	// call, and what was left of each asynchronous gather when its result was needed.
	waited time.Duration
}

func newTensorGroup(rank, size int, comm collective.Communicator, be kernels.Backend) *tensorGroup {
	_, host := be.(*cpu.Backend[float32])
	return &tensorGroup{ctx: context.Background(), rank: rank, size: size, comm: comm, be: be, host: host}
}

func (g *tensorGroup) Rank() int { return g.rank }
func (g *tensorGroup) Size() int { return g.size }

// use makes comm the group's ring for the coming steps.
func (g *tensorGroup) use(comm collective.Communicator) error {
	if comm == nil || comm.Rank() != g.rank || comm.Size() != g.size {
		return fmt.Errorf("%w: the tensor-parallel group of the round does not hold this rank's share (rank %d of %d)", ErrConfig, g.rank, g.size)
	}
	g.comm = comm
	return nil
}

// staged runs op on x's values in host memory.
func (g *tensorGroup) staged(x kernels.Buffer, op func([]float32) collective.Handle) func() error {
	if g.host {
		h := op(cpu.Data[float32](x))
		return func() error {
			start := time.Now()
			defer func() { g.waited += time.Since(start) }()
			return h.Wait(g.ctx)
		}
	}
	buf := make([]float32, x.Len())
	g.be.Read32(buf, x)
	h := op(buf)
	return func() error {
		start := time.Now()
		defer func() { g.waited += time.Since(start) }()
		if err := h.Wait(g.ctx); err != nil {
			return err
		}
		g.be.Write32(x, buf)
		return nil
	}
}

func (g *tensorGroup) AllReduce(x kernels.Buffer) error { return g.AllReduceAsync(x)() }

func (g *tensorGroup) ReduceScatter(x kernels.Buffer) error {
	return g.staged(x, func(b []float32) collective.Handle { return g.comm.ReduceScatterAsync(g.ctx, b, collective.Sum) })()
}

func (g *tensorGroup) AllGather(x kernels.Buffer) error { return g.AllGatherAsync(x)() }

func (g *tensorGroup) AllReduceAsync(x kernels.Buffer) func() error {
	return g.staged(x, func(b []float32) collective.Handle { return g.comm.AllReduceAsync(g.ctx, b, collective.Sum) })
}

func (g *tensorGroup) AllGatherAsync(x kernels.Buffer) func() error {
	return g.staged(x, func(b []float32) collective.Handle { return g.comm.AllGatherAsync(g.ctx, b) })
}

// eachWholeUnit assembles the whole network's values of a state buffer (parameters or a
// moment) from the tp ranks' shares, one unit at a time (the embedding, each block, the final
// norm with the output head), and calls keep with each whole unit's offset in the whole
// layout and its values, valid during the call. Every rank sends its share of the unit,
// padded to the largest rank's, and places each rank's share by that rank's layout; no more
// than one unit is ever whole on a rank.
func eachWholeUnit(ctx context.Context, comm collective.Communicator, c model.Config, local []float32, keep func(off int, unit []float32)) error {
	tp := comm.Size()
	shares := make([][]model.Unit, tp)
	var layouts []model.Layout
	for k := range tp {
		l, err := model.NewShardLayout(c, k, tp)
		if err != nil {
			return err
		}
		layouts, shares[k] = append(layouts, l), l.Units()
	}
	wholeUnits := layouts[0].Whole().Units()
	var buf, unit []float32
	for u, wu := range wholeUnits {
		most := 0
		for k := range tp {
			most = max(most, shares[k][u].Size)
		}
		buf = slices.Grow(buf[:0], tp*most)[:tp*most]
		mine := shares[comm.Rank()][u]
		copy(buf[comm.Rank()*most:], local[mine.Offset:mine.Offset+mine.Size])
		if err := comm.AllGather(ctx, buf); err != nil {
			return fmt.Errorf("assembling the tensor-parallel shares: %w", err)
		}
		unit = slices.Grow(unit[:0], wu.Size)[:wu.Size]
		for k, l := range layouts {
			l.PutUnit(u, unit, buf[k*most:k*most+shares[k][u].Size])
		}
		keep(wu.Offset, unit)
	}
	return nil
}

// wholeOf returns the whole network's values of a state buffer (see eachWholeUnit).
func wholeOf(ctx context.Context, comm collective.Communicator, c model.Config, local []float32) ([]float32, error) {
	whole := make([]float32, model.NumParams(c))
	err := eachWholeUnit(ctx, comm, c, local, func(off int, unit []float32) { copy(whole[off:], unit) })
	return whole, err
}

// tensorSpans returns what a tensor-parallel rank writes of a checkpoint: its range
// Partition(elements, world, rank) of the whole network's parameters and moments, assembled
// unit by unit within its tensor-parallel group. Every rank writes, and the ranges are those
// any world size reads.
func tensorSpans(ctx context.Context, cfg TrainConfig, st checkpoint.State) ([]checkpoint.Span, error) {
	lo, n := checkpoint.Partition(int64(model.NumParams(cfg.Model)), cfg.world(), cfg.rank())
	var out [3][]float32
	for i, buf := range [][]float32{st.Params, st.M, st.V} {
		out[i] = make([]float32, n)
		err := eachWholeUnit(ctx, cfg.Tensor.TP, cfg.Model, buf, func(off int, unit []float32) {
			// The part of the unit inside this rank's range.
			a, b := max(int64(off), lo), min(int64(off+len(unit)), lo+n)
			if a < b {
				copy(out[i][a-lo:b-lo], unit[a-int64(off):b-int64(off)])
			}
		})
		if err != nil {
			return nil, err
		}
	}
	return []checkpoint.Span{{Offset: lo, Params: out[0], M: out[1], V: out[2]}}, nil
}
