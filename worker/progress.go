package worker

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// progress draws a one-line progress bar on a terminal, and prints a plain line every few
// percent elsewhere (logs, pipes).
type progress struct {
	mu       sync.Mutex
	w        io.Writer
	start    int // first step of this process (a resumed run starts later)
	total    int
	tty      bool
	lastLine int
	drawn    bool
	// perDevice adds the per-device token rate (data-parallel runs).
	perDevice bool
}

func newProgress(w io.Writer, start, total int) *progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progress{w: w, start: start, total: total, tty: tty}
}

func (p *progress) update(step int, loss float64, sm StepMetrics, elapsed time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	eta := time.Duration(float64(elapsed) / float64(step-p.start) * float64(p.total-step)).Round(time.Second)
	rate := fmt.Sprintf("%.0f tok/s", sm.TokensPerS)
	if p.perDevice {
		rate += fmt.Sprintf(" (%.0f/device)", sm.TokensPerSPerDevice)
	}
	if sm.MFU > 0 {
		rate += fmt.Sprintf("  MFU %.1f%%", 100*sm.MFU)
	}
	stats := fmt.Sprintf("step %d/%d  loss %.4f  %s  ETA %s", step, p.total, loss, rate, eta)
	if p.tty {
		const width = 24
		done := width * step / p.total
		fmt.Fprintf(p.w, "\r[%s%s] %s\x1b[K", strings.Repeat("=", done), strings.Repeat(" ", width-done), stats)
		p.drawn = true
		if step == p.total {
			fmt.Fprintln(p.w)
			p.drawn = false
		}
		return
	}
	every := max(1, p.total/20)
	if step%every == 0 || step == p.total || step == p.start+1 {
		fmt.Fprintln(p.w, stats)
	}
}

// println prints a line above the bar.
func (p *progress) println(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
	fmt.Fprintln(p.w, s)
}
