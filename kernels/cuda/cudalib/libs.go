package cudalib

import (
	"fmt"
	"os"
	"path/filepath"
)

// The libraries herd loads, each with the variable that names it explicitly and its sonames,
// newest first.
var (
	NVRTC    = Lib{Name: "libnvrtc", Env: "HERD_NVRTC", Sonames: []string{"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"}}
	CublasLt = Lib{Name: "libcublasLt", Env: "HERD_CUBLASLT", Sonames: []string{"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so.11"}}
	NCCL     = Lib{Name: "libnccl", Env: "HERD_NCCL", Sonames: []string{"libnccl.so.2", "libnccl.so"}}
	// Driver is the driver's libcuda, which cuda-tagged binaries link against; it is opened
	// here only to report its path and version (HERD_LIBCUDA names the file to report on).
	Driver = Lib{Name: "libcuda", Env: "HERD_LIBCUDA", Sonames: []string{"libcuda.so.1"}}
)

// Lib describes one library of the CUDA stack.
type Lib struct {
	Name    string   // e.g. "libnvrtc"
	Env     string   // the variable that names its file explicitly
	Sonames []string // tried in order
}

// OpenLib finds and loads the library (see the package comment for the order).
func (e Env) OpenLib(l Lib) (*Library, error) { return e.Open(l.Env, l.Sonames) }

// NVRTCVersion calls nvrtcVersion.
func NVRTCVersion(l *Library) (major, minor int, err error) {
	f, err := l.Sym("nvrtcVersion")
	if err != nil {
		return 0, 0, err
	}
	if r, a, b := callInt2(f); r != 0 {
		return 0, 0, fmt.Errorf("cuda: %s: nvrtcVersion returned %d", l.path, r)
	} else {
		return a, b, nil
	}
}

// CublasLtVersion calls cublasLtGetVersion: major*10000 + minor*100 + patch (130100 is 13.1.0).
func CublasLtVersion(l *Library) (int, error) {
	f, err := l.Sym("cublasLtGetVersion")
	if err != nil {
		return 0, err
	}
	return int(callSize(f)), nil
}

// NCCLVersion calls ncclGetVersion: major*10000 + minor*100 + patch since 2.9 (22809 is 2.28.9).
func NCCLVersion(l *Library) (int, error) {
	f, err := l.Sym("ncclGetVersion")
	if err != nil {
		return 0, err
	}
	if r, v := callInt1(f); r != 0 {
		return 0, fmt.Errorf("cuda: %s: ncclGetVersion returned %d", l.path, r)
	} else {
		return v, nil
	}
}

// DriverVersion calls cuDriverGetVersion: major*1000 + minor*10 (13000 is CUDA 13.0).
func DriverVersion(l *Library) (int, error) {
	f, err := l.Sym("cuDriverGetVersion")
	if err != nil {
		return 0, err
	}
	if r, v := callInt1(f); r != 0 {
		return 0, fmt.Errorf("cuda: %s: cuDriverGetVersion returned %d", l.path, r)
	} else {
		return v, nil
	}
}

// FormatCublasVersion formats a cublasLtGetVersion value: 130100 as "13.1.0".
func FormatCublasVersion(v int) string {
	return fmt.Sprintf("%d.%d.%d", v/10000, v%10000/100, v%100)
}

// FormatDriverVersion formats a cuDriverGetVersion value: 13000 as "13.0".
func FormatDriverVersion(v int) string { return fmt.Sprintf("%d.%d", v/1000, v%1000/10) }

// FormatNCCLVersion formats an NCCL_VERSION_CODE: X*1000+Y*100+Z up to 2.8, X*10000+Y*100+Z
// after.
func FormatNCCLVersion(code int) string {
	if code < 10000 {
		return fmt.Sprintf("%d.%d.%d", code/1000, code%1000/100, code%100)
	}
	return fmt.Sprintf("%d.%d.%d", code/10000, code%10000/100, code%100)
}

// Builtins is what EnsureNVRTCBuiltins learned about libnvrtc-builtins, which NVRTC opens by
// soname (through the loader's search, not beside itself) at its first compilation; without
// it every compilation fails with NVRTC_ERROR_BUILTIN_OPERATION_FAILURE.
type Builtins struct {
	Soname       string // e.g. libnvrtc-builtins.so.13.0
	Path         string // the file loaded, when it was loaded by path
	OnLoaderPath bool   // the loader finds it by soname on its own (LD_LIBRARY_PATH, its cache)
	Preloaded    bool   // it was not on the loader path and was loaded from Path instead
}

// Advice says what to change so that the loader finds the builtins by itself, or "" when it
// does.
func (b Builtins) Advice() string {
	if b.OnLoaderPath || b.Path == "" {
		return ""
	}
	return fmt.Sprintf("%s is not on the loader path; loaded it from %s. Set LD_LIBRARY_PATH=%s before starting the process to make that unnecessary",
		b.Soname, b.Path, filepath.Dir(b.Path))
}

// EnsureNVRTCBuiltins makes sure that the libnvrtc-builtins of NVRTC major.minor (loaded from
// nvrtcPath) can be opened by soname. When the loader does not find it, the file is looked for
// beside NVRTC and in Dirs and loaded from there with RTLD_GLOBAL: the loader then matches
// NVRTC's own dlopen of the soname against the library already in the process. The error
// names the variable to set when the file cannot be found or loaded.
func (e Env) EnsureNVRTCBuiltins(nvrtcPath string, major, minor int) (Builtins, error) {
	b := Builtins{Soname: fmt.Sprintf("libnvrtc-builtins.so.%d.%d", major, minor)}
	if loaded(b.Soname) {
		b.OnLoaderPath = true
		return b, nil
	}
	if _, err := dlopen(b.Soname, true); err == nil {
		b.OnLoaderPath = true
		return b, nil
	}
	nvDir := filepath.Dir(nvrtcPath)
	if real, err := filepath.EvalSymlinks(nvrtcPath); err == nil {
		nvDir = filepath.Dir(real)
	}
	var tried []string
	for _, d := range append([]string{nvDir}, e.Dirs()...) {
		for _, p := range append([]string{filepath.Join(d, b.Soname)}, glob(filepath.Join(d, b.Soname+".*"))...) {
			if !isFile(p) {
				continue
			}
			if _, err := dlopen(p, true); err != nil {
				tried = append(tried, err.Error())
				continue
			}
			b.Path = p
			if !loaded(b.Soname) {
				return b, fmt.Errorf("cuda: %s loaded, but the loader does not match it to %s (its soname differs); set LD_LIBRARY_PATH to the directory of the NVRTC %d.%d builtins",
					p, b.Soname, major, minor)
			}
			b.Preloaded = true
			return b, nil
		}
	}
	return b, fmt.Errorf("cuda: NVRTC %d.%d (%s) needs %s, which the dynamic loader does not find and which is not beside it (%s); set LD_LIBRARY_PATH to the directory that holds it before starting the process, or every compilation fails with NVRTC_ERROR_BUILTIN_OPERATION_FAILURE%s",
		major, minor, nvrtcPath, b.Soname, nvDir, triedSuffix(tried))
}

func triedSuffix(tried []string) string {
	if len(tried) == 0 {
		return ""
	}
	return fmt.Sprintf(" (found but failed to load: %v)", tried)
}

// Report is one line per library of the CUDA stack: where it was found and its version, or
// why not. It loads each library (and, for NVRTC, its builtins) into the process.
func (e Env) Report() []string {
	var out []string
	line := func(l Lib, f func(*Library) (string, error)) {
		lib, err := e.OpenLib(l)
		if err != nil {
			out = append(out, fmt.Sprintf("%-12s not found: %v", l.Name, err))
			return
		}
		v, err := f(lib)
		if err != nil {
			v = "version unknown: " + err.Error()
		}
		out = append(out, fmt.Sprintf("%-12s %s  %s", l.Name, lib.RealPath(), v))
	}
	line(Driver, func(l *Library) (string, error) {
		v, err := DriverVersion(l)
		return "driver API " + FormatDriverVersion(v), err
	})
	line(NVRTC, func(l *Library) (string, error) {
		major, minor, err := NVRTCVersion(l)
		if err != nil {
			return "", err
		}
		s := fmt.Sprintf("NVRTC %d.%d", major, minor)
		b, err := e.EnsureNVRTCBuiltins(l.RealPath(), major, minor)
		switch {
		case err != nil:
			return s + "; builtins: " + err.Error(), nil
		case b.OnLoaderPath:
			return s + "; builtins " + b.Soname + " on the loader path", nil
		default:
			return s + "; builtins: " + b.Advice(), nil
		}
	})
	line(CublasLt, func(l *Library) (string, error) {
		v, err := CublasLtVersion(l)
		return "cuBLASLt " + FormatCublasVersion(v), err
	})
	line(NCCL, func(l *Library) (string, error) {
		v, err := NCCLVersion(l)
		return "NCCL " + FormatNCCLVersion(v), err
	})
	return out
}

// LoaderDirs returns the directories of the libraries the process needs at run time, for
// LD_LIBRARY_PATH: those of NVRTC (whose builtins NVRTC opens by soname), cuBLASLt and NCCL
// as the search finds them, in that order, without duplicates; libraries found only by the
// loader already need nothing.
func (e Env) LoaderDirs() []string {
	var dirs []string
	seen := map[string]bool{}
	for _, l := range []Lib{NVRTC, CublasLt, NCCL} {
		for _, c := range e.Candidates(l.Env, l.Sonames) {
			if filepath.Base(c) == c { // a bare soname: the loader's own business
				break
			}
			if _, err := os.Stat(c); err != nil {
				continue
			}
			d := filepath.Dir(c)
			if !seen[d] {
				seen[d] = true
				dirs = append(dirs, d)
			}
			break
		}
	}
	return dirs
}
