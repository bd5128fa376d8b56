package checkpoint_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/checkpoint/objectstoretest"
)

// benchSize is the object BenchmarkStorePut writes: about one rank's shard of a 1B-parameter
// model with Adam moments over 16 ranks.
const benchSize = 256 << 20

// timedPut writes object number i; the name labels its metrics.
type timedPut struct {
	name string
	put  func(i int) error
}

// BenchmarkStorePut measures Put of 256 MiB against the plainest way to write the same
// bytes to the same place: a sequential write plus fsync for DirStore, a bare minio
// PutObject for S3Store. Each iteration runs every variant once, in rotating order, after
// one untimed round. The metrics take each variant's fastest round (other load on the machine
// only ever slows a round down): MB/s, and time relative to the raw write (1.0: no overhead).
// ns/op is the first store variant's mean. Run with -benchtime 2x or more.
func BenchmarkStorePut(b *testing.B) {
	data := objectstoretest.Pattern(42, 0, benchSize)
	ctx := context.Background()
	b.Run("dir", func(b *testing.B) {
		s := newDirStore(b)
		raw := timedPut{"raw", func(i int) error {
			return writeFileSync(filepath.Join(s.Root(), fmt.Sprintf("raw-%d", i)), data, len(data))
		}}
		store := timedPut{"store", func(i int) error {
			return s.Put(ctx, fmt.Sprintf("store-%d", i), bytes.NewReader(data), benchSize)
		}}
		chunked := timedPut{"chunked", func(i int) error { // the raw write in 1 MiB writes, as Put copies
			return writeFileSync(filepath.Join(s.Root(), fmt.Sprintf("chunked-%d", i)), data, 1<<20)
		}}
		comparePuts(b, raw, []timedPut{store, chunked}, func(i int) {
			os.Remove(filepath.Join(s.Root(), fmt.Sprintf("raw-%d", i)))
			os.Remove(filepath.Join(s.Root(), fmt.Sprintf("chunked-%d", i)))
			s.Delete(ctx, fmt.Sprintf("store-%d", i))
			syncDirOf(b, s.Root()) // commit the deletes before the next timed write
		})
	})
	b.Run("s3", func(b *testing.B) {
		gw := objectstoretest.StartVersityGW(b)
		s := newS3Store(b, gw.Config("bench"))
		client, err := gw.Client()
		if err != nil {
			b.Fatal(err)
		}
		raw := timedPut{"raw", func(i int) error {
			_, err := client.Client.PutObject(ctx, gw.Bucket, fmt.Sprintf("raw-%d", i), bytes.NewReader(data), benchSize,
				minio.PutObjectOptions{ContentType: "application/octet-stream", PartSize: checkpoint.DefaultPartSize})
			return err
		}}
		store := timedPut{"store", func(i int) error {
			return s.Put(ctx, fmt.Sprintf("store-%d", i), bytes.NewReader(data), benchSize)
		}}
		stream := timedPut{"stream", func(i int) error { // size unknown, reader without ReadAt
			return s.Put(ctx, fmt.Sprintf("stream-%d", i), struct{ io.Reader }{bytes.NewReader(data)}, -1)
		}}
		comparePuts(b, raw, []timedPut{store, stream}, func(i int) {
			client.RemoveObject(ctx, gw.Bucket, fmt.Sprintf("raw-%d", i), minio.RemoveObjectOptions{})
			s.Delete(ctx, fmt.Sprintf("store-%d", i))
			s.Delete(ctx, fmt.Sprintf("stream-%d", i))
		})
	})
}

func comparePuts(b *testing.B, raw timedPut, puts []timedPut, cleanup func(i int)) {
	all := append([]timedPut{raw}, puts...)
	for _, p := range all { // untimed: the first writes to a fresh file system are slower
		if err := p.put(-1); err != nil {
			b.Fatalf("%s warm-up put: %v", p.name, err)
		}
	}
	cleanup(-1)
	best := make([]time.Duration, len(all))
	var total time.Duration
	b.ResetTimer()
	for i := range b.N {
		for j := range all {
			k := (i + j) % len(all)
			start := time.Now()
			if err := all[k].put(i); err != nil {
				b.Fatalf("%s put #%d: %v", all[k].name, i, err)
			}
			d := time.Since(start)
			if best[k] == 0 || d < best[k] {
				best[k] = d
			}
			if k == 1 {
				total += d
			}
		}
		b.StopTimer()
		cleanup(i)
		b.StartTimer()
	}
	mbps := func(d time.Duration) float64 { return float64(benchSize) / 1e6 / d.Seconds() }
	b.ReportMetric(mbps(best[0]), raw.name+"-MB/s")
	for k, p := range puts {
		b.ReportMetric(mbps(best[k+1]), p.name+"-MB/s")
		b.ReportMetric(best[k+1].Seconds()/best[0].Seconds(), p.name+"/raw")
	}
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/op")
}

// writeFileSync is os.WriteFile plus fsync, what a program that just wants the bytes on
// disk would do, issuing writes of at most chunk bytes (os.WriteFile: one write).
func writeFileSync(path string, data []byte, chunk int) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	for len(data) > 0 {
		n := min(len(data), chunk)
		if _, err := f.Write(data[:n]); err != nil {
			f.Close()
			return err
		}
		data = data[n:]
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDirOf(b *testing.B, dir string) {
	f, err := os.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
}
