package shard

import (
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestNonTextShare(t *testing.T) {
	cases := []struct {
		doc  string
		want float64
	}{
		{"", 0},
		{"plain text\twith tab\r\nand newline", 0},
		{"héllo wörld ✓ 日本語", 0},
		{"ab\x00d", 0.25},
		{"\x01\x02\x7fa", 0.75},
		{"ab\xffd", 0.25},            // invalid UTF-8 byte
		{"a\xe6\x97b", 0.5},          // truncated 3-byte sequence: two bad bytes
		{"\xed\xa0\x80abcde", 0.375}, // surrogate half: three bad bytes
	}
	for _, tc := range cases {
		if got := NonTextShare([]byte(tc.doc)); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("NonTextShare(%q) = %v, want %v", tc.doc, got, tc.want)
		}
	}
}

func TestCleaner(t *testing.T) {
	c := NewCleaner(Filter{MinBytes: 10, MaxNonText: 0.2})
	long := strings.Repeat("x", 20)
	docs := []struct {
		doc  string
		want Verdict
	}{
		{"short", TooShort},
		{long, Keep},
		{long, Duplicate},
		{long + "y", Keep},
		{"\x00\x01abcdefgh", Keep},       // 2 of 10 bytes: 0.2 is not above 0.2
		{"\x00\x01\x02abcdefg", NonText}, // 3 of 10 bytes
		{"exactly 10", Keep},
		{"exactly 9", TooShort},
		{"\x00\x01abcdefgh", Duplicate},
		{"\x00\x01\x02abcdefg", NonText}, // filters run before dedup
	}
	var rep FilterReport
	for i, d := range docs {
		v, h := c.Check([]byte(d.doc))
		if v != d.want {
			t.Errorf("doc %d %q: %v, want %v", i, d.doc, v, d.want)
		}
		if (v == Keep || v == Duplicate) && h == (DocHash{}) {
			t.Errorf("doc %d: no hash for a checked document", i)
		}
		rep.Add(v, len(d.doc))
	}
	want := FilterReport{
		Seen:      Count{10, 5 + 20 + 20 + 21 + 10 + 10 + 10 + 9 + 10 + 10},
		Kept:      Count{4, 20 + 21 + 10 + 10},
		TooShort:  Count{2, 5 + 9},
		NonText:   Count{2, 10 + 10},
		Duplicate: Count{2, 20 + 10},
	}
	if !reflect.DeepEqual(rep, want) {
		t.Errorf("report %+v, want %+v", rep, want)
	}
}

func TestFilterValidate(t *testing.T) {
	if err := DefaultFilter().Validate(); err != nil {
		t.Error(err)
	}
	wantErr(t, Filter{MinBytes: 0, MaxNonText: 0.1}.Validate(), []error{ErrConfig}, "MinBytes")
	wantErr(t, Filter{MinBytes: 1, MaxNonText: 1.5}.Validate(), []error{ErrConfig}, "MaxNonText")
	wantErr(t, Filter{MinBytes: 1, MaxNonText: math.NaN()}.Validate(), []error{ErrConfig}, "MaxNonText")
}
