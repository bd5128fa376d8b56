//go:build !(386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm)

package collective

import "io"

func encodeFloats(w *wireScratch, src []float32) []byte { return encodeFloatsPortable(w, src) }

func readFloats(r io.Reader, dst []float32, w *wireScratch) error {
	return readFloatsPortable(r, dst, w)
}

func readAddFloats(r io.Reader, dst []float32, w *wireScratch) error {
	return readAddFloatsPortable(r, dst, w)
}
