package collective_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/collective/collectivetest"
)

// A rank that closes right after its last call must not fail that call on a neighbour that is
// still receiving the call's last data: the close notice reaches the neighbour's right side
// while the data is still travelling on its left side. Repeated to catch the race.
func TestCloseAfterLastCallLetsPeersFinish(t *testing.T) {
	for iter := 0; iter < 30; iter++ {
		for _, n := range []int{2, 3} {
			rings := collectivetest.StartRing(t, n, nil)
			var wg sync.WaitGroup
			errs := make([]error, n)
			for r, ring := range rings {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					buf := make([]float32, 2*n)
					buf[2*r] = float32(r + 1)
					errs[r] = ring.AllGather(ctx, buf)
					if errs[r] == nil {
						for i := 0; i < n; i++ {
							if buf[2*i] != float32(i+1) {
								errs[r] = collective.ErrMismatch
							}
						}
					}
					ring.Close() // at once, as a finished trainer does
				}()
			}
			wg.Wait()
			for r, err := range errs {
				if err != nil {
					t.Fatalf("iteration %d, %d ranks: rank %d: %v", iter, n, r, err)
				}
			}
		}
	}
}
