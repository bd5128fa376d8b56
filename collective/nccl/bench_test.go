//go:build cuda

package nccl

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/collective/collectivetest"
)

// benchElems is 64 MiB of float32.
const benchElems = 16 << 20

// reportBandwidth reports the algorithm bandwidth (bytes / time per all-reduce) and the bus
// bandwidth of nccl-tests, algbw * 2(size-1)/size: the traffic through each rank's link. At
// size 1 the bus bandwidth is 0 by definition.
func reportBandwidth(b *testing.B, size int, elapsed time.Duration) {
	per := elapsed.Seconds() / float64(b.N)
	alg := float64(4*benchElems) / per / 1e9
	b.ReportMetric(alg, "alg-GB/s")
	b.ReportMetric(alg*2*float64(size-1)/float64(size), "bus-GB/s")
}

// BenchmarkAllReduce all-reduces 64 MiB of float32 through NCCL at world size 1 and through
// Staged at world size 2 (two ranks of a TCP ring on 127.0.0.1 sharing GPU 0).
func BenchmarkAllReduce(b *testing.B) {
	b.Run("nccl/size=1/64MiB", func(b *testing.B) {
		d := openDevice(b)
		needNCCL(b)
		ctx := context.Background()
		c, err := Init(ctx, collective.NewInMemGroup(1)[0], d)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		s, err := d.NewStream()
		if err != nil {
			b.Fatal(err)
		}
		defer d.DestroyStream(s)
		buf := deviceFloats(b, d, benchElems, nil)
		if err := errors.Join(d.Memset(buf, 0, 4*benchElems), d.Synchronize()); err != nil {
			b.Fatal(err)
		}
		if err := c.AllReduce(ctx, buf, benchElems, collective.Sum, s); err != nil { // warm-up
			b.Fatal(err)
		}
		if err := d.SyncStream(s); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(4 * benchElems)
		b.ResetTimer()
		start := time.Now()
		for range b.N {
			if err := c.AllReduce(ctx, buf, benchElems, collective.Sum, s); err != nil {
				b.Fatal(err)
			}
		}
		if err := d.SyncStream(s); err != nil {
			b.Fatal(err)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		reportBandwidth(b, 1, elapsed)
	})

	b.Run("staged/size=2/64MiB", func(b *testing.B) {
		d := openDevice(b)
		rings := collectivetest.StartRing(b, 2, nil)
		ranks := make([]*stagedRank, len(rings))
		for i, r := range rings {
			sr, err := newStagedRank(d, r, benchElems, benchElems)
			if err != nil {
				b.Fatal(err)
			}
			defer sr.close()
			if err := errors.Join(d.Memset(sr.raw, 0, 4*(benchElems+2*guard)), d.Synchronize()); err != nil {
				b.Fatal(err)
			}
			ranks[i] = sr
		}
		ctx := context.Background()
		run := func(iters int) {
			var wg sync.WaitGroup
			for _, r := range ranks {
				wg.Go(func() {
					for range iters {
						if err := r.st.AllReduce(ctx, r.buf, benchElems, collective.Sum, r.s); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
		}
		run(1) // warm-up
		b.SetBytes(4 * benchElems)
		b.ResetTimer()
		start := time.Now()
		run(b.N)
		elapsed := time.Since(start)
		b.StopTimer()
		reportBandwidth(b, 2, elapsed)
	})
}
