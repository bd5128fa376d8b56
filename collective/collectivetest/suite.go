package collectivetest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herd-llm/herd/collective"
)

// Tolerance: rank r's input is x_r = value(seed, r, i), exact in float32. A float32 sum of
// n values has an error of at most (n-1)*u*sum|x_r| (u = 2^-24: half an ulp per addition);
// Avg adds one rounding of the quotient. The suite allows n*u*sum|x_r| for Sum and
// (n+1)*u*sum|x_r|/n for Avg against the float64 sum, which is exact to about 2^-50.
const unitRoundoff = 1.0 / (1 << 24)

const (
	maxWorld = 8
	// opTimeout bounds every call of the suite; the race detector slows large cases a lot.
	opTimeout = 2 * time.Minute
	// failFast bounds how long a call may take to fail once the group has failed.
	failFast = 5 * time.Second
	// largeLen is the big case: 64 MiB of float32 per rank.
	largeLen = 16 << 20
)

// largeWorlds are the world sizes that run the 64 MiB case: an even and an odd one, so
// that chunks come out both equal and unequal.
var largeWorlds = []int{3, 4}

// RunAll runs the conformance suite against one implementation: every collective on world
// sizes 1 to 8 and lengths 0, 1, world-1 and some primes, a 64 MiB all-reduce (4 MiB under
// -race or -short), asynchronous handles, and the failure rules (close, deadline, abort,
// mismatched calls). Each world size gets one group from newGroup, and each failure case a
// fresh one.
func RunAll(t *testing.T, newGroup NewGroup) {
	for n := 1; n <= maxWorld; n++ {
		t.Run(fmt.Sprintf("world=%d", n), func(t *testing.T) {
			g := newGroup(t, n)
			checkRanks(t, g)
			for _, size := range lengths(n) {
				t.Run(fmt.Sprintf("len=%d", size), func(t *testing.T) { testLength(t, g, size) })
			}
			t.Run("Barrier", func(t *testing.T) { testBarrier(t, g) })
			t.Run("Async", func(t *testing.T) { testAsync(t, g) })
			t.Run("InvalidArgument", func(t *testing.T) { testInvalidArgument(t, g) })
		})
	}
	t.Run("Large", func(t *testing.T) {
		size := largeLen
		if raceEnabled || testing.Short() {
			size = largeLen / 16
		}
		for _, n := range largeWorlds {
			t.Run(fmt.Sprintf("world=%d/len=%d", n, size), func(t *testing.T) {
				testAllReduce(t, newGroup(t, n), size, collective.Sum)
			})
		}
	})
	t.Run("Faults", func(t *testing.T) { runFaults(t, newGroup) })
}

// lengths returns the buffer lengths tried on n ranks: empty, one element, fewer elements
// than ranks, and primes, which never split evenly.
func lengths(n int) []int {
	ls := []int{0, 1, 2, 7, 13, 1021, 65537}
	if n-1 > 2 {
		ls = append(ls, n-1)
	}
	return ls
}

func checkRanks(t *testing.T, g []collective.Communicator) {
	t.Helper()
	for i, c := range g {
		if c.Rank() != i || c.Size() != len(g) {
			t.Fatalf("member %d reports rank %d of %d, want %d of %d", i, c.Rank(), c.Size(), i, len(g))
		}
	}
}

func testLength(t *testing.T, g []collective.Communicator, size int) {
	for _, op := range []collective.Op{collective.Sum, collective.Avg} {
		t.Run("AllReduce/"+op.String(), func(t *testing.T) { testAllReduce(t, g, size, op) })
		t.Run("ReduceScatter/"+op.String(), func(t *testing.T) { testReduceScatter(t, g, size, op) })
	}
	t.Run("AllGather", func(t *testing.T) { testAllGather(t, g, size) })
	for _, root := range roots(len(g)) {
		t.Run(fmt.Sprintf("Broadcast/root=%d", root), func(t *testing.T) { testBroadcast(t, g, size, root) })
	}
}

func roots(n int) []int {
	rs := []int{0}
	if n > 2 {
		rs = append(rs, n/2)
	}
	if n > 1 {
		rs = append(rs, n-1)
	}
	return rs
}

func testAllReduce(t *testing.T, g []collective.Communicator, size int, op collective.Op) {
	bufs := inputs(len(g), size, 1)
	mustAll(t, onAll(g, func(ctx context.Context, c collective.Communicator) error {
		return c.AllReduce(ctx, bufs[c.Rank()], op)
	}))
	checkIdentical(t, bufs)
	checkReduced(t, bufs[0], 0, size, len(g), 1, op)
}

func testReduceScatter(t *testing.T, g []collective.Communicator, size int, op collective.Op) {
	n := len(g)
	bufs := inputs(n, size, 2)
	mustAll(t, onAll(g, func(ctx context.Context, c collective.Communicator) error {
		return c.ReduceScatter(ctx, bufs[c.Rank()], op)
	}))
	for r, b := range bufs {
		lo, hi := collective.Partition(size, n, r)
		checkReduced(t, b[lo:hi], lo, hi, n, 2, op)
	}
}

func testAllGather(t *testing.T, g []collective.Communicator, size int) {
	n := len(g)
	bufs := inputs(n, size, 3)
	mustAll(t, onAll(g, func(ctx context.Context, c collective.Communicator) error {
		return c.AllGather(ctx, bufs[c.Rank()])
	}))
	checkIdentical(t, bufs)
	for owner := range n {
		lo, hi := collective.Partition(size, n, owner)
		for i := lo; i < hi; i++ {
			if want := value(3, owner, i); math.Float32bits(bufs[0][i]) != math.Float32bits(want) {
				t.Fatalf("element %d = %v, want %v from rank %d", i, bufs[0][i], want, owner)
			}
		}
	}
}

func testBroadcast(t *testing.T, g []collective.Communicator, size, root int) {
	bufs := inputs(len(g), size, 4)
	mustAll(t, onAll(g, func(ctx context.Context, c collective.Communicator) error {
		return c.Broadcast(ctx, bufs[c.Rank()], root)
	}))
	checkIdentical(t, bufs)
	for i, v := range bufs[0] {
		if want := value(4, root, i); math.Float32bits(v) != math.Float32bits(want) {
			t.Fatalf("element %d = %v, want root %d's %v", i, v, root, want)
		}
	}
}

// testBarrier checks that no rank leaves a barrier before the last one has entered it;
// ranks enter at staggered times.
func testBarrier(t *testing.T, g []collective.Communicator) {
	const rounds = 3
	var entered [rounds]atomic.Int32
	var early atomic.Int32
	mustAll(t, onAll(g, func(ctx context.Context, c collective.Communicator) error {
		for k := range rounds {
			time.Sleep(time.Duration((c.Rank()+k)%len(g)) * time.Millisecond)
			entered[k].Add(1)
			if err := c.Barrier(ctx); err != nil {
				return err
			}
			if entered[k].Load() != int32(len(g)) {
				early.Add(1)
			}
		}
		return nil
	}))
	if e := early.Load(); e != 0 {
		t.Fatalf("%d ranks left a barrier before every rank had entered it", e)
	}
}

// testAsync starts several collectives on each rank before waiting for any, waits in
// reverse order, and mixes in a blocking call, which runs after the ones started earlier.
func testAsync(t *testing.T, g []collective.Communicator) {
	n := len(g)
	ar1, rs, ag, ar2, bc := inputs(n, 1021, 5), inputs(n, 4099, 6), inputs(n, 517, 7), inputs(n, 65537, 8), inputs(n, 31, 9)
	mustAll(t, onAll(g, func(ctx context.Context, c collective.Communicator) error {
		r := c.Rank()
		hs := []collective.Handle{
			c.AllReduceAsync(ctx, ar1[r], collective.Sum),
			c.ReduceScatterAsync(ctx, rs[r], collective.Avg),
			c.AllGatherAsync(ctx, ag[r]),
			c.AllReduceAsync(ctx, ar2[r], collective.Avg),
		}
		if err := c.Broadcast(ctx, bc[r], n-1); err != nil {
			return fmt.Errorf("broadcast: %w", err)
		}
		for i := len(hs) - 1; i >= 0; i-- {
			if err := hs[i].Wait(ctx); err != nil {
				return fmt.Errorf("handle %d: %w", i, err)
			}
			select {
			case <-hs[i].Done():
			default:
				return fmt.Errorf("handle %d: Done not closed after Wait returned", i)
			}
		}
		return nil
	}))
	checkIdentical(t, ar1)
	checkReduced(t, ar1[0], 0, 1021, n, 5, collective.Sum)
	checkIdentical(t, ar2)
	checkReduced(t, ar2[0], 0, 65537, n, 8, collective.Avg)
	for r, b := range rs {
		lo, hi := collective.Partition(len(b), n, r)
		checkReduced(t, b[lo:hi], lo, hi, n, 6, collective.Avg)
	}
	checkIdentical(t, ag)
	checkIdentical(t, bc)
}

// testInvalidArgument checks that calls with arguments no rank could accept fail at once on
// every rank and leave the group working.
func testInvalidArgument(t *testing.T, g []collective.Communicator) {
	n := len(g)
	errs := onAll(g, func(ctx context.Context, c collective.Communicator) error {
		return c.Broadcast(ctx, make([]float32, 3), n)
	})
	errs = append(errs, onAll(g, func(ctx context.Context, c collective.Communicator) error {
		return c.AllReduce(ctx, make([]float32, 3), collective.Op(0))
	})...)
	for i, err := range errs {
		if !errors.Is(err, collective.ErrInvalidArgument) {
			t.Fatalf("call %d: %v, want ErrInvalidArgument", i, err)
		}
	}
	testAllReduce(t, g, 5, collective.Sum)
}

// onAll calls f on every rank at once and returns each rank's error.
func onAll(g []collective.Communicator, f func(ctx context.Context, c collective.Communicator) error) []error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	errs := make([]error, len(g))
	var wg sync.WaitGroup
	for i, c := range g {
		wg.Go(func() { errs[i] = f(ctx, c) })
	}
	wg.Wait()
	return errs
}

func mustAll(t *testing.T, errs []error) {
	t.Helper()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
}

// value is rank's deterministic input at index i: a signed 24-bit integer scaled by a power
// of two between 2^-26 and 2^-19 (so |value| < 16), exact in float32. Magnitudes differ by up
// to 2^7 between ranks, so the summation order shows in the low bits.
func value(seed uint64, rank, i int) float32 {
	h := splitmix(seed<<56 ^ uint64(rank)<<40 ^ uint64(i))
	mant := float32(int32(h>>40) - 1<<23)
	return mant * float32(math.Ldexp(1, -26+int(h&7)))
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

func inputs(n, size int, seed uint64) [][]float32 {
	bufs := make([][]float32, n)
	for r := range bufs {
		bufs[r] = make([]float32, size)
		for i := range bufs[r] {
			bufs[r][i] = value(seed, r, i)
		}
	}
	return bufs
}

// checkIdentical checks that every rank holds the same bits as rank 0.
func checkIdentical(t *testing.T, bufs [][]float32) {
	t.Helper()
	for r, b := range bufs[1:] {
		for i, v := range b {
			if math.Float32bits(v) != math.Float32bits(bufs[0][i]) {
				t.Fatalf("rank %d element %d = %v (%#08x), rank 0 has %v (%#08x)",
					r+1, i, v, math.Float32bits(v), bufs[0][i], math.Float32bits(bufs[0][i]))
			}
		}
	}
}

// checkReduced checks got, the reduction of elements [lo, hi) of inputs(n, _, seed),
// against the float64 reference within the suite's tolerance.
func checkReduced(t *testing.T, got []float32, lo, hi, n int, seed uint64, op collective.Op) {
	t.Helper()
	var bad []string
	for i := lo; i < hi; i++ {
		var sum, abs float64
		for r := range n {
			v := float64(value(seed, r, i))
			sum += v
			abs += math.Abs(v)
		}
		tol := float64(n) * unitRoundoff * abs
		if op == collective.Avg {
			sum /= float64(n)
			tol = float64(n+1) * unitRoundoff * abs / float64(n)
		}
		if d := math.Abs(float64(got[i-lo]) - sum); d > tol || math.IsNaN(d) {
			bad = append(bad, fmt.Sprintf("element %d = %v, want %v within %.3g", i, got[i-lo], sum, tol))
			if len(bad) == 5 {
				break
			}
		}
	}
	if len(bad) > 0 {
		t.Fatalf("%v of %d ranks off the float64 reference:\n%s", op, n, strings.Join(bad, "\n"))
	}
}
