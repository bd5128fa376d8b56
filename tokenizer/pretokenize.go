package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// Pre-tokenization splits text into words before BPE, exactly as the GPT-2 regex
// that Hugging Face's ByteLevel pre-tokenizer (use_regex: true) applies:
//
//	's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// Go's regexp has no lookahead, so the alternation is written out by hand in
// pieceEnd. \s is Unicode White_Space (unicode.IsSpace), \p{L} and \p{N} are
// unicode.IsLetter and unicode.IsNumber. Bytes that are not valid UTF-8 decode as
// one-byte U+FFFD and so fall in the [^\s\p{L}\p{N}] class; Hugging Face only ever
// sees valid UTF-8, and the choice keeps every byte string encodable.

// charClass is the class of one rune for the regex above.
type charClass uint8

const (
	classOther  charClass = iota // [^\s\p{L}\p{N}]
	classLetter                  // \p{L}
	classNumber                  // \p{N}
	classSpace                   // \s
)

// asciiClass holds the class of every ASCII byte.
var asciiClass [utf8.RuneSelf]charClass

func init() {
	for b := 0; b < utf8.RuneSelf; b++ {
		asciiClass[b] = runeClass(rune(b))
	}
}

func runeClass(r rune) charClass {
	switch {
	case unicode.IsSpace(r):
		return classSpace
	case unicode.IsLetter(r):
		return classLetter
	case unicode.IsNumber(r):
		return classNumber
	}
	return classOther
}

// classAt returns the class of the rune starting at s[i] and its width in bytes.
func classAt(s []byte, i int) (charClass, int) {
	if c := s[i]; c < utf8.RuneSelf {
		return asciiClass[c], 1
	}
	r, w := utf8.DecodeRune(s[i:])
	return runeClass(r), w
}

// pieceEnd returns the end of the pre-token that starts at s[i] (i < len(s)).
// The cases are tried in the order of the regex alternation.
func pieceEnd(s []byte, i int) int {
	if s[i] == '\'' {
		if n := contraction(s[i+1:]); n > 0 {
			return i + 1 + n
		}
	}
	start := i
	if s[i] == ' ' && i+1 < len(s) {
		// " ?X+": the optional space binds to a following non-space run.
		if cls, _ := classAt(s, i+1); cls != classSpace {
			start = i + 1
		}
	}
	cls, w := classAt(s, start)
	if cls != classSpace {
		return runEnd(s, start+w, cls)
	}
	return spaceEnd(s, i, w)
}

// contraction returns the length of 's 't 're 've 'm 'll 'd after the apostrophe,
// or 0. Matching is case-sensitive, as in GPT-2.
func contraction(s []byte) int {
	if len(s) == 0 {
		return 0
	}
	switch s[0] {
	case 's', 't', 'm', 'd':
		return 1
	case 'r', 'v':
		if len(s) > 1 && s[1] == 'e' {
			return 2
		}
	case 'l':
		if len(s) > 1 && s[1] == 'l' {
			return 2
		}
	}
	return 0
}

// runEnd extends a run of class cls (not classSpace) from s[j].
func runEnd(s []byte, j int, cls charClass) int {
	for j < len(s) {
		c, w := classAt(s, j)
		if c != cls {
			break
		}
		j += w
	}
	return j
}

// spaceEnd handles a whitespace run that starts at s[i] with a first rune of width
// w: \s+(?!\S) takes the whole run at the end of the text, or the run minus its last
// rune when a non-space follows and the run has two runes or more (the last one then
// starts the next piece, e.g. " b" in "a   b"); otherwise \s+ takes the single rune.
func spaceEnd(s []byte, i, w int) int {
	last := i  // start of the last rune of the run
	j := i + w // end of the run so far
	for j < len(s) {
		c, cw := classAt(s, j)
		if c != classSpace {
			break
		}
		last = j
		j += cw
	}
	if j == len(s) || last == i {
		return j
	}
	return last
}

// splitWords calls fn with every pre-token of text, in order.
func splitWords(text []byte, fn func(word []byte)) { forEachPiece(text, false, fn) }

// forEachPiece calls fn with every pre-token of text, in order. With digits, text is first
// split as Hugging Face's Digits pre-tokenizer with individual_digits does it (LLaMA's
// choice): every \p{N} rune is a piece of its own, and the GPT-2 regex then splits the runs
// between them, each on its own (its lookahead ends where the run does).
func forEachPiece(text []byte, digits bool, fn func(word []byte)) {
	if !digits {
		for i := 0; i < len(text); {
			j := pieceEnd(text, i)
			fn(text[i:j])
			i = j
		}
		return
	}
	for i := 0; i < len(text); {
		if cls, w := classAt(text, i); cls == classNumber {
			fn(text[i : i+w])
			i += w
			continue
		}
		end := i // the run up to the next number
		for end < len(text) {
			cls, w := classAt(text, end)
			if cls == classNumber {
				break
			}
			end += w
		}
		run := text[:end]
		for i < end {
			j := pieceEnd(run, i)
			fn(run[i:j])
			i = j
		}
	}
}

// safeCut returns the largest i in (0, len(s)) such that pre-tokenizing s[:i] and
// s[i:] separately gives the same pieces as pre-tokenizing s whatever follows s, or
// 0 when there is none. Such an i has an ASCII non-space byte before it and an ASCII
// space after it: no pre-token runs from a non-space into a space, and pieces that
// start at i only look forward.
func safeCut(s []byte) int {
	for i := len(s) - 1; i > 0; i-- {
		if c := s[i]; c < utf8.RuneSelf && asciiClass[c] == classSpace {
			if p := s[i-1]; p < utf8.RuneSelf && asciiClass[p] != classSpace {
				return i
			}
		}
	}
	return 0
}
