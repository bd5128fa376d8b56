package collective_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/herd-llm/herd/collective"
)

// childEnv marks a run of this test binary as a ring member started by a test in this
// package (see fault_test.go) rather than a test run.
const childEnv = "HERD_COLLECTIVE_RING_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(ringChild())
	}
	os.Exit(m.Run())
}

// childOpTimeout is the deadline of each all-reduce in a child: the time within which a
// survivor must report a dead peer.
const childOpTimeout = 5 * time.Second

// childOptions are the settings of a child beyond its rank, peers and buffer length, each
// from an environment variable (childEnv + the suffix named), unset meaning the default.
type childOptions struct {
	// rounds is the number of all-reduces before DONE (_ROUNDS, default 200).
	rounds int
	// opTimeout, when set (_OPTIMEOUT), becomes Config.OpTimeout and the calls carry no
	// deadline of their own; otherwise each call's ctx expires after childOpTimeout.
	opTimeout time.Duration
	// pause is the sleep between two all-reduces (_PAUSE).
	pause time.Duration
}

func childOptionsFromEnv() (childOptions, error) {
	o := childOptions{rounds: 200}
	if v := os.Getenv(childEnv + "_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return o, fmt.Errorf("%s_ROUNDS=%q: %w", childEnv, v, err)
		}
		o.rounds = n
	}
	for suffix, d := range map[string]*time.Duration{"_OPTIMEOUT": &o.opTimeout, "_PAUSE": &o.pause} {
		if v := os.Getenv(childEnv + suffix); v != "" {
			var err error
			if *d, err = time.ParseDuration(v); err != nil {
				return o, fmt.Errorf("%s%s=%q: %w", childEnv, suffix, v, err)
			}
		}
	}
	return o, nil
}

// ringChild runs one ring member: it listens on the socket inherited as fd 3, runs
// all-reduces (see childOptions) and reports on stdout, one line per event:
//
//	READY | BEGIN k | END k | FAIL rank=R addr=A peer_failed=B deadline=B err="..." | DONE
//
// A FAIL line is followed by what Ring.Err received, in the same form:
//
//	RINGERR rank=R addr=A peer_failed=B deadline=B err="..."
func ringChild() int {
	rank, _ := strconv.Atoi(os.Getenv(childEnv + "_RANK"))
	elems, _ := strconv.Atoi(os.Getenv(childEnv + "_ELEMS"))
	peers := strings.Split(os.Getenv(childEnv+"_PEERS"), ",")
	opts, err := childOptionsFromEnv()
	if err != nil {
		fmt.Println("ERROR options:", err)
		return 2
	}
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		fmt.Println("ERROR listener:", err)
		return 2
	}
	log := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
		zapcore.Lock(os.Stderr), zapcore.WarnLevel))
	cfg := collective.DefaultConfig()
	cfg.Rank, cfg.Peers, cfg.Listener = rank, peers, ln
	cfg.JobID, cfg.Secret, cfg.Logger = "fault-test", "fault-secret", log
	cfg.DialTimeout = 20 * time.Second
	cfg.OpTimeout = opts.opTimeout
	r, err := collective.Start(context.Background(), cfg)
	if err != nil {
		fmt.Println("ERROR start:", err)
		return 2
	}
	defer r.Close()
	select {
	case <-r.Ready():
	case err := <-r.Err():
		fmt.Println("ERROR bootstrap:", err)
		return 2
	}
	fmt.Println("READY")
	return childRounds(r, make([]float32, elems), opts)
}

func childRounds(r *collective.Ring, buf []float32, opts childOptions) int {
	for i := range buf {
		buf[i] = float32(r.Rank() + i%5)
	}
	for k := range opts.rounds {
		fmt.Println("BEGIN", k)
		ctx, cancel := context.Background(), func() {}
		if opts.opTimeout == 0 {
			ctx, cancel = context.WithTimeout(ctx, childOpTimeout)
		}
		err := r.AllReduce(ctx, buf, collective.Avg)
		cancel()
		if err != nil {
			fmt.Println("FAIL", describeFailure(err))
			select {
			case err := <-r.Err():
				fmt.Println("RINGERR", describeFailure(err))
			case <-time.After(5 * time.Second):
				fmt.Println("RINGERR none within 5s")
			}
			return 0
		}
		fmt.Println("END", k)
		time.Sleep(opts.pause)
	}
	fmt.Println("DONE")
	return 3
}

// describeFailure formats a failure for the FAIL and RINGERR lines.
func describeFailure(err error) string {
	var pe collective.PeerError
	if p := (*collective.PeerError)(nil); errors.As(err, &p) {
		pe = *p
	}
	return fmt.Sprintf("rank=%d addr=%s peer_failed=%t deadline=%t err=%q", pe.Rank, pe.Addr,
		errors.Is(err, collective.ErrPeerFailed), errors.Is(err, collective.ErrDeadline), err.Error())
}
