package tokenizer

import (
	"errors"
	"strings"
)

// Sentinel errors. Every error the package returns wraps one of these, so callers
// test with errors.Is.
var (
	// ErrVocabSize reports a requested vocabulary size outside [MinVocabSize, MaxVocabSize].
	ErrVocabSize = errors.New("tokenizer: vocab size out of range")
	// ErrSmallCorpus reports that training ran out of pairs to merge before the
	// vocabulary reached the requested size.
	ErrSmallCorpus = errors.New("tokenizer: corpus too small for vocab size")
	// ErrFormat reports a tokenizer.json that cannot be read or is not a byte-level
	// BPE tokenizer herd can reproduce id for id. The concrete error is a *FormatError.
	ErrFormat = errors.New("tokenizer: bad tokenizer.json")
	// ErrIO reports a failure to read or write a tokenizer file or a training stream.
	ErrIO = errors.New("tokenizer: i/o error")
)

// FormatError describes what is wrong with a tokenizer.json. It unwraps to ErrFormat.
type FormatError struct {
	File  string // path of the file, empty when the input came from Unmarshal
	Field string // JSON path of the bad field, e.g. "model.merges[12]"
	Msg   string // what is wrong with it
}

// Error returns "tokenizer: bad tokenizer.json FILE: FIELD: MSG".
func (e *FormatError) Error() string {
	var b strings.Builder
	b.WriteString(ErrFormat.Error())
	if e.File != "" {
		b.WriteString(" ")
		b.WriteString(e.File)
	}
	if e.Field != "" {
		b.WriteString(": ")
		b.WriteString(e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns ErrFormat.
func (e *FormatError) Unwrap() error { return ErrFormat }
