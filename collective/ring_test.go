package collective_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/collective/collectivetest"
)

func TestRing(t *testing.T) {
	collectivetest.RunAll(t, collectivetest.NewRingGroup)
}

// TestRingSmallSegments runs the suite's world of 3 with segments of 4 KiB, so even modest
// buffers travel as many frames in flight per step.
func TestRingSmallSegments(t *testing.T) {
	rings := collectivetest.StartRing(t, 3, func(c *collective.Config) { c.SegmentBytes = 4 << 10 })
	const size = 100003
	bufs := make([][]float32, len(rings))
	errs := make([]error, len(rings))
	done := make(chan int)
	for r, ring := range rings {
		bufs[r] = make([]float32, size)
		for i := range bufs[r] {
			bufs[r][i] = float32(r + i%7)
		}
		go func() { errs[r] = ring.AllReduce(context.Background(), bufs[r], collective.Sum); done <- r }()
	}
	for range rings {
		<-done
	}
	for r := range rings {
		if errs[r] != nil {
			t.Fatal(errs[r])
		}
		for i, v := range bufs[r] {
			if want := float32(3 + 3*(i%7)); v != want {
				t.Fatalf("rank %d element %d = %v, want %v", r, i, v, want)
			}
		}
	}
}

func TestConfigValidate(t *testing.T) {
	good := collective.DefaultConfig()
	good.Peers, good.JobID = []string{"127.0.0.1:1", "127.0.0.1:2"}, "job"
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	zeros := good
	zeros.HeartbeatInterval, zeros.HeartbeatTimeout = 0, 0
	if err := zeros.Validate(); err != nil {
		t.Fatalf("heartbeat settings left zero (the defaults): %v", err)
	}
	bad := map[string]func(c *collective.Config){
		"no peers":                    func(c *collective.Config) { c.Peers = nil },
		"rank":                        func(c *collective.Config) { c.Rank = 2 },
		"negative rank":               func(c *collective.Config) { c.Rank = -1 },
		"job":                         func(c *collective.Config) { c.JobID = "" },
		"dial timeout":                func(c *collective.Config) { c.DialTimeout = 0 },
		"segment":                     func(c *collective.Config) { c.SegmentBytes = 1000 },
		"empty peer":                  func(c *collective.Config) { c.Peers = []string{"127.0.0.1:1", ""} },
		"heartbeat interval":          func(c *collective.Config) { c.HeartbeatInterval = time.Millisecond },
		"negative heartbeat interval": func(c *collective.Config) { c.HeartbeatInterval = -time.Second },
		"negative heartbeat timeout":  func(c *collective.Config) { c.HeartbeatTimeout = -time.Second },
		"heartbeat timeout": func(c *collective.Config) {
			c.HeartbeatInterval, c.HeartbeatTimeout = time.Second, 1500*time.Millisecond
		},
		"heartbeat timeout below the default interval": func(c *collective.Config) {
			c.HeartbeatInterval, c.HeartbeatTimeout = 0, time.Second
		},
	}
	field := map[string]string{"heartbeat interval": "HeartbeatInterval", "negative heartbeat interval": "HeartbeatInterval",
		"negative heartbeat timeout": "HeartbeatTimeout", "heartbeat timeout": "HeartbeatTimeout",
		"heartbeat timeout below the default interval": "HeartbeatTimeout"}
	for name, edit := range bad {
		c := good
		edit(&c)
		err := c.Validate()
		if !errors.Is(err, collective.ErrInvalidConfig) {
			t.Errorf("%s: %v, want ErrInvalidConfig", name, err)
		} else if f := field[name]; f != "" && !strings.Contains(err.Error(), f) {
			t.Errorf("%s: %q does not name %s", name, err, f)
		}
		if _, err := collective.Start(context.Background(), c); !errors.Is(err, collective.ErrInvalidConfig) {
			t.Errorf("Start with %s: %v, want ErrInvalidConfig", name, err)
		}
	}
}

// SentBytes counts what each collective puts on the wire: an all-reduce of n elements sends
// (W-1) chunks in its reduce-scatter and (W-1) in its all-gather, 2(W-1)/W * n elements in
// all; a reduce-scatter or an all-gather alone half of that.
func TestRingSentBytes(t *testing.T) {
	const w, n = 4, 10007
	rings := collectivetest.StartRing(t, w, nil)
	run := func(op func(r *collective.Ring, buf []float32) error) []int64 {
		before := make([]int64, w)
		errs := make(chan error, w)
		for r, ring := range rings {
			before[r] = ring.SentBytes()
			go func() { errs <- op(ring, make([]float32, n)) }()
		}
		for range rings {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		out := make([]int64, w)
		for r, ring := range rings {
			out[r] = ring.SentBytes() - before[r]
		}
		return out
	}
	ctx := context.Background()
	all := run(func(r *collective.Ring, b []float32) error { return r.AllReduce(ctx, b, collective.Sum) })
	rs := run(func(r *collective.Ring, b []float32) error { return r.ReduceScatter(ctx, b, collective.Sum) })
	ag := run(func(r *collective.Ring, b []float32) error { return r.AllGather(ctx, b) })
	var total [3]int64
	for r := 0; r < w; r++ {
		total[0] += all[r]
		total[1] += rs[r]
		total[2] += ag[r]
		if all[r] != rs[r]+ag[r] {
			t.Errorf("rank %d: all-reduce sent %d bytes, reduce-scatter %d + all-gather %d", r, all[r], rs[r], ag[r])
		}
	}
	// Over the whole ring each pass sends every chunk W-1 times.
	if want := int64(4 * (w - 1) * n); total[1] != want || total[2] != want || total[0] != 2*want {
		t.Errorf("bytes sent by all ranks: all-reduce %d, reduce-scatter %d, all-gather %d; want %d, %d, %d", total[0], total[1], total[2], 2*want, want, want)
	}
}
