// Package cudalib finds and opens the shared libraries of the CUDA stack that herd loads at
// run time with dlopen: libnvrtc (and the libnvrtc-builtins it loads itself), libcublasLt,
// libnccl and the driver's libcuda. The search is plain Go over a directory tree, so it is
// tested on any machine with a fake tree; opening needs cgo.
//
// Where CUDA 13 exists only inside a Python environment (torch's wheels carry NVRTC, cuBLAS and
// NCCL under site-packages/nvidia/cu13/lib, older wheels under site-packages/nvidia/*/lib), the
// search finds it there too. The order, for each soname from the newest down:
//
//  1. the file or soname named by the library's own variable ($HERD_NVRTC, $HERD_CUBLASLT,
//     $HERD_NCCL): used alone when set, so that a wrong value fails loudly;
//  2. each directory of $HERD_CUDA_LIBDIR (a colon-separated list);
//  3. $CUDA_HOME and $CUDA_PATH: lib64 and targets/x86_64-linux/lib;
//  4. /usr/local/cuda, then /usr/local/cuda-X.Y from the newest version down: lib64 and
//     targets/x86_64-linux/lib;
//  5. the system's library directories: /usr/lib/x86_64-linux-gnu, /usr/lib64, /usr/lib;
//  6. Python environments (see PythonRoots): in each site-packages or dist-packages,
//     nvidia/cu13/lib, nvidia/cu12/lib, every other nvidia/*/lib, torch/lib;
//  7. the bare soname, which leaves the choice to the dynamic loader (LD_LIBRARY_PATH, its
//     cache).
package cudalib

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Env is what the search reads from its surroundings. The zero Env reads the real process
// environment and file system; tests set Root to a fake tree and Getenv to a map.
type Env struct {
	// Root is prepended to every fixed directory of the search (/usr/local/cuda, /opt, ...).
	// Directories taken from environment variables are used as they are.
	Root string
	// Getenv reads an environment variable; nil means os.Getenv.
	Getenv func(string) string
}

func (e Env) getenv(k string) string {
	if e.Getenv != nil {
		return e.Getenv(k)
	}
	return os.Getenv(k)
}

// fixed returns the fixed directory p inside Root.
func (e Env) fixed(p string) string {
	if e.Root == "" {
		return p
	}
	return filepath.Join(e.Root, p)
}

// glob returns the matches of pattern sorted, or nothing when the pattern is malformed.
func glob(pattern string) []string {
	m, _ := filepath.Glob(pattern)
	sort.Strings(m)
	return m
}

// Dirs returns the directories searched, in order, without duplicates; directories that do not
// exist are left out.
func (e Env) Dirs() []string {
	var dirs []string
	seen := map[string]bool{}
	add := func(ds ...string) {
		for _, d := range ds {
			if d == "" {
				continue
			}
			d = filepath.Clean(d)
			if seen[d] || !isDir(d) {
				continue
			}
			seen[d] = true
			dirs = append(dirs, d)
		}
	}
	for _, d := range filepath.SplitList(e.getenv("HERD_CUDA_LIBDIR")) {
		add(d)
	}
	for _, v := range []string{"CUDA_HOME", "CUDA_PATH"} {
		if home := e.getenv(v); home != "" {
			add(filepath.Join(home, "lib64"), filepath.Join(home, "targets/x86_64-linux/lib"))
		}
	}
	add(e.fixed("/usr/local/cuda/lib64"), e.fixed("/usr/local/cuda/targets/x86_64-linux/lib"))
	for _, home := range versionsDescending(glob(e.fixed("/usr/local/cuda-*"))) {
		add(filepath.Join(home, "targets/x86_64-linux/lib"), filepath.Join(home, "lib64"))
	}
	add(e.fixed("/usr/lib/x86_64-linux-gnu"), e.fixed("/usr/lib64"), e.fixed("/usr/lib"))
	for _, sp := range e.SitePackages() {
		add(filepath.Join(sp, "nvidia/cu13/lib"), filepath.Join(sp, "nvidia/cu12/lib"))
		add(glob(filepath.Join(sp, "nvidia/*/lib"))...)
		add(filepath.Join(sp, "torch/lib"))
	}
	return dirs
}

// PythonRoots returns the prefixes of Python environments (virtual environments, conda
// environments, pyenv versions, the system's), most specific first: $VIRTUAL_ENV and
// $CONDA_PREFIX; every environment whose bin directory is on $PATH; virtual environments in
// the usual places under $HOME, /opt, /workspace and /venv; conda installations; pyenv
// versions; ~/.local; /usr/local and /usr. Only prefixes with a lib/python3* directory count.
func (e Env) PythonRoots() []string {
	home := e.getenv("HOME")
	var cands []string
	cands = append(cands, e.getenv("VIRTUAL_ENV"), e.getenv("CONDA_PREFIX"))
	for _, d := range filepath.SplitList(e.getenv("PATH")) {
		if filepath.Base(d) == "bin" {
			cands = append(cands, filepath.Dir(d))
		}
	}
	var patterns []string
	if home != "" {
		for _, p := range []string{".venv", "venv", "*/.venv", "*/venv", ".virtualenvs/*", "venvs/*", "envs/*", "*",
			"miniconda3", "miniconda3/envs/*", "anaconda3", "anaconda3/envs/*", "miniforge3", "miniforge3/envs/*",
			".pyenv/versions/*", ".local"} {
			patterns = append(patterns, filepath.Join(home, p))
		}
	}
	for _, p := range []string{"/venv", "/opt/venv", "/opt/*/venv", "/opt/*/.venv", "/opt/*", "/workspace/.venv",
		"/workspace/*/.venv", "/workspace/*/venv", "/opt/conda", "/opt/conda/envs/*", "/usr/local", "/usr"} {
		patterns = append(patterns, e.fixed(p))
	}
	for _, p := range patterns {
		cands = append(cands, glob(p)...)
	}
	var roots []string
	seen := map[string]bool{}
	for _, c := range cands {
		if c == "" {
			continue
		}
		c = filepath.Clean(c)
		if seen[c] || len(glob(filepath.Join(c, "lib/python3*"))) == 0 {
			continue
		}
		seen[c] = true
		roots = append(roots, c)
	}
	return roots
}

// SitePackages returns the site-packages and dist-packages directories of PythonRoots, newest
// Python first within each environment.
func (e Env) SitePackages() []string {
	var out []string
	for _, root := range e.PythonRoots() {
		for _, lib := range versionsDescending(glob(filepath.Join(root, "lib/python3*"))) {
			for _, sub := range []string{"site-packages", "dist-packages"} {
				if d := filepath.Join(lib, sub); isDir(d) {
					out = append(out, d)
				}
			}
		}
	}
	return out
}

// Candidates returns every place a library is looked for, in order: the value of the variable
// env alone when it is set; otherwise each soname (newest first) in each of Dirs, files that
// exist only, then each bare soname for the dynamic loader.
func (e Env) Candidates(env string, sonames []string) []string {
	if p := e.getenv(env); p != "" {
		return []string{p}
	}
	dirs := e.Dirs()
	var out []string
	for _, name := range sonames {
		for _, d := range dirs {
			if p := filepath.Join(d, name); isFile(p) {
				out = append(out, p)
			}
		}
	}
	return append(out, sonames...)
}

// versionsDescending orders paths ending in a version (cuda-12.4, python3.12) from the highest
// version down; paths without one keep their order after those with one.
func versionsDescending(paths []string) []string {
	out := slices.Clone(paths)
	slices.SortStableFunc(out, func(a, b string) int { return compareVersions(trailingVersion(b), trailingVersion(a)) })
	return out
}

// trailingVersion parses the dotted number at the end of a path's base name: "cuda-12.4" and
// "python3.12" give [12 4] and [3 12]; none gives nil.
func trailingVersion(p string) []int {
	base := filepath.Base(p)
	i := len(base)
	for i > 0 && (base[i-1] == '.' || base[i-1] >= '0' && base[i-1] <= '9') {
		i--
	}
	var v []int
	for _, f := range strings.Split(strings.Trim(base[i:], "."), ".") {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil
		}
		v = append(v, n)
	}
	return v
}

func compareVersions(a, b []int) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return a[i] - b[i]
		}
	}
	return len(a) - len(b)
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}
