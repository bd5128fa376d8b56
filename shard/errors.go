package shard

import "errors"

// Sentinel errors. Every error returned by this package that concerns a file
// wraps one of these with %w and names the file, so callers can both test the
// kind with errors.Is and show the operator where the problem is.
var (
	// ErrTruncated: the file ends before its header or before the tokens the
	// header promises.
	ErrTruncated = errors.New("shard: truncated file")
	// ErrMagic: the file does not start with the token shard magic.
	ErrMagic = errors.New("shard: not a token shard file (wrong magic)")
	// ErrVersion: the file has a format version this code cannot read.
	ErrVersion = errors.New("shard: unsupported format version")
	// ErrHeaderChecksum: the header bytes do not match their checksum.
	ErrHeaderChecksum = errors.New("shard: header checksum mismatch")
	// ErrHeader: the header checksum is right but a field is out of range.
	ErrHeader = errors.New("shard: invalid header")
	// ErrDataChecksum: the token bytes do not match the checksum in the header.
	ErrDataChecksum = errors.New("shard: token data checksum mismatch")
	// ErrTokenizerMismatch: the file was written with another tokenizer.
	ErrTokenizerMismatch = errors.New("shard: tokenizer hash mismatch")
	// ErrOutOfVocab: a token id is negative or not below the vocabulary size.
	ErrOutOfVocab = errors.New("shard: token id out of vocabulary")
	// ErrSizeMismatch: the token count in the header disagrees with the file size.
	ErrSizeMismatch = errors.New("shard: token count does not match file size")

	// ErrSourceSpec: a "name=PATH:weight" source flag cannot be used.
	ErrSourceSpec = errors.New("shard: invalid source spec")
	// ErrConfig: a PrepareConfig field is out of range.
	ErrConfig = errors.New("shard: invalid prepare config")
	// ErrExists: the output directory already holds a prepared dataset.
	ErrExists = errors.New("shard: output directory already holds a dataset")
	// ErrEmptySource: a source has no documents left after cleaning.
	ErrEmptySource = errors.New("shard: source has no documents after cleaning")
	// ErrManifest: a dataset manifest is malformed or disagrees with its files.
	ErrManifest = errors.New("shard: invalid manifest")
	// ErrMixture: a mixture cannot be sampled (no sources, bad weight, too few tokens).
	ErrMixture = errors.New("shard: invalid mixture")
	// ErrBatch: a batch request is out of range.
	ErrBatch = errors.New("shard: invalid batch request")
)
