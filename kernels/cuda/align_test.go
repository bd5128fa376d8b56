package cuda

import "testing"

func TestAlignment(t *testing.T) {
	for _, c := range []struct {
		p    uint64
		want int
	}{
		{0, 256}, {1, 1}, {2, 2}, {6, 2}, {65664, 128}, {0x7f0000000000, 256}, {0x7f0000000000 + 2*32832, 128},
		{0x7f0000000000 + 4, 4}, {0x7f0000000000 + 24, 8}, {0x7f0000000000 + 512 + 16, 16},
	} {
		if got := alignment(c.p); got != c.want {
			t.Errorf("alignment(%#x) = %d, want %d", c.p, got, c.want)
		}
	}
}
