//go:build !race

package collectivetest

const raceEnabled = false
