package collective

// A ring plan says, for one collective on one rank, which element range goes to the right
// neighbour and which arrives from the left one at every step, and what to do with what
// arrives. Every range is cut into the same number of segments, one data frame each, so the
// k-th frame a rank sends is the k-th frame its right neighbour expects.
//
// All-reduce on n ranks (rank r, chunk c = Partition(len, n, c), indices mod n):
//
//	reduce-scatter, step s in [0, n-1):    send chunk r-s-1, receive chunk r-s-2 and add it
//	all-gather,     step s in [n-1, 2n-2): send chunk r-s-1, receive chunk r-s-2 and copy it
//
// At step n-2 rank r receives the last contribution to chunk r, so it alone holds the
// reduced chunk r (divided by n for Avg), and the all-gather passes that single copy around:
// every rank ends with the same bits. Chunk c is summed in the order c+1, c+2, ..., c.
// Segment j of step s is sent as soon as segment j of step s-1 has arrived, so a rank sends,
// receives and reduces at once.

type recvMode uint8

const (
	modeCopy   recvMode = iota // overwrite the range with what arrives
	modeAdd                    // add what arrives into the range
	modeAddAvg                 // add, then divide by the world size: the last reduce step of Avg
)

// span is a half-open element range of the buffer.
type span struct{ lo, hi int }

// seg returns segment j of m of s: the segments split s as evenly as integers allow.
func (s span) seg(j, m int) (lo, hi int) {
	n := s.hi - s.lo
	return s.lo + n*j/m, s.lo + n*(j+1)/m
}

type recvStep struct {
	span
	mode recvMode
}

type ringPlan struct {
	segs int        // segments per step
	send []span     // what goes right at each step
	recv []recvStep // what arrives from the left at each step
	// dep links the two: segment j of send step i waits for segment j of receive step
	// i+dep to be done; a negative i+dep waits for nothing.
	dep int
}

// planFor builds the plan of one collective. segElems is the target segment length.
func planFor(c coll, op Op, root, length, n, rank, segElems int) ringPlan {
	var p ringPlan
	switch c {
	case collAllReduce, collBarrier:
		p = reduceScatterPlan(length, n, rank, op)
		p.appendAllGather(length, n, rank)
	case collReduceScatter:
		p = reduceScatterPlan(length, n, rank, op)
	case collAllGather:
		p = ringPlan{dep: -1}
		p.appendAllGather(length, n, rank)
	case collBroadcast:
		p = broadcastPlan(length, n, rank, root)
	}
	p.segs = segmentsFor(&p, segElems)
	return p
}

func chunk(length, n, c int) span {
	lo, hi := Partition(length, n, ((c%n)+n)%n)
	return span{lo, hi}
}

func reduceScatterPlan(length, n, r int, op Op) ringPlan {
	p := ringPlan{dep: -1}
	for s := 0; s < n-1; s++ {
		mode := modeAdd
		if s == n-2 && op == Avg {
			mode = modeAddAvg
		}
		p.send = append(p.send, chunk(length, n, r-s-1))
		p.recv = append(p.recv, recvStep{chunk(length, n, r-s-2), mode})
	}
	return p
}

// appendAllGather adds the n-1 all-gather steps, starting from this rank's own chunk.
func (p *ringPlan) appendAllGather(length, n, r int) {
	for t := 0; t < n-1; t++ {
		p.send = append(p.send, chunk(length, n, r-t))
		p.recv = append(p.recv, recvStep{chunk(length, n, r-t-1), modeCopy})
	}
}

// broadcastPlan pipelines the whole buffer along the ring from root: every rank but root
// receives it, and every rank but the one left of root passes each segment on as it arrives.
func broadcastPlan(length, n, r, root int) ringPlan {
	all := span{0, length}
	d := ((r-root)%n + n) % n
	p := ringPlan{dep: 0}
	if d == 0 {
		p.dep = -1 // root has nothing to wait for
	} else {
		p.recv = []recvStep{{all, modeCopy}}
	}
	if d != n-1 {
		p.send = []span{all}
	}
	return p
}

// segmentsFor picks how many segments each step has: enough that none exceeds segElems,
// and at least one, so that even empty steps send a frame (a barrier is an empty all-reduce).
func segmentsFor(p *ringPlan, segElems int) int {
	longest := 0
	for _, s := range p.send {
		longest = max(longest, s.hi-s.lo)
	}
	for _, s := range p.recv {
		longest = max(longest, s.hi-s.lo)
	}
	return max(1, (longest+segElems-1)/segElems)
}
