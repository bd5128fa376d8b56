//go:build !cgo

package cudalib

import (
	"errors"
	"unsafe"
)

var errNoCgo = errors.New("built without cgo: dlopen is unavailable")

func dlopen(string, bool) (unsafe.Pointer, error)          { return nil, errNoCgo }
func loaded(string) bool                                   { return false }
func dlsym(unsafe.Pointer, string) (unsafe.Pointer, error) { return nil, errNoCgo }
func loadedPath(unsafe.Pointer) string                     { return "" }
func callInt2(unsafe.Pointer) (int, int, int)              { return -1, 0, 0 }
func callInt1(unsafe.Pointer) (int, int)                   { return -1, 0 }
func callSize(unsafe.Pointer) uint64                       { return 0 }
