package tokenizer

import "container/heap"

// Encoding: pre-tokenize, then BPE each word. A word's result depends only on its
// bytes, so an encoder keeps a cache of recent words. Encoders come from a pool in the
// Tokenizer, one per concurrent caller.

const (
	// cacheEntries bounds an encoder's word cache; it is emptied when full.
	cacheEntries = 1 << 16
	// cacheMaxWord is the longest word the cache holds, in bytes.
	cacheMaxWord = 64
	// shortWord is the longest word merged by the quadratic scan; longer words use a
	// heap, as the tokenizers library does for every word.
	shortWord = 48
)

type encoder struct {
	t     *Tokenizer
	cache map[string][]int32
	syms  []int32
	ranks []int32 // ranks[i]: rank of the pair (syms[i], syms[i+1]), or noRank
	heap  mergeHeap
	nodes []node
}

func newEncoder(t *Tokenizer) any {
	return &encoder{t: t, cache: make(map[string][]int32)}
}

// Encode returns the token ids of text. It never returns a special token.
func (t *Tokenizer) Encode(text []byte) []int32 {
	return t.EncodeTo(make([]int32, 0, len(text)/3+1), text)
}

// EncodeTo appends the token ids of text to dst and returns the extended slice.
func (t *Tokenizer) EncodeTo(dst []int32, text []byte) []int32 {
	e := t.pool.Get().(*encoder)
	if t.sp != nil {
		dst = e.encodeSentencePiece(dst, text)
	} else {
		forEachPiece(text, t.digits, func(w []byte) { dst = e.word(dst, w) })
	}
	t.pool.Put(e)
	return dst
}

// word appends the BPE ids of one pre-token.
func (e *encoder) word(dst []int32, w []byte) []int32 {
	if len(w) == 1 {
		return append(dst, e.t.byteID[w[0]])
	}
	if len(w) > cacheMaxWord {
		return e.bpe(dst, w)
	}
	if ids, ok := e.cache[string(w)]; ok {
		return append(dst, ids...)
	}
	n := len(dst)
	dst = e.bpe(dst, w)
	if len(e.cache) >= cacheEntries {
		clear(e.cache)
	}
	e.cache[string(w)] = append([]int32(nil), dst[n:]...)
	return dst
}

// bpe appends the ids of w after applying the merges. The result equals that of the
// tokenizers library: repeatedly merge the adjacent pair of lowest rank, leftmost first.
func (e *encoder) bpe(dst []int32, w []byte) []int32 {
	syms := e.syms[:0]
	for _, b := range w {
		syms = append(syms, e.t.byteID[b])
	}
	e.syms = syms
	return e.merge(dst, syms)
}

// merge appends the ids of the symbols syms after applying the merges; it may modify syms.
func (e *encoder) merge(dst []int32, syms []int32) []int32 {
	if len(syms) > shortWord {
		return e.mergeHeap(dst, syms)
	}
	ranks := e.ranks[:0]
	for i := 0; i+1 < len(syms); i++ {
		ranks = append(ranks, e.rank(syms[i], syms[i+1]))
	}
	for len(ranks) > 0 {
		best := 0
		for i, r := range ranks {
			if r < ranks[best] {
				best = i
			}
		}
		if ranks[best] == noRank {
			break
		}
		syms[best] = e.t.ranks[pairKey(syms[best], syms[best+1])].result
		syms = append(syms[:best+1], syms[best+2:]...)
		ranks = append(ranks[:best], ranks[best+1:]...)
		if best > 0 {
			ranks[best-1] = e.rank(syms[best-1], syms[best])
		}
		if best < len(ranks) {
			ranks[best] = e.rank(syms[best], syms[best+1])
		}
	}
	e.ranks = ranks
	return append(dst, syms...)
}

const noRank = int32(1<<31 - 1)

func (e *encoder) rank(left, right int32) int32 {
	if m, ok := e.t.ranks[pairKey(left, right)]; ok {
		return m.rank
	}
	return noRank
}

// node is a symbol of a long word in the doubly linked list mergeHeap merges.
type node struct {
	id         int32
	prev, next int32 // neighbour indices, -1 at the ends
	gone       bool  // merged into its left neighbour
}

// candidate is a possible merge of the pair starting at node pos.
type candidate struct {
	rank, pos, result int32
}

// mergeHeap is a min-heap of candidates by (rank, pos).
type mergeHeap []candidate

func (h mergeHeap) Len() int { return len(h) }
func (h mergeHeap) Less(i, j int) bool {
	if h[i].rank != h[j].rank {
		return h[i].rank < h[j].rank
	}
	return h[i].pos < h[j].pos
}
func (h mergeHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *mergeHeap) Push(x any)   { *h = append(*h, x.(candidate)) }
func (h *mergeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// mergeHeap is merge for long words in O(n log n): Word::merge_all of the tokenizers
// library, with stale heap entries recognised by their result id.
func (e *encoder) mergeHeap(dst []int32, syms []int32) []int32 {
	nodes := e.nodes[:0]
	for i, id := range syms {
		nodes = append(nodes, node{id: id, prev: int32(i - 1), next: int32(i + 1)})
	}
	nodes[len(nodes)-1].next = -1
	e.heap = e.heap[:0]
	for i := 0; i+1 < len(nodes); i++ {
		e.push(nodes, int32(i))
	}
	for len(e.heap) > 0 {
		c := heap.Pop(&e.heap).(candidate)
		left := &nodes[c.pos]
		if left.gone || left.next < 0 {
			continue
		}
		m, ok := e.t.ranks[pairKey(left.id, nodes[left.next].id)]
		if !ok || m.result != c.result {
			continue // the pair changed since c was pushed
		}
		right := &nodes[left.next]
		left.id = c.result
		right.gone = true
		left.next = right.next
		if right.next >= 0 {
			nodes[right.next].prev = c.pos
		}
		if left.prev >= 0 {
			e.push(nodes, left.prev)
		}
		e.push(nodes, c.pos)
	}
	for i := range nodes {
		if !nodes[i].gone {
			dst = append(dst, nodes[i].id)
		}
	}
	e.nodes = nodes
	return dst
}

// push adds the merge of node pos with its right neighbour, if there is one.
func (e *encoder) push(nodes []node, pos int32) {
	next := nodes[pos].next
	if next < 0 {
		return
	}
	if m, ok := e.t.ranks[pairKey(nodes[pos].id, nodes[next].id)]; ok {
		heap.Push(&e.heap, candidate{rank: m.rank, pos: pos, result: m.result})
	}
}
