package cudalib

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildLib compiles C source into the shared library dir/name with the given soname, with the
// C compiler cgo uses; it skips the test when there is none (or cgo is off).
func buildLib(t *testing.T, dir, name, soname, src string) string {
	t.Helper()
	if _, err := dlopen("libc.so.6", false); err != nil {
		t.Skipf("dlopen unavailable: %v", err)
	}
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "gcc"
	}
	if _, err := exec.LookPath(cc); err != nil {
		t.Skipf("no C compiler (%s) to build fake libraries: %v", cc, err)
	}
	c := filepath.Join(t.TempDir(), "lib.c")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name)
	cmd := exec.Command(cc, "-shared", "-fPIC", "-Wl,-soname,"+soname, "-o", out, c)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, b)
	}
	return out
}

// TestVersions opens fake libraries through HERD_CUDA_LIBDIR and calls their version functions
// through the same trampolines the real ones go through.
func TestVersions(t *testing.T) {
	dir := t.TempDir()
	buildLib(t, dir, "libherdfake-nvrtc.so.13", "libherdfake-nvrtc.so.13",
		"int nvrtcVersion(int* a, int* b) { *a = 13; *b = 0; return 0; }")
	buildLib(t, dir, "libherdfake-lt.so.13", "libherdfake-lt.so.13",
		"#include <stddef.h>\nsize_t cublasLtGetVersion(void) { return 130100; }")
	buildLib(t, dir, "libherdfake-nccl.so.2", "libherdfake-nccl.so.2",
		"int ncclGetVersion(int* v) { *v = 22809; return 0; }")
	buildLib(t, dir, "libherdfake-cuda.so.1", "libherdfake-cuda.so.1",
		"int cuDriverGetVersion(int* v) { *v = 13000; return 0; }")
	env := envOf(t.TempDir(), map[string]string{"HERD_CUDA_LIBDIR": dir})
	open := func(soname string) *Library {
		l, err := env.OpenLib(Lib{Name: soname, Env: "HERD_FAKE_UNSET", Sonames: []string{"libherdfake-missing.so.14", soname}})
		if err != nil {
			t.Fatal(err)
		}
		if l.Path() != filepath.Join(dir, soname) || l.RealPath() != filepath.Join(dir, soname) {
			t.Errorf("%s opened from %s (%s)", soname, l.Path(), l.RealPath())
		}
		return l
	}
	if major, minor, err := NVRTCVersion(open("libherdfake-nvrtc.so.13")); err != nil || major != 13 || minor != 0 {
		t.Errorf("NVRTCVersion = %d.%d, %v", major, minor, err)
	}
	if v, err := CublasLtVersion(open("libherdfake-lt.so.13")); err != nil || FormatCublasVersion(v) != "13.1.0" {
		t.Errorf("CublasLtVersion = %d, %v", v, err)
	}
	if v, err := NCCLVersion(open("libherdfake-nccl.so.2")); err != nil || FormatNCCLVersion(v) != "2.28.9" {
		t.Errorf("NCCLVersion = %d, %v", v, err)
	}
	if v, err := DriverVersion(open("libherdfake-cuda.so.1")); err != nil || FormatDriverVersion(v) != "13.0" {
		t.Errorf("DriverVersion = %d, %v", v, err)
	}
	_, err := env.OpenLib(Lib{Name: "x", Env: "HERD_FAKE_UNSET", Sonames: []string{"libherdfake-missing.so.14"}})
	if err == nil || !strings.Contains(err.Error(), "HERD_FAKE_UNSET") || !strings.Contains(err.Error(), "HERD_CUDA_LIBDIR") {
		t.Errorf("missing library: %v", err)
	}
}

// TestEnsureNVRTCBuiltins: builtins beside NVRTC but off the loader path are loaded by path,
// after which the loader resolves NVRTC's dlopen of the bare soname to them; builtins that are
// nowhere give an error that says what to set.
func TestEnsureNVRTCBuiltins(t *testing.T) {
	dir := t.TempDir()
	nvrtc := filepath.Join(dir, "libnvrtc.so.97")
	if err := os.WriteFile(nvrtc, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	buildLib(t, dir, "libnvrtc-builtins.so.97.3", "libnvrtc-builtins.so.97.3", "int herd_builtins_marker(void) { return 1; }")
	env := envOf(t.TempDir(), nil)
	if _, err := dlopen("libnvrtc-builtins.so.97.3", false); err == nil {
		t.Fatal("the fake builtins are on the loader path before the test loaded them")
	}
	b, err := env.EnsureNVRTCBuiltins(nvrtc, 97, 3)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Preloaded || b.OnLoaderPath || b.Path != filepath.Join(dir, "libnvrtc-builtins.so.97.3") {
		t.Errorf("Builtins = %+v", b)
	}
	if a := b.Advice(); !strings.Contains(a, "LD_LIBRARY_PATH="+dir) {
		t.Errorf("Advice = %q", a)
	}
	if _, err := dlopen("libnvrtc-builtins.so.97.3", false); err != nil {
		t.Errorf("after the preload, dlopen of the bare soname fails: %v", err)
	}
	if b, err := env.EnsureNVRTCBuiltins(nvrtc, 97, 3); err != nil || !b.OnLoaderPath {
		t.Errorf("second call: %+v, %v", b, err)
	}

	_, err = env.EnsureNVRTCBuiltins(nvrtc, 96, 1)
	if err == nil || !strings.Contains(err.Error(), "LD_LIBRARY_PATH") || !strings.Contains(err.Error(), "libnvrtc-builtins.so.96.1") {
		t.Errorf("missing builtins: %v", err)
	}
}
