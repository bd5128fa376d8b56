package checkpoint_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/checkpoint/objectstoretest"
)

// Conformance subtests share one gateway; each gets its own key prefix, which also
// exercises S3Config.Prefix.
func TestS3StoreConformance(t *testing.T) {
	gw := objectstoretest.StartVersityGW(t)
	unsafe := regexp.MustCompile(`[^A-Za-z0-9._-]+`)
	objectstoretest.RunAll(t, func(t *testing.T) checkpoint.ObjectStore {
		cfg := gw.Config("conformance/" + unsafe.ReplaceAllString(t.Name(), "_"))
		cfg.PartSize = 5 << 20 // the minimum, so that the suite's large objects take several parts
		return newS3Store(t, cfg)
	})
}

func newS3Store(t testing.TB, cfg checkpoint.S3Config) *checkpoint.S3Store {
	t.Helper()
	s, err := checkpoint.NewS3Store(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tripBody calls fn once after after bytes of a request body have been read.
type tripBody struct {
	io.ReadCloser
	after int64
	fn    func()
}

func (b *tripBody) Read(p []byte) (int, error) {
	if b.after > 0 && int64(len(p)) > b.after {
		p = p[:b.after]
	}
	n, err := b.ReadCloser.Read(p)
	if b.after > 0 {
		if b.after -= int64(n); b.after == 0 {
			b.fn()
		}
	}
	return n, err
}

// crashOnPart is an HTTP transport that runs crash in the middle of sending the body of
// part number part of a multipart upload, once: a failure point inside Put's stream.
type crashOnPart struct {
	base  http.RoundTripper
	part  string
	crash func()
	fired atomic.Bool
}

func (c *crashOnPart) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPut && req.URL.Query().Get("partNumber") == c.part && req.Body != nil &&
		c.fired.CompareAndSwap(false, true) {
		req = req.Clone(req.Context())
		req.Body = &tripBody{ReadCloser: req.Body, after: 1 << 20, fn: c.crash}
	}
	return c.base.RoundTrip(req)
}

func newTransport(t testing.TB) *http.Transport {
	tr, err := minio.DefaultTransport(false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// incompleteUploads returns the keys of the multipart uploads still open under prefix.
func incompleteUploads(t testing.TB, gw *objectstoretest.VersityGW, prefix string) []string {
	t.Helper()
	c, err := gw.Client()
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for u := range c.ListIncompleteUploads(context.Background(), gw.Bucket, prefix, true) {
		if u.Err != nil {
			t.Fatalf("listing incomplete uploads: %v", u.Err)
		}
		keys = append(keys, u.Key)
	}
	return keys
}

// uploadSource is an object for the restart tests, handed to Put as a stream of unknown
// size or as an io.ReaderAt of known size (minio's parallel path).
type uploadSource struct {
	name string
	open func() (io.Reader, int64)
}

const restartSize = 40 << 20 // 8 parts of 5 MiB

var restartSources = []uploadSource{
	{"stream", func() (io.Reader, int64) { return objectstoretest.PatternReader(11, restartSize), -1 }},
	{"readerat", func() (io.Reader, int64) {
		return bytes.NewReader(objectstoretest.Pattern(11, 0, restartSize)), restartSize
	}},
}

// TestS3StoreServerRestartDuringPut kills the gateway with SIGKILL while a part is being
// sent and starts it again on the same port and directory. Put must then either complete
// with the whole object, or fail with an error naming key and bucket; either way no partial
// object may be visible.
func TestS3StoreServerRestartDuringPut(t *testing.T) {
	t.Parallel() // mostly waiting on backoff and restarts
	gw := objectstoretest.StartVersityGW(t)
	for _, src := range restartSources {
		t.Run(src.name, func(t *testing.T) {
			restarted := make(chan error, 1)
			crash := &crashOnPart{base: newTransport(t), part: "3", crash: func() {
				gw.Kill()
				go func() {
					time.Sleep(300 * time.Millisecond) // let requests meet a dead port first
					restarted <- gw.Start()
				}()
			}}
			cfg := gw.Config("restart/" + src.name)
			cfg.PartSize, cfg.MaxRetries, cfg.Transport = 5<<20, 30, crash
			s := newS3Store(t, cfg)

			r, size := src.open()
			err := s.Put(context.Background(), "ckpt/shard", r, size)
			if !crash.fired.Load() {
				t.Fatal("the gateway was never killed: the failure point did not fire")
			}
			if rerr := <-restarted; rerr != nil {
				t.Fatalf("restarting the gateway: %v", rerr)
			}
			if err != nil {
				t.Logf("Put failed after the restart: %v", err)
				wantClearPutError(t, err, "ckpt/shard", gw.Bucket)
				objectstoretest.WantNotFound(t, s, "ckpt/shard")
				return
			}
			t.Logf("Put succeeded through the restart")
			sum, n := objectstoretest.SumObject(t, s, "ckpt/shard")
			if n != restartSize || sum != objectstoretest.PatternSum(11, restartSize) {
				t.Fatalf("after the restart the object has %d bytes, sha256 %x: not what was put", n, sum[:8])
			}
			if open := incompleteUploads(t, gw, "restart/"+src.name+"/"); len(open) != 0 {
				t.Errorf("multipart uploads left open: %v", open)
			}
		})
	}
}

// TestS3StoreServerDownDuringPut kills the gateway during an upload and keeps it down
// until Put gives up: the error must be clear, and once the gateway is back no part of the
// object may be visible.
func TestS3StoreServerDownDuringPut(t *testing.T) {
	t.Parallel() // mostly waiting on backoff and restarts
	gw := objectstoretest.StartVersityGW(t)
	for _, src := range restartSources {
		t.Run(src.name, func(t *testing.T) {
			crash := &crashOnPart{base: newTransport(t), part: "3", crash: gw.Kill}
			cfg := gw.Config("down/" + src.name)
			cfg.PartSize, cfg.MaxRetries, cfg.Transport = 5<<20, 3, crash
			s := newS3Store(t, cfg)

			r, size := src.open()
			start := time.Now()
			err := s.Put(context.Background(), "ckpt/shard", r, size)
			if !crash.fired.Load() {
				t.Fatal("the gateway was never killed: the failure point did not fire")
			}
			if err == nil {
				t.Fatal("Put succeeded with the gateway down")
			}
			t.Logf("Put failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
			wantClearPutError(t, err, "ckpt/shard", gw.Bucket)
			if err := gw.Start(); err != nil {
				t.Fatal(err)
			}
			objectstoretest.WantNotFound(t, s, "ckpt/shard")
			if infos := objectstoretest.List(t, s, ""); len(infos) != 0 {
				t.Errorf("objects visible after the failed Put: %v", infos)
			}
			t.Logf("multipart uploads left open (invisible; the server was down for the abort): %d",
				len(incompleteUploads(t, gw, "down/"+src.name+"/")))
			// The store works again, and the key can be written whole.
			r, size = src.open()
			if err := s.Put(context.Background(), "ckpt/shard", r, size); err != nil {
				t.Fatalf("Put after the gateway came back: %v", err)
			}
			if sum, n := objectstoretest.SumObject(t, s, "ckpt/shard"); n != restartSize || sum != objectstoretest.PatternSum(11, restartSize) {
				t.Fatalf("object after the retried Put has %d bytes, wrong content", n)
			}
		})
	}
}

func wantClearPutError(t *testing.T, err error, key, bucket string) {
	t.Helper()
	msg := err.Error()
	if !strings.Contains(msg, key) || !strings.Contains(msg, "s3://"+bucket) {
		t.Errorf("error %q does not name key %q and bucket s3://%s", msg, key, bucket)
	}
	if errors.Is(err, checkpoint.ErrNotFound) {
		t.Errorf("a failed upload reported as ErrNotFound: %v", err)
	}
}

// serverErrors answers the first attempt of every request with 503 SlowDown, as an
// overloaded S3 does, once armed.
type serverErrors struct {
	base  http.RoundTripper
	armed atomic.Bool
	mu    sync.Mutex
	seen  map[string]bool
	count atomic.Int64
}

func (s *serverErrors) RoundTrip(req *http.Request) (*http.Response, error) {
	id := req.Method + " " + req.URL.String()
	s.mu.Lock()
	first := s.armed.Load() && !s.seen[id]
	s.seen[id] = true
	s.mu.Unlock()
	if !first {
		return s.base.RoundTrip(req)
	}
	if req.Body != nil {
		req.Body.Close()
	}
	s.count.Add(1)
	body := `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`
	return &http.Response{
		StatusCode: http.StatusServiceUnavailable, Status: "503 Service Unavailable",
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/xml"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)), Request: req,
	}, nil
}

func TestS3StoreRetriesServerErrors(t *testing.T) {
	gw := objectstoretest.StartVersityGW(t)
	for _, c := range []struct {
		retries int
		wantErr bool
	}{{0, false}, {1, true}} {
		t.Run(fmt.Sprintf("MaxRetries=%d", c.retries), func(t *testing.T) {
			inject := &serverErrors{base: newTransport(t), seen: map[string]bool{}}
			cfg := gw.Config(fmt.Sprintf("retry-%d", c.retries))
			cfg.PartSize, cfg.MaxRetries, cfg.Transport = 5<<20, c.retries, inject
			s := newS3Store(t, cfg)
			inject.armed.Store(true)
			err := s.Put(context.Background(), "big", objectstoretest.PatternReader(12, 12<<20), -1)
			inject.armed.Store(false)
			if c.wantErr {
				if err == nil || !strings.Contains(err.Error(), "reduce your request rate") {
					t.Fatalf("Put with retries disabled = %v, want the server's 503 error", err)
				}
				objectstoretest.WantNotFound(t, s, "big")
				return
			}
			if err != nil {
				t.Fatalf("Put through %d injected 503s: %v", inject.count.Load(), err)
			}
			if sum, n := objectstoretest.SumObject(t, s, "big"); n != 12<<20 || sum != objectstoretest.PatternSum(12, 12<<20) {
				t.Fatalf("object has %d bytes, wrong content", n)
			}
			t.Logf("Put succeeded through %d injected 503s", inject.count.Load())
		})
	}
}

// A multipart Put that fails leaves no upload open behind it.
func TestS3StoreAbortsFailedUpload(t *testing.T) {
	gw := objectstoretest.StartVersityGW(t)
	cfg := gw.Config("abort")
	cfg.PartSize = 5 << 20
	s := newS3Store(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := io.MultiReader(objectstoretest.PatternReader(13, 11<<20), readerFunc(func([]byte) (int, error) {
		cancel()
		return 0, context.Canceled
	}))
	if err := s.Put(ctx, "ckpt/shard", r, -1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put canceled after two parts = %v, want context.Canceled", err)
	}
	if open := incompleteUploads(t, gw, "abort/"); len(open) != 0 {
		t.Fatalf("multipart uploads left open after a failed Put: %v", open)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func TestS3ConfigValidate(t *testing.T) {
	ok := checkpoint.S3Config{Bucket: "b"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("Validate(%+v) = %v", ok, err)
	}
	for field, cfg := range map[string]checkpoint.S3Config{
		"Bucket":     {},
		"PartSize":   {Bucket: "b", PartSize: 1 << 20},
		"MaxRetries": {Bucket: "b", MaxRetries: -1},
		"AccessKey":  {Bucket: "b", AccessKey: "k"},
		"Prefix":     {Bucket: "b", Prefix: "a/../b"},
	} {
		err := cfg.Validate()
		if !errors.Is(err, checkpoint.ErrS3Config) || !strings.Contains(err.Error(), field) {
			t.Errorf("Validate with a bad %s = %v, want ErrS3Config naming the field", field, err)
		}
	}
}

func TestNewS3StoreErrors(t *testing.T) {
	gw := objectstoretest.StartVersityGW(t)
	ctx := context.Background()
	cfg := gw.Config("")
	cfg.Bucket = "no-such-bucket"
	if _, err := checkpoint.NewS3Store(ctx, cfg); !errors.Is(err, checkpoint.ErrBucketNotFound) || !strings.Contains(err.Error(), "no-such-bucket") {
		t.Errorf("NewS3Store(missing bucket) = %v, want ErrBucketNotFound naming it", err)
	}
	cfg = gw.Config("")
	cfg.SecretKey = "wrong"
	cfg.MaxRetries = 1
	if _, err := checkpoint.NewS3Store(ctx, cfg); err == nil {
		t.Error("NewS3Store with a wrong secret key succeeded")
	}
	cfg = gw.Config("")
	cfg.Endpoint = "ftp://127.0.0.1:1"
	if _, err := checkpoint.NewS3Store(ctx, cfg); !errors.Is(err, checkpoint.ErrS3Config) {
		t.Errorf("NewS3Store(ftp endpoint) = %v, want ErrS3Config", err)
	}
}

// Credentials and region come from the AWS environment variables when the config has none.
func TestS3StoreCredentialsFromEnv(t *testing.T) {
	gw := objectstoretest.StartVersityGW(t)
	t.Setenv("AWS_ACCESS_KEY_ID", gw.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", gw.SecretKey)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_ENDPOINT_URL", gw.Endpoint)
	s := newS3Store(t, checkpoint.S3Config{Bucket: gw.Bucket, Prefix: "env"})
	objectstoretest.Put(t, s, "k", []byte("v"))
	if got := objectstoretest.Get(t, s, "k", 0, -1); string(got) != "v" {
		t.Fatalf("Get = %q", got)
	}
}

// Reads from a real S3 server through a proxy that cuts one response short and stalls
// another: the retrying store returns every byte, and the faults really happened.
func TestS3RetriesCutAndStalledResponses(t *testing.T) {
	gw := objectstoretest.StartVersityGW(t)
	proxy := objectstoretest.StartFaultProxy(t, gw.Endpoint)
	cfg := gw.Config("faults")
	cfg.Endpoint = proxy.Endpoint
	raw := newS3Store(t, cfg)
	var log strings.Builder
	var mu sync.Mutex
	s := checkpoint.WithRetries(raw, checkpoint.RetryPolicy{For: 20 * time.Second, Stall: 500 * time.Millisecond,
		Log: func(l string) { mu.Lock(); log.WriteString(l + "\n"); mu.Unlock() }})
	data := objectstoretest.Pattern(3, 0, 6<<20)
	objectstoretest.Put(t, s, "step-1/shard.bin", data)

	proxy.Add(objectstoretest.FaultRule{Method: "GET", PathContains: "shard.bin", Fault: objectstoretest.Truncate, After: 1 << 20, Count: 1})
	if got := objectstoretest.Get(t, s, "step-1/shard.bin", 0, int64(len(data))); !bytes.Equal(got, data) {
		t.Fatalf("cut response: read %d bytes, not the object", len(got))
	}
	proxy.Add(objectstoretest.FaultRule{Method: "GET", PathContains: "shard.bin", Fault: objectstoretest.Stall, After: 100 << 10, Count: 1})
	start := time.Now()
	if got := objectstoretest.Get(t, s, "step-1/shard.bin", 0, int64(len(data))); !bytes.Equal(got, data) {
		t.Fatalf("stalled response: read %d bytes, not the object", len(got))
	}
	if proxy.Hits() != 2 {
		t.Fatalf("the proxy damaged %d responses, want 2", proxy.Hits())
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(log.String(), "resuming") || !strings.Contains(log.String(), "stalled") || time.Since(start) > 10*time.Second {
		t.Errorf("after %v, log:\n%s", time.Since(start), log.String())
	}
}
