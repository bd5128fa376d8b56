package checkpoint_test

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	. "github.com/herd-llm/herd/checkpoint"
)

func writeHolder(t *testing.T, loc Location, h Holder) {
	t.Helper()
	raw, _ := json.Marshal(h)
	sw := loc.Store.(Swapper)
	_, ver, err := sw.ReadVersion(context.Background(), loc.Prefix+"/"+LeaseName)
	if err != nil && !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if _, err := sw.Swap(context.Background(), loc.Prefix+"/"+LeaseName, ver, raw); err != nil {
		t.Fatal(err)
	}
}

// One writer per location: a second is refused with the holder's name; a released lease, a
// holder whose process has ended on this machine, and one unrenewed for two TTLs elsewhere
// are taken over; a live holder elsewhere is not.
func TestLeaseExcludesAndTakesOver(t *testing.T) {
	forEachStore(t, func(t *testing.T, store ObjectStore) {
		ctx := context.Background()
		loc := Location{Store: store, Prefix: "job"}
		a, err := AcquireLease(ctx, loc, ThisProcess("herd train --out runs/a"), LeaseOptions{TTL: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		_, err = AcquireLease(ctx, loc, ThisProcess("herd train --out runs/b"), LeaseOptions{})
		if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "herd train --out runs/a") || !strings.Contains(err.Error(), "pid ") {
			t.Fatalf("second writer: %v; want ErrLocked naming the holder", err)
		}
		if err := a.Check(); err != nil {
			t.Fatal(err)
		}
		if err := a.Release(ctx); err != nil {
			t.Fatal(err)
		}
		b, err := AcquireLease(ctx, loc, ThisProcess("b"), LeaseOptions{})
		if err != nil {
			t.Fatalf("after release: %v", err)
		}
		b.Release(ctx)

		dead := exec.Command("true")
		if err := dead.Run(); err != nil {
			t.Fatal(err)
		}
		gone := ThisProcess("crashed run")
		gone.PID, gone.PIDStart, gone.Renewed, gone.TTL = dead.Process.Pid, "1", time.Now(), 3600
		writeHolder(t, loc, gone)
		var log logLines
		c, err := AcquireLease(ctx, loc, ThisProcess("c"), LeaseOptions{Log: log.add})
		if err != nil || !strings.Contains(log.String(), "has ended") {
			t.Fatalf("holder gone: %v, log %q", err, log.String())
		}
		c.Release(ctx)

		far := Holder{ID: "x", Host: "elsewhere", Boot: "other", PID: 1, What: "remote run", Renewed: time.Now(), TTL: 30}
		writeHolder(t, loc, far)
		if _, err := AcquireLease(ctx, loc, ThisProcess("d"), LeaseOptions{}); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "remote run") {
			t.Fatalf("live remote holder: %v, want ErrLocked", err)
		}
		far.Renewed, far.TTL = time.Now().Add(-3*time.Second), 1
		writeHolder(t, loc, far)
		log = logLines{}
		d, err := AcquireLease(ctx, loc, ThisProcess("d"), LeaseOptions{Log: log.add})
		if err != nil || !strings.Contains(log.String(), "last renewed") {
			t.Fatalf("stale remote holder: %v, log %q", err, log.String())
		}
		d.Release(ctx)
	})
}

// A holder whose lease was taken over learns it at its next renewal and may not commit.
func TestLeaseLost(t *testing.T) {
	ctx := context.Background()
	loc := Location{Store: NewMemStore(), Prefix: "job"}
	a, err := AcquireLease(ctx, loc, ThisProcess("a"), LeaseOptions{TTL: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	writeHolder(t, loc, Holder{ID: "intruder", Host: "elsewhere", PID: 7, What: "another job", Renewed: time.Now(), TTL: 30})
	deadline := time.Now().Add(2 * time.Second)
	for a.Check() == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := a.Check(); !errors.Is(err, ErrLeaseLost) || !strings.Contains(err.Error(), "another job") {
		t.Fatalf("Check after a takeover: %v, want ErrLeaseLost naming the new holder", err)
	}
	// A saver holding that lease refuses to commit.
	s := NewSaver(loc, SaverOptions{Lease: a})
	st := State{Params: make([]float32, 10), M: make([]float32, 10), V: make([]float32, 10)}
	s.Save(ctx, SaveRequest{Step: 5, Rank: 0, World: 1, State: st, Cursor: Cursor{Step: 5}, Config: []byte(`{}`), Layout: testLayout(10)})
	if err := s.Wait(); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("commit without the lease: %v, want ErrLeaseLost", err)
	}
	if steps, _ := ListSteps(ctx, loc); len(steps) == 1 && steps[0].Committed {
		t.Error("the step was committed without the lease")
	}
}
