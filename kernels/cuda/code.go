package cuda

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// Code is the kind of device code the backend compiles its kernels to with NVRTC.
type Code string

const (
	// CodeAuto compiles to a cubin and falls back to PTX, with a log line, when the cubin cannot
	// be built or loaded.
	CodeAuto Code = ""
	// CodeCubin compiles for the device's real architecture (--gpu-architecture=sm_XY) and loads
	// the machine code NVRTC returns (nvrtcGetCUBIN). The driver loads it as it is, whatever
	// PTX version NVRTC would write: PTX from an NVRTC newer than the driver is refused with
	// CUDA_ERROR_UNSUPPORTED_PTX_VERSION, a cubin is not.
	CodeCubin Code = "cubin"
	// CodePTX compiles for the virtual architecture (compute_XY) and lets the driver JIT the PTX.
	CodePTX Code = "ptx"
)

// CodeEnv is the variable that selects the code kind when Options.Code is empty.
const CodeEnv = "HERD_CUDA_CODE"

// ParseCode reads a code kind as HERD_CUDA_CODE spells it: cubin, ptx, or empty (or auto) for
// cubin with a fallback to PTX.
func ParseCode(s string) (Code, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return CodeAuto, nil
	case "cubin":
		return CodeCubin, nil
	case "ptx":
		return CodePTX, nil
	}
	return "", fmt.Errorf("cuda: %s = %q, allowed: cubin, ptx, auto", CodeEnv, s)
}

// Arch returns NVRTC's --gpu-architecture for this kind of code on a device of compute
// capability major.minor: sm_XY for a cubin (and for CodeAuto, which tries a cubin first),
// compute_XY for PTX.
func (c Code) Arch(major, minor int) string {
	if c == CodePTX {
		return fmt.Sprintf("compute_%d%d", major, minor)
	}
	return fmt.Sprintf("sm_%d%d", major, minor)
}

// codeOfArch returns the kind of code NVRTC produces for an architecture: a cubin for a real
// architecture (sm_XY, sm_90a), PTX for a virtual one (compute_XY).
func codeOfArch(arch string) Code {
	if strings.HasPrefix(arch, "sm_") {
		return CodeCubin
	}
	return CodePTX
}

// String returns the kind's name; CodeAuto is "auto".
func (c Code) String() string {
	if c == CodeAuto {
		return "auto"
	}
	return string(c)
}

// codeCacheKey hashes everything that determines NVRTC's output: its version, the kind of code,
// the architecture, the options and the source. Fields are length-prefixed so that no two
// different inputs produce the same byte stream.
func codeCacheKey(major, minor int, code Code, arch string, opts []string, src string) string {
	h := sha256.New()
	field := func(s string) { fmt.Fprintf(h, "%d:%s;", len(s), s) }
	field(fmt.Sprintf("nvrtc %d.%d", major, minor))
	field("code " + string(code))
	field(arch)
	for _, o := range opts {
		field(o)
	}
	field(src)
	return hex.EncodeToString(h.Sum(nil))
}
