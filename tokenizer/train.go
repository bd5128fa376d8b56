package tokenizer

import (
	"bytes"
	"container/heap"
	"fmt"
	"io"
)

// Options tune Train. The zero value is ready to use.
type Options struct {
	// Progress, when set, is called after every merge with the number of merged
	// tokens made so far and the number to make (vocabSize - MinVocabSize). It runs
	// on the training goroutine; the package prints nothing itself.
	Progress func(done, total int)
	// SplitDigits makes every digit a pre-token of its own, as LLaMA's tokenizer does: no
	// token holds a digit and anything else, so numbers are read digit by digit.
	SplitDigits bool
}

// readChunk is how much of a training stream is pre-tokenized at a time.
const readChunk = 1 << 20

// Train learns a tokenizer of exactly vocabSize tokens from the text read from r,
// treated as one text. Training counts the pre-tokenized words once, then repeatedly
// merges the most frequent adjacent pair of tokens, counted over all words weighted by
// their frequency; ties go to the pair whose (left, right) token bytes are
// lexicographically smallest, so the result depends only on the text. See the package
// comment for the id layout.
//
// It returns an error wrapping ErrVocabSize when vocabSize is outside
// [MinVocabSize, MaxVocabSize], ErrSmallCorpus when the text runs out of pairs before
// the vocabulary is full, and ErrIO when r fails.
func Train(r io.Reader, vocabSize int, opts Options) (*Tokenizer, error) {
	if err := checkVocabSize(vocabSize); err != nil {
		return nil, err
	}
	c := newWordCounter()
	c.digits = opts.SplitDigits
	if err := c.addReader(r, readChunk); err != nil {
		return nil, err
	}
	return train(c, vocabSize, opts)
}

// TrainDocs is Train over separate documents: each is pre-tokenized on its own, so no
// word spans two documents.
func TrainDocs(docs [][]byte, vocabSize int, opts Options) (*Tokenizer, error) {
	if err := checkVocabSize(vocabSize); err != nil {
		return nil, err
	}
	c := newWordCounter()
	c.digits = opts.SplitDigits
	for _, d := range docs {
		c.add(d)
	}
	return train(c, vocabSize, opts)
}

func checkVocabSize(n int) error {
	if n < MinVocabSize || n > MaxVocabSize {
		return fmt.Errorf("%w: vocabSize %d, want %d..%d", ErrVocabSize, n, MinVocabSize, MaxVocabSize)
	}
	return nil
}

// wordCounter counts distinct pre-tokens.
type wordCounter struct {
	index  map[string]int32
	words  []string
	counts []int64
	digits bool // split digits (Options.SplitDigits)
}

func newWordCounter() *wordCounter {
	return &wordCounter{index: make(map[string]int32)}
}

func (c *wordCounter) add(text []byte) {
	forEachPiece(text, c.digits, func(w []byte) {
		if k, ok := c.index[string(w)]; ok {
			c.counts[k]++
		} else {
			c.index[string(w)] = int32(len(c.words))
			c.words = append(c.words, string(w))
			c.counts = append(c.counts, 1)
		}
	})
}

// addReader counts the words of a stream, cutting it only where safeCut says the
// pieces do not depend on the cut.
func (c *wordCounter) addReader(r io.Reader, chunk int) error {
	buf := make([]byte, chunk)
	n := 0
	for {
		m, err := io.ReadFull(r, buf[n:])
		n += m
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			c.add(buf[:n])
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: reading training text: %w", ErrIO, err)
		}
		cut := safeCut(buf[:n])
		if cut == 0 {
			buf = append(buf, make([]byte, len(buf))...) // no safe cut: read more
			continue
		}
		c.add(buf[:cut])
		n = copy(buf, buf[cut:n])
	}
}

// trainer holds the state of the merge loop.
type trainer struct {
	tokens  [][]byte
	ids     map[string]int32
	special map[string]bool
	words   [][]int32          // distinct words with two tokens or more, as token ids
	counts  []int64            // occurrences of each word
	pairs   map[uint64]int64   // pair -> occurrences over all words
	where   map[uint64][]int32 // pair -> words that may contain it (may repeat)
	heap    pairHeap
	merged  map[uint64]bool // pairs already in merges
	banned  map[uint64]bool // pairs whose merge would spell a special token
	merges  []merge
	changes map[uint64]int64 // pair count deltas of the merge being applied
}

func train(c *wordCounter, vocabSize int, opts Options) (*Tokenizer, error) {
	tr := newTrainer()
	tr.loadWords(c)
	total := vocabSize - len(tr.tokens)
	for len(tr.tokens) < vocabSize {
		if !tr.step() {
			return nil, fmt.Errorf("%w: no pairs left at vocab %d of %d",
				ErrSmallCorpus, len(tr.tokens), vocabSize)
		}
		if opts.Progress != nil {
			opts.Progress(len(tr.tokens)-MinVocabSize, total)
		}
	}
	special := make([]bool, len(tr.tokens))
	special[0], special[1], special[2] = true, true, true
	return newTokenizer(tr.tokens, special, tr.merges, 1, 2, 0, opts.SplitDigits), nil
}

func newTrainer() *trainer {
	tr := &trainer{
		ids:     make(map[string]int32),
		special: map[string]bool{PadToken: true, BOSToken: true, EOSToken: true},
		pairs:   make(map[uint64]int64),
		where:   make(map[uint64][]int32),
		merged:  make(map[uint64]bool),
		banned:  make(map[uint64]bool),
		changes: make(map[uint64]int64),
	}
	tr.tokens = append(tr.tokens, []byte(PadToken), []byte(BOSToken), []byte(EOSToken))
	for _, b := range byteOrder {
		tr.ids[string([]byte{b})] = int32(len(tr.tokens))
		tr.tokens = append(tr.tokens, []byte{b})
	}
	tr.heap.tokens = &tr.tokens
	return tr
}

// loadWords turns the counted words into id sequences and counts every pair once.
func (tr *trainer) loadWords(c *wordCounter) {
	for k, w := range c.words {
		if len(w) < 2 {
			continue
		}
		ids := make([]int32, len(w))
		for i := 0; i < len(w); i++ {
			ids[i] = tr.ids[w[i:i+1]]
		}
		wi := int32(len(tr.words))
		tr.words = append(tr.words, ids)
		tr.counts = append(tr.counts, c.counts[k])
		for i := 0; i+1 < len(ids); i++ {
			p := pairKey(ids[i], ids[i+1])
			tr.pairs[p] += c.counts[k]
			tr.addWhere(p, wi)
		}
	}
	for p, n := range tr.pairs {
		tr.heap.items = append(tr.heap.items, pairCount{pair: p, count: n})
	}
	heap.Init(&tr.heap)
}

func (tr *trainer) addWhere(p uint64, w int32) {
	ws := tr.where[p]
	if len(ws) > 0 && ws[len(ws)-1] == w {
		return
	}
	tr.where[p] = append(ws, w)
}

// step performs the next merge. It reports false when no pair is left.
func (tr *trainer) step() bool {
	for tr.heap.Len() > 0 {
		top := heap.Pop(&tr.heap).(pairCount)
		n := tr.pairs[top.pair]
		if n <= 0 || tr.banned[top.pair] {
			continue
		}
		if n != top.count {
			heap.Push(&tr.heap, pairCount{pair: top.pair, count: n}) // stale entry
			continue
		}
		left, right := int32(top.pair>>32), int32(uint32(top.pair))
		joined := append(append([]byte(nil), tr.tokens[left]...), tr.tokens[right]...)
		if tr.special[string(joined)] {
			tr.banned[top.pair] = true // the token would be named like a special token
			continue
		}
		tr.apply(top.pair, left, right, joined)
		return true
	}
	return false
}

// apply merges pair (left, right) into the token joined everywhere. As in the
// tokenizers library, a merge whose result already exists (reached earlier through
// other parts) is recorded without adding a token; a pair merged once is merged
// again without being recorded twice.
func (tr *trainer) apply(p uint64, left, right int32, joined []byte) {
	result, ok := tr.ids[string(joined)]
	if !ok {
		result = int32(len(tr.tokens))
		tr.tokens = append(tr.tokens, joined)
		tr.ids[string(joined)] = result
	}
	if !tr.merged[p] {
		tr.merged[p] = true
		tr.merges = append(tr.merges, merge{left: left, right: right, result: result})
	}
	ws := tr.where[p]
	delete(tr.where, p)
	clear(tr.changes)
	for _, w := range ws {
		tr.mergeWord(w, left, right, result) // a word listed twice is a no-op the second time
	}
	for q, d := range tr.changes {
		tr.pairs[q] += d
		if d > 0 {
			heap.Push(&tr.heap, pairCount{pair: q, count: tr.pairs[q]})
		}
	}
}

// mergeWord rewrites word w in place and records the pair count changes, weighted
// by the word's count, in tr.changes.
func (tr *trainer) mergeWord(w int32, a, b, ab int32) {
	word := tr.words[w]
	first := -1
	for i := 0; i+1 < len(word); i++ {
		if word[i] == a && word[i+1] == b {
			first = i
			break
		}
	}
	if first < 0 {
		return // a stale or repeated entry of tr.where
	}
	n := tr.counts[w]
	out := word[:first]
	for i := first; i < len(word); {
		if i+1 < len(word) && word[i] == a && word[i+1] == b {
			if len(out) > 0 {
				prev := out[len(out)-1]
				tr.changes[pairKey(prev, a)] -= n
				tr.changes[pairKey(prev, ab)] += n
				tr.addWhere(pairKey(prev, ab), w)
			}
			if i+2 < len(word) {
				next := word[i+2]
				tr.changes[pairKey(b, next)] -= n
				tr.changes[pairKey(ab, next)] += n
				tr.addWhere(pairKey(ab, next), w)
			}
			tr.changes[pairKey(a, b)] -= n
			out = append(out, ab)
			i += 2
			continue
		}
		out = append(out, word[i])
		i++
	}
	tr.words[w] = out
}

// pairCount is a heap entry; entries go stale as counts change and are checked
// against trainer.pairs when popped.
type pairCount struct {
	pair  uint64
	count int64
}

// pairHeap is a max-heap by count, ties broken by the smaller (left, right) bytes.
type pairHeap struct {
	items  []pairCount
	tokens *[][]byte
}

func (h *pairHeap) Len() int { return len(h.items) }
func (h *pairHeap) Less(i, j int) bool {
	a, b := h.items[i], h.items[j]
	if a.count != b.count {
		return a.count > b.count
	}
	toks := *h.tokens
	if c := bytes.Compare(toks[a.pair>>32], toks[b.pair>>32]); c != 0 {
		return c < 0
	}
	return bytes.Compare(toks[uint32(a.pair)], toks[uint32(b.pair)]) < 0
}
func (h *pairHeap) Swap(i, j int) { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *pairHeap) Push(x any)    { h.items = append(h.items, x.(pairCount)) }
func (h *pairHeap) Pop() any {
	x := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return x
}
