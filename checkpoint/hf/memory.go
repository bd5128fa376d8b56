package hf

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/herd-llm/herd/model"
)

// memInfoPath is where Linux reports the memory that can still be allocated.
const memInfoPath = "/proc/meminfo"

// importMemory returns the bytes an import of layout holds at its peak: either Import itself
// (the flat float32 buffer, the scratch copy of the largest q or k projection while its rows
// are reordered, and one read chunk), or, once Import has returned, the buffer and the
// extra buffers of the same size that the caller declared.
func importMemory(layout model.Layout, extra int) int64 {
	params := 4 * int64(layout.Size)
	var scratch int64
	for _, s := range layout.Specs {
		if _, rope, _ := hfName(s.Name); rope {
			scratch = max(scratch, 4*int64(s.Size))
		}
	}
	return max(params+scratch+readChunk, params*int64(1+extra))
}

// checkMemory refuses an import of layout that would not fit in the memory available, before
// anything of its size is allocated. It is skipped where the available memory is unknown.
func (o ImportOptions) checkMemory(dir string, layout model.Layout) error {
	available, source := o.Available, "ImportOptions.Available"
	if available == nil {
		available, source = memAvailable, "MemAvailable in "+memInfoPath
	}
	have, ok := available()
	need := importMemory(layout, o.ExtraBuffers)
	if !ok || need <= have {
		return nil
	}
	parts := "and working space"
	if o.ExtraBuffers > 0 {
		parts = fmt.Sprintf("and %d more buffers of that size", o.ExtraBuffers)
	}
	return fmt.Errorf("%w: importing %s (%d parameters) needs %s (%s of float32 parameters %s), more than the %s available (%s)",
		ErrMemory, dir, layout.Size, formatBytes(need), formatBytes(4*int64(layout.Size)), parts, formatBytes(have), source)
}

// memAvailable reads MemAvailable from /proc/meminfo: the kernel's estimate of the memory
// that can be allocated without swapping. ok is false where it cannot be read.
func memAvailable() (int64, bool) {
	f, err := os.Open(memInfoPath)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	return parseMemAvailable(f)
}

// parseMemAvailable finds the "MemAvailable:  N kB" line of a /proc/meminfo listing.
func parseMemAvailable(r io.Reader) (int64, bool) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, false
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil || kb < 0 || kb > 1<<53 {
			return 0, false
		}
		return kb << 10, true
	}
	return 0, false
}

// formatBytes spells n in the largest binary unit that keeps it at least 1.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, suffix := float64(n), "KMGTPE"
	i := -1
	for v >= unit && i < len(suffix)-1 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, suffix[i])
}
