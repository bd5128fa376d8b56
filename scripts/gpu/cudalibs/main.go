// Command cudalibs prints where herd finds the libraries of the CUDA stack on this machine and
// their versions, with the same search the CUDA backend and collective/nccl use (package
// kernels/cuda/cudalib). scripts/gpu/check runs it first:
//
//	cudalibs           one line per library: path and version, or why it was not found
//	cudalibs -ldpath   the directories to put on LD_LIBRARY_PATH, colon-separated: those of
//	                   NVRTC (which opens libnvrtc-builtins by soname), cuBLASLt and NCCL
//
// It needs no GPU and no cuda build tag.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/herd-llm/herd/kernels/cuda/cudalib"
)

func main() {
	ldpath := flag.Bool("ldpath", false, "print only the directories for LD_LIBRARY_PATH")
	flag.Parse()
	env := cudalib.Env{}
	if *ldpath {
		fmt.Println(strings.Join(env.LoaderDirs(), ":"))
		return
	}
	fmt.Printf("search order: %s\n", strings.Join(env.Dirs(), " "))
	for _, l := range env.Report() {
		fmt.Println(l)
	}
	fmt.Printf("LD_LIBRARY_PATH=%s\n", os.Getenv("LD_LIBRARY_PATH"))
}
