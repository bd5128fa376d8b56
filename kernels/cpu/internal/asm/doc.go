// Package asm holds the assembly routines of the CPU backend, with a Go declaration for each.
// They exist only on amd64, and not in builds with the purego tag; callers select them at run
// time from the CPU's features (golang.org/x/sys/cpu) and keep a Go implementation for every
// other case. The routines check nothing: callers pass pointers to enough memory.
//
// The package has no cgo, unlike its caller gemm: a package that uses cgo cannot contain Go
// assembly.
package asm
