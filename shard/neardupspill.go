package shard

import (
	"bufio"
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
)

// Near-duplicate detection in bounded memory. The in-memory index holds every kept document's
// signature and band entries (nearDupIndex); a corpus with more documents than fit is
// deduplicated in two passes instead, with the same verdicts:
//
//  1. A first run of the whole pipeline up to near-dup (nearDupPlan; Prepare runs it as a
//     preparer that writes nothing) records, for each document that reaches near-dup with a
//     signature, in reading order, its signature in one file and its band keys in another.
//  2. The band entries are split into 2^k buckets by the keys' top bits, enough that one
//     bucket's entries fit the memory budget; each bucket is sorted by key, and every pair of
//     documents that share a key and whose signatures reach the threshold becomes an edge
//     from the later to the earlier (a pair met again in a later band is not checked again).
//  3. The edges, sorted by their later document, are swept in reading order with a bit per
//     document: a document is dropped when an edge leads to one that was kept, which is the
//     in-memory index's rule (a document is a near-duplicate of a kept document that shares a
//     band with it). The bits are written to a file.
//  4. Prepare's pass reads, for each document that reaches near-dup with a signature, the
//     next bit (nearDupVerdicts).
//
// Memory: one bucket's entries (16 bytes each), the signatures of one group of documents that
// share a key, and a bit per document for the sweep; nothing else per document. A group of m
// documents sharing a key costs m(m-1)/2 signature comparisons, where the in-memory index
// stops at the first similar kept document.

// bandEntryBytes is what a band entry costs in a bucket being sorted.
const bandEntryBytes = 16

// maxNearDupBuckets bounds the bucket files open at once while splitting.
const maxNearDupBuckets = 512

// bandEntry is one document's key in one band.
type bandEntry struct {
	key uint64
	doc uint64
}

// nearDupPlan records the first pass for one near-dup setting.
type nearDupPlan struct {
	dir   string
	sigs  *os.File
	bands *os.File
	sw    *bufio.Writer
	bw    *bufio.Writer
	docs  uint64
	err   error
}

func newNearDupPlan(dir string) (*nearDupPlan, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	p := &nearDupPlan{dir: dir}
	var err error
	if p.sigs, err = os.Create(filepath.Join(dir, "signatures")); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if p.bands, err = os.Create(filepath.Join(dir, "bands")); err != nil {
		p.sigs.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	p.sw, p.bw = bufio.NewWriterSize(p.sigs, 1<<20), bufio.NewWriterSize(p.bands, 1<<20)
	return p, nil
}

// record writes the signature and band keys of the next document.
func (p *nearDupPlan) record(x *nearDupIndex, sig []uint32) {
	if p.err != nil {
		return
	}
	var buf [bandEntryBytes]byte
	for _, v := range sig {
		binary.LittleEndian.PutUint32(buf[:4], v)
		if _, p.err = p.sw.Write(buf[:4]); p.err != nil {
			return
		}
	}
	for i := range x.bands {
		binary.LittleEndian.PutUint64(buf[:8], x.bandKey(sig, i))
		binary.LittleEndian.PutUint64(buf[8:], p.docs)
		if _, p.err = p.bw.Write(buf[:]); p.err != nil {
			return
		}
	}
	p.docs++
}

// NearDupPlanned is what a near-dup first pass found for one setting.
type NearDupPlanned struct {
	Docs       int64 // documents with a signature, compared
	Buckets    int   // buckets the band entries were spread over
	MaxEntries int64 // the most band entries one bucket held in memory
	MaxGroup   int64 // the most documents that shared one band key
	Edges      int64 // pairs that share a band and reach the threshold
	Dropped    int64 // near-duplicates found
}

// decide turns the first pass into the verdict bits within budget bytes, and opens them.
func (p *nearDupPlan) decide(x *nearDupIndex, budget int64) (*nearDupVerdicts, NearDupPlanned, error) {
	var st NearDupPlanned
	defer p.sigs.Close()
	defer p.bands.Close()
	if p.err == nil {
		p.err = p.sw.Flush()
	}
	if p.err == nil {
		p.err = p.bw.Flush()
	}
	if p.err != nil {
		return nil, st, p.err
	}
	st.Docs = int64(p.docs)
	if bits := int64(p.docs+7) / 8; bits > budget/2 {
		return nil, st, fmt.Errorf("shard: near-dup: %d documents need %d MiB for their bits, more than half the %d MiB memory budget; raise the budget", p.docs, bits>>20, budget>>20)
	}
	entries := int64(p.docs) * int64(x.bands)
	k := 0
	for k < 63 && entries*bandEntryBytes>>k > budget/2 {
		k++
	}
	if 1<<k > maxNearDupBuckets {
		return nil, st, fmt.Errorf("shard: near-dup: %d documents need %d MiB of band entries, more than %d buckets of the %d MiB memory budget; raise the budget",
			p.docs, entries*bandEntryBytes>>20, maxNearDupBuckets, budget>>20)
	}
	st.Buckets = 1 << k
	buckets, err := splitRecords(p.bands, p.dir, k, bandEntryBytes)
	if err != nil {
		return nil, st, err
	}
	edges, err := os.Create(filepath.Join(p.dir, "edges"))
	if err != nil {
		return nil, st, err
	}
	defer edges.Close()
	ew := bufio.NewWriterSize(edges, 1<<20)
	for _, path := range buckets {
		if err := p.pairs(x, path, ew, &st); err != nil {
			return nil, st, err
		}
	}
	if err := ew.Flush(); err != nil {
		return nil, st, err
	}
	kept, err := p.sweep(edges, budget, &st)
	if err != nil {
		return nil, st, err
	}
	path := filepath.Join(p.dir, "verdicts")
	if err := os.WriteFile(path, kept, 0o644); err != nil {
		return nil, st, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, st, err
	}
	os.Remove(p.sigs.Name())
	os.Remove(p.bands.Name())
	os.Remove(edges.Name())
	return &nearDupVerdicts{dir: p.dir, f: f, r: bufio.NewReaderSize(f, 4<<10), n: p.docs}, st, nil
}

// pairs writes the edges of one bucket: for every group of documents sharing a key, each
// pair whose signatures reach the threshold and that shares no earlier band.
func (p *nearDupPlan) pairs(x *nearDupIndex, path string, ew *bufio.Writer, st *NearDupPlanned) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	var es []bandEntry
	err = forEachRecord(f, bandEntryBytes, func(rec []byte) error {
		es = append(es, bandEntry{binary.LittleEndian.Uint64(rec), binary.LittleEndian.Uint64(rec[8:])})
		return nil
	})
	f.Close()
	os.Remove(path)
	if err != nil {
		return err
	}
	st.MaxEntries = max(st.MaxEntries, int64(len(es)))
	slices.SortFunc(es, func(a, b bandEntry) int {
		if c := cmp.Compare(a.key, b.key); c != 0 {
			return c
		}
		return cmp.Compare(a.doc, b.doc)
	})
	var sigs []uint32
	var buf [bandEntryBytes]byte
	for start := 0; start < len(es); {
		end := start + 1
		for end < len(es) && es[end].key == es[start].key {
			end++
		}
		group := es[start:end]
		start = end
		if len(group) < 2 {
			continue
		}
		st.MaxGroup = max(st.MaxGroup, int64(len(group)))
		sigs = slices.Grow(sigs[:0], len(group)*minhashPerms)[:len(group)*minhashPerms]
		if err := p.readSignatures(group, sigs); err != nil {
			return err
		}
		band := x.bandOf(group[0].key, sigs[:minhashPerms])
		for j := 1; j < len(group); j++ {
			sj := sigs[j*minhashPerms : (j+1)*minhashPerms]
			for i := 0; i < j; i++ {
				si := sigs[i*minhashPerms : (i+1)*minhashPerms]
				if x.shareBandBefore(si, sj, band) || similarity(si, sj) < x.cfg.Threshold {
					continue
				}
				binary.LittleEndian.PutUint64(buf[:8], group[j].doc)
				binary.LittleEndian.PutUint64(buf[8:], group[i].doc)
				if _, err := ew.Write(buf[:]); err != nil {
					return err
				}
				st.Edges++
			}
		}
	}
	return nil
}

// readSignatures reads the signatures of group's documents into sigs.
func (p *nearDupPlan) readSignatures(group []bandEntry, sigs []uint32) error {
	var raw [minhashPerms * 4]byte
	for g, e := range group {
		if _, err := p.sigs.ReadAt(raw[:], int64(e.doc)*int64(len(raw))); err != nil {
			return fmt.Errorf("shard: near-dup: reading signature %d: %w", e.doc, err)
		}
		for i := range minhashPerms {
			sigs[g*minhashPerms+i] = binary.LittleEndian.Uint32(raw[i*4:])
		}
	}
	return nil
}

// sweep decides in reading order from the edges, and returns a bit per document, 1 for kept.
func (p *nearDupPlan) sweep(edges *os.File, budget int64, st *NearDupPlanned) ([]byte, error) {
	kept := make([]byte, (p.docs+7)/8)
	for i := range kept {
		kept[i] = 0xff
	}
	n, err := edges.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	// The edges in ranges of their later document, each range's edges sorted in memory.
	parts := 1
	for parts < 1<<20 && n/int64(parts) > budget/2 {
		parts *= 2
	}
	perPart := (p.docs + uint64(parts) - 1) / uint64(max(parts, 1))
	if perPart == 0 {
		perPart = 1
	}
	for part := range parts {
		lo, hi := uint64(part)*perPart, uint64(part+1)*perPart
		var es []bandEntry
		err := forEachRecord(edges, bandEntryBytes, func(rec []byte) error {
			if j := binary.LittleEndian.Uint64(rec); j >= lo && j < hi {
				es = append(es, bandEntry{j, binary.LittleEndian.Uint64(rec[8:])})
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		slices.SortFunc(es, func(a, b bandEntry) int { return cmp.Compare(a.key, b.key) })
		for _, e := range es {
			j, i := e.key, e.doc
			if kept[j/8]&(1<<(j%8)) != 0 && kept[i/8]&(1<<(i%8)) != 0 {
				kept[j/8] &^= 1 << (j % 8)
				st.Dropped++
			}
		}
	}
	return kept, nil
}

// nearDupVerdicts answers, document by document in the first pass's order, whether a
// document is a near-duplicate.
type nearDupVerdicts struct {
	dir  string
	f    *os.File
	r    *bufio.Reader
	n    uint64 // documents planned
	read uint64
	cur  byte
	err  error
}

// next reports whether the next document with a signature is a near-duplicate.
func (v *nearDupVerdicts) next() bool {
	if v.read >= v.n {
		if v.err == nil {
			v.err = fmt.Errorf("shard: near-dup: more documents than the first pass saw (%d; the sources changed since?)", v.n)
		}
		return false
	}
	if v.read%8 == 0 {
		c, err := v.r.ReadByte()
		if err != nil {
			v.err = fmt.Errorf("shard: near-dup: verdicts: %w", err)
			return false
		}
		v.cur = c
	}
	kept := v.cur&(1<<(v.read%8)) != 0
	v.read++
	return !kept
}

// Close removes the first pass's files.
func (v *nearDupVerdicts) Close() error {
	v.f.Close()
	return os.RemoveAll(v.dir)
}

// planNearDup runs near-dup's first pass: the whole pipeline up to near-dup, as a preparer
// that writes nothing and has its own cleaner and filters (line dedup from its own set, or
// from the spilled bits, read again afterwards), recording for each near-dup setting. It
// gives p's filters the verdicts and returns them; closing them removes the files.
func (p *preparer) planNearDup(ctx context.Context) ([]*nearDupVerdicts, error) {
	first := &preparer{cfg: p.cfg, cleaner: NewCleaner(p.cfg.Filter), quality: NewQualityFilters(p.cfg.Filter), plan: true}
	first.cfg.OnDocument, first.cfg.Progress = nil, nil
	var spilled *lineBits
	if p.quality.lines != nil && p.quality.lines.spill != nil {
		spilled = p.quality.lines.spill
		first.quality.lines = &lineDeduper{spill: spilled}
	}
	var settings []NearDup
	plans := map[NearDup]*nearDupPlan{}
	cleanup := func() {
		for _, pl := range plans {
			pl.sigs.Close()
			pl.bands.Close()
			os.RemoveAll(pl.dir)
		}
	}
	for _, s := range p.cfg.Sources {
		nd := s.Quality.NearDup
		if nd == nil || plans[*nd] != nil {
			continue
		}
		pl, err := newNearDupPlan(filepath.Join(p.cfg.Out, fmt.Sprintf(".near-dup-%d", len(settings))))
		if err != nil {
			cleanup()
			return nil, fmt.Errorf("shard: near-dup, first pass: %w", err)
		}
		plans[*nd] = pl
		settings = append(settings, *nd)
		first.quality.index(s.Quality).plan = pl
	}
	// A source's verdicts depend on the sources before it (what was kept decides what is a
	// duplicate), never on those after: the pass ends with the last source near-dup reads.
	last := 0
	for i, s := range p.cfg.Sources {
		if s.Quality.NearDup != nil {
			last = i
		}
	}
	for _, spec := range p.cfg.Sources[:last+1] {
		if _, err := first.source(ctx, spec); err != nil {
			cleanup()
			return nil, fmt.Errorf("shard: near-dup, first pass over %s: %w", spec.Name, err)
		}
	}
	if spilled != nil {
		if err := spilled.rewind(); err != nil {
			cleanup()
			return nil, err
		}
	}
	var verdicts []*nearDupVerdicts
	closeAll := func() {
		for _, v := range verdicts {
			v.Close()
		}
	}
	for _, nd := range settings {
		x := p.quality.index(Quality{NearDup: &nd})
		v, st, err := plans[nd].decide(x, p.cfg.NearDupMemory)
		if err != nil {
			closeAll()
			cleanup()
			return nil, err
		}
		x.verdicts = v
		verdicts = append(verdicts, v)
		if p.cfg.NearDupPlanned != nil {
			p.cfg.NearDupPlanned(nd, st)
		}
	}
	return verdicts, nil
}
