//go:build !linux

package main

import "syscall"

// rankProcAttr puts a rank in process group pgid (0: a new group led by the rank). Without
// a parent-death signal, ranks find a vanished launcher by polling (watchLauncher).
func rankProcAttr(pgid int) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pgid: pgid}
}
