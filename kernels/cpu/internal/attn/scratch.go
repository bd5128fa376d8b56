package attn

import (
	"sync"
	"unsafe"
)

// scratch is one worker's memory: O(tileQ*tileK + tileQ*D) elements, whatever T is.
type scratch[T Float] struct {
	s, ds []T // tileQ x tileK (row stride tileK): scores, then probabilities; dS
	m, l  []T // tileQ running max and softmax denominator of the forward pass
	acc   []T // tileQ x D output accumulator of the forward pass, sized on demand
}

// scratchPools holds idle scratch by element size: [0] for 4-byte T, [1] for 8-byte T.
var scratchPools [2]sync.Pool

func poolFor[T Float]() *sync.Pool {
	var z T
	return &scratchPools[unsafe.Sizeof(z)/8]
}

// getScratch takes a scratch from the pool or makes one.
func getScratch[T Float]() *scratch[T] {
	if s, ok := poolFor[T]().Get().(*scratch[T]); ok {
		return s
	}
	// A miss, or another type with the same size (a named float type): make a fresh one.
	return &scratch[T]{
		s:  make([]T, tileQ*tileK),
		ds: make([]T, tileQ*tileK),
		m:  make([]T, tileQ),
		l:  make([]T, tileQ),
	}
}

func putScratch[T Float](s *scratch[T]) { poolFor[T]().Put(s) }

// accumulator returns the tileQ x D output accumulator, growing it when D needs more room.
func (s *scratch[T]) accumulator(D int) []T {
	if cap(s.acc) < tileQ*D {
		s.acc = make([]T, tileQ*D)
	}
	return s.acc[:tileQ*D]
}
