package main

import (
	"slices"
	"testing"
)

func TestTopLogits(t *testing.T) {
	logits := []float32{0.5, 3, -1, 3, 2, 7, 0, 2.5}
	got := topLogits(logits, 4)
	want := []tokenLogit{{5, 7}, {1, 3}, {3, 3}, {7, 2.5}}
	if !slices.Equal(got, want) {
		t.Errorf("topLogits = %v, want %v", got, want)
	}
	if got := topLogits(logits[:2], 5); len(got) != 2 || got[0].Token != 1 {
		t.Errorf("fewer logits than k: %v", got)
	}
}
