package shard

// splitter sends each kept document of a source to the train or the
// held-out stream, keeping the order of documents within each.
//
// A document is held out when its HeldOutKey (bits of its SHA-256) is below
// threshold, so the choice depends only on the document's bytes. To give
// each split at least one document of a source with two or more, documents
// wait in order until the source has produced one of each kind; from then on
// they stream through. If a source ends without both kinds, the waiting
// document with the smallest key (all were train) or the largest key (all
// were held out) changes side. Waiting costs memory for about 1/fraction
// documents at the start of each source.
type splitter struct {
	threshold         uint64 // 0: hold out nothing
	train, held       *stream
	sawTrain, sawHeld bool
	pending           []pendingDoc
	trainDocs         int64
	heldDocs          int64
}

type pendingDoc struct {
	toks []int32
	key  uint64
}

func (sp *splitter) add(toks []int32, key uint64) error {
	held := key < sp.threshold
	if sp.threshold == 0 || sp.sawTrain && sp.sawHeld {
		return sp.put(toks, held)
	}
	sp.pending = append(sp.pending, pendingDoc{toks: toks, key: key})
	if held {
		sp.sawHeld = true
	} else {
		sp.sawTrain = true
	}
	if sp.sawTrain && sp.sawHeld {
		return sp.flush(-1)
	}
	return nil
}

// finish writes the waiting documents, moving one across when needed.
func (sp *splitter) finish() error {
	flip := -1
	if len(sp.pending) >= 2 {
		flip = 0
		for i, d := range sp.pending {
			if sp.sawTrain && d.key < sp.pending[flip].key || sp.sawHeld && d.key > sp.pending[flip].key {
				flip = i
			}
		}
	}
	return sp.flush(flip)
}

// flush writes the waiting documents in order; the one at index flip changes side.
func (sp *splitter) flush(flip int) error {
	for i, d := range sp.pending {
		held := d.key < sp.threshold
		if i == flip {
			held = !held
		}
		if err := sp.put(d.toks, held); err != nil {
			return err
		}
	}
	sp.pending = nil
	return nil
}

func (sp *splitter) put(toks []int32, held bool) error {
	if held {
		sp.heldDocs++
		return sp.held.write(toks)
	}
	sp.trainDocs++
	return sp.train.write(toks)
}
