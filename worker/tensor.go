package worker

import (
	"context"
	"fmt"

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
	TP, DP collective.Communicator
	// Sequence turns on sequence parallelism inside each tensor-parallel group.
	Sequence bool
}

// tensorGroup runs a model's tensor-parallel collectives (model.TensorGroup) over a
// communicator: in place on the float32 CPU backend, whose buffers are host memory, and
// through a host copy on any other.
type tensorGroup struct {
	ctx  context.Context
	comm collective.Communicator
	be   kernels.Backend
	host bool
}

func newTensorGroup(comm collective.Communicator, be kernels.Backend) *tensorGroup {
	_, host := be.(*cpu.Backend[float32])
	return &tensorGroup{ctx: context.Background(), comm: comm, be: be, host: host}
}

func (g *tensorGroup) Rank() int { return g.comm.Rank() }
func (g *tensorGroup) Size() int { return g.comm.Size() }

// staged runs op on x's values in host memory.
func (g *tensorGroup) staged(x kernels.Buffer, op func([]float32) collective.Handle) func() error {
	if g.host {
		h := op(cpu.Data[float32](x))
		return func() error { return h.Wait(g.ctx) }
	}
	buf := make([]float32, x.Len())
	g.be.Read32(buf, x)
	h := op(buf)
	return func() error {
		if err := h.Wait(g.ctx); err != nil {
			return err
		}
		g.be.Write32(x, buf)
		return nil
	}
}

func (g *tensorGroup) AllReduce(x kernels.Buffer) error {
	return g.staged(x, func(b []float32) collective.Handle { return g.comm.AllReduceAsync(g.ctx, b, collective.Sum) })()
}

func (g *tensorGroup) ReduceScatter(x kernels.Buffer) error {
	return g.staged(x, func(b []float32) collective.Handle { return g.comm.ReduceScatterAsync(g.ctx, b, collective.Sum) })()
}

func (g *tensorGroup) AllGather(x kernels.Buffer) error { return g.AllGatherAsync(x)() }

func (g *tensorGroup) AllGatherAsync(x kernels.Buffer) func() error {
	return g.staged(x, func(b []float32) collective.Handle { return g.comm.AllGatherAsync(g.ctx, b) })
}

// wholeOf assembles the whole network's values of a state buffer (parameters or a moment)
// from the tp ranks' shares: every rank sends its share, padded to the largest one, and
// places each rank's share by that rank's layout.
func wholeOf(ctx context.Context, comm collective.Communicator, c model.Config, local []float32) ([]float32, error) {
	tp := comm.Size()
	layouts := make([]model.Layout, tp)
	most := 0
	for k := range layouts {
		l, err := model.NewShardLayout(c, k, tp)
		if err != nil {
			return nil, err
		}
		layouts[k], most = l, max(most, l.Size)
	}
	buf := make([]float32, tp*most)
	copy(buf[comm.Rank()*most:], local)
	if err := comm.AllGather(ctx, buf); err != nil {
		return nil, fmt.Errorf("assembling the tensor-parallel shares: %w", err)
	}
	whole := make([]float32, layouts[0].Whole().Size)
	for k, l := range layouts {
		l.Put(whole, buf[k*most:k*most+l.Size])
	}
	return whole, nil
}

// tensorSpans returns what a tensor-parallel rank writes of a checkpoint: its range
// Partition(elements, world, rank) of the whole network's parameters and moments, assembled
// one buffer at a time within its tensor-parallel group. Every rank writes, and the ranges
// are those any world size reads.
func tensorSpans(ctx context.Context, cfg TrainConfig, st checkpoint.State) ([]checkpoint.Span, error) {
	var out [3][]float32
	var off, n int64
	for i, buf := range [][]float32{st.Params, st.M, st.V} {
		whole, err := wholeOf(ctx, cfg.Tensor.TP, cfg.Model, buf)
		if err != nil {
			return nil, err
		}
		off, n = checkpoint.Partition(int64(len(whole)), cfg.world(), cfg.rank())
		out[i] = append([]float32(nil), whole[off:off+n]...)
	}
	return []checkpoint.Span{{Offset: off, Params: out[0], M: out[1], V: out[2]}}, nil
}
