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
