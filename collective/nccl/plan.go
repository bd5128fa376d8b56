//go:build cuda

package nccl

import "github.com/herd-llm/herd/collective"

// part is one rank's slice of one round of a staged ReduceScatter or AllGather: elements
// [dev, dev+n) of the device buffer sit at [host, host+n) of the pinned buffer.
type part struct {
	dev, host, n int
}

// round is one host collective of a staged ReduceScatter or AllGather: parts[r] is rank r's
// slice, and the host collective runs on the first m elements of the pinned buffer.
type round struct {
	parts []part
	m     int
}

// partitionRounds splits a ReduceScatter or AllGather of n elements among size ranks into
// host collectives of at most capElems elements each (capElems >= size), such that in every
// round, rank r's slice of the pinned buffer is exactly collective.Partition(m, size, r) of that
// round's m elements. The host collective then reduces or gathers the right elements, and the
// rounds together cover every rank's part of the whole buffer, collective.Partition(n, size, r).
//
// When n fits, there is one round whose pinned layout is the device layout. Otherwise each round
// takes up to c = capElems/size elements from the front of what is left of every rank's part.
// Rank parts have lengths q+1 (the first n%size ranks) and q, so in a round j the remaining
// lengths are t+1 and t with t = q-j*c: either all at least c (every slice c long, an even
// split), or at most c (slices t+1 and t in Partition's pattern). Either way the slices form the
// Partition of their sum.
func partitionRounds(n, size, capElems int) []round {
	if n == 0 {
		return nil
	}
	if n <= capElems {
		parts := make([]part, size)
		for r := range parts {
			lo, hi := collective.Partition(n, size, r)
			parts[r] = part{dev: lo, host: lo, n: hi - lo}
		}
		return []round{{parts: parts, m: n}}
	}
	c := capElems / size
	lo0, hi0 := collective.Partition(n, size, 0)
	longest := hi0 - lo0
	var rounds []round
	for done := 0; done < longest; done += c {
		parts := make([]part, size)
		m := 0
		for r := range parts {
			lo, hi := collective.Partition(n, size, r)
			k := min(c, max(0, hi-lo-done))
			parts[r] = part{dev: lo + done, host: m, n: k}
			m += k
		}
		rounds = append(rounds, round{parts: parts, m: m})
	}
	return rounds
}

// span is a contiguous copy of n elements between device offset dev and host offset host.
type span = part

// coalesce merges parts that are adjacent both on the device and in the pinned buffer, so a
// round whose layout matches the device's costs one copy; empty parts are dropped.
func coalesce(parts []part) []span {
	var out []span
	for _, p := range parts {
		if p.n == 0 {
			continue
		}
		if k := len(out) - 1; k >= 0 && out[k].dev+out[k].n == p.dev && out[k].host+out[k].n == p.host {
			out[k].n += p.n
			continue
		}
		out = append(out, p)
	}
	return out
}
