package collective_test

import (
	"context"
	"errors"
	"testing"

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
	bad := map[string]func(c *collective.Config){
		"no peers":      func(c *collective.Config) { c.Peers = nil },
		"rank":          func(c *collective.Config) { c.Rank = 2 },
		"negative rank": func(c *collective.Config) { c.Rank = -1 },
		"job":           func(c *collective.Config) { c.JobID = "" },
		"dial timeout":  func(c *collective.Config) { c.DialTimeout = 0 },
		"segment":       func(c *collective.Config) { c.SegmentBytes = 1000 },
		"empty peer":    func(c *collective.Config) { c.Peers = []string{"127.0.0.1:1", ""} },
	}
	for name, edit := range bad {
		c := good
		edit(&c)
		if err := c.Validate(); !errors.Is(err, collective.ErrInvalidConfig) {
			t.Errorf("%s: %v, want ErrInvalidConfig", name, err)
		}
		if _, err := collective.Start(context.Background(), c); !errors.Is(err, collective.ErrInvalidConfig) {
			t.Errorf("Start with %s: %v, want ErrInvalidConfig", name, err)
		}
	}
}
