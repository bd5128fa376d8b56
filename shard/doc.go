// Package shard turns raw text into token shard files and feeds training
// with sequences drawn from them.
//
// Data preparation (herd prepare):
//
//	sources ("name=PATH:weight")      spec.go, source.go
//	  -> cleaning: filters, dedup     clean.go
//	  -> tokenization (Encoder)       encoder.go, prepare.go
//	  -> train / held-out split       heldout.go
//	  -> shard files + manifest.json  writer.go, stream.go, manifest.go
//
// Training input:
//
//	manifest + shard files -> Dataset (in memory)      dataset.go, reader.go
//	(seed, mixture, global index) -> Ref               sampler.go, permutation.go
//	(step, global batch, rank, world) -> indices       batch.go
//	Loader: indices -> inputs, targets                 loader.go
//
// A dataset directory holds manifest.json and, per source, <name>/train-NNNNN.tok
// and <name>/heldout-NNNNN.tok. The byte layout of a .tok file is described in
// format.go; the rules for finding documents under a path in source.go; the
// sampling scheme on Sampler.
//
// Terms: a document is one text (a file, a JSONL record); a token stream is
// the documents of one source and split, each followed by EOS; a sequence is
// a window of SeqLen+1 tokens of a train stream (SeqLen inputs, SeqLen
// targets shifted by one); a global index numbers sequences across the
// whole run, step*globalBatch + position in the batch.
package shard
