package cuda

import "testing"

func TestParseCode(t *testing.T) {
	for in, want := range map[string]Code{"": CodeAuto, "auto": CodeAuto, "cubin": CodeCubin, " PTX ": CodePTX} {
		if got, err := ParseCode(in); err != nil || got != want {
			t.Errorf("ParseCode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseCode("sass"); err == nil {
		t.Error("ParseCode(sass) succeeded")
	}
}

func TestCodeArch(t *testing.T) {
	for _, c := range []struct {
		code         Code
		major, minor int
		arch         string
	}{{CodeCubin, 9, 0, "sm_90"}, {CodeAuto, 8, 0, "sm_80"}, {CodePTX, 9, 0, "compute_90"}} {
		if got := c.code.Arch(c.major, c.minor); got != c.arch {
			t.Errorf("%v.Arch(%d, %d) = %s, want %s", c.code, c.major, c.minor, got, c.arch)
		}
		if c.code != CodeAuto && codeOfArch(c.arch) != c.code {
			t.Errorf("codeOfArch(%s) = %v, want %v", c.arch, codeOfArch(c.arch), c.code)
		}
	}
	if codeOfArch("sm_90a") != CodeCubin {
		t.Error("sm_90a is a real architecture")
	}
}

// The on-disk cache must never hand a PTX file to a cubin load or code for one architecture to
// another: every input of the compilation changes the key.
func TestCodeCacheKey(t *testing.T) {
	base := codeCacheKey(13, 0, CodeCubin, "sm_90", []string{"--std=c++17"}, "src")
	for name, k := range map[string]string{
		"kind":    codeCacheKey(13, 0, CodePTX, "sm_90", []string{"--std=c++17"}, "src"),
		"arch":    codeCacheKey(13, 0, CodeCubin, "sm_80", []string{"--std=c++17"}, "src"),
		"version": codeCacheKey(12, 8, CodeCubin, "sm_90", []string{"--std=c++17"}, "src"),
		"options": codeCacheKey(13, 0, CodeCubin, "sm_90", []string{"--std=c++17", "-DHERD_HD=64"}, "src"),
		"source":  codeCacheKey(13, 0, CodeCubin, "sm_90", []string{"--std=c++17"}, "src2"),
		"fields":  codeCacheKey(13, 0, CodeCubin, "sm_90", []string{"--std=c++17s"}, "rc"),
	} {
		if k == base {
			t.Errorf("changing the %s leaves the cache key unchanged", name)
		}
	}
	if again := codeCacheKey(13, 0, CodeCubin, "sm_90", []string{"--std=c++17"}, "src"); again != base {
		t.Error("the cache key is not deterministic")
	}
}
