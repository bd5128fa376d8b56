package worker

import (
	"fmt"
	"testing"
	"time"

	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/collective/collectivetest"
	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu"
	"github.com/herd-llm/herd/model"
)

// BenchmarkTensorParallel trains a 4-block model (d 256, 4 heads, ffn 768, vocab 4096) on
// micro-batches of 4 x 256 tokens: on one process (the baseline, in the same run), and on 2
// tensor-parallel ranks over TCP rings on loopback with sequence parallelism on (backward's
// gathers overlapped, then waited for at once) and off. It reports, per rank, the step time
// and its ratio to one process, the time waiting for the tensor group's collectives, the
// activations kept and the bytes sent per step.
//
//	go test ./worker -run '^$' -bench TensorParallel -benchtime 1x
func BenchmarkTensorParallel(b *testing.B) {
	c := model.Config{Dim: 256, Layers: 4, Heads: 4, FFNHidden: model.FFNHiddenFor(256), Vocab: 4096, MaxSeq: 256,
		NormEps: 1e-6, RopeTheta: 10000, Remat: model.RematHybrid, PeakLR: 1e-3}
	const steps, micro, batch, seq = 4, 2, 4, 256
	for range b.N {
		start := time.Now()
		one := trainOne(b, c, cpu.New[float32](cpu.Options{}), steps, micro, batch, seq)
		oneStep := time.Since(start) / steps
		fmt.Printf("one process: %v per step, kept %.1f MiB\n", oneStep.Round(time.Millisecond), float64(one.kept)/(1<<20))
		for _, tc := range []struct {
			name         string
			seq, overlap bool
		}{
			{"tp 2, sequence parallel, gathers overlapped", true, true},
			{"tp 2, sequence parallel, gathers waited at once", true, false},
			{"tp 2, no sequence parallelism", false, true},
		} {
			rings := collectivetest.StartRing(b, 2, nil)
			r := trainTensorOverlap(b, c, 2, tc.seq, tc.overlap, []collective.Communicator{rings[0], rings[1]}, steps, micro, batch, seq)
			fmt.Printf("%s: %v per step (%.2fx one process), waiting %v for collectives, kept %.1f MiB (%.2fx less), sent %.1f MiB per step (formula %.1f)\n",
				tc.name, r.stepTime.Round(time.Millisecond), float64(r.stepTime)/float64(oneStep), r.waited.Round(time.Millisecond),
				float64(r.kept)/(1<<20), float64(one.kept)/float64(r.kept), float64(r.sentPerStep)/(1<<20),
				(micro*model.TensorCommBytes(c, c.Remat, kernels.Float32, batch*seq, 2, tc.seq)+8)/(1<<20))
		}
	}
}
