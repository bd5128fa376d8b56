package cuda

import (
	"errors"
	"testing"
)

func TestSizeClass(t *testing.T) {
	cases := []struct{ n, want int64 }{
		{0, 256}, {1, 256}, {256, 256}, {257, 512}, {1000, 1024}, {4096, 4096},
		{1<<20 - 1, 1 << 20}, {1 << 20, 1 << 20}, {1<<20 + 1, 2 << 20},
		{2 << 20, 2 << 20}, {2<<20 + 1, 4 << 20}, {5 << 20, 6 << 20}, {7<<30 + 3, 7<<30 + 2<<20},
	}
	for _, c := range cases {
		got, err := sizeClass(c.n)
		if err != nil || got != c.want {
			t.Errorf("sizeClass(%d) = %d, %v; want %d", c.n, got, err, c.want)
		}
	}
	for _, n := range []int64{-1, 1 << 51} {
		if _, err := sizeClass(n); !errors.Is(err, ErrBadSize) {
			t.Errorf("sizeClass(%d) error = %v, want ErrBadSize", n, err)
		}
	}
}

// Every class is at least the request, at most twice it (small) or largeStep above it (large).
func TestSizeClassBounds(t *testing.T) {
	for n := int64(1); n < 16<<20; n = n*5/4 + 1 {
		c, err := sizeClass(n)
		if err != nil {
			t.Fatal(err)
		}
		if c < n || (n > minBlock && n <= smallLimit && c >= 2*n) || (n > smallLimit && c-n >= largeStep) {
			t.Fatalf("sizeClass(%d) = %d out of bounds", n, c)
		}
	}
}
