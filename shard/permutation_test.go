package shard

import "testing"

func TestPermutationBijection(t *testing.T) {
	for _, n := range []uint64{1, 2, 3, 4, 5, 7, 8, 100, 4095, 4096, 4097, 10007, 1<<16 + 3} {
		for key := range uint64(3) {
			p := newPermutation(n, key*0x1234567)
			seen := make([]bool, n)
			for i := range n {
				v := p.at(i)
				if v >= n {
					t.Fatalf("n=%d key=%d: at(%d) = %d, out of range", n, key, i, v)
				}
				if seen[v] {
					t.Fatalf("n=%d key=%d: %d appears twice", n, key, v)
				}
				seen[v] = true
			}
		}
	}
}

func TestPermutationLargeDomain(t *testing.T) {
	const n = 1<<40 + 12345
	p := newPermutation(n, 99)
	seen := map[uint64]bool{}
	for i := uint64(0); i < 20000; i++ {
		v := p.at(i * 54975581) // spread over the domain
		if v >= n || seen[v] {
			t.Fatalf("at(%d) = %d: out of range or repeated", i*54975581, v)
		}
		seen[v] = true
	}
}

func TestPermutationShuffles(t *testing.T) {
	// A permutation keyed differently must differ, and must move most elements.
	const n = 1000
	a, b := newPermutation(n, 1), newPermutation(n, 2)
	same, fixed := 0, 0
	for i := range uint64(n) {
		if a.at(i) == b.at(i) {
			same++
		}
		if a.at(i) == i {
			fixed++
		}
	}
	if same > 20 || fixed > 20 {
		t.Errorf("%d of %d equal across keys, %d fixed points; want few (about 1 expected)", same, n, fixed)
	}
}
