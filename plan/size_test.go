package plan

import (
	"strings"
	"testing"
)

func TestPlanParseSize(t *testing.T) {
	for _, tc := range []struct {
		s    string
		base float64
		want float64
	}{
		{"4M", Binary, 4 << 20},
		{"4m", Binary, 4 << 20},
		{"512K", Binary, 512 << 10},
		{"1.4T", Decimal, 1.4e12},
		{"300G", Decimal, 300e9},
		{"2048", Binary, 2048},
		{"1e12", Decimal, 1e12},
	} {
		got, err := ParseSize("--x", tc.s, tc.base)
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q, %g) = %g, %v; want %g", tc.s, tc.base, got, err, tc.want)
		}
	}
	for _, s := range []string{"1.4Q", "", "T", "-1T", "0", "4MM", "NaN", "Inf", "1T5"} {
		_, err := ParseSize("--tokens", s, Decimal)
		if err == nil || !strings.Contains(err.Error(), "--tokens \""+s+"\": want a positive number with an optional K, M, G or T suffix") {
			t.Errorf("ParseSize(%q): %v", s, err)
		}
	}
}
