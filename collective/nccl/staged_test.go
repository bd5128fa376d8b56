//go:build cuda

package nccl

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/collective/collectivetest"
	"github.com/herd-llm/herd/kernels/cuda"
)

// intInput is rank r's value at element i: an integer in [-1000, 1000], so that sums over a
// few ranks are exact in float32 in any order and the expected result is known bit for bit.
func intInput(r, i int) float32 { return float32((i*7919+r*104729)%2001 - 1000) }

// guard is the number of sentinel values around each rank's device buffer.
const guard = 8

// stagedRank is one rank of a staged test: its own stream and buffer on the shared device.
type stagedRank struct {
	d   *cuda.Device
	st  *Staged
	s   cuda.Stream
	raw cuda.DevicePtr // guard + n + guard values
	buf cuda.DevicePtr // raw + guard
	n   int
}

func newStagedRank(d *cuda.Device, host collective.Communicator, n, maxElems int) (*stagedRank, error) {
	st, err := NewStaged(host, d, maxElems)
	if err != nil {
		return nil, err
	}
	s, err := d.NewStream()
	if err != nil {
		return nil, err
	}
	raw, err := d.Allocator().Alloc(4 * int64(n+2*guard))
	if err != nil {
		return nil, err
	}
	return &stagedRank{d: d, st: st, s: s, raw: raw, buf: offset(raw, guard), n: n}, nil
}

func (r *stagedRank) close() error {
	return errors.Join(r.st.Close(), r.d.DestroyStream(r.s), r.d.Allocator().Free(r.raw))
}

// load uploads vals (n of them) between sentinel guards.
func (r *stagedRank) load(vals []float32) error {
	all := make([]float32, r.n+2*guard)
	for i := range all {
		all[i] = -7777
	}
	copy(all[guard:], vals)
	// Upload runs on the legacy stream and may return before its DMA has landed; r.s does not
	// synchronize with that stream, so wait for the device.
	return errors.Join(cuda.Upload(r.d, r.raw, all), r.d.Synchronize())
}

// read downloads the buffer, checking the guards, after synchronizing the stream.
func (r *stagedRank) read() ([]float32, error) {
	if err := r.d.SyncStream(r.s); err != nil {
		return nil, err
	}
	all := make([]float32, r.n+2*guard)
	if err := cuda.Download(r.d, all, r.raw); err != nil {
		return nil, err
	}
	for i := range all {
		if (i < guard || i >= guard+r.n) && all[i] != -7777 {
			return nil, fmt.Errorf("guard value %d of the buffer overwritten: %v", i-guard, all[i])
		}
	}
	return all[guard : guard+r.n], nil
}

func equalBits(what string, got, want []float32) error {
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			return fmt.Errorf("%s: element %d of %d: got %v, want %v", what, i, len(want), got[i], want[i])
		}
	}
	return nil
}

// runStagedCase runs every collective of Staged on n elements with maxElems on each rank of
// host (one goroutine per rank, all on device d) and checks the results bit for bit.
func runStagedCase(t *testing.T, d *cuda.Device, host []collective.Communicator, n, maxElems int) {
	size := len(host)
	sum := make([]float32, n) // exact: integer inputs
	for i := range sum {
		for q := 0; q < size; q++ {
			sum[i] += intInput(q, i)
		}
	}
	avg := make([]float32, n)
	for i := range avg {
		avg[i] = sum[i] / float32(size) // the ring's and InMem's Avg: the sum divided once
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	errs := make([]error, size)
	var wg sync.WaitGroup
	for rank, c := range host {
		wg.Go(func() {
			errs[rank] = func() (err error) {
				r, err := newStagedRank(d, c, n, maxElems)
				if err != nil {
					return err
				}
				defer func() { err = errors.Join(err, r.close()) }()
				in := make([]float32, n)
				for i := range in {
					in[i] = intInput(rank, i)
				}
				lo, hi := collective.Partition(n, size, rank)
				for _, op := range []collective.Op{collective.Sum, collective.Avg} {
					want := sum
					if op == collective.Avg {
						want = avg
					}
					if err := r.load(in); err != nil {
						return err
					}
					if err := r.st.AllReduce(ctx, r.buf, n, op, r.s); err != nil {
						return fmt.Errorf("AllReduce %v: %w", op, err)
					}
					got, err := r.read()
					if err != nil {
						return err
					}
					if err := equalBits("all-reduce "+op.String(), got, want); err != nil {
						return err
					}

					if err := r.load(in); err != nil {
						return err
					}
					if err := r.st.ReduceScatter(ctx, r.buf, n, op, r.s); err != nil {
						return fmt.Errorf("ReduceScatter %v: %w", op, err)
					}
					if got, err = r.read(); err != nil {
						return err
					}
					if err := equalBits("reduce-scatter "+op.String(), got[lo:hi], want[lo:hi]); err != nil {
						return err
					}
				}
				// All-gather: only this rank's part holds its values; the rest is poison.
				part := make([]float32, n)
				for i := range part {
					part[i] = float32(math.NaN())
				}
				copy(part[lo:hi], in[lo:hi])
				if err := r.load(part); err != nil {
					return err
				}
				if err := r.st.AllGather(ctx, r.buf, n, r.s); err != nil {
					return fmt.Errorf("AllGather: %w", err)
				}
				got, err := r.read()
				if err != nil {
					return err
				}
				gathered := make([]float32, n)
				for q := 0; q < size; q++ {
					qlo, qhi := collective.Partition(n, size, q)
					for i := qlo; i < qhi; i++ {
						gathered[i] = intInput(q, i)
					}
				}
				return equalBits("all-gather", got, gathered)
			}()
		})
	}
	wg.Wait()
	for rank, err := range errs {
		if err != nil {
			t.Errorf("n=%d maxElems=%d rank %d of %d: %v", n, maxElems, rank, size, err)
		}
	}
}

// TestStagedRing3 runs Staged on three ranks of a real TCP ring on 127.0.0.1 that share GPU 0,
// unchunked and chunked, with lengths that divide by nothing in particular.
func TestStagedRing3(t *testing.T) {
	d := openDevice(t)
	host := collectivetest.NewRingGroup(t, 3)
	for _, c := range []struct{ n, maxElems int }{
		{0, 16},
		{1, 16},
		{2, 16},           // fewer elements than ranks
		{100003, 1 << 20}, // one chunk
		{10007, 1000},     // 11 all-reduce chunks, 4 reduce-scatter rounds
		{1000, 999},       // just over one chunk
		{10, 2},           // maxElems below the world size: one element per rank per round
	} {
		t.Run(fmt.Sprintf("n=%d,max=%d", c.n, c.maxElems), func(t *testing.T) {
			runStagedCase(t, d, host, c.n, c.maxElems)
		})
	}
}

// TestStagedRandomMatchesHost checks that staging is transparent: Staged's all-reduce of random
// values gives the same bits as the same ring's host all-reduce of the same values.
func TestStagedRandomMatchesHost(t *testing.T) {
	d := openDevice(t)
	host := collectivetest.NewRingGroup(t, 3)
	const n = 300007
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errs := make([]error, len(host))
	var wg sync.WaitGroup
	for rank, c := range host {
		wg.Go(func() {
			errs[rank] = func() (err error) {
				r, err := newStagedRank(d, c, n, n)
				if err != nil {
					return err
				}
				defer func() { err = errors.Join(err, r.close()) }()
				rng := rand.New(rand.NewPCG(uint64(rank), 99))
				in := make([]float32, n)
				for i := range in {
					in[i] = float32(rng.NormFloat64())
				}
				ref := append([]float32(nil), in...)
				if err := c.AllReduce(ctx, ref, collective.Sum); err != nil {
					return err
				}
				if err := r.load(in); err != nil {
					return err
				}
				if err := r.st.AllReduce(ctx, r.buf, n, collective.Sum, r.s); err != nil {
					return err
				}
				got, err := r.read()
				if err != nil {
					return err
				}
				return equalBits("staged vs host all-reduce", got, ref)
			}()
		})
	}
	wg.Wait()
	for rank, err := range errs {
		if err != nil {
			t.Errorf("rank %d: %v", rank, err)
		}
	}
}

func TestStagedArgs(t *testing.T) {
	d := openDevice(t)
	host := collective.NewInMemGroup(1)[0]
	defer host.Close()
	if _, err := NewStaged(host, d, 0); !errors.Is(err, collective.ErrInvalidArgument) {
		t.Errorf("NewStaged with maxElems 0: %v", err)
	}
	st, err := NewStaged(host, d, 64)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var s cuda.Stream
	if err := st.AllReduce(ctx, 0, 8, collective.Op(0), s); !errors.Is(err, collective.ErrInvalidArgument) {
		t.Errorf("bad op: %v", err)
	}
	if err := st.ReduceScatter(ctx, 0, -2, collective.Sum, s); !errors.Is(err, collective.ErrInvalidArgument) {
		t.Errorf("negative length: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.AllGather(ctx, 0, 8, s); !errors.Is(err, collective.ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestPartitionRounds checks the staging plan for many shapes: every round's slices are the
// Partition of the round, rounds fit the buffer, and together they cover each rank's part.
func TestPartitionRounds(t *testing.T) {
	for size := 1; size <= 7; size++ {
		for n := 0; n <= 60; n++ {
			for capElems := size; capElems <= 70; capElems++ {
				next := make([]int, size)
				for r := range next {
					next[r], _ = collective.Partition(n, size, r)
				}
				for _, rd := range partitionRounds(n, size, capElems) {
					if rd.m > capElems {
						t.Fatalf("n=%d size=%d cap=%d: round of %d", n, size, capElems, rd.m)
					}
					for r, p := range rd.parts {
						lo, hi := collective.Partition(rd.m, size, r)
						if p.host != lo || p.host+p.n != hi || (p.n > 0 && p.dev != next[r]) {
							t.Fatalf("n=%d size=%d cap=%d: rank %d slice %+v, partition [%d, %d), next %d",
								n, size, capElems, r, p, lo, hi, next[r])
						}
						next[r] += p.n
					}
				}
				for r := range next {
					if _, hi := collective.Partition(n, size, r); next[r] != hi {
						t.Fatalf("n=%d size=%d cap=%d: rank %d covered up to %d of [.., %d)", n, size, capElems, r, next[r], hi)
					}
				}
			}
		}
	}
}
