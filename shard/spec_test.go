package shard

import (
	"testing"
)

func TestParseSourceSpec(t *testing.T) {
	good := []struct {
		in   string
		want SourceSpec
	}{
		{"web=/data/cc:0.67", SourceSpec{Name: "web", Path: "/data/cc", Weight: 0.67}},
		{"c4=rel/dir:15", SourceSpec{Name: "c4", Path: "rel/dir", Weight: 15}},
		{"odd=/a:b=c/d.jsonl.gz:1e-2", SourceSpec{Name: "odd", Path: "/a:b=c/d.jsonl.gz", Weight: 0.01}},
		{"Wiki_en.v2-1=x:1", SourceSpec{Name: "Wiki_en.v2-1", Path: "x", Weight: 1}},
	}
	for _, tc := range good {
		got, err := ParseSourceSpec(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseSourceSpec(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
		back, err := ParseSourceSpec(got.String())
		if err != nil || back != got {
			t.Errorf("String() %q does not parse back: %+v, %v", got.String(), back, err)
		}
	}
	bad := []struct{ in, frag string }{
		{"web", "'='"},
		{"web=/data", "':'"},
		{"=/data:1", "name"},
		{"we b=/data:1", "name"},
		{"-web=/data:1", "name"},
		{"../x=/data:1", "name"},
		{"web=:1", "empty path"},
		{"web=/data:", "not a number"},
		{"web=/data:abc", "not a number"},
		{"web=/data:0", "> 0"},
		{"web=/data:-1", "> 0"},
		{"web=/data:NaN", "> 0"},
		{"web=/data:+Inf", "> 0"},
	}
	for _, tc := range bad {
		_, err := ParseSourceSpec(tc.in)
		wantErr(t, err, []error{ErrSourceSpec}, `"`+tc.in+`"`, tc.frag)
	}
}

func TestParseSourceSpecs(t *testing.T) {
	specs, err := ParseSourceSpecs([]string{"a=/x:1", "b=/y:2"})
	if err != nil || len(specs) != 2 || specs[1].Name != "b" {
		t.Fatalf("ParseSourceSpecs = %v, %v", specs, err)
	}
	_, err = ParseSourceSpecs([]string{"a=/x:1", "b=/y:2", "a=/z:3"})
	wantErr(t, err, []error{ErrSourceSpec}, `"a=/z:3"`, `"a=/x:1"`, "already used")
	_, err = ParseSourceSpecs([]string{"a=/x:1", "b=/y"})
	wantErr(t, err, []error{ErrSourceSpec}, `"b=/y"`)
}
