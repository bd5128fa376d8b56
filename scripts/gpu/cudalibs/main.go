// Command cudalibs prints where herd finds the libraries of the CUDA stack on this machine and
// their versions, with the same search the CUDA backend and collective/nccl use (package
// kernels/cuda/cudalib). scripts/gpu/check runs it first:
//
//	cudalibs           one line per library: path and version, or why it was not found
//	cudalibs -ldpath   the directories to put on LD_LIBRARY_PATH, colon-separated: those of
//	                   NVRTC (which opens libnvrtc-builtins by soname), cuBLASLt and NCCL
//	cudalibs -pythons  the python3 executables of the Python environments the search knows,
//	                   one a line, most specific first (for finding the one with torch)
//
// It needs no GPU and no cuda build tag.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/herd-llm/herd/kernels/cuda/cudalib"
)

func main() {
	ldpath := flag.Bool("ldpath", false, "print only the directories for LD_LIBRARY_PATH")
	pythons := flag.Bool("pythons", false, "print the python3 executables of the Python environments found")
	flag.Parse()
	env := cudalib.Env{}
	switch {
	case *ldpath:
		fmt.Println(strings.Join(env.LoaderDirs(), ":"))
		return
	case *pythons:
		for _, root := range env.PythonRoots() {
			if p := filepath.Join(root, "bin", "python3"); isExecutable(p) {
				fmt.Println(p)
			}
		}
		return
	}
	fmt.Printf("search order: %s\n", strings.Join(env.Dirs(), " "))
	for _, l := range env.Report() {
		fmt.Println(l)
	}
	fmt.Printf("LD_LIBRARY_PATH=%s\n", os.Getenv("LD_LIBRARY_PATH"))
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}
