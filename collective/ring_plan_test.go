package collective

import (
	"fmt"
	"testing"
)

// TestPlansLineUp checks, for every collective, world size and a few lengths, that what a
// rank sends at each step is what its right neighbour expects then, with the same number of
// segments, and that no rank waits on a step it never receives.
func TestPlansLineUp(t *testing.T) {
	for n := 1; n <= 9; n++ {
		for _, length := range []int{0, 1, 5, 17, 100, 1 << 16} {
			for c := collAllReduce; c <= collLast; c++ {
				for root := range n {
					if c != collBroadcast && root > 0 {
						break
					}
					checkPlans(t, c, n, length, root)
				}
			}
		}
	}
}

func checkPlans(t *testing.T, c coll, n, length, root int) {
	t.Helper()
	plans := make([]ringPlan, n)
	for r := range n {
		plans[r] = planFor(c, Sum, root, length, n, r, 1000)
	}
	for r, p := range plans {
		right := plans[(r+1)%n]
		name := fmt.Sprintf("%v n=%d len=%d root=%d rank %d", c, n, length, root, r)
		if n > 1 && len(p.send) != len(right.recv) {
			t.Fatalf("%s sends %d steps, right neighbour receives %d", name, len(p.send), len(right.recv))
		}
		if p.segs != right.segs {
			t.Fatalf("%s cuts steps in %d segments, right neighbour in %d", name, p.segs, right.segs)
		}
		for i := range p.send {
			if n > 1 && p.send[i] != right.recv[i].span {
				t.Fatalf("%s step %d sends %v, right neighbour expects %v", name, i, p.send[i], right.recv[i].span)
			}
			if d := i + p.dep; d >= len(p.recv) {
				t.Fatalf("%s step %d waits for receive step %d of %d", name, i, d, len(p.recv))
			}
		}
	}
}

// TestPlansReduce runs the all-reduce plans step by step in memory and checks that every
// rank ends with the exact sum (small integers add exactly in any order).
func TestPlansReduce(t *testing.T) {
	for n := 1; n <= 9; n++ {
		for _, length := range []int{0, 1, n - 1, 13, 64} {
			bufs := make([][]float32, n)
			for r := range bufs {
				bufs[r] = make([]float32, length)
				for i := range bufs[r] {
					bufs[r][i] = float32(r*1000 + i)
				}
			}
			simulate(bufs, collAllReduce, Avg)
			for r, b := range bufs {
				for i, v := range b {
					want := float32(500*(n-1) + i) // the average of r*1000+i over r
					if v != want {
						t.Fatalf("n=%d len=%d: rank %d element %d = %v, want %v", n, length, r, i, v, want)
					}
				}
			}
		}
	}
}

// simulate runs the plans of all ranks in lock step: at each step every rank sends, then
// every rank applies what it received.
func simulate(bufs [][]float32, c coll, op Op) {
	n := len(bufs)
	plans := make([]ringPlan, n)
	for r := range n {
		plans[r] = planFor(c, op, 0, len(bufs[r]), n, r, 3)
	}
	for s := range plans[0].send {
		sent := make([][]float32, n)
		for r, p := range plans {
			sent[r] = append([]float32(nil), bufs[r][p.send[s].lo:p.send[s].hi]...)
		}
		for r, p := range plans {
			st := p.recv[s]
			dst, in := bufs[r][st.lo:st.hi], sent[(r+n-1)%n]
			if st.mode == modeCopy {
				copy(dst, in)
				continue
			}
			addTo(dst, in)
			if st.mode == modeAddAvg {
				divide(dst, n)
			}
		}
	}
}
