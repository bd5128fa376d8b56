package cudalib

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// tree creates empty files (and their directories) under root.
func tree(t *testing.T, root string, files ...string) {
	t.Helper()
	for _, f := range files {
		p := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// rel strips root from each path, for readable comparisons.
func rel(root string, paths []string) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = strings.TrimPrefix(p, root)
	}
	return out
}

func envOf(root string, vars map[string]string) Env {
	return Env{Root: root, Getenv: func(k string) string { return vars[k] }}
}

// A machine like the GPU machine of docs: CUDA 12.4 and 13.0 toolkits, an older NVRTC in the
// system directory, and torch's virtual environment with the cu13 libraries and per-package
// cu12 ones.
var gpuMachine = []string{
	"/usr/local/cuda-12.4/targets/x86_64-linux/lib/libnvrtc.so.12",
	"/usr/local/cuda-13.0/targets/x86_64-linux/lib/libcublasLt.so.13",
	"/usr/lib/x86_64-linux-gnu/libnvrtc.so.11.2",
	"/usr/lib/x86_64-linux-gnu/libnccl.so.2",
	"/root/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib/libnvrtc.so.13",
	"/root/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib/libnvrtc-builtins.so.13.0",
	"/root/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib/libcublasLt.so.13",
	"/root/torch/.venv/lib/python3.12/site-packages/nvidia/nccl/lib/libnccl.so.2",
	"/root/torch/.venv/lib/python3.12/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12",
	"/root/torch/.venv/bin/python3",
}

func TestCandidatesOrder(t *testing.T) {
	root := t.TempDir()
	tree(t, root, gpuMachine...)
	env := envOf(root, map[string]string{"HOME": root + "/root"})

	// The newest soname wins wherever it is: here only the virtual environment has NVRTC 13.
	got := rel(root, env.Candidates(NVRTC.Env, NVRTC.Sonames))
	want := []string{
		"/root/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib/libnvrtc.so.13",
		"/usr/local/cuda-12.4/targets/x86_64-linux/lib/libnvrtc.so.12",
		"/root/torch/.venv/lib/python3.12/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12",
		"/usr/lib/x86_64-linux-gnu/libnvrtc.so.11.2",
		"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so",
	}
	if !slices.Equal(got, want) {
		t.Errorf("NVRTC candidates:\n got %q\nwant %q", got, want)
	}
	// For the same soname, the toolkit comes before the virtual environment.
	got = rel(root, env.Candidates(CublasLt.Env, CublasLt.Sonames))
	if len(got) < 2 || got[0] != "/usr/local/cuda-13.0/targets/x86_64-linux/lib/libcublasLt.so.13" ||
		got[1] != "/root/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib/libcublasLt.so.13" {
		t.Errorf("cuBLASLt candidates: %q", got)
	}
	got = rel(root, env.Candidates(NCCL.Env, NCCL.Sonames))
	if len(got) < 2 || got[0] != "/usr/lib/x86_64-linux-gnu/libnccl.so.2" || !strings.HasSuffix(got[1], "nvidia/nccl/lib/libnccl.so.2") {
		t.Errorf("NCCL candidates: %q", got)
	}
}

func TestCandidatesOverrides(t *testing.T) {
	root := t.TempDir()
	tree(t, root, gpuMachine...)
	tree(t, root, "/mylibs/libnvrtc.so.12", "/cudahome/lib64/libnvrtc.so.13")
	vars := map[string]string{"HOME": root + "/root", "HERD_CUDA_LIBDIR": root + "/nonexistent:" + root + "/mylibs"}
	env := envOf(root, vars)
	// HERD_CUDA_LIBDIR comes first for each soname, but a newer soname elsewhere still wins.
	got := rel(root, env.Candidates(NVRTC.Env, NVRTC.Sonames))
	if got[0] != "/root/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib/libnvrtc.so.13" || got[1] != "/mylibs/libnvrtc.so.12" {
		t.Errorf("with HERD_CUDA_LIBDIR: %q", got)
	}
	vars["CUDA_HOME"] = root + "/cudahome"
	got = rel(root, env.Candidates(NVRTC.Env, NVRTC.Sonames))
	if got[0] != "/cudahome/lib64/libnvrtc.so.13" {
		t.Errorf("with CUDA_HOME: %q", got)
	}
	// The library's own variable is used alone, even when it names nothing that exists.
	vars["HERD_NVRTC"] = "/somewhere/libnvrtc.so.99"
	if got := env.Candidates(NVRTC.Env, NVRTC.Sonames); !slices.Equal(got, []string{"/somewhere/libnvrtc.so.99"}) {
		t.Errorf("with HERD_NVRTC: %q", got)
	}
}

func TestPythonRoots(t *testing.T) {
	root := t.TempDir()
	tree(t, root,
		"/root/.venv/lib/python3.11/site-packages/x",
		"/root/proj/venv/lib/python3.12/site-packages/x",
		"/opt/torchenv/lib/python3.12/site-packages/x",
		"/opt/conda/envs/py/lib/python3.10/site-packages/x",
		"/active/lib/python3.13/site-packages/x",
		"/onpath/lib/python3.9/site-packages/x",
		"/onpath/bin/python3",
		"/usr/local/lib/python3.12/dist-packages/x",
		"/opt/notpython/bin/tool",
	)
	env := envOf(root, map[string]string{"HOME": root + "/root", "VIRTUAL_ENV": root + "/active", "PATH": root + "/onpath/bin:" + root + "/opt/notpython/bin"})
	got := rel(root, env.PythonRoots())
	want := []string{"/active", "/onpath", "/root/.venv", "/root/proj/venv", "/opt/torchenv", "/opt/conda/envs/py", "/usr/local"}
	if !slices.Equal(got, want) {
		t.Errorf("PythonRoots:\n got %q\nwant %q", got, want)
	}
	sp := rel(root, env.SitePackages())
	if sp[0] != "/active/lib/python3.13/site-packages" || sp[len(sp)-1] != "/usr/local/lib/python3.12/dist-packages" {
		t.Errorf("SitePackages: %q", sp)
	}
}

func TestLoaderDirs(t *testing.T) {
	root := t.TempDir()
	tree(t, root, gpuMachine...)
	env := envOf(root, map[string]string{"HOME": root + "/root"})
	got := rel(root, env.LoaderDirs())
	want := []string{
		"/root/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib",
		"/usr/local/cuda-13.0/targets/x86_64-linux/lib",
		"/usr/lib/x86_64-linux-gnu",
	}
	if !slices.Equal(got, want) {
		t.Errorf("LoaderDirs:\n got %q\nwant %q", got, want)
	}
}

func TestVersionsDescending(t *testing.T) {
	got := versionsDescending([]string{"/x/cuda-11.8", "/x/cuda-12.10", "/x/cuda", "/x/cuda-12.4", "/x/cuda-13.0"})
	want := []string{"/x/cuda-13.0", "/x/cuda-12.10", "/x/cuda-12.4", "/x/cuda-11.8", "/x/cuda"}
	if !slices.Equal(got, want) {
		t.Errorf("versionsDescending = %q, want %q", got, want)
	}
}
