// Package src holds the CUDA C sources of herd's kernels, one .cu file per op family with
// forward and backward side by side. The CUDA backend compiles them at run time with NVRTC
// for the device it finds, so the package itself is plain Go and builds everywhere.
//
// The files hold no host code and include no CUDA headers; the device helpers they share
// (bf16 stored as unsigned short and rounded to nearest, ties to even; fixed-order warp sums)
// live in common.cuh, which Files inlines into each source so that NVRTC compiles every file
// on its own. Kernel names are <op>_<variant>: _f32 runs all in
// fp32; _bf16 keeps activations in bf16 and parameters, their gradients and statistics in
// fp32, accumulating in fp32 (fp64 for the gradient norm); _f32_bf16 (RMSNorm) reads the fp32
// residual stream and writes a bf16 activation, and backward the reverse. Launch geometry and shared memory
// are documented in each file's header.
package src

import (
	"embed"
	"strings"
)

//go:embed *.cu common.cuh
var files embed.FS

// commonInclude is the line by which a kernel file includes the shared helpers.
const commonInclude = "#include \"common.cuh\"\n"

// Files returns every kernel source, keyed by file name (for example "rmsnorm.cu"), with
// common.cuh inlined in place of its #include, ready for NVRTC.
func Files() map[string]string {
	common := read("common.cuh")
	entries, err := files.ReadDir(".")
	if err != nil {
		panic("src: embedded sources unreadable: " + err.Error())
	}
	out := make(map[string]string, len(entries))
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".cu") {
			out[e.Name()] = strings.Replace(read(e.Name()), commonInclude, common, 1)
		}
	}
	return out
}

func read(name string) string {
	b, err := files.ReadFile(name)
	if err != nil {
		panic("src: embedded sources unreadable: " + err.Error())
	}
	return string(b)
}

// Kernel describes one extern "C" kernel for the launch code: its name, the file that defines
// it and its parameters as written in the source, in order. bf16_t is a 2-byte unsigned short;
// long long is 8 bytes; int is 4 bytes.
type Kernel struct {
	Name   string
	File   string
	Params []string
}

// Kernels lists every kernel in the sources. A test keeps it in step with the .cu files.
var Kernels = []Kernel{
	// embedding.cu
	{"embedding_fwd_f32", "embedding.cu", []string{"float *out", "const float *table", "const int *tok", "int ntok", "int dim", "int rows", "int *status"}},
	{"embedding_fwd_bf16", "embedding.cu", []string{"bf16_t *out", "const float *table", "const int *tok", "int ntok", "int dim", "int rows", "int *status"}},
	{"embedding_bwd_f32", "embedding.cu", []string{"float *dtable", "const float *dout", "const int *order", "const int *segStart", "const int *segTok", "int nseg", "int dim"}},
	{"embedding_bwd_bf16", "embedding.cu", []string{"float *dtable", "const bf16_t *dout", "const int *order", "const int *segStart", "const int *segTok", "int nseg", "int dim"}},
	// rmsnorm.cu
	{"rmsnorm_fwd_f32", "rmsnorm.cu", []string{"float *out", "float *rstd", "const float *x", "const float *gain", "int rows", "int dim", "float eps"}},
	{"rmsnorm_fwd_bf16", "rmsnorm.cu", []string{"bf16_t *out", "float *rstd", "const bf16_t *x", "const float *gain", "int rows", "int dim", "float eps"}},
	{"rmsnorm_bwd_f32", "rmsnorm.cu", []string{"float *dx", "float *part", "const float *dout", "const float *x", "const float *gain", "const float *rstd", "int rows", "int dim", "int rowsPerBlock"}},
	{"rmsnorm_bwd_bf16", "rmsnorm.cu", []string{"bf16_t *dx", "float *part", "const bf16_t *dout", "const bf16_t *x", "const float *gain", "const float *rstd", "int rows", "int dim", "int rowsPerBlock"}},
	{"rmsnorm_fwd_f32_bf16", "rmsnorm.cu", []string{"bf16_t *out", "float *rstd", "const float *x", "const float *gain", "int rows", "int dim", "float eps"}},
	{"rmsnorm_bwd_f32_bf16", "rmsnorm.cu", []string{"float *dx", "float *part", "const bf16_t *dout", "const float *x", "const float *gain", "const float *rstd", "int rows", "int dim", "int rowsPerBlock"}},
	{"rmsnorm_bwd_dgain_f32", "rmsnorm.cu", []string{"float *dgain", "const float *part", "int nblocks", "int dim"}},
	// rope.cu
	{"rope_fwd_f32", "rope.cu", []string{"float *out", "const float *x", "int B", "int T", "int H", "int D", "int pos0", "double theta"}},
	{"rope_fwd_bf16", "rope.cu", []string{"bf16_t *out", "const bf16_t *x", "int B", "int T", "int H", "int D", "int pos0", "double theta"}},
	{"rope_bwd_f32", "rope.cu", []string{"float *dx", "const float *dout", "int B", "int T", "int H", "int D", "int pos0", "double theta"}},
	{"rope_bwd_bf16", "rope.cu", []string{"bf16_t *dx", "const bf16_t *dout", "int B", "int T", "int H", "int D", "int pos0", "double theta"}},
	// swiglu.cu
	{"swiglu_fwd_f32", "swiglu.cu", []string{"float *out", "const float *a", "const float *b", "long long n"}},
	{"swiglu_fwd_bf16", "swiglu.cu", []string{"bf16_t *out", "const bf16_t *a", "const bf16_t *b", "long long n"}},
	{"swiglu_bwd_f32", "swiglu.cu", []string{"float *da", "float *db", "const float *dout", "const float *a", "const float *b", "long long n"}},
	{"swiglu_bwd_bf16", "swiglu.cu", []string{"bf16_t *da", "bf16_t *db", "const bf16_t *dout", "const bf16_t *a", "const bf16_t *b", "long long n"}},
	// add.cu
	{"add_f32", "add.cu", []string{"float *out", "const float *a", "const float *b", "long long n"}},
	{"add_bf16", "add.cu", []string{"bf16_t *out", "const bf16_t *a", "const bf16_t *b", "long long n"}},
	{"scale_f32", "add.cu", []string{"float *x", "float s", "long long n"}},
	{"scale_bf16", "add.cu", []string{"bf16_t *x", "float s", "long long n"}},
	{"zero_f32", "add.cu", []string{"float *x", "long long n"}},
	{"zero_bf16", "add.cu", []string{"bf16_t *x", "long long n"}},
	// cast.cu
	{"cast_f32_to_bf16", "cast.cu", []string{"bf16_t *dst", "const float *src", "long long n"}},
	{"cast_bf16_to_f32", "cast.cu", []string{"float *dst", "const bf16_t *src", "long long n"}},
	// crossentropy.cu
	{"crossentropy_fwd_f32", "crossentropy.cu", []string{"float *losses", "float *lse", "const float *logits", "const int *targets", "int rows", "int vocab", "int *status"}},
	{"crossentropy_fwd_bf16", "crossentropy.cu", []string{"float *losses", "float *lse", "const bf16_t *logits", "const int *targets", "int rows", "int vocab", "int *status"}},
	{"crossentropy_bwd_f32", "crossentropy.cu", []string{"float *dlogits", "const float *logits", "const float *lse", "const int *targets", "int rows", "int vocab", "float scale"}},
	{"crossentropy_bwd_bf16", "crossentropy.cu", []string{"bf16_t *dlogits", "const bf16_t *logits", "const float *lse", "const int *targets", "int rows", "int vocab", "float scale"}},
	// adamw.cu
	{"adamw_f32", "adamw.cu", []string{"float *p", "const float *g", "float *m", "float *v", "long long n", "float b1", "float b2", "float lrc1", "float isc2", "float eps", "float decay", "float gradScale"}},
	{"adamw_bf16", "adamw.cu", []string{"float *p", "const float *g", "float *m", "float *v", "bf16_t *pw", "long long n", "float b1", "float b2", "float lrc1", "float isc2", "float eps", "float decay", "float gradScale"}},
	{"sumsq_partial_f32", "adamw.cu", []string{"double *part", "const float *x", "long long n", "long long chunk"}},
	{"sumsq_partial_bf16", "adamw.cu", []string{"double *part", "const bf16_t *x", "long long n", "long long chunk"}},
	{"sumsq_final_f64", "adamw.cu", []string{"double *out", "const double *part", "int nparts"}},
	// attention.cu (compiled once per head size D with -DHERD_HD=D)
	{"attention_fwd_bf16", "attention.cu", []string{"bf16_t *out", "float *lse", "const bf16_t *q", "const bf16_t *k", "const bf16_t *v", "int B", "int T", "int H", "float scale"}},
	{"attention_bwd_delta_bf16", "attention.cu", []string{"float *delta", "const bf16_t *dout", "const bf16_t *out", "int B", "int T", "int H"}},
	{"attention_bwd_dkdv_bf16", "attention.cu", []string{"bf16_t *dk", "bf16_t *dv", "const bf16_t *dout", "const float *lse", "const float *delta", "const bf16_t *q", "const bf16_t *k", "const bf16_t *v", "int B", "int T", "int H", "float scale"}},
	{"attention_bwd_dq_bf16", "attention.cu", []string{"bf16_t *dq", "const bf16_t *dout", "const float *lse", "const float *delta", "const bf16_t *q", "const bf16_t *k", "const bf16_t *v", "int B", "int T", "int H", "float scale"}},
	{"attention_cached_bf16", "attention.cu", []string{"bf16_t *out", "const bf16_t *q", "const bf16_t *k", "const bf16_t *v", "int tq", "int tk", "int H", "float scale"}},
}
