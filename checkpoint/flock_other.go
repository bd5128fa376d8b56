//go:build !unix

package checkpoint

import (
	"context"
	"os"
	"sync"
)

// Without flock(2), swaps are serialized within this process only.
var swapMu sync.Mutex

func flockCtx(context.Context, *os.File) error { swapMu.Lock(); return nil }

func funlock(*os.File) { swapMu.Unlock() }
