package collective_test

import (
	"testing"

	"github.com/herd-llm/herd/collective/collectivetest"
)

func TestInMem(t *testing.T) {
	collectivetest.RunAll(t, collectivetest.NewInMemGroup)
}
