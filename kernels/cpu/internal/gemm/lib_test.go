package gemm

import (
	"errors"
	"strings"
	"testing"
)

const missingLib = "/nonexistent/herd-test/libmissing.so"

func TestLoadMissingPathNamesIt(t *testing.T) {
	_, err := Load(missingLib)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Load(%q) error = %v, want ErrUnavailable", missingLib, err)
	}
	if haveCgo && !strings.Contains(err.Error(), missingLib) {
		t.Fatalf("Load(%q) error = %q, want it to name the path", missingLib, err)
	}
}

// TestLoadRejectsLibraryWithoutCBLAS opens a library that exists but has no cblas_sgemm.
func TestLoadRejectsLibraryWithoutCBLAS(t *testing.T) {
	if !haveCgo {
		t.Skip("built without cgo: Load opens nothing")
	}
	_, err := Load("libm.so.6")
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "cblas_sgemm") {
		t.Fatalf("Load(libm.so.6) error = %v, want ErrUnavailable naming cblas_sgemm", err)
	}
}

func TestLoadCachesPerPath(t *testing.T) {
	l1, err := Load("")
	if err != nil {
		t.Skipf("no BLAS library: %v", err)
	}
	l2, _ := Load("")
	l3, err := Load(l1.Path())
	if err != nil {
		t.Fatalf("Load(%q), the path Load(\"\") reported: %v", l1.Path(), err)
	}
	l4, _ := Load(l1.Path())
	if l1 != l2 || l3 != l4 || l1.Path() == "" {
		t.Fatalf("Load results: %p %p for \"\", %p %p for %q; want one *Lib per path and a non-empty Path", l1, l2, l3, l4, l1.Path())
	}
}

func TestDefaultOffWins(t *testing.T) {
	t.Setenv("HERD_BLAS", "off")
	t.Setenv("HERD_BLAS_LIB", missingLib)
	if lib, err := Default(); lib != nil || err != nil {
		t.Fatalf("Default() with HERD_BLAS=off = %v, %v; want nil, nil", lib, err)
	}
}

func TestDefaultRejectsUnknownSetting(t *testing.T) {
	t.Setenv("HERD_BLAS", "maybe")
	if lib, err := Default(); lib != nil || err == nil || !strings.Contains(err.Error(), "HERD_BLAS") {
		t.Fatalf("Default() with HERD_BLAS=maybe = %v, %v; want an error naming HERD_BLAS", lib, err)
	}
}

func TestDefaultLibMissingIsAnError(t *testing.T) {
	t.Setenv("HERD_BLAS", "")
	t.Setenv("HERD_BLAS_LIB", missingLib)
	lib, err := Default()
	if lib != nil || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Default() with HERD_BLAS_LIB=%s = %v, %v; want nil and ErrUnavailable", missingLib, lib, err)
	}
	if haveCgo && !strings.Contains(err.Error(), missingLib) {
		t.Fatalf("Default() error = %q, want it to name %s", err, missingLib)
	}
}

func TestDefaultLibLoadsThatLibrary(t *testing.T) {
	want, err := Load("libblas.so.3")
	if err != nil {
		t.Skipf("libblas.so.3 is not a usable CBLAS here: %v", err)
	}
	t.Setenv("HERD_BLAS", "on")
	t.Setenv("HERD_BLAS_LIB", "libblas.so.3")
	got, err := Default()
	if err != nil || got != want {
		t.Fatalf("Default() with HERD_BLAS_LIB=libblas.so.3 = %v, %v; want the library at %s", got, err, want.Path())
	}
}

func TestDefaultSearches(t *testing.T) {
	t.Setenv("HERD_BLAS", "")
	t.Setenv("HERD_BLAS_LIB", "")
	got, err := Default()
	want, wantErr := Load("")
	if got != want || (err == nil) != (wantErr == nil) {
		t.Fatalf("Default() = %v, %v; want Load(\"\")'s %v, %v", got, err, want, wantErr)
	}
	if err != nil && !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Default() error = %v, want ErrUnavailable", err)
	}
}
