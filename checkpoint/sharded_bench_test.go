package checkpoint_test

import (
	"bytes"
	"context"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"github.com/minio/minio-go/v7"

	. "github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/checkpoint/objectstoretest"
)

// params125m is the parameter count of the 125m preset; a checkpoint holds three float32
// buffers of it (parameters and the two AdamW moments), 1.6 GB.
const params125m = 134_105_856

// BenchmarkCheckpointWrite compares, in one run, a synchronous sharded checkpoint of the
// 125m preset's training state (one rank) with a raw write of the same bytes to the same
// place: a sequential file write + fsync on the same disk, and one raw PutObject on the same
// S3 server. It also measures the staging copy that an asynchronous save needs before the
// state may change again, as a share of the synchronous save: the stall of a step loop with no
// compute to overlap it with (BenchmarkAsyncSaveStall in worker/ measures it in training).
//
//	go test ./checkpoint -run '^$' -bench CheckpointWrite -benchtime 2x
func BenchmarkCheckpointWrite(b *testing.B) {
	n := params125m
	if testing.Short() {
		n /= 16
	}
	st := State{Params: make([]float32, n), M: make([]float32, n), V: make([]float32, n)}
	for _, buf := range buffers(st) {
		for i := range buf {
			buf[i] = float32(i%1000) * 1e-3
		}
	}
	b.Run("dir", func(b *testing.B) {
		dir := b.TempDir()
		store, err := NewDirStore(filepath.Join(dir, "ckpt"))
		if err != nil {
			b.Fatal(err)
		}
		benchCheckpoint(b, store, st, func(data [][]byte) error {
			f, err := os.Create(filepath.Join(dir, "raw.bin"))
			if err != nil {
				return err
			}
			defer os.Remove(f.Name())
			defer f.Close()
			for _, d := range data {
				if _, err := f.Write(d); err != nil {
					return err
				}
			}
			return f.Sync()
		})
	})
	b.Run("s3", func(b *testing.B) {
		gw := objectstoretest.StartVersityGW(b)
		store, err := NewS3Store(context.Background(), gw.Config("ckpt"))
		if err != nil {
			b.Fatal(err)
		}
		client, err := gw.Client()
		if err != nil {
			b.Fatal(err)
		}
		benchCheckpoint(b, store, st, func(data [][]byte) error {
			var size int64
			var rs []io.Reader
			for _, d := range data {
				size += int64(len(d))
				rs = append(rs, bytes.NewReader(d))
			}
			_, err := client.Client.PutObject(context.Background(), gw.Bucket, "raw.bin", io.MultiReader(rs...), size,
				minio.PutObjectOptions{ContentType: "application/octet-stream", PartSize: DefaultPartSize})
			return err
		})
	})
}

func benchCheckpoint(b *testing.B, store ObjectStore, st State, raw func([][]byte) error) {
	n := len(st.Params)
	loc := Location{Store: store, Prefix: "job"}
	saver := NewSaver(loc, SaverOptions{KeepLast: 1})
	ctx := context.Background()
	req := func(step int) SaveRequest {
		return SaveRequest{Step: step, Rank: 0, World: 1, State: st, Cursor: Cursor{Step: step}, Config: []byte(`{}`),
			Layout: []TensorRange{{Name: "flat", Shape: []int{n}, Size: int64(n)}}}
	}
	var data [][]byte
	for _, buf := range buffers(st) {
		data = append(data, unsafe.Slice((*byte)(unsafe.Pointer(&buf[0])), 4*len(buf)))
	}
	// A first save allocates the staging buffer; steady state reuses it.
	if _, err := saver.Save(ctx, req(0)); err != nil {
		b.Fatal(err)
	}
	if err := saver.Wait(); err != nil {
		b.Fatal(err)
	}
	// Each iteration runs both in alternating order; the best of each is reported, since a VM
	// disk's throughput swings between runs (page cache, host I/O).
	rawT, syncT, stall := time.Duration(math.MaxInt64), time.Duration(math.MaxInt64), time.Duration(0)
	runRaw := func() {
		t0 := time.Now()
		if err := raw(data); err != nil {
			b.Fatal(err)
		}
		rawT = min(rawT, time.Since(t0))
	}
	runCkpt := func(step int) {
		t1 := time.Now()
		held, err := saver.Save(ctx, req(step))
		if err != nil {
			b.Fatal(err)
		}
		held += saver.WaitSnapshot() // at once: nothing to overlap the copy with, the worst case
		if err := saver.Wait(); err != nil {
			b.Fatal(err)
		}
		syncT = min(syncT, time.Since(t1))
		stall += held
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			runRaw()
			runCkpt(i + 1)
		} else {
			runCkpt(i + 1)
			runRaw()
		}
	}
	secs := func(d time.Duration) float64 { return d.Seconds() }
	stallMean := stall.Seconds() / float64(b.N)
	total := float64(12 * n)
	b.ReportMetric(total/secs(rawT)/1e6, "raw_MB/s")
	b.ReportMetric(total/secs(syncT)/1e6, "checkpoint_MB/s")
	b.ReportMetric(secs(rawT)/secs(syncT), "checkpoint/raw")
	b.ReportMetric(stallMean*1e3, "copy_ms")
	b.ReportMetric(stallMean/secs(syncT), "copy/sync")
}
