// Package objectstoretest is the conformance suite that every checkpoint.ObjectStore passes
// (RunAll), together with the helpers the tests of object stores share: deterministic data
// streams, and a real S3 server (versitygw) started and killed by a test.
package objectstoretest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/herd-llm/herd/checkpoint"
)

// LargeSize is the size of the suite's large objects: big enough to need several parts of
// a multipart upload at S3's minimum part size of 5 MiB.
const LargeSize = 20 << 20

// RunAll runs every conformance test against stores made by newStore, one fresh, empty
// store per subtest.
func RunAll(t *testing.T, newStore func(t *testing.T) checkpoint.ObjectStore) {
	tests := []struct {
		name string
		run  func(*testing.T, checkpoint.ObjectStore)
	}{
		{"PutGet", testPutGet},
		{"EmptyObject", testEmptyObject},
		{"RangedGet", testRangedGet},
		{"NotFound", testNotFound},
		{"Delete", testDelete},
		{"Overwrite", testOverwrite},
		{"OverwriteIsAtomic", testOverwriteIsAtomic},
		{"ListOrderAndPrefix", testListOrderAndPrefix},
		{"InvalidKeys", testInvalidKeys},
		{"LargeUnknownSize", testLargeUnknownSize},
		{"LargeKnownSize", testLargeKnownSize},
		{"SizeMismatch", testSizeMismatch},
		{"ReaderError", testReaderError},
		{"ConcurrentPuts", testConcurrentPuts},
		{"ContextCanceled", testContextCanceled},
		{"CanceledMidPut", testCanceledMidPut},
		{"Swap", testSwap},
		{"ConcurrentSwaps", testConcurrentSwaps},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, newStore(t)) })
	}
}

// Put stores data under key and fails the test on error.
func Put(t testing.TB, s checkpoint.ObjectStore, key string, data []byte) {
	t.Helper()
	if err := s.Put(context.Background(), key, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Put(%q, %d bytes): %v", key, len(data), err)
	}
}

// Get reads n bytes of key from off and fails the test on error.
func Get(t testing.TB, s checkpoint.ObjectStore, key string, off, n int64) []byte {
	t.Helper()
	rc, err := s.Get(context.Background(), key, off, n)
	if err != nil {
		t.Fatalf("Get(%q, %d, %d): %v", key, off, n, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%q, %d, %d): reading: %v", key, off, n, err)
	}
	return data
}

// List lists prefix and fails the test on error.
func List(t testing.TB, s checkpoint.ObjectStore, prefix string) []checkpoint.ObjectInfo {
	t.Helper()
	infos, err := s.List(context.Background(), prefix)
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return infos
}

// WantNotFound fails the test unless key is missing from s.
func WantNotFound(t testing.TB, s checkpoint.ObjectStore, key string) {
	t.Helper()
	rc, err := s.Get(context.Background(), key, 0, -1)
	if err == nil {
		rc.Close()
		t.Fatalf("Get(%q) succeeded, want ErrNotFound", key)
	}
	if !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("Get(%q) = %v, want ErrNotFound", key, err)
	}
	for _, info := range List(t, s, "") {
		if info.Key == key {
			t.Fatalf("List shows %q (%d bytes) after a failed Put", key, info.Size)
		}
	}
}

// Pattern returns n bytes of the deterministic stream seed, starting at offset off.
func Pattern(seed uint64, off, n int64) []byte {
	out := make([]byte, n)
	fillPattern(seed, off, out)
	return out
}

// PatternReader returns a reader of n bytes of the stream seed that hides its size: it has
// only a Read method, as a network stream would.
func PatternReader(seed uint64, n int64) io.Reader {
	return &patternReader{seed: seed, left: n}
}

// PatternSum returns the SHA-256 of the first n bytes of the stream seed.
func PatternSum(seed uint64, n int64) [sha256.Size]byte {
	h := sha256.New()
	if _, err := io.Copy(h, PatternReader(seed, n)); err != nil {
		panic(err) // a pattern reader does not fail
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

type patternReader struct {
	seed      uint64
	off, left int64
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.left)]
	fillPattern(p.seed, p.off, b)
	p.off += int64(len(b))
	p.left -= int64(len(b))
	return len(b), nil
}

// fillPattern fills b with the stream at offset off: 8-byte word i is splitmix64(seed, i).
func fillPattern(seed uint64, off int64, b []byte) {
	var word [8]byte
	for i := 0; i < len(b); {
		pos := off + int64(i)
		binary.LittleEndian.PutUint64(word[:], splitmix64(seed+uint64(pos/8)))
		i += copy(b[i:], word[pos%8:])
	}
}

func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// SumObject returns the SHA-256 and length of the whole object key.
func SumObject(t testing.TB, s checkpoint.ObjectStore, key string) ([sha256.Size]byte, int64) {
	t.Helper()
	rc, err := s.Get(context.Background(), key, 0, -1)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		t.Fatalf("Get(%q): reading after %d bytes: %v", key, n, err)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum, n
}

func testPutGet(t *testing.T, s checkpoint.ObjectStore) {
	data := Pattern(1, 0, 1000)
	Put(t, s, "job/step-1/rank-0", data)
	if got := Get(t, s, "job/step-1/rank-0", 0, -1); !bytes.Equal(got, data) {
		t.Fatalf("Get returned %d bytes, not the %d put", len(got), len(data))
	}
	want := []checkpoint.ObjectInfo{{Key: "job/step-1/rank-0", Size: 1000}}
	wantInfos(t, List(t, s, ""), want)
}

func testEmptyObject(t *testing.T, s checkpoint.ObjectStore) {
	ctx := context.Background()
	Put(t, s, "empty/known", nil)
	if err := s.Put(ctx, "empty/unknown", PatternReader(0, 0), -1); err != nil {
		t.Fatalf("Put(empty, size -1): %v", err)
	}
	for _, key := range []string{"empty/known", "empty/unknown"} {
		if got := Get(t, s, key, 0, -1); len(got) != 0 {
			t.Errorf("Get(%q) = %d bytes, want 0", key, len(got))
		}
		if got := Get(t, s, key, 0, 0); len(got) != 0 {
			t.Errorf("Get(%q, 0, 0) = %d bytes, want 0", key, len(got))
		}
	}
	want := []checkpoint.ObjectInfo{{Key: "empty/known"}, {Key: "empty/unknown"}}
	wantInfos(t, List(t, s, "empty/"), want)
}

func testRangedGet(t *testing.T, s checkpoint.ObjectStore) {
	const size = 1000
	data := Pattern(2, 0, size)
	Put(t, s, "ranged", data)
	for _, r := range []struct{ off, n int64 }{
		{0, -1}, {0, size}, {0, 1}, {0, 10}, {100, 50}, {999, 1}, {990, -1}, {990, 10},
		{size, -1}, {size, 0}, {500, 0}, {0, 0},
	} {
		want := data[r.off:]
		if r.n >= 0 {
			want = want[:r.n]
		}
		if got := Get(t, s, "ranged", r.off, r.n); !bytes.Equal(got, want) {
			t.Errorf("Get(off=%d, n=%d) = %d bytes, want %d (content equal: %v)", r.off, r.n, len(got), len(want), bytes.HasPrefix(want, got))
		}
	}
	for _, r := range []struct{ off, n int64 }{{size + 1, -1}, {size + 1, 0}, {990, 11}, {0, size + 1}, {-1, 5}, {size, 1}} {
		rc, err := s.Get(context.Background(), "ranged", r.off, r.n)
		if err == nil {
			rc.Close()
			t.Errorf("Get(off=%d, n=%d) of %d bytes succeeded, want ErrInvalidRange", r.off, r.n, size)
		} else if !errors.Is(err, checkpoint.ErrInvalidRange) {
			t.Errorf("Get(off=%d, n=%d) = %v, want ErrInvalidRange", r.off, r.n, err)
		}
	}
}

func testNotFound(t *testing.T, s checkpoint.ObjectStore) {
	Put(t, s, "present/x", []byte("x"))
	for _, r := range []struct{ off, n int64 }{{0, -1}, {0, 1}, {5, 10}, {0, 0}} {
		_, err := s.Get(context.Background(), "present/missing", r.off, r.n)
		if !errors.Is(err, checkpoint.ErrNotFound) {
			t.Fatalf("Get(missing, %d, %d) = %v, want ErrNotFound", r.off, r.n, err)
		}
		if !strings.Contains(err.Error(), "present/missing") {
			t.Errorf("error %q does not name the key", err)
		}
	}
	WantNotFound(t, s, "absent/deeper/key")
	WantNotFound(t, s, "present") // a prefix of an object is not an object
	if infos := List(t, s, "absent/"); len(infos) != 0 {
		t.Errorf("List(absent/) = %v, want nothing", infos)
	}
}

func testDelete(t *testing.T, s checkpoint.ObjectStore) {
	ctx := context.Background()
	Put(t, s, "d/e/f", []byte("one"))
	Put(t, s, "d/g", []byte("two"))
	for range 2 { // the second delete of a key finds nothing, which is fine
		if err := s.Delete(ctx, "d/e/f"); err != nil {
			t.Fatalf("Delete(d/e/f): %v", err)
		}
	}
	WantNotFound(t, s, "d/e/f")
	wantInfos(t, List(t, s, ""), []checkpoint.ObjectInfo{{Key: "d/g", Size: 3}})
	if err := s.Delete(ctx, "never/was"); err != nil {
		t.Errorf("Delete(missing) = %v, want nil", err)
	}
	if err := s.Delete(ctx, "d"); err != nil {
		t.Errorf("Delete of a prefix that is no object = %v, want nil", err)
	}
	if got := Get(t, s, "d/g", 0, -1); string(got) != "two" {
		t.Errorf("Delete(d) touched d/g: %q", got)
	}
}

func testOverwrite(t *testing.T, s checkpoint.ObjectStore) {
	Put(t, s, "latest", []byte("step-100, longer content"))
	Put(t, s, "latest", []byte("step-200"))
	if got := Get(t, s, "latest", 0, -1); string(got) != "step-200" {
		t.Fatalf("after overwrite Get = %q, want %q", got, "step-200")
	}
	wantInfos(t, List(t, s, ""), []checkpoint.ObjectInfo{{Key: "latest", Size: 8}})
}

// testOverwriteIsAtomic overwrites one key with two versions of different sizes while
// readers check that every read returns one version whole.
func testOverwriteIsAtomic(t *testing.T, s checkpoint.ObjectStore) {
	const writes, readers = 8, 2
	versions := [][]byte{bytes.Repeat([]byte{'a'}, 256<<10), bytes.Repeat([]byte{'b'}, 384<<10)}
	Put(t, s, "hot/key", versions[0])
	done := make(chan struct{})
	errs := make(chan error, readers+1)
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if err := readWhole(s, "hot/key", versions); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for i := range writes {
		v := versions[(i+1)%2]
		if err := s.Put(context.Background(), "hot/key", bytes.NewReader(v), int64(len(v))); err != nil {
			errs <- fmt.Errorf("Put #%d: %w", i, err)
			break
		}
	}
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func readWhole(s checkpoint.ObjectStore, key string, versions [][]byte) error {
	rc, err := s.Get(context.Background(), key, 0, -1)
	if err != nil {
		return fmt.Errorf("Get during overwrite: %w", err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("reading during overwrite: %w", err)
	}
	for _, v := range versions {
		if bytes.Equal(got, v) {
			return nil
		}
	}
	return fmt.Errorf("read %d bytes during overwrite, matching no version written", len(got))
}

func testListOrderAndPrefix(t *testing.T, s checkpoint.ObjectStore) {
	keys := []string{
		"job/step-2/rank-0", "job/step-10/rank-0", "job/step-1/rank-1", "job/step-1/manifest.json",
		"job/step-1/rank-0", "job/latest", "job2/x", "jobx", "other/deep/nested/key/object",
		"x/a/b", "x/a.b", "x/a-c", "x/a0",
	}
	for i, k := range keys {
		Put(t, s, k, Pattern(uint64(i), 0, int64(i)))
	}
	size := map[string]int64{}
	for i, k := range keys {
		size[k] = int64(i)
	}
	for _, c := range []struct {
		prefix string
		want   []string
	}{
		{"", []string{"job/latest", "job/step-1/manifest.json", "job/step-1/rank-0", "job/step-1/rank-1",
			"job/step-10/rank-0", "job/step-2/rank-0", "job2/x", "jobx", "other/deep/nested/key/object",
			"x/a-c", "x/a.b", "x/a/b", "x/a0"}},
		{"job/", []string{"job/latest", "job/step-1/manifest.json", "job/step-1/rank-0", "job/step-1/rank-1",
			"job/step-10/rank-0", "job/step-2/rank-0"}},
		{"job/step-1", []string{"job/step-1/manifest.json", "job/step-1/rank-0", "job/step-1/rank-1", "job/step-10/rank-0"}},
		{"job/step-1/", []string{"job/step-1/manifest.json", "job/step-1/rank-0", "job/step-1/rank-1"}},
		{"job/step-1/rank-1", []string{"job/step-1/rank-1"}},
		{"jo", []string{"job/latest", "job/step-1/manifest.json", "job/step-1/rank-0", "job/step-1/rank-1",
			"job/step-10/rank-0", "job/step-2/rank-0", "job2/x", "jobx"}},
		{"other/deep/", []string{"other/deep/nested/key/object"}},
		{"x/a", []string{"x/a-c", "x/a.b", "x/a/b", "x/a0"}},
		{"x/a/", []string{"x/a/b"}},
		{"nothing/", nil},
		{"job/step-3", nil},
	} {
		var want []checkpoint.ObjectInfo
		for _, k := range c.want {
			want = append(want, checkpoint.ObjectInfo{Key: k, Size: size[k]})
		}
		t.Run(fmt.Sprintf("prefix=%q", c.prefix), func(t *testing.T) {
			wantInfos(t, List(t, s, c.prefix), want)
		})
	}
}

func testInvalidKeys(t *testing.T, s checkpoint.ObjectStore) {
	ctx := context.Background()
	for _, key := range []string{"", "/abs", "a//b", "a/", "a/../b", "..", ".", "./a", "a/.", "a\x00b",
		"a/.herd-tmp-1", strings.Repeat("k", 1025)} {
		if err := s.Put(ctx, key, strings.NewReader("x"), 1); !errors.Is(err, checkpoint.ErrInvalidKey) {
			t.Errorf("Put(%q) = %v, want ErrInvalidKey", key, err)
		}
		if _, err := s.Get(ctx, key, 0, -1); !errors.Is(err, checkpoint.ErrInvalidKey) {
			t.Errorf("Get(%q) = %v, want ErrInvalidKey", key, err)
		}
		if err := s.Delete(ctx, key); !errors.Is(err, checkpoint.ErrInvalidKey) {
			t.Errorf("Delete(%q) = %v, want ErrInvalidKey", key, err)
		}
	}
	for _, prefix := range []string{"/abs", "../x", "a/../", "a//"} {
		if _, err := s.List(ctx, prefix); !errors.Is(err, checkpoint.ErrInvalidKey) {
			t.Errorf("List(%q) = %v, want ErrInvalidKey", prefix, err)
		}
	}
	if infos := List(t, s, ""); len(infos) != 0 {
		t.Errorf("invalid keys left objects: %v", infos)
	}
}

func testLargeUnknownSize(t *testing.T, s checkpoint.ObjectStore) {
	const seed = 7
	if err := s.Put(context.Background(), "large/stream", PatternReader(seed, LargeSize), -1); err != nil {
		t.Fatalf("Put(%d bytes, size -1): %v", LargeSize, err)
	}
	wantLarge(t, s, "large/stream", seed, LargeSize)
}

func testLargeKnownSize(t *testing.T, s checkpoint.ObjectStore) {
	const size = 12<<20 + 3
	ctx := context.Background()
	if err := s.Put(ctx, "large/known", PatternReader(8, size), size); err != nil {
		t.Fatalf("Put(stream of %d bytes, size given): %v", size, err)
	}
	wantLarge(t, s, "large/known", 8, size)
	if err := s.Put(ctx, "large/readerat", bytes.NewReader(Pattern(9, 0, size)), size); err != nil {
		t.Fatalf("Put(bytes.Reader of %d bytes): %v", size, err)
	}
	wantLarge(t, s, "large/readerat", 9, size)
	// An *os.File that cannot seek: a pipe, as from a child process.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	go func() {
		io.Copy(pw, PatternReader(10, size))
		pw.Close()
	}()
	if err := s.Put(ctx, "large/pipe", pr, size); err != nil {
		t.Fatalf("Put(pipe of %d bytes): %v", size, err)
	}
	wantLarge(t, s, "large/pipe", 10, size)
}

// wantLarge checks a large object by checksum, size and ranges across 5 MiB part edges.
func wantLarge(t *testing.T, s checkpoint.ObjectStore, key string, seed uint64, size int64) {
	t.Helper()
	sum, n := SumObject(t, s, key)
	if n != size || sum != PatternSum(seed, size) {
		t.Fatalf("Get(%q) = %d bytes, sha256 %x; want %d bytes, sha256 %x", key, n, sum[:8], size, PatternSum(seed, size))
	}
	wantInfos(t, List(t, s, key), []checkpoint.ObjectInfo{{Key: key, Size: size}})
	for _, r := range []struct{ off, n int64 }{{5<<20 - 100, 200}, {10<<20 - 1, 1 << 20}, {size - 1000, -1}, {size - 7, 7}} {
		if got := Get(t, s, key, r.off, r.n); !bytes.Equal(got, Pattern(seed, r.off, int64(len(got)))) || (r.n >= 0 && int64(len(got)) != r.n) {
			t.Errorf("Get(%q, %d, %d): %d bytes, wrong content or length", key, r.off, r.n, len(got))
		}
	}
}

func testSizeMismatch(t *testing.T, s checkpoint.ObjectStore) {
	ctx := context.Background()
	for _, c := range []struct {
		key          string
		actual, told int64
	}{
		{"small/short", 999, 1000}, {"small/long", 1001, 1000},
		{"big/short", 12<<20 - 1, 12 << 20}, {"big/long", 12<<20 + 1, 12 << 20},
	} {
		err := s.Put(ctx, c.key, PatternReader(3, c.actual), c.told)
		if !errors.Is(err, checkpoint.ErrSizeMismatch) {
			t.Errorf("Put(%q) of %d bytes claiming %d = %v, want ErrSizeMismatch", c.key, c.actual, c.told, err)
		}
		WantNotFound(t, s, c.key)
	}
}

var errSource = errors.New("source failed")

type failingReader struct {
	r     io.Reader
	after int64
}

func (f *failingReader) Read(b []byte) (int, error) {
	if f.after <= 0 {
		return 0, errSource
	}
	n, err := f.r.Read(b[:min(int64(len(b)), f.after)])
	f.after -= int64(n)
	return n, err
}

func testReaderError(t *testing.T, s checkpoint.ObjectStore) {
	for _, c := range []struct {
		key         string
		after, size int64
	}{{"fail/small", 1000, -1}, {"fail/big", 11 << 20, -1}, {"fail/big-sized", 11 << 20, 12 << 20}} {
		r := &failingReader{r: PatternReader(4, 12<<20), after: c.after}
		err := s.Put(context.Background(), c.key, r, c.size)
		if !errors.Is(err, errSource) {
			t.Errorf("Put(%q) with a reader failing after %d bytes = %v, want the reader's error", c.key, c.after, err)
		}
		WantNotFound(t, s, c.key)
	}
}

func testConcurrentPuts(t *testing.T, s checkpoint.ObjectStore) {
	const writers = 16
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			key := fmt.Sprintf("par/step-1/rank-%02d", i)
			data := Pattern(uint64(100+i), 0, 64<<10+int64(i))
			if err := s.Put(context.Background(), key, bytes.NewReader(data), int64(len(data))); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	infos := List(t, s, "par/")
	if len(infos) != writers {
		t.Fatalf("List after %d concurrent puts: %d objects", writers, len(infos))
	}
	for i := range writers {
		key := fmt.Sprintf("par/step-1/rank-%02d", i)
		if got := Get(t, s, key, 0, -1); !bytes.Equal(got, Pattern(uint64(100+i), 0, 64<<10+int64(i))) {
			t.Errorf("Get(%q): %d bytes, wrong content", key, len(got))
		}
	}
}

func testContextCanceled(t *testing.T, s checkpoint.ObjectStore) {
	Put(t, s, "ctx/there", []byte("data"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Put(ctx, "ctx/new", strings.NewReader("data"), 4); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with a canceled context = %v, want context.Canceled", err)
	}
	if rc, err := s.Get(ctx, "ctx/there", 0, -1); !errors.Is(err, context.Canceled) {
		if err == nil {
			rc.Close()
		}
		t.Errorf("Get with a canceled context = %v, want context.Canceled", err)
	}
	if _, err := s.List(ctx, ""); !errors.Is(err, context.Canceled) {
		t.Errorf("List with a canceled context = %v, want context.Canceled", err)
	}
	if err := s.Delete(ctx, "ctx/there"); !errors.Is(err, context.Canceled) {
		t.Errorf("Delete with a canceled context = %v, want context.Canceled", err)
	}
	WantNotFound(t, s, "ctx/new")
	if got := Get(t, s, "ctx/there", 0, -1); string(got) != "data" {
		t.Errorf("Delete with a canceled context removed the object")
	}
}

// cancelingReader cancels its context once it has delivered after bytes.
type cancelingReader struct {
	r      io.Reader
	after  int64
	cancel context.CancelFunc
}

func (c *cancelingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	if c.after -= int64(n); c.after <= 0 {
		c.cancel()
	}
	return n, err
}

func testCanceledMidPut(t *testing.T, s checkpoint.ObjectStore) {
	for _, c := range []struct {
		key         string
		after, size int64
	}{{"cancel/stream", 1 << 20, -1}, {"cancel/late", 7 << 20, -1}, {"cancel/sized", 7 << 20, 12 << 20}} {
		ctx, cancel := context.WithCancel(context.Background())
		r := &cancelingReader{r: PatternReader(5, 12<<20), after: c.after, cancel: cancel}
		err := s.Put(ctx, c.key, r, c.size)
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Put(%q) canceled after %d bytes = %v, want context.Canceled", c.key, c.after, err)
		}
		WantNotFound(t, s, c.key)
	}
}

func wantInfos(t testing.TB, got, want []checkpoint.ObjectInfo) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("List = %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("List = %v, want %v (first difference at %d)", got, want, i)
		}
	}
}

// testSwap checks compare-and-swap for stores that implement checkpoint.Swapper (and that
// the retrying wrapper keeps it): create only if absent, replace only the version read.
func testSwap(t *testing.T, s checkpoint.ObjectStore) {
	sw, ok := s.(checkpoint.Swapper)
	if !ok {
		t.Skipf("%T does not implement Swapper", s)
	}
	ctx := context.Background()
	v1, err := sw.Swap(ctx, "lease", "", []byte("one"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sw.Swap(ctx, "lease", "", []byte("two")); !errors.Is(err, checkpoint.ErrConflict) {
		t.Fatalf("create over an existing object: %v, want ErrConflict", err)
	}
	data, v, err := sw.ReadVersion(ctx, "lease")
	if err != nil || string(data) != "one" || v != v1 {
		t.Fatalf("ReadVersion = %q, %q, %v; want one, %q", data, v, err, v1)
	}
	v2, err := sw.Swap(ctx, "lease", v1, []byte("two"))
	if err != nil || v2 == v1 {
		t.Fatalf("swap from the version read: %q, %v", v2, err)
	}
	if _, err := sw.Swap(ctx, "lease", v1, []byte("three")); !errors.Is(err, checkpoint.ErrConflict) {
		t.Fatalf("swap from a stale version: %v, want ErrConflict", err)
	}
	if got := Get(t, s, "lease", 0, -1); string(got) != "two" {
		t.Fatalf("after a refused swap the object is %q, want two", got)
	}
	if _, _, err := sw.ReadVersion(ctx, "absent"); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Errorf("ReadVersion of a missing key: %v, want ErrNotFound", err)
	}
}

// testConcurrentSwaps races writers from the same version: exactly one wins.
func testConcurrentSwaps(t *testing.T, s checkpoint.ObjectStore) {
	sw, ok := s.(checkpoint.Swapper)
	if !ok {
		t.Skipf("%T does not implement Swapper", s)
	}
	ctx := context.Background()
	for round, old := 0, ""; round < 3; round++ {
		const writers = 8
		var wins atomic.Int32
		var wg sync.WaitGroup
		for w := 0; w < writers; w++ {
			wg.Go(func() {
				_, err := sw.Swap(ctx, "race", old, []byte(fmt.Sprintf("round %d writer %d", round, w)))
				switch {
				case err == nil:
					wins.Add(1)
				case !errors.Is(err, checkpoint.ErrConflict):
					t.Errorf("writer %d: %v", w, err)
				}
			})
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("round %d: %d writers won, want exactly 1", round, wins.Load())
		}
		var err error
		if _, old, err = sw.ReadVersion(ctx, "race"); err != nil {
			t.Fatal(err)
		}
	}
}
