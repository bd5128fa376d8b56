package shard

import "math/bits"

// feistelRounds is the number of Feistel rounds. Four make a strong
// pseudo-random permutation (Luby-Rackoff); two more cost little.
const feistelRounds = 6

// permutation is a seeded pseudo-random bijection of [0, n) that computes
// one element without materializing the others: a balanced Feistel network
// over [0, 4^h), the smallest such range holding n, with cycle walking: the
// network is applied again until the value falls below n. Each step stays in
// the cycle of the start value, which lies below n, so the walk ends, and it
// ends after fewer than 4 steps on average since 4^h < 4n.
type permutation struct {
	n    uint64
	half uint // bits per Feistel half, h
	mask uint64
	keys [feistelRounds]uint64
}

func newPermutation(n uint64, key uint64) permutation {
	h := uint(bits.Len64(n-1)+1) / 2
	p := permutation{n: n, half: h, mask: 1<<h - 1}
	for r := range p.keys {
		key = mix64(key + 0x9e3779b97f4a7c15)
		p.keys[r] = key
	}
	return p
}

// at returns the image of i, which must be below n.
func (p *permutation) at(i uint64) uint64 {
	if p.n <= 1 {
		return 0
	}
	x := i
	for {
		x = p.feistel(x)
		if x < p.n {
			return x
		}
	}
}

// feistel is one pass of the network over [0, 4^h).
func (p *permutation) feistel(x uint64) uint64 {
	l, r := x>>p.half, x&p.mask
	for _, k := range p.keys {
		l, r = r, l^(mix64(r^k)&p.mask)
	}
	return l<<p.half | r
}

// mix64 is the splitmix64 finalizer: a bijective 64-bit mixing function.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Domain constants keep the keys of block and source permutations apart.
const (
	domainBlock  = 0x626c6f636b2d6b65 // "block-ke"
	domainSource = 0x736f757263652d6b // "source-k"
)

// blockKey keys the permutation that places sources in block b.
func blockKey(seed uint64, b int64) uint64 {
	return mix64(mix64(seed^domainBlock) + uint64(b))
}

// sourceKey keys the permutation of source s's sequences in epoch e.
func sourceKey(seed uint64, s int, e int64) uint64 {
	return mix64(mix64(mix64(seed^domainSource)+uint64(s)) + uint64(e))
}
