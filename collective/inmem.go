package collective

import (
	"context"
	"fmt"
	"sync"
)

// InMem is one rank of a group whose members are goroutines of one process. Calls meet by
// sequence number: the k-th call of every rank forms one meeting, which runs once the last
// rank has arrived, in the calling order of the meetings. Reductions add the ranks' values
// in rank order and copy the one result to every rank, so results are bitwise identical.
// It follows the same failure rules as the TCP ring, so tests of other packages can use it
// to exercise their error paths: Abort, Close and deadlines fail the whole group.
type InMem struct {
	g    *inmemGroup
	rank int
}

var (
	_ Communicator = (*InMem)(nil)
	_ Aborter      = (*InMem)(nil)
)

// NewInMemGroup returns the n members of a new in-memory group; element i has rank i.
func NewInMemGroup(n int) []Communicator {
	if n < 1 {
		panic(fmt.Sprintf("collective: NewInMemGroup(%d), want n >= 1", n))
	}
	g := &inmemGroup{n: n, seq: make([]uint64, n), closed: make([]bool, n), meetings: map[uint64]*meeting{}}
	comms := make([]Communicator, n)
	for i := range comms {
		comms[i] = &InMem{g: g, rank: i}
	}
	return comms
}

type inmemGroup struct {
	n        int
	mu       sync.Mutex
	seq      []uint64            // calls issued per rank
	meetings map[uint64]*meeting // meetings some rank has not reached yet
	ready    []*meeting          // complete meetings, in order, waiting for run
	running  bool                // a run goroutine is draining ready
	cause    *PeerError          // the first failure
	closed   []bool              // ranks that called Close
}

type meeting struct {
	seq     uint64
	calls   []*inmemCall // indexed by rank
	arrived int
}

type inmemCall struct {
	rank int
	coll coll
	op   Op
	root int
	buf  []float32
	h    *handle
	stop func() bool // ends the deadline watch
}

func inmemAddr(rank int) string { return fmt.Sprintf("inmem:%d", rank) }

// Rank implements Communicator.
func (m *InMem) Rank() int { return m.rank }

// Size implements Communicator.
func (m *InMem) Size() int { return m.g.n }

// AllReduce implements Communicator.
func (m *InMem) AllReduce(ctx context.Context, buf []float32, op Op) error {
	return m.AllReduceAsync(ctx, buf, op).Wait(ctx)
}

// ReduceScatter implements Communicator.
func (m *InMem) ReduceScatter(ctx context.Context, buf []float32, op Op) error {
	return m.ReduceScatterAsync(ctx, buf, op).Wait(ctx)
}

// AllGather implements Communicator.
func (m *InMem) AllGather(ctx context.Context, buf []float32) error {
	return m.AllGatherAsync(ctx, buf).Wait(ctx)
}

// Broadcast implements Communicator.
func (m *InMem) Broadcast(ctx context.Context, buf []float32, root int) error {
	return m.g.submit(ctx, &inmemCall{rank: m.rank, coll: collBroadcast, buf: buf, root: root}).Wait(ctx)
}

// Barrier implements Communicator.
func (m *InMem) Barrier(ctx context.Context) error {
	return m.g.submit(ctx, &inmemCall{rank: m.rank, coll: collBarrier}).Wait(ctx)
}

// AllReduceAsync implements Communicator.
func (m *InMem) AllReduceAsync(ctx context.Context, buf []float32, op Op) Handle {
	return m.g.submit(ctx, &inmemCall{rank: m.rank, coll: collAllReduce, buf: buf, op: op})
}

// ReduceScatterAsync implements Communicator.
func (m *InMem) ReduceScatterAsync(ctx context.Context, buf []float32, op Op) Handle {
	return m.g.submit(ctx, &inmemCall{rank: m.rank, coll: collReduceScatter, buf: buf, op: op})
}

// AllGatherAsync implements Communicator.
func (m *InMem) AllGatherAsync(ctx context.Context, buf []float32) Handle {
	return m.g.submit(ctx, &inmemCall{rank: m.rank, coll: collAllGather, buf: buf})
}

// Close fails the group: ErrClosed for this rank's calls, ErrPeerClosed for the others'.
func (m *InMem) Close() error {
	m.g.mu.Lock()
	m.g.closed[m.rank] = true
	m.g.failLocked(&PeerError{Rank: m.rank, Addr: inmemAddr(m.rank), Reporter: m.rank, Err: ErrPeerClosed})
	m.g.mu.Unlock()
	return nil
}

// Abort fails the group with an error wrapping ErrAborted and err, naming this rank.
func (m *InMem) Abort(err error) {
	cause := fmt.Errorf("%w", ErrAborted)
	if err != nil {
		cause = fmt.Errorf("%w: %w", ErrAborted, err)
	}
	m.g.fail(&PeerError{Rank: m.rank, Addr: inmemAddr(m.rank), Reporter: m.rank, Err: cause})
}

func (g *inmemGroup) submit(ctx context.Context, c *inmemCall) Handle {
	if err := checkArgs(c.coll, c.op, c.root, g.n); err != nil {
		return doneHandle(err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cause != nil || g.closed[c.rank] {
		return doneHandle(g.errFor(c.rank))
	}
	g.seq[c.rank]++
	seq := g.seq[c.rank]
	m := g.meetings[seq]
	if m == nil {
		m = &meeting{seq: seq, calls: make([]*inmemCall, g.n)}
		g.meetings[seq] = m
	}
	m.calls[c.rank], m.arrived = c, m.arrived+1
	giveUp := func(ctx context.Context) { g.fail(g.deadlineErr(c.rank, seq, ctx)) }
	c.h = newHandle(giveUp)
	if m.arrived < g.n {
		c.stop = context.AfterFunc(ctx, func() { giveUp(ctx) })
		return c.h
	}
	delete(g.meetings, seq)
	g.ready = append(g.ready, m)
	if !g.running {
		g.running = true
		go g.run()
	}
	return c.h
}

// deadlineErr blames the lowest rank that has not reached meeting seq.
func (g *inmemGroup) deadlineErr(rank int, seq uint64, ctx context.Context) *PeerError {
	g.mu.Lock()
	defer g.mu.Unlock()
	missing := rank
	if m := g.meetings[seq]; m != nil {
		for r, c := range m.calls {
			if c == nil {
				missing = r
				break
			}
		}
	}
	return &PeerError{Rank: missing, Addr: inmemAddr(missing), Reporter: rank,
		Err: fmt.Errorf("%w: call #%d waiting for rank %d: %w", ErrDeadline, seq, missing, context.Cause(ctx))}
}

// run executes complete meetings in order until none is left.
func (g *inmemGroup) run() {
	for {
		g.mu.Lock()
		if len(g.ready) == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		m := g.ready[0]
		g.ready[0] = nil
		g.ready = g.ready[1:]
		failed := g.cause != nil
		g.mu.Unlock()
		if !failed {
			if pe := execute(m); pe != nil {
				g.fail(pe)
				failed = true
			}
		}
		g.mu.Lock()
		for _, c := range m.calls {
			if c.stop != nil {
				c.stop()
			}
			var err error
			if failed {
				err = g.errFor(c.rank)
			}
			c.h.finish(err)
		}
		g.mu.Unlock()
	}
}

func (g *inmemGroup) fail(pe *PeerError) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.failLocked(pe)
}

// failLocked records the first failure and fails every call still waiting for a meeting.
func (g *inmemGroup) failLocked(pe *PeerError) {
	if g.cause != nil {
		return
	}
	g.cause = pe
	for seq, m := range g.meetings {
		for _, c := range m.calls {
			if c != nil {
				c.stop()
				c.h.finish(g.errFor(c.rank))
			}
		}
		delete(g.meetings, seq)
	}
}

func (g *inmemGroup) errFor(rank int) error {
	if g.closed[rank] {
		return &PeerError{Rank: rank, Addr: inmemAddr(rank), Reporter: rank, Err: ErrClosed}
	}
	return g.cause
}

// execute runs one complete meeting.
func execute(m *meeting) *PeerError {
	if pe := checkMeeting(m); pe != nil {
		return pe
	}
	first, n := m.calls[0], len(m.calls)
	bufs := make([][]float32, n)
	for r, c := range m.calls {
		bufs[r] = c.buf
	}
	switch first.coll {
	case collAllReduce:
		reduceRankOrder(bufs, first.op)
		for _, b := range bufs[1:] {
			copy(b, bufs[0])
		}
	case collReduceScatter:
		reduceRankOrder(bufs, first.op)
		for r, b := range bufs[1:] {
			lo, hi := Partition(len(b), n, r+1)
			copy(b[lo:hi], bufs[0][lo:hi])
		}
	case collAllGather:
		for r, src := range bufs {
			lo, hi := Partition(len(src), n, r)
			for q, dst := range bufs {
				if q != r {
					copy(dst[lo:hi], src[lo:hi])
				}
			}
		}
	case collBroadcast:
		for _, b := range bufs {
			copy(b, bufs[first.root])
		}
	}
	return nil
}

// reduceRankOrder leaves in bufs[0] the reduction of all bufs, added in rank order.
func reduceRankOrder(bufs [][]float32, op Op) {
	for _, b := range bufs[1:] {
		addTo(bufs[0], b)
	}
	if op == Avg {
		divide(bufs[0], len(bufs))
	}
}

// checkMeeting fails a meeting whose ranks issued different calls.
func checkMeeting(m *meeting) *PeerError {
	first := m.calls[0]
	for r, c := range m.calls[1:] {
		same := c.coll == first.coll && len(c.buf) == len(first.buf) && c.root == first.root
		if c.coll == collAllReduce || c.coll == collReduceScatter {
			same = same && c.op == first.op
		}
		if !same {
			return &PeerError{Rank: r + 1, Addr: inmemAddr(r + 1), Reporter: 0, Err: fmt.Errorf(
				"%w: call #%d: rank 0 issued %v of %d elements (op %v, root %d), rank %d issued %v of %d elements (op %v, root %d)",
				ErrMismatch, m.seq, first.coll, len(first.buf), first.op, first.root,
				r+1, c.coll, len(c.buf), c.op, c.root)}
		}
	}
	return nil
}
