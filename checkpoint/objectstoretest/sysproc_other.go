//go:build !linux

package objectstoretest

import "syscall"

// sysProcAttr: outside Linux there is no parent-death signal; t.Cleanup kills the gateway.
func sysProcAttr() *syscall.SysProcAttr { return nil }
