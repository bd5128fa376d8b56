package worker

import (
	"errors"
	"strings"
	"testing"

	"github.com/herd-llm/herd/model"
)

// The ranks' chunks cover every element of the layout exactly once, each rank's groups
// follow the specs' weight-decay flags, and a world that would leave a rank an empty chunk of
// some unit is refused with the reason.
func TestZeroPlan(t *testing.T) {
	c := model.Default()
	l := model.NewLayout(c)
	decay := make([]bool, l.Size)
	for _, s := range l.Specs {
		for i := s.Offset; i < s.Offset+s.Size; i++ {
			decay[i] = s.Decay
		}
	}
	for _, w := range []int{1, 2, 3, 7} {
		owner := make([]int, l.Size)
		for r := range w {
			p, err := newZeroPlan(l, 2, w, r)
			if err != nil {
				t.Fatal(err)
			}
			size := 0
			for _, u := range p.units {
				for i := u.ownOff; i < u.ownOff+u.ownN; i++ {
					owner[i]++
				}
				size += u.ownN
			}
			if size != p.size {
				t.Errorf("world %d rank %d: chunks of %d elements, shard of %d", w, r, size, p.size)
			}
			grouped := 0
			for _, g := range p.groups {
				for i := g.off; i < g.off+g.n; i++ {
					if decay[i] != g.decay {
						t.Fatalf("world %d rank %d: element %d in a group with decay %v", w, r, i, g.decay)
					}
				}
				grouped += g.n
			}
			if grouped != p.size {
				t.Errorf("world %d rank %d: groups hold %d elements of %d", w, r, grouped, p.size)
			}
		}
		for i, n := range owner {
			if n != 1 {
				t.Fatalf("world %d: element %d owned by %d ranks", w, i, n)
			}
		}
	}
	smallest := l.Size
	for _, u := range l.Units() {
		smallest = min(smallest, u.Size)
	}
	_, err := newZeroPlan(l, 3, smallest+1, 0)
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "empty range") {
		t.Errorf("world %d over a unit of %d elements: %v", smallest+1, smallest, err)
	}
}
