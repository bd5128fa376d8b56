//go:build unix

package worker

import (
	"os"
	"syscall"
)

func flockTry(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}
