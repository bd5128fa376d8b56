package shard

// Encoder turns document bytes into token ids. tokenizer.Tokenizer implements it.
//
// Prepare calls Encode from several goroutines at once (PrepareConfig.Workers),
// so an implementation must be safe for concurrent use or Workers must be 1.
type Encoder interface {
	// Encode returns the token ids of text, without any EOS. The returned
	// slice belongs to the caller.
	Encode(text []byte) []int32
	// EOS is the id written after every document.
	EOS() int32
	// VocabSize is the number of token ids; every id is below it.
	VocabSize() int
	// Hash identifies the vocabulary; stored in every shard file.
	Hash() string
}

// DocumentStarter is implemented by an Encoder that puts a token before every document:
// LLaMA's tokenizer puts <s> (its post-processor's "<s> $A"). Prepare writes it first in
// each document's tokens, before the text's and the EOS after them.
type DocumentStarter interface {
	DocumentStart() (id int32, ok bool)
}
