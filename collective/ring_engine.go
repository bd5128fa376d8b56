package collective

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// The ring runs collectives one after another in the order they were issued. Two
// goroutines share each one: sendLoop writes its frames to the right neighbour and recvLoop
// reads, reduces or copies its frames from the left neighbour. recvLoop counts the segments
// it has finished; sendLoop waits on that count wherever the plan says a segment must arrive
// before it can be sent on. A collective is done when both have let go of it.

// errRingFailed tells a loop to stop; the caller's error is the ring's cause.
var errRingFailed = errors.New("collective: ring failed")

type ringOp struct {
	coll coll
	op   Op
	root int
	buf  []float32
	seq  uint64
	plan ringPlan

	recvDone atomic.Int64  // segments received and processed
	progress chan struct{} // poked after each one
	pending  atomic.Int32  // loops still holding the op
	failed   atomic.Bool
	h        *handle
	stop     func() // ends the deadline watch
}

// AllReduce implements Communicator.
func (r *Ring) AllReduce(ctx context.Context, buf []float32, op Op) error {
	return r.AllReduceAsync(ctx, buf, op).Wait(ctx)
}

// ReduceScatter implements Communicator.
func (r *Ring) ReduceScatter(ctx context.Context, buf []float32, op Op) error {
	return r.ReduceScatterAsync(ctx, buf, op).Wait(ctx)
}

// AllGather implements Communicator.
func (r *Ring) AllGather(ctx context.Context, buf []float32) error {
	return r.AllGatherAsync(ctx, buf).Wait(ctx)
}

// Broadcast implements Communicator.
func (r *Ring) Broadcast(ctx context.Context, buf []float32, root int) error {
	return r.submit(ctx, collBroadcast, buf, 0, root).Wait(ctx)
}

// Barrier implements Communicator.
func (r *Ring) Barrier(ctx context.Context) error {
	return r.submit(ctx, collBarrier, nil, Sum, 0).Wait(ctx)
}

// AllReduceAsync implements Communicator.
func (r *Ring) AllReduceAsync(ctx context.Context, buf []float32, op Op) Handle {
	return r.submit(ctx, collAllReduce, buf, op, 0)
}

// ReduceScatterAsync implements Communicator.
func (r *Ring) ReduceScatterAsync(ctx context.Context, buf []float32, op Op) Handle {
	return r.submit(ctx, collReduceScatter, buf, op, 0)
}

// AllGatherAsync implements Communicator.
func (r *Ring) AllGatherAsync(ctx context.Context, buf []float32) Handle {
	return r.submit(ctx, collAllGather, buf, 0, 0)
}

// submit queues one collective for both loops; ctx (or cfg.OpTimeout) bounds it from now.
func (r *Ring) submit(ctx context.Context, c coll, buf []float32, op Op, root int) *handle {
	if err := checkArgs(c, op, root, r.n); err != nil {
		return doneHandle(err)
	}
	o := &ringOp{coll: c, op: op, root: root, buf: buf, progress: make(chan struct{}, 1)}
	o.pending.Store(2)
	o.h = newHandle(func(ctx context.Context) { r.fail(r.deadlineErr(o, ctx)) })
	if r.n > 1 {
		o.plan = planFor(c, op, root, len(buf), r.n, r.rank, r.segElems)
	}
	ctx, cancel := r.opContext(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cause != nil || r.closed {
		cancel()
		return doneHandle(r.callErrLocked())
	}
	r.seq++
	o.seq = r.seq
	if r.n == 1 {
		cancel()
		return doneHandle(nil) // one rank: every collective leaves buf as it is
	}
	unwatch := context.AfterFunc(ctx, func() { r.fail(r.deadlineErr(o, ctx)) })
	o.stop = func() { unwatch(); cancel() }
	r.sendQ.push(o)
	r.recvQ.push(o)
	return o.h
}

func (r *Ring) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || r.cfg.OpTimeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, r.cfg.OpTimeout)
}

// deadlineErr blames the member known to be silent longest (see heartbeat.go) or, when no
// member is, the neighbour the op was waiting for: the left one while segments are still to
// arrive, the right one after that. Every member's deadline passes at about the same time,
// and the first to fail sets the cause for all; waiting neighbours are alive themselves,
// so only the heartbeats can name the member that stopped.
func (r *Ring) deadlineErr(o *ringOp, ctx context.Context) *PeerError {
	if pe := r.silenceErr(o, ctx); pe != nil {
		return pe
	}
	peer := r.left
	if o.recvDone.Load() >= int64(len(o.plan.recv)*o.plan.segs) {
		peer = r.right
	}
	return r.peerErr(peer, fmt.Errorf("%w: %v #%d waiting for rank %d: %w",
		ErrDeadline, o.coll, o.seq, peer, context.Cause(ctx)))
}

// release lets go of o for one loop; the second release finishes it.
func (r *Ring) release(o *ringOp, err error) {
	if err != nil {
		o.failed.Store(true)
	}
	if o.pending.Add(-1) > 0 {
		return
	}
	o.stop()
	if !o.failed.Load() {
		o.h.finish(nil)
		return
	}
	r.mu.Lock()
	if !r.notified {
		// Hold the result back until the neighbours have been told, so that a rank whose
		// call has failed never races ahead of the news (see shutdown).
		r.unfinished = append(r.unfinished, o)
		r.mu.Unlock()
		return
	}
	cause := r.cause
	r.mu.Unlock()
	o.h.finish(cause)
}

func (r *Ring) sendLoop() {
	defer r.wg.Done()
	fw := frameWriter{}
	select {
	case <-r.ready:
		fw.w = r.rightConn
	case <-r.done:
	}
	for {
		o := r.sendQ.pop(r.done)
		if o == nil {
			break
		}
		r.release(o, r.sendOp(&fw, o))
	}
	for _, o := range r.sendQ.drain() {
		r.release(o, errRingFailed)
	}
}

func (r *Ring) sendOp(fw *frameWriter, o *ringOp) error {
	p := &o.plan
	h := o.header()
	for i, sp := range p.send {
		for j := 0; j < p.segs; j++ {
			if d := i + p.dep; d >= 0 {
				if err := r.awaitRecv(o, int64(d*p.segs+j+1)); err != nil {
					return err
				}
			}
			lo, hi := sp.seg(j, p.segs)
			h.part = uint32(i*p.segs + j)
			if err := r.writeData(fw, h, o.buf[lo:hi]); err != nil {
				return err
			}
		}
	}
	return nil
}

// header returns the fields every data frame of o carries.
func (o *ringOp) header() header {
	h := header{kind: kindData, coll: o.coll, seq: o.seq, root: uint32(o.root), count: uint32(len(o.buf))}
	if o.coll == collAllReduce || o.coll == collReduceScatter {
		h.op = o.op
	}
	return h
}

func (r *Ring) awaitRecv(o *ringOp, need int64) error {
	for o.recvDone.Load() < need {
		select {
		case <-o.progress:
		case <-r.done:
			return errRingFailed
		}
	}
	return nil
}

func (r *Ring) writeData(fw *frameWriter, h header, seg []float32) error {
	select {
	case <-r.done:
		return errRingFailed
	default:
	}
	r.wmu.Lock()
	err := fw.writeData(h, seg)
	if err != nil {
		r.rightDirty = true
	} else {
		r.sent.Add(4 * int64(len(seg)))
	}
	r.wmu.Unlock()
	if err != nil {
		r.fail(r.peerErr(r.right, fmt.Errorf("%w: send to right neighbour: %w", ErrPeerFailed, err)))
		return errRingFailed
	}
	return nil
}

// receiver is recvLoop's reusable state.
type receiver struct {
	conn net.Conn
	hdr  [headerSize]byte
	wire wireScratch
}

func (r *Ring) recvLoop() {
	defer r.wg.Done()
	defer r.readers.Done()
	var rd receiver
	select {
	case <-r.ready:
		rd.conn = r.leftConn
	case <-r.done:
	}
	for {
		o := r.recvQ.pop(r.done)
		if o == nil {
			break
		}
		r.release(o, r.recvOp(&rd, o))
	}
	for _, o := range r.recvQ.drain() {
		r.release(o, errRingFailed)
	}
}

func (r *Ring) recvOp(rd *receiver, o *ringOp) error {
	p := &o.plan
	for i, st := range p.recv {
		for j := 0; j < p.segs; j++ {
			lo, hi := st.seg(j, p.segs)
			if err := r.recvData(rd, o, uint32(i*p.segs+j), o.buf[lo:hi], st.mode); err != nil {
				return err
			}
			o.recvDone.Add(1)
			select {
			case o.progress <- struct{}{}:
			default:
			}
		}
	}
	return nil
}

// recvData reads the frame of one segment and copies or adds it into dst.
func (r *Ring) recvData(rd *receiver, o *ringOp, part uint32, dst []float32, mode recvMode) error {
	h, err := readHeader(rd.conn, &rd.hdr)
	if err != nil {
		return r.broke(r.left, "receive from left neighbour", err)
	}
	if h.kind == kindAbort {
		return r.adoptAbort(rd.conn, h, r.left)
	}
	want := o.header()
	want.part, want.length = part, uint32(4*len(dst))
	if h != want {
		return r.mismatch(rd, h, want)
	}
	if mode == modeCopy {
		err = readFloats(rd.conn, dst, &rd.wire)
	} else {
		err = readAddFloats(rd.conn, dst, &rd.wire)
	}
	if err != nil {
		return r.broke(r.left, "receive from left neighbour", err)
	}
	if mode == modeAddAvg {
		divide(dst, r.n)
	}
	return nil
}

// mismatch fails the ring because the left neighbour sent a frame that does not belong to
// the current collective. A neighbour that failed while this rank was idle leaves frames
// of the abandoned collective ahead of its abort frame, so first look for that abort frame
// (or a cause arriving from the right) for a moment: the cause it carries is the real one.
func (r *Ring) mismatch(rd *receiver, h, want header) error {
	rd.conn.SetReadDeadline(time.Now().Add(mismatchGrace))
	for next := h; next.kind == kindData; {
		if _, err := io.CopyN(io.Discard, rd.conn, int64(next.length)); err != nil {
			break
		}
		var err error
		if next, err = readHeader(rd.conn, &rd.hdr); err != nil {
			break
		}
		if next.kind == kindAbort {
			return r.adoptAbort(rd.conn, next, r.left)
		}
	}
	r.fail(r.peerErr(r.left, fmt.Errorf("%w: rank %d sent %s, rank %d expected %s",
		ErrMismatch, r.left, describe(h), r.rank, describe(want))))
	return errRingFailed
}

func describe(h header) string {
	if h.kind != kindData {
		return fmt.Sprintf("a %v frame", h.kind)
	}
	return fmt.Sprintf("%v #%d part %d (op %d, root %d, %d elements, %d bytes)",
		h.coll, h.seq, h.part, h.op, h.root, h.count, h.length)
}

// readRight reads what the right neighbour sends back, heartbeats and at most one abort
// frame, and notices as soon as that neighbour's connection breaks.
func (r *Ring) readRight() {
	defer r.wg.Done()
	defer r.readers.Done()
	var hb [headerSize]byte
	for {
		h, err := readHeader(r.rightConn, &hb)
		if err != nil {
			r.broke(r.right, "connection to right neighbour", err)
			return
		}
		r.hb.heard(r.hb.now())
		switch h.kind {
		case kindHeartbeat:
			if r.readBeat(h) != nil {
				return
			}
		case kindAbort:
			r.rightAborted(h)
			return
		default:
			r.fail(r.peerErr(r.right, badFrame("unexpected %v frame from right neighbour", h.kind)))
			return
		}
	}
}

// rightAborted reads the abort frame the right neighbour sent back and fails the ring with
// its cause, unless the neighbour merely closed.
func (r *Ring) rightAborted(h header) {
	pe, err := r.readAbort(r.rightConn, h, r.right)
	if err != nil {
		return
	}
	if errors.Is(pe.Err, ErrPeerClosed) && pe.Rank == r.right {
		// The right neighbour closed after its last call and tells both sides. What it
		// still had to send travels ahead of its close notice on the left connection of
		// the rank it sends to, so a pending call that needs nothing more from it completes,
		// and one that does fails there, on the left side, with the same cause. It sends no
		// more heartbeats, and its silence means nothing.
		r.hb.gone()
		return
	}
	r.fail(pe)
}

// broke fails the ring because the connection with peer failed, unless the ring had
// already failed (and broke the connection itself).
func (r *Ring) broke(peer int, what string, err error) error {
	select {
	case <-r.done:
		return errRingFailed
	default:
	}
	if !errors.Is(err, ErrBadFrame) {
		err = fmt.Errorf("%w: %s: %w", ErrPeerFailed, what, err)
	}
	r.fail(r.peerErr(peer, err))
	return errRingFailed
}

// adoptAbort reads the cause a neighbour sent and fails the ring with it, so that the
// cause reaches every member unchanged.
func (r *Ring) adoptAbort(conn net.Conn, h header, from int) error {
	pe, err := r.readAbort(conn, h, from)
	if err != nil {
		return err
	}
	r.fail(pe)
	return errRingFailed
}

// readAbort reads the payload of an abort frame whose header is h. A connection that breaks
// meanwhile fails the ring.
func (r *Ring) readAbort(conn net.Conn, h header, from int) (*PeerError, error) {
	payload := make([]byte, h.length)
	if _, err := io.ReadFull(conn, payload); err != nil {
		return nil, r.broke(from, "read abort frame", err)
	}
	pe, err := decodeAbort(payload)
	if err != nil {
		return nil, r.broke(from, "decode abort frame", err)
	}
	return pe, nil
}

// opQueue is an unbounded FIFO of collectives with one consumer.
type opQueue struct {
	mu     sync.Mutex
	ops    []*ringOp
	notify chan struct{}
}

func (q *opQueue) init() { q.notify = make(chan struct{}, 1) }

func (q *opQueue) push(o *ringOp) {
	q.mu.Lock()
	q.ops = append(q.ops, o)
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// pop returns the oldest collective, waiting for one; nil once done is closed.
func (q *opQueue) pop(done <-chan struct{}) *ringOp {
	for {
		select {
		case <-done:
			return nil
		default:
		}
		q.mu.Lock()
		if len(q.ops) > 0 {
			o := q.ops[0]
			q.ops[0] = nil
			q.ops = q.ops[1:]
			q.mu.Unlock()
			return o
		}
		q.mu.Unlock()
		select {
		case <-q.notify:
		case <-done:
			return nil
		}
	}
}

func (q *opQueue) drain() []*ringOp {
	q.mu.Lock()
	defer q.mu.Unlock()
	ops := q.ops
	q.ops = nil
	return ops
}
