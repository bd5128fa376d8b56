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

// ringChild runs one ring member: it listens on the socket inherited as fd 3, runs at most
// childRounds large all-reduces and reports on stdout, one line per event:
//
//	READY | BEGIN k | END k | FAIL rank=R addr=A peer_failed=B deadline=B err="..." | DONE
func ringChild() int {
	rank, _ := strconv.Atoi(os.Getenv(childEnv + "_RANK"))
	elems, _ := strconv.Atoi(os.Getenv(childEnv + "_ELEMS"))
	peers := strings.Split(os.Getenv(childEnv+"_PEERS"), ",")
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
	return childRounds(r, make([]float32, elems))
}

func childRounds(r *collective.Ring, buf []float32) int {
	for i := range buf {
		buf[i] = float32(r.Rank() + i%5)
	}
	for k := range 200 {
		fmt.Println("BEGIN", k)
		ctx, cancel := context.WithTimeout(context.Background(), childOpTimeout)
		err := r.AllReduce(ctx, buf, collective.Avg)
		cancel()
		if err != nil {
			var pe collective.PeerError
			if p := (*collective.PeerError)(nil); errors.As(err, &p) {
				pe = *p
			}
			fmt.Printf("FAIL rank=%d addr=%s peer_failed=%t deadline=%t err=%q\n", pe.Rank, pe.Addr,
				errors.Is(err, collective.ErrPeerFailed), errors.Is(err, collective.ErrDeadline), err.Error())
			return 0
		}
		fmt.Println("END", k)
	}
	fmt.Println("DONE")
	return 3
}
