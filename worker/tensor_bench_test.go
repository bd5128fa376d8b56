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
// micro-batches of 4 x 256 tokens, 2 per step: on one process (the baseline, in the same run)
// and on 2 and 4 tensor-parallel ranks over TCP rings on loopback, with sequence parallelism
// on (backward's gathers overlapped, and for tp 2 also waited for at once) and off. It prints
// a table of rank 0's figures: parameters held, activations kept for backward (and what
// model.TensorActivationBytes, herd plan --tp's figure, says), bytes sent per step (and the
// formula), the step time and its ratio to one process, and the time waiting for the tensor
// group's collectives.
//
//	go test ./worker -run '^$' -bench TensorParallel -benchtime 1x
func BenchmarkTensorParallel(b *testing.B) {
	c := model.Config{Dim: 256, Layers: 4, Heads: 4, FFNHidden: model.FFNHiddenFor(256), Vocab: 4096, MaxSeq: 256,
		NormEps: 1e-6, RopeTheta: 10000, Remat: model.RematHybrid, PeakLR: 1e-3}
	const steps, micro, batch, seq = 4, 2, 4, 256
	mib := func(x float64) float64 { return x / (1 << 20) }
	for range b.N {
		start := time.Now()
		one := trainOne(b, c, cpu.New[float32](cpu.Options{}), steps, micro, batch, seq)
		oneStep := time.Since(start) / steps
		fmt.Println("| tp | sequence parallel | gathers | params/rank | kept MiB (plan) | sent MiB/step (formula) | step | vs one process | waiting |")
		fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
		fmt.Printf("| 1 | - | - | %d | %.1f (%.1f) | 0 | %v | 1.00 | - |\n", model.NumParams(c), mib(float64(one.kept)),
			mib(float64(model.ActivationBytes(c, c.Remat, kernels.Float32, batch*seq))), oneStep.Round(time.Millisecond))
		for _, tc := range []struct {
			tp           int
			seq, overlap bool
		}{
			{2, true, true}, {2, true, false}, {2, false, true}, {4, true, true}, {4, false, true},
		} {
			rings := collectivetest.StartRing(b, tc.tp, nil)
			comms := make([]collective.Communicator, tc.tp)
			for i, r := range rings {
				comms[i] = r
			}
			r := trainTensorOverlap(b, c, tc.tp, tc.seq, tc.overlap, comms, steps, micro, batch, seq)
			l, _ := model.NewShardLayout(c, 0, tc.tp)
			gathers := "-"
			if tc.seq {
				gathers = map[bool]string{true: "overlapped", false: "waited at once"}[tc.overlap]
			}
			fmt.Printf("| %d | %v | %s | %d | %.1f (%.1f) | %.1f (%.1f) | %v | %.2f | %v |\n", tc.tp, tc.seq, gathers, l.Size,
				mib(float64(r.kept)), mib(float64(model.TensorActivationBytes(c, c.Remat, kernels.Float32, batch*seq, tc.tp, tc.seq))),
				mib(float64(r.sentPerStep)), mib(micro*model.TensorCommBytes(c, c.Remat, kernels.Float32, batch*seq, tc.tp, tc.seq)+8),
				r.stepTime.Round(time.Millisecond), float64(r.stepTime)/float64(oneStep), r.waited.Round(time.Millisecond))
			for _, ring := range rings {
				ring.Close()
			}
		}
	}
}
