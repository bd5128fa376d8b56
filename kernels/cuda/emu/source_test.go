package emu

import (
	"strings"
	"testing"

	"github.com/herd-llm/herd/kernels/cuda/src"
)

func TestRewriteAsm(t *testing.T) {
	in := `x; asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(f(b0, 1)), "r"(b1)); y;`
	got, err := rewriteAsm(in)
	if err != nil {
		t.Fatal(err)
	}
	want := `x; herd_emu::mma_m16n8k16(c[0], c[1], c[2], c[3], a[0], a[1], a[2], a[3], f(b0, 1), b1); y;`
	if got != want {
		t.Errorf("rewriteAsm:\n got %s\nwant %s", got, want)
	}
	if _, err := rewriteAsm(`asm volatile("bar.sync 0;");`); err == nil || !strings.Contains(err.Error(), "bar.sync") {
		t.Errorf("an instruction the emulator does not implement: %v", err)
	}
}

// Every kernel file turns into a module that names each of its kernels in the table, and no
// inline PTX survives.
func TestModuleSource(t *testing.T) {
	for name, code := range src.Files() {
		cpp, err := moduleSource(name, code, src.Kernels)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if strings.Contains(cpp, "asm(") || strings.Contains(cpp, `extern "C" __global__`) {
			t.Errorf("%s: inline PTX or C linkage left in the module source", name)
		}
		for _, k := range src.Kernels {
			if k.File == name && !strings.Contains(cpp, `{"`+k.Name+`", herd_module::call_`+k.Name+`}`) {
				t.Errorf("%s: kernel %s missing from the module's table", name, k.Name)
			}
		}
	}
}
