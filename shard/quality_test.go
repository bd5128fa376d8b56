package shard

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNormalizeLine(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"Hello, World!", "hello world"},
		{"  Call 555-1234 now!!  ", "call 0000000 now"},
		{"Ünïcode — Straße\t\tok", "ünïcode straße ok"},
		{"***", ""},
		{"", ""},
		{"a\xffb", "ab"},
	} {
		if got := string(NormalizeLine([]byte(c.in))); got != c.want {
			t.Errorf("NormalizeLine(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// Line dedup keeps the first copy of every line, in this document or an earlier one, and
// compares lines as CCNet does (case, digits and punctuation do not matter); blank lines stay.
func TestLineDedup(t *testing.T) {
	d := newLineDeduper()
	docs := []struct{ in, want string }{
		{"Home | About\nThe first article.\n\nHome | About\n", "Home | About\nThe first article.\n\n"},
		{"home about\nCopyright 2019\nA second article.\n", "Copyright 2019\nA second article.\n"},
		{"HOME - ABOUT\nCopyright 2024.\nA third one.", "A third one."},
	}
	for i, c := range docs {
		got, _, _ := d.apply([]byte(c.in), analyzeEarly(Quality{LineDedup: true}, []byte(c.in)).lines)
		if string(got) != c.want {
			t.Errorf("doc %d: got %q, want %q", i, got, c.want)
		}
	}
	third := []byte("A third one.\n")
	_, lines, n := d.apply(third, analyzeEarly(Quality{LineDedup: true}, third).lines)
	if lines != 1 || n != int64(len("A third one.\n")) {
		t.Errorf("dropped %d lines, %d bytes, want 1 and %d", lines, n, len("A third one.\n"))
	}
}

// The LSH bands for a threshold find almost every pair at or above it, and not most pairs
// well below it (those are candidates checked on their signatures, a cost, not an error).
func TestLSHBands(t *testing.T) {
	for _, th := range []float64{0.5, 0.7, 0.8, 0.9} {
		b, r := lshBands(th, minhashPerms)
		p := func(s float64) float64 { return 1 - math.Pow(1-math.Pow(s, float64(r)), float64(b)) }
		t.Logf("threshold %v: %d bands of %d rows: P(%.2f) = %.3f, P(%.2f) = %.3f, P(%.2f) = %.3f", th, b, r,
			th-0.3, p(th-0.3), th, p(th), th+0.1, p(math.Min(1, th+0.1)))
		if b*r > minhashPerms || p(th) < 0.95 || p(math.Min(1, th+0.1)) < 0.99 || p(th-0.3) > 0.5 {
			t.Errorf("threshold %v: %d bands of %d rows finds too few pairs above it or too many below", th, b, r)
		}
	}
}

// plantedPair is a document and a variant of it with the exact Jaccard similarity of their
// shingle sets.
type plantedPair struct {
	base, variant string
	jaccard       float64
}

// plantNearDups makes n base documents of random words and, for each, variants with a growing
// number of words replaced, so that the exact Jaccard similarities of their k-shingle sets
// spread from 1 down to about 0.2.
func plantNearDups(rng *rand.Rand, n, words, k int) []plantedPair {
	vocab := make([]string, 2000)
	for i := range vocab {
		vocab[i] = fmt.Sprintf("w%x", rng.Uint32())
	}
	var out []plantedPair
	for range n {
		base := make([]string, words)
		for i := range base {
			base[i] = vocab[rng.IntN(len(vocab))]
		}
		for _, edits := range []int{0, 1, 2, 3, 5, 8, 12, 20, 30, 45, 70} {
			v := append([]string(nil), base...)
			for range edits {
				v[rng.IntN(len(v))] = vocab[rng.IntN(len(vocab))]
			}
			out = append(out, plantedPair{strings.Join(base, " "), strings.Join(v, " "), exactJaccard(base, v, k)})
		}
	}
	return out
}

func shingles(words []string, k int) map[string]bool {
	s := map[string]bool{}
	for i := 0; i+k <= len(words); i++ {
		s[strings.Join(words[i:i+k], " ")] = true
	}
	return s
}

func exactJaccard(a, b []string, k int) float64 {
	sa, sb := shingles(a, k), shingles(b, k)
	inter := 0
	for s := range sa {
		if sb[s] {
			inter++
		}
	}
	return float64(inter) / float64(len(sa)+len(sb)-inter)
}

// Near-duplicates planted at known Jaccard similarities: the index drops the variants at or
// above the threshold and keeps those below it, up to the MinHash estimate's error near the
// threshold. The figures are in docs/data.md.
func TestNearDupPlanted(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pairs := plantNearDups(rng, 60, 300, 5)
	cfg := DefaultNearDup()
	var tp, fp, fn, tn, farFP, farFN int
	for _, p := range pairs {
		x := newNearDupIndex(cfg) // one pair at a time: each variant is judged against its base only
		if x.check([]byte(p.base)) {
			t.Fatal("the first document is a duplicate of nothing")
		}
		got := x.check([]byte(p.variant))
		want := p.jaccard >= cfg.Threshold
		switch {
		case got && want:
			tp++
		case got && !want:
			fp++
			if p.jaccard < cfg.Threshold-0.1 {
				farFP++
			}
		case !got && want:
			fn++
			if p.jaccard >= cfg.Threshold+0.1 {
				farFN++
			}
		default:
			tn++
		}
	}
	precision, recall := float64(tp)/float64(tp+fp), float64(tp)/float64(tp+fn)
	t.Logf("near-dup, threshold %.2f, %d-word shingles, %d planted pairs (%d at or above the threshold): precision %.3f, recall %.3f; %d false positives below %.2f, %d misses above %.2f",
		cfg.Threshold, cfg.Shingle, len(pairs), tp+fn, precision, recall, farFP, cfg.Threshold-0.1, farFN, cfg.Threshold+0.1)
	if precision < 0.9 || recall < 0.9 || farFP > 0 || farFN > 0 {
		t.Errorf("precision %.3f, recall %.3f (want >= 0.9), %d far false positives, %d far misses (want 0)", precision, recall, farFP, farFN)
	}
	if tp+fn < len(pairs)/4 || tn+fp < len(pairs)/4 {
		t.Fatalf("the planted pairs do not straddle the threshold: %d above, %d below", tp+fn, tn+fp)
	}
}

// In one index, a document is compared with every document kept before: copies of any of
// them go, unrelated documents stay, and a dropped document is not indexed.
func TestNearDupIndex(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	pairs := plantNearDups(rng, 20, 200, 5)
	x := newNearDupIndex(DefaultNearDup())
	bases := map[string]bool{}
	for _, p := range pairs {
		if !bases[p.base] {
			bases[p.base] = true
			if x.check([]byte(p.base)) {
				t.Fatalf("an unrelated base document was dropped")
			}
		}
	}
	kept := len(x.sigs) / minhashPerms
	for _, p := range pairs {
		if p.jaccard >= 0.95 && !x.check([]byte(p.variant)) {
			t.Errorf("a variant at Jaccard %.2f was kept", p.jaccard)
		}
	}
	if n := len(x.sigs) / minhashPerms; n < kept {
		t.Errorf("index shrank")
	}
	if x.check([]byte("")) || x.check([]byte("...")) {
		t.Error("a document without words is a near-duplicate")
	}
}

func TestDetectLicence(t *testing.T) {
	mit := "// Copyright (c) 2020 A\n//\n// Permission is hereby granted, free of charge, to any person obtaining a copy\n"
	for _, c := range []struct{ doc, want string }{
		{"// SPDX-License-Identifier: Apache-2.0\npackage x\n", "Apache-2.0"},
		{"# SPDX-License-Identifier: GPL-2.0-only\n", "GPL-2.0"},
		{"/* SPDX-License-Identifier: GPL-3.0-or-later */", "GPL-3.0"},
		{"// SPDX-License-Identifier: LGPL-2.1+\n", "LGPL"},
		{mit, "MIT"},
		{"# This program is free software: you can redistribute it under the terms of the GNU General\n# Public License as published by the Free Software Foundation, either version 3 of the License", "GPL-3.0"},
		{"// Redistribution and use in source and binary forms, with or without\n// modification ... Neither the name of Google Inc.", "BSD-3-Clause"},
		{"// Redistribution and use in source and binary forms, with or without modification", "BSD-2-Clause"},
		{"// Licensed under the Apache License, Version 2.0 (the \"License\");", "Apache-2.0"},
		{"package main\n\nfunc main() {}\n", ""},
	} {
		if got := detectLicence([]byte(c.doc)); got != c.want {
			t.Errorf("detectLicence(%.50q) = %q, want %q", c.doc, got, c.want)
		}
	}
}

func TestCodeFilter(t *testing.T) {
	c := DefaultCodeFilter()
	header := "// Copyright 2020 The Authors. All rights reserved.\n// Use of this source code is governed by a BSD-style\n// license that can be found in the LICENSE file.\n\n"
	body := "package x\n\nfunc f(a, b int) int { return a + b }\n"
	for _, tc := range []struct {
		name, doc string
		want      Verdict
		kept      string
	}{
		{"plain", body, Keep, body},
		{"header removed", header + body, Keep, body},
		{"shebang stays", "#!/bin/sh\n# Copyright 2021 X\n# Licensed under the MIT license\necho hi there\n", Keep, "#!/bin/sh\necho hi there\n"},
		{"comment without a licence stays", "// Package x adds.\n" + body, Keep, "// Package x adds.\n" + body},
		{"generated", "// Code generated by protoc-gen-go. DO NOT EDIT.\n" + body, Generated, ""},
		{"gpl", "// SPDX-License-Identifier: GPL-2.0\n" + body, Licence, ""},
		{"mit", "// SPDX-License-Identifier: MIT\n" + body, Keep, body},
		{"long line", "var x = \"" + strings.Repeat("a", 1200) + "\"\n", LongLines, ""},
		{"data", strings.Repeat("0x00, 0x01, ", 10) + "\n" + strings.Repeat("{}, [], (), ", 30), LowAlnum, ""},
	} {
		v, out := c.check([]byte(tc.doc))
		if v != tc.want || (v == Keep && string(out) != tc.kept) {
			t.Errorf("%s: %v %q, want %v %q", tc.name, v, out, tc.want, tc.kept)
		}
	}
}

func TestParseFilters(t *testing.T) {
	q, err := ParseFilters("lines,near-dup", DefaultNearDup(), DefaultCodeFilter())
	if err != nil || !q.LineDedup || q.NearDup == nil || q.Code != nil || q.String() != "lines,near-dup" {
		t.Errorf("ParseFilters: %+v, %v", q, err)
	}
	for _, c := range []struct {
		list string
		nd   NearDup
		code CodeFilter
		want string
	}{
		{"lines,minhash", DefaultNearDup(), DefaultCodeFilter(), `unknown filter "minhash"`},
		{"near-dup", NearDup{Threshold: 0.1, Shingle: 5}, DefaultCodeFilter(), "near-dup threshold is 0.1"},
		{"near-dup", NearDup{Threshold: 0.8, Shingle: 0}, DefaultCodeFilter(), "shingle is 0 words"},
		{"code", DefaultNearDup(), CodeFilter{Licences: []string{"WTFPL"}, MaxLineBytes: 10}, `licence "WTFPL"`},
		{"code", DefaultNearDup(), CodeFilter{MaxLineBytes: 0}, "max line is 0 bytes"},
	} {
		if _, err := ParseFilters(c.list, c.nd, c.code); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseFilters(%q): %v, want %q", c.list, err, c.want)
		}
	}
}

// Prepare applies each source's filters, across sources, and records their counts in the
// manifest: boilerplate lines an earlier source had go from a later one, near-copies of its
// documents too, and every document read is counted once.
func TestPrepareQualityFilters(t *testing.T) {
	root := t.TempDir()
	rng := rand.New(rand.NewPCG(5, 6))
	pairs := plantNearDups(rng, 10, 200, 5)
	var web, more bytes.Buffer
	nav := "Home | News | Contact us\n"
	seen := map[string]bool{}
	for _, p := range pairs {
		if !seen[p.base] {
			seen[p.base] = true
			fmt.Fprintf(&web, "{\"text\": %q}\n", nav+p.base+"\n")
		}
	}
	nearCopies := 0
	for _, p := range pairs {
		if p.jaccard >= 0.95 && p.variant != p.base {
			nearCopies++
			fmt.Fprintf(&more, "{\"text\": %q}\n", "HOME - NEWS - CONTACT US\n"+p.variant+"\n")
		}
	}
	fmt.Fprintf(&more, "{\"text\": %q}\n", nav+"home news contact us\n")
	fmt.Fprintf(&more, "{\"text\": %q}\n", "A document of its own, with words no other has.\n")
	writeFile(t, root+"/web.jsonl", web.Bytes())
	writeFile(t, root+"/more.jsonl", more.Bytes())
	q, err := ParseFilters("lines,near-dup", DefaultNearDup(), DefaultCodeFilter())
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultPrepareConfig()
	cfg.Out, cfg.Encoder = t.TempDir(), byteEncoder{}
	cfg.Sources = []SourceSpec{
		{Name: "web", Path: root + "/web.jsonl", Weight: 1, Quality: q},
		{Name: "more", Path: root + "/more.jsonl", Weight: 1, Quality: q},
	}
	m, err := Prepare(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	w, o := m.Sources[0].Filter, m.Sources[1].Filter
	if w.Kept.Docs != int64(len(seen)) || w.DupLines.Docs != int64(len(seen)-1) || w.NearDuplicate.Docs != 0 {
		t.Errorf("web: %+v", w)
	}
	if o.NearDuplicate.Docs != int64(nearCopies) || o.LineDuplicates.Docs != 1 || o.DupLines.Docs != int64(nearCopies)+2 {
		t.Errorf("more: %d near copies, 1 document of boilerplate only: %+v", nearCopies, o)
	}
	for _, s := range m.Sources {
		f := s.Filter
		if d := f.Dropped(); f.Seen.Docs != f.Kept.Docs+d.Docs || f.Seen.Bytes != f.Kept.Bytes+d.Bytes {
			t.Errorf("%s: seen %+v != kept %+v + dropped %+v", s.Name, f.Seen, f.Kept, d)
		}
		if s.Quality == nil || s.Quality.String() != "lines,near-dup" {
			t.Errorf("%s: manifest records quality %+v", s.Name, s.Quality)
		}
	}
}

// Line dedup within a memory budget several times smaller than the corpus's set of distinct
// lines gives the same dataset, byte for byte, as dedup in memory: the first pass spreads the
// hashes over buckets that each fit the budget, and the second reads their verdicts in order.
// A source without line dedup still takes part in exact dedup, which decides what the later
// source's line dedup sees.
func TestLineDedupBoundedMemory(t *testing.T) {
	root := t.TempDir()
	rng := rand.New(rand.NewPCG(11, 11))
	word := func(n int) string { // letters only: line dedup maps every digit to 0
		var b []byte
		for ; n > 0 || len(b) == 0; n /= 26 {
			b = append(b, byte('a'+n%26))
		}
		return string(b)
	}
	line := func() string {
		return fmt.Sprintf("line %s of the corpus, %s\n", word(rng.IntN(60000)), word(rng.IntN(4)))
	}
	doc := func(n int) string {
		var sb strings.Builder
		for range n {
			sb.WriteString(line())
		}
		return sb.String()
	}
	var a, b bytes.Buffer
	shared := doc(20)
	for i := range 1500 {
		d := doc(40)
		if i%100 == 0 {
			d = shared // an exact duplicate across the sources
		}
		fmt.Fprintf(&a, "{\"text\": %q}\n", d)
		fmt.Fprintf(&b, "{\"text\": %q}\n", doc(40))
	}
	fmt.Fprintf(&b, "{\"text\": %q}\n", shared)
	writeFile(t, root+"/a.jsonl", a.Bytes())
	writeFile(t, root+"/b.jsonl", b.Bytes())
	prepare := func(budget int64) (*Manifest, []int64) {
		cfg := DefaultPrepareConfig()
		cfg.Out, cfg.Encoder, cfg.LineDedupMemory = t.TempDir(), byteEncoder{}, budget
		cfg.Sources = []SourceSpec{
			{Name: "a", Path: root + "/a.jsonl", Weight: 1},
			{Name: "b", Path: root + "/b.jsonl", Weight: 1, Quality: Quality{LineDedup: true}},
		}
		var plan []int64
		cfg.LineDedupPlanned = func(lines int64, buckets int, maxSet int64) { plan = []int64{lines, int64(buckets), maxSet} }
		m, err := Prepare(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(cfg.Out, ".line-dedup")); err == nil {
			t.Error("the first pass's files are still there")
		}
		return m, plan
	}
	inMemory, plan := prepare(0)
	if plan != nil {
		t.Fatal("a first pass ran without a budget")
	}
	const budget = 256 << 10
	bounded, plan := prepare(budget)
	if plan == nil {
		t.Fatal("no first pass")
	}
	lines, buckets, maxSet := plan[0], plan[1], plan[2]
	t.Logf("%d lines compared (%.1f MiB as a set of hashes, %.0f times the %d KiB budget); %d buckets, the largest set %d hashes (%.0f KiB)",
		lines, float64(lines*lineSetBytes)/(1<<20), float64(lines*lineSetBytes)/budget, budget>>10, buckets, maxSet, float64(maxSet*lineSetBytes)/1024)
	if lines*lineSetBytes < 4*budget || maxSet*lineSetBytes > budget {
		t.Errorf("%d lines, %d buckets, the largest set %d hashes: want a corpus several times the budget and every bucket within it", lines, buckets, maxSet)
	}
	if !reflect.DeepEqual(inMemory.Sources, bounded.Sources) {
		t.Errorf("the datasets differ:\nin memory %+v\nbounded   %+v", inMemory.Sources[1].Filter, bounded.Sources[1].Filter)
	}
	if f := bounded.Sources[1].Filter; f.DupLines.Docs == 0 || f.Duplicate.Docs != 1 {
		t.Errorf("b: %+v", f)
	}
}

// Near-dup in bounded memory gives the dataset of the index in memory, byte for byte, on a
// corpus whose band entries are many times the budget: clusters of near-copies at several
// similarities (chains included, where a copy of a copy may fall below the threshold against
// the first), within and across two sources, then a source without near-dup, alone and with
// line dedup also bounded. Every bucket the first pass sorts stays within the budget.
func TestNearDupBoundedMemory(t *testing.T) {
	root := t.TempDir()
	rng := rand.New(rand.NewPCG(21, 21))
	word := func() string {
		var b []byte
		for n := rng.IntN(20000); n > 0 || len(b) == 0; n /= 26 {
			b = append(b, byte('a'+n%26))
		}
		return string(b)
	}
	newDoc := func() []string {
		ws := make([]string, 150)
		for i := range ws {
			ws[i] = word()
		}
		return ws
	}
	mutate := func(ws []string, share float64) []string {
		out := slices.Clone(ws)
		for i := range out {
			if rng.Float64() < share {
				out[i] = word()
			}
		}
		return out
	}
	text := func(ws []string) string {
		var sb strings.Builder
		for i, w := range ws {
			sb.WriteString(w)
			if i%15 == 14 {
				sb.WriteString("\n")
			} else {
				sb.WriteString(" ")
			}
		}
		return sb.String()
	}
	var a, b bytes.Buffer
	var bases [][]string
	for i := range 1800 {
		out := &a
		if i%2 == 1 {
			out = &b
		}
		var ws []string
		switch {
		case len(bases) > 0 && i%3 == 0: // a near-copy of an earlier document, or of a copy of one
			k := rng.IntN(len(bases))
			ws = mutate(bases[k], []float64{0.005, 0.01, 0.02, 0.04}[rng.IntN(4)])
			bases[k] = ws
		default:
			ws = newDoc()
			bases = append(bases, ws)
		}
		fmt.Fprintf(out, "{\"text\": %q}\n", text(ws))
	}
	writeFile(t, root+"/a.jsonl", a.Bytes())
	writeFile(t, root+"/b.jsonl", b.Bytes())
	// A last source without near-dup (the first pass stops before it), sharing lines with a.
	var c bytes.Buffer
	for i := range 200 {
		ws := newDoc()
		if i%4 == 0 {
			ws = mutate(bases[i], 0.02)
		}
		fmt.Fprintf(&c, "{\"text\": %q}\n", text(ws))
	}
	writeFile(t, root+"/c.jsonl", c.Bytes())
	nd := DefaultNearDup()
	prepare := func(lineBudget, nearBudget int64) (*Manifest, *NearDupPlanned) {
		cfg := DefaultPrepareConfig()
		cfg.Out, cfg.Encoder = t.TempDir(), byteEncoder{}
		cfg.LineDedupMemory, cfg.NearDupMemory = lineBudget, nearBudget
		cfg.Sources = []SourceSpec{
			{Name: "a", Path: root + "/a.jsonl", Weight: 1, Quality: Quality{NearDup: &nd, LineDedup: true}},
			{Name: "b", Path: root + "/b.jsonl", Weight: 1, Quality: Quality{NearDup: &nd}},
			{Name: "c", Path: root + "/c.jsonl", Weight: 1, Quality: Quality{LineDedup: true}},
		}
		var plan *NearDupPlanned
		cfg.NearDupPlanned = func(_ NearDup, st NearDupPlanned) { plan = &st }
		m, err := Prepare(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if left, _ := filepath.Glob(filepath.Join(cfg.Out, ".near-dup-*")); len(left) > 0 {
			t.Errorf("the first pass's files are still there: %v", left)
		}
		return m, plan
	}
	inMemory, plan := prepare(0, 0)
	if plan != nil {
		t.Fatal("a first pass ran without a budget")
	}
	dropped := inMemory.Sources[0].Filter.NearDuplicate.Docs + inMemory.Sources[1].Filter.NearDuplicate.Docs
	const budget = 64 << 10
	for _, lineBudget := range []int64{0, 16 << 10} {
		bounded, plan := prepare(lineBudget, budget)
		if plan == nil {
			t.Fatal("no first pass")
		}
		bands, _ := lshBands(nd.Threshold, minhashPerms)
		entries := plan.Docs * int64(bands) * bandEntryBytes
		t.Logf("line budget %d: %d documents compared (%d KiB of band entries, %.0f times the %d KiB budget); %d buckets, the largest %d entries (%d KiB); largest group %d; %d similar pairs; %d near-duplicates (in memory: %d)",
			lineBudget, plan.Docs, entries>>10, float64(entries)/budget, budget>>10, plan.Buckets, plan.MaxEntries, plan.MaxEntries*bandEntryBytes>>10, plan.MaxGroup, plan.Edges, plan.Dropped, dropped)
		if entries < 4*budget || plan.MaxEntries*bandEntryBytes > budget || plan.Dropped != dropped || dropped < 100 {
			t.Errorf("want band entries several times the budget, every bucket within it, and the near-duplicates of the index in memory")
		}
		if !reflect.DeepEqual(inMemory.Sources, bounded.Sources) {
			t.Errorf("line budget %d: the datasets differ:\nin memory %+v %+v\nbounded   %+v %+v", lineBudget,
				inMemory.Sources[0].Filter, inMemory.Sources[1].Filter, bounded.Sources[0].Filter, bounded.Sources[1].Filter)
		}
	}
}

// slowEncoder is byteEncoder taking a moment per document, so that the writer waits on the
// encoders when something else fails.
type slowEncoder struct{ byteEncoder }

func (e slowEncoder) Encode(b []byte) []int32 {
	time.Sleep(time.Millisecond)
	return e.byteEncoder.Encode(b)
}

// A source that grows between the first pass of bounded line dedup or near-dup and the real
// one fails the preparation with an error that says so, never with a bare "context canceled"
// (the reading side's failure cancels the writer, which must not hide it).
func TestBoundedDedupSourcesChanged(t *testing.T) {
	for i := range 8 {
		src := filepath.Join(t.TempDir(), "src.jsonl")
		var b strings.Builder
		for d := range 60 {
			fmt.Fprintf(&b, "{\"text\": %q}\n", fmt.Sprintf("document %d line one %d\nline two of %d, which differs\nshared line\n", d, d*7, d))
		}
		writeFile(t, src, []byte(b.String()))
		grow := func() {
			f, _ := os.OpenFile(src, os.O_APPEND|os.O_WRONLY, 0)
			for d := range 200 {
				fmt.Fprintf(f, "{\"text\": %q}\n", fmt.Sprintf("a later document %d with lines %d\nand more %d\n", d, d*3, d*5))
			}
			f.Close()
		}
		nd := DefaultNearDup()
		cfg := DefaultPrepareConfig()
		cfg.Out, cfg.Encoder, cfg.Workers = t.TempDir(), slowEncoder{}, 4
		if i%2 == 0 {
			cfg.LineDedupMemory = 1 << 20
			cfg.Sources = []SourceSpec{{Name: "s", Path: src, Weight: 1, Quality: Quality{LineDedup: true}}}
			cfg.LineDedupPlanned = func(int64, int, int64) { grow() }
		} else {
			cfg.NearDupMemory = 1 << 20
			cfg.Sources = []SourceSpec{{Name: "s", Path: src, Weight: 1, Quality: Quality{NearDup: &nd}}}
			cfg.NearDupPlanned = func(NearDup, NearDupPlanned) { grow() }
		}
		_, err := Prepare(t.Context(), cfg)
		if err == nil || !strings.Contains(err.Error(), "the sources changed since") {
			t.Errorf("run %d (%s): %v, want an error saying the sources changed", i, []string{"line dedup", "near-dup"}[i%2], err)
		}
	}
}
