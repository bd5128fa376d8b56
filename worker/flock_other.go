//go:build !unix

package worker

import "os"

// flockTry takes no lock where flock(2) does not exist.
func flockTry(*os.File) error { return nil }
