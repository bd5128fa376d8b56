//go:build nolangid

package shard

import (
	"strings"
	"testing"
)

// A build without language identification refuses a language filter, saying why.
func TestLangFilterRefusedWithoutLangID(t *testing.T) {
	_, err := ParseLangFilter("en", 0.5)
	if err == nil || !strings.Contains(err.Error(), "-tags nolangid") {
		t.Fatalf("ParseLangFilter: %v", err)
	}
}
