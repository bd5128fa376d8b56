//go:build race

package collectivetest

// raceEnabled is true when the race detector is on; it slows the reduction loops about
// tenfold, so the largest case shrinks.
const raceEnabled = true
