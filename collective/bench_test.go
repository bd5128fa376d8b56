package collective_test

import (
	"context"
	"io"
	"math"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/collective/collectivetest"
)

// BenchmarkRingAllReduce measures the bus bandwidth of a 64 MiB all-reduce on a 4-member
// ring in this process, 2(n-1)/n * bytes / time (the bytes each link carries per second),
// against the raw TCP throughput of loopback measured in the same run, with the same buffer
// and segment sizes and the same bytes per link: one stream alone (tcp1), and n streams at
// once arranged as a ring (tcpring), which is what the ring's links can get when they share
// this machine's cores. The three are measured in turn in every iteration and each figure
// is the best of its iterations, so that load from other processes hits them alike; ns/op
// is the mean time of one all-reduce.
func BenchmarkRingAllReduce(b *testing.B) {
	const n, elems = 4, 16 << 20
	size := 4 * elems
	perLink := size * 2 * (n - 1) / n
	seg := collective.DefaultConfig().SegmentBytes
	tcp1, tcpRing := newRawRing(b, 1, seg), newRawRing(b, n, seg)
	rings := collectivetest.StartRing(b, n, nil)
	bufs := make([][]float32, n)
	for r := range bufs {
		bufs[r] = make([]float32, elems)
		for i := range bufs[r] {
			bufs[r][i] = float32(r + i%3)
		}
	}
	best, best1, bestRing := time.Duration(math.MaxInt64), time.Duration(math.MaxInt64), time.Duration(math.MaxInt64)
	for b.Loop() {
		start := time.Now()
		allReduce(b, rings, bufs)
		best = min(best, time.Since(start))
		b.StopTimer()
		best1 = min(best1, tcp1.run(b, perLink))
		bestRing = min(bestRing, tcpRing.run(b, perLink))
		b.StartTimer()
	}
	gbps := func(d time.Duration) float64 { return float64(perLink) / d.Seconds() / 1e9 }
	b.ReportMetric(gbps(best), "busbw_GB/s")
	b.ReportMetric(gbps(best1), "tcp1_GB/s")
	b.ReportMetric(gbps(best)/gbps(best1), "busbw/tcp1")
	b.ReportMetric(gbps(bestRing), "tcpring_GB/s")
	b.ReportMetric(gbps(best)/gbps(bestRing), "busbw/tcpring")
}

func allReduce(b *testing.B, rings []*collective.Ring, bufs [][]float32) {
	var wg sync.WaitGroup
	for r, ring := range rings {
		wg.Go(func() {
			if err := ring.AllReduce(context.Background(), bufs[r], collective.Avg); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
}

// rawRing is n loopback TCP connections, member i sending to member i+1 mod n (with n == 1,
// a single stream), each end with a 64 MiB buffer of its own.
type rawRing struct {
	seg     int
	out, in []net.Conn
	bufs    [][]byte
}

func newRawRing(b *testing.B, n, seg int) *rawRing {
	b.Helper()
	rr := &rawRing{seg: seg, out: make([]net.Conn, n), in: make([]net.Conn, n), bufs: make([][]byte, 2*n)}
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		if rr.out[i], err = net.Dial("tcp", ln.Addr().String()); err != nil {
			b.Fatal(err)
		}
		if rr.in[(i+1)%n], err = ln.Accept(); err != nil {
			b.Fatal(err)
		}
		ln.Close()
	}
	b.Cleanup(func() {
		for i := range n {
			rr.out[i].Close()
			rr.in[i].Close()
		}
	})
	for i := range rr.bufs {
		rr.bufs[i] = make([]byte, 64<<20)
		for j := 0; j < len(rr.bufs[i]); j += 4096 {
			rr.bufs[i][j] = 1 // fault the pages in before any clock starts
		}
	}
	return rr
}

// run streams perLink bytes over every connection at once and returns how long it took.
func (rr *rawRing) run(b *testing.B, perLink int) time.Duration {
	start := time.Now()
	var wg sync.WaitGroup
	for i := range rr.out {
		wg.Go(func() { pump(b, rr.out[i], rr.bufs[2*i], perLink, rr.seg, false) })
		wg.Go(func() { pump(b, rr.in[i], rr.bufs[2*i+1], perLink, rr.seg, true) })
	}
	wg.Wait()
	return time.Since(start)
}

// pump writes or reads total bytes on c, seg at a time, cycling through buf.
func pump(b *testing.B, c net.Conn, buf []byte, total, seg int, read bool) {
	for off := 0; off < total; off += seg {
		p := buf[off%len(buf):][:min(seg, total-off)]
		var err error
		if read {
			_, err = io.ReadFull(c, p)
		} else {
			_, err = c.Write(p)
		}
		if err != nil {
			b.Error(err)
			return
		}
	}
}
