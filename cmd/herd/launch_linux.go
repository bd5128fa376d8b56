package main

import "syscall"

// rankProcAttr puts a rank in process group pgid (0: a new group led by the rank) and has
// the kernel send it SIGTERM when the launcher's thread that started it exits.
func rankProcAttr(pgid int) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pgid: pgid, Pdeathsig: syscall.SIGTERM}
}
