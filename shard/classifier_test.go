package shard

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// webJunk is a page of the kind LLaMA's classifier was to drop: menus, offers and calls to
// click, in random order.
func webJunk(rng *rand.Rand, n int) string {
	bits := []string{"Click here", "Sign up now", "Best deals today", "Free shipping on all orders", "Log in", "Cart (0)",
		"Subscribe to our newsletter", "Limited offer!", "Buy 2 get 1 free", "Top 10 products", "Read more >>", "Share on social media",
		"Privacy policy", "Accept cookies", "Hot singles in your area", "Download the app", "Win a prize", "Only $9.99"}
	var sb strings.Builder
	for sb.Len() < n {
		sb.WriteString(bits[rng.IntN(len(bits))])
		sb.WriteString([]string{" | ", "\n", " - "}[rng.IntN(3)])
	}
	return sb.String()
}

// The classifier learns prose from web junk: on held-out examples it is right at least 95%
// of the time, and as a filter on a source with junk planted among prose it drops the junk
// and keeps the prose. The figures are in docs/data.md.
func TestClassifierPlanted(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(8, 8))
	pos, neg := filepath.Join(dir, "pos"), filepath.Join(dir, "neg")
	os.MkdirAll(pos, 0o755)
	os.MkdirAll(neg, 0o755)
	for i := range 300 {
		writeFile(t, filepath.Join(pos, fmt.Sprintf("p%03d.txt", i)), []byte(prose(rng, 6)))
		junk := webJunk(rng, 300)
		if i%2 == 0 {
			junk = spam(rng, 300)
		}
		writeFile(t, filepath.Join(neg, fmt.Sprintf("n%03d.txt", i)), []byte(junk))
	}
	f, err := TrainClassifierFilter(t.Context(), pos, neg, 1000, 0.5, DefaultFilter())
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	if f.TrainPositive != 270 || f.TrainNegative != 270 || f.HeldOut != 60 || f.Accuracy < 0.95 {
		t.Errorf("trained on %d+%d, held out %d, accuracy %.3f (want 270+270, 60, >= 0.95)", f.TrainPositive, f.TrainNegative, f.HeldOut, f.Accuracy)
	}
	var c tally
	for i := range 200 {
		doc, bad := prose(rng, 5), i%4 == 0
		if bad {
			doc = webJunk(rng, 250)
		}
		c.add(f.Model.Score([]byte(doc)) < f.Threshold, bad)
	}
	tp, fp, fn := c.tp, c.fp, c.fn
	t.Logf("classifier: held-out accuracy %.3f on %d; on 200 new documents (50 junk): %d junk dropped, %d prose dropped, %d junk kept",
		f.Accuracy, f.HeldOut, tp, fp, fn)
	if fp > 0 || fn > 2 {
		t.Errorf("%d prose dropped (want 0), %d junk kept (want <= 2)", fp, fn)
	}
	if _, err := TrainClassifierFilter(t.Context(), pos, filepath.Join(dir, "missing"), 1000, 0.5, DefaultFilter()); err == nil {
		t.Error("trained without negative examples")
	}
	few := filepath.Join(dir, "few")
	os.MkdirAll(few, 0o755)
	writeFile(t, filepath.Join(few, "a.txt"), []byte(prose(rng, 5)))
	if _, err := TrainClassifierFilter(t.Context(), pos, few, 1000, 0.5, DefaultFilter()); err == nil || !strings.Contains(err.Error(), "needs at least 10") {
		t.Errorf("one negative example: %v", err)
	}
	if err := (&ClassifierFilter{Model: f.Model, Threshold: 2}).Validate(); err == nil {
		t.Error("threshold 2 accepted")
	}
}
