package src

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// kernelDecl matches an extern "C" kernel's signature: its name and its parameter text.
var kernelDecl = regexp.MustCompile(`extern "C" __global__ void (\w+)\(([^)]*)\)`)

// params splits a parameter list as written in C and normalizes its spacing.
func params(list string) []string {
	var out []string
	for _, p := range strings.Split(list, ",") {
		out = append(out, strings.Join(strings.Fields(p), " "))
	}
	return out
}

func TestFilesEmbedsEverySource(t *testing.T) {
	onDisk, err := filepath.Glob("*.cu")
	if err != nil {
		t.Fatal(err)
	}
	got := Files()
	if len(got) != len(onDisk) {
		t.Fatalf("Files() has %d sources, the folder %d", len(got), len(onDisk))
	}
	for _, name := range onDisk {
		if strings.TrimSpace(got[name]) == "" {
			t.Errorf("%s: missing or empty in Files()", name)
		}
		if strings.Contains(got[name], "#include") || !strings.Contains(got[name], "typedef unsigned short bf16_t;") {
			t.Errorf("%s: common.cuh is not inlined in Files()", name)
		}
	}
}

// TestKernelsTableMatchesSources checks both directions: every listed kernel is defined in its
// file with the listed parameters, and every kernel defined in a file is listed.
func TestKernelsTableMatchesSources(t *testing.T) {
	srcs := Files()
	listed := map[string]Kernel{}
	for _, k := range Kernels {
		if _, dup := listed[k.Name]; dup {
			t.Errorf("%s: listed twice", k.Name)
		}
		listed[k.Name] = k
		src, ok := srcs[k.File]
		if !ok {
			t.Errorf("%s: file %s does not exist", k.Name, k.File)
			continue
		}
		if !strings.Contains(src, `extern "C" __global__ void `+k.Name+`(`) {
			t.Errorf("%s: not defined as extern \"C\" __global__ void %s( in %s", k.Name, k.Name, k.File)
		}
	}
	for file, src := range srcs {
		for _, m := range kernelDecl.FindAllStringSubmatch(src, -1) {
			k, ok := listed[m[1]]
			switch {
			case !ok:
				t.Errorf("%s: kernel %s is not in the Kernels table", file, m[1])
			case k.File != file:
				t.Errorf("%s: listed in %s but defined in %s", m[1], k.File, file)
			case !slices.Equal(k.Params, params(m[2])):
				t.Errorf("%s: table params %q, source params %q", m[1], k.Params, params(m[2]))
			}
		}
	}
}

// TestSourcesCompile runs nvcc on every source exactly as Files returns it to NVRTC (common.cuh
// inlined, compiled alone from a directory with nothing else) and fails on any error or warning: to PTX for
// compute_80 (A100) and compute_90 (Hopper), as NVRTC will at run time, and through ptxas to
// sm_80 and sm_90 machine code, which catches what only the assembler rejects. nvcc is the
// closest check available without a GPU.
func TestSourcesCompile(t *testing.T) {
	nvcc, err := exec.LookPath("nvcc")
	if err != nil {
		t.Skip("nvcc not on PATH (no CUDA toolkit here); .cu sources not compiled")
	}
	dir := t.TempDir()
	var names []string
	for name, src := range Files() {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		variants := defineVariants[name]
		if variants == nil {
			variants = []string{""}
		}
		for _, target := range [][2]string{{"-ptx", "compute_80"}, {"-ptx", "compute_90"}, {"-cubin", "sm_80"}, {"-cubin", "sm_90"}} {
			for _, define := range variants {
				mode, arch := target[0], target[1]
				args := []string{mode, "-arch=" + arch, "-Werror", "all-warnings", "-o", "/dev/null"}
				label := name + "/" + arch
				if define != "" {
					args = append(args, define)
					label += "/" + strings.TrimPrefix(define, "-D")
				}
				t.Run(label, func(t *testing.T) {
					t.Parallel()
					var stderr bytes.Buffer
					cmd := exec.Command(nvcc, append(args, name)...)
					cmd.Dir = dir
					cmd.Stdout = &stderr
					cmd.Stderr = &stderr
					if err := cmd.Run(); err != nil {
						t.Fatalf("nvcc %s -arch=%s %s %s: %v\n%s", mode, arch, define, name, err, stderr.String())
					}
					if stderr.Len() != 0 {
						t.Fatalf("nvcc %s -arch=%s %s %s printed output:\n%s", mode, arch, define, name, stderr.String())
					}
				})
			}
		}
	}
}

// defineVariants lists the -D options a source is compiled with, one nvcc run each, for sources
// the launcher compiles more than once: attention.cu is built per head size (HERD_HD), and these
// cover its scalar path (8) and its tensor-core path with the register tiles of small (16),
// common (64) and large (128) heads.
var defineVariants = map[string][]string{
	"attention.cu": {"-DHERD_HD=8", "-DHERD_HD=16", "-DHERD_HD=64", "-DHERD_HD=128"},
}
