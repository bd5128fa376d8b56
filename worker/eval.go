package worker

import (
	"math"

	"github.com/herd-llm/herd/model"
	"github.com/herd-llm/herd/tokenizer"
)

// EvalSet is a fixed list of sequences for validation: inputs and targets of Seq tokens each
// (targets of -1 pad short sequences), and the byte length of every target token, so losses
// convert to bits per byte independently of the tokenizer.
type EvalSet struct {
	Seq     int
	Inputs  [][]int32
	Targets [][]int32
	Bytes   int64     // bytes the targets decode to
	Windows [][]int32 // the token windows the sequences came from
}

// NewEvalSet cuts streams into non-overlapping windows of seq+1 tokens (stride seq), taking at
// most maxSeqs windows from each stream; a stream shorter than one window gives one padded
// sequence.
func NewEvalSet(streams [][]int32, seq, maxSeqs int, tok *tokenizer.Tokenizer) *EvalSet {
	es := &EvalSet{Seq: seq}
	for _, s := range streams {
		for start, n := 0, 0; start+1 < len(s) && n < maxSeqs; start, n = start+seq, n+1 {
			w := s[start:min(start+seq+1, len(s))]
			in, tg := make([]int32, seq), make([]int32, seq)
			for i := range tg {
				tg[i] = -1
			}
			copy(in, w[:len(w)-1])
			copy(tg, w[1:])
			for _, id := range w[1:] {
				if !tok.IsSpecial(id) { // document separators carry loss but no bytes
					es.Bytes += int64(len(tok.TokenBytes(id)))
				}
			}
			es.Windows = append(es.Windows, w)
			es.Inputs = append(es.Inputs, in)
			es.Targets = append(es.Targets, tg)
		}
	}
	return es
}

// EvalResult is the mean loss per target token and the bits per byte on an EvalSet.
type EvalResult struct {
	Loss        float64 `json:"loss"`
	BitsPerByte float64 `json:"bits_per_byte"`
	Tokens      int64   `json:"tokens"`
	Bytes       int64   `json:"bytes"`
}

// TrigramBits scores the bytes of the set's targets under a byte trigram model, each byte
// predicted from the bytes before it within its window.
func (es *EvalSet) TrigramBits(m *Trigram, tok *tokenizer.Tokenizer) float64 {
	var bits float64
	for _, w := range es.Windows {
		first := tok.Decode(w[:1])
		text := tok.Decode(w)
		bits += m.Score(text, len(first))
	}
	return bits
}

// Evaluate runs the model over the set in batches of b sequences.
func Evaluate(m *model.Model, es *EvalSet, b int) (EvalResult, error) {
	var nats float64
	var tokens int64
	for i := 0; i < len(es.Inputs); i += b {
		j := min(i+b, len(es.Inputs))
		var in, tg []int32
		valid := 0
		for k := i; k < j; k++ {
			in = append(in, es.Inputs[k]...)
			tg = append(tg, es.Targets[k]...)
			for _, t := range es.Targets[k] {
				if t >= 0 {
					valid++
				}
			}
		}
		loss, err := m.Forward(in, tg, j-i, es.Seq)
		if err != nil {
			return EvalResult{}, err
		}
		nats += loss * float64(valid)
		tokens += int64(valid)
	}
	r := EvalResult{Tokens: tokens, Bytes: es.Bytes}
	if tokens > 0 {
		r.Loss = nats / float64(tokens)
	}
	if es.Bytes > 0 {
		r.BitsPerByte = nats / math.Ln2 / float64(es.Bytes)
	}
	return r, nil
}
