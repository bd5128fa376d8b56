package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
)

// A store that herd writes a long run to will fail now and then: a connection refused while
// the server restarts, a response cut short, a body that stops arriving, a 503. Such failures
// are transient: the same request succeeds a moment later. WithRetries wraps any ObjectStore
// so that every operation rides them out, and so that none can hang: each attempt is
// abandoned when it makes no progress for RetryPolicy.Stall, and an operation gives up, with
// an error wrapping ErrUnavailable, once it has kept failing for RetryPolicy.For. Errors that
// retrying cannot cure (a missing object, a refused credential, a full disk) are returned at
// once.

// Defaults of RetryPolicy.
const (
	DefaultRetryFor   = 2 * time.Minute
	DefaultStall      = time.Minute
	DefaultMaxBackoff = 10 * time.Second
	firstBackoff      = 250 * time.Millisecond
	streakBreak       = 1 << 20 // bytes an attempt must deliver to count as a success
)

// Errors of retried operations.
var (
	// ErrUnavailable wraps the last error of an operation that kept failing transiently for
	// RetryPolicy.For: the store could not be reached, not a sign of damage.
	ErrUnavailable = errors.New("checkpoint: store unavailable")
	// ErrStalled is the cause of an attempt abandoned because it made no progress.
	ErrStalled = errors.New("checkpoint: transfer stalled")
)

// RetryPolicy bounds how WithRetries rides out transient failures.
type RetryPolicy struct {
	// For is how long an operation keeps retrying before it gives up (for a read, counted
	// from the last byte that arrived). 0 means DefaultRetryFor; a negative value disables
	// retries (every failure is returned at once) but keeps the stall timeout.
	For time.Duration
	// Stall is how long an attempt may make no progress (no byte read or sent, no answer)
	// before it is abandoned as stalled. 0 means DefaultStall.
	Stall time.Duration
	// MaxBackoff caps the wait between attempts, which doubles from 250 ms. 0 means
	// DefaultMaxBackoff.
	MaxBackoff time.Duration
	// Log receives one line per retry and per give-up; nil discards.
	Log func(string)
}

// Validate names the first field out of range.
func (p RetryPolicy) Validate() error {
	switch {
	case p.Stall < 0:
		return fmt.Errorf("checkpoint: retry policy: Stall %v, want >= 0 (0 for %v)", p.Stall, DefaultStall)
	case p.MaxBackoff < 0:
		return fmt.Errorf("checkpoint: retry policy: MaxBackoff %v, want >= 0 (0 for %v)", p.MaxBackoff, DefaultMaxBackoff)
	}
	return nil
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.For == 0 {
		p.For = DefaultRetryFor
	}
	if p.Stall == 0 {
		p.Stall = DefaultStall
	}
	if p.MaxBackoff == 0 {
		p.MaxBackoff = DefaultMaxBackoff
	}
	return p
}

// Transient reports whether err is a failure that the same request may not meet again: a
// network error, a timeout or stall, a response cut short, a server error (5xx), throttling.
// Sentinel errors of this package (a missing object, an invalid key or range, a size
// mismatch, a conflict), refused requests (4xx) and local errors such as a full or read-only
// disk are not transient, nor is the cancellation of the caller's context.
func Transient(err error) bool {
	switch {
	case err == nil, errors.Is(err, context.Canceled):
		return false
	case errors.Is(err, ErrStalled), errors.Is(err, ErrUnavailable):
		return true
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrInvalidKey), errors.Is(err, ErrInvalidRange),
		errors.Is(err, ErrSizeMismatch), errors.Is(err, ErrBucketNotFound), errors.Is(err, ErrConflict),
		errors.Is(err, ErrS3Config), errors.Is(err, ErrUnknownScheme):
		return false
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, context.DeadlineExceeded):
		return true
	}
	var resp minio.ErrorResponse
	if errors.As(err, &resp) && resp.StatusCode != 0 {
		return resp.StatusCode >= 500 || resp.StatusCode == 408 || resp.StatusCode == 429
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ECONNABORTED, syscall.EPIPE, syscall.ETIMEDOUT,
			syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.ENETDOWN, syscall.EAGAIN, syscall.EINTR, syscall.EIO:
			return true
		}
		return false
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// WithRetries returns s with p applied to every operation. The result also implements
// Swapper when s does.
func WithRetries(s ObjectStore, p RetryPolicy) ObjectStore {
	if r, ok := s.(*retryStore); ok {
		s = r.inner
	}
	return &retryStore{inner: s, p: p.withDefaults()}
}

// retryStore is WithRetries' wrapper.
type retryStore struct {
	inner ObjectStore
	p     RetryPolicy
}

var (
	_ ObjectStore = (*retryStore)(nil)
	_ Swapper     = (*retryStore)(nil)
)

// String names the wrapped store.
func (s *retryStore) String() string { return fmt.Sprint(s.inner) }

func (s *retryStore) logf(format string, a ...any) {
	if s.p.Log != nil {
		s.p.Log(fmt.Sprintf(format, a...))
	}
}

// attempt runs one try of an operation under a context that is cancelled, with cause
// ErrStalled, when the try reports no progress for p.Stall.
func (s *retryStore) attempt(ctx context.Context, try func(ctx context.Context, progress func()) error) error {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w := startWatch(s.p.Stall, func() { cancel(fmt.Errorf("%w: no progress for %v", ErrStalled, s.p.Stall)) })
	defer w.stop()
	err := try(actx, w.progress)
	if err != nil && ctx.Err() == nil {
		if cause := context.Cause(actx); errors.Is(cause, ErrStalled) {
			err = fmt.Errorf("%w (%v)", cause, err)
		}
	}
	return err
}

// do runs an operation, retrying transient failures with backoff for up to p.For.
func (s *retryStore) do(ctx context.Context, what string, replayable bool, try func(ctx context.Context, progress func()) error) error {
	return s.doSince(ctx, time.Now(), what, replayable, try)
}

// doSince is do with the p.For budget counted from start.
func (s *retryStore) doSince(ctx context.Context, start time.Time, what string, replayable bool, try func(ctx context.Context, progress func()) error) error {
	backoff := firstBackoff
	for n := 1; ; n++ {
		err := s.attempt(ctx, try)
		if err == nil || ctx.Err() != nil || !Transient(err) {
			return err
		}
		if !replayable || s.p.For < 0 {
			return err
		}
		left := s.p.For - time.Since(start)
		if left <= 0 {
			s.logf("checkpoint: %s: giving up after %d attempts in %v: %v", what, n, time.Since(start).Round(time.Millisecond), err)
			return fmt.Errorf("%w: %s: %d attempts in %v: %w", ErrUnavailable, what, n, time.Since(start).Round(time.Millisecond), err)
		}
		wait := min(backoff, left)
		s.logf("checkpoint: %s failed (%v); retrying in %v (attempt %d)", what, err, wait.Round(time.Millisecond), n+1)
		if err := sleepCtx(ctx, wait); err != nil {
			return err
		}
		backoff = min(2*backoff, s.p.MaxBackoff)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Put implements ObjectStore. A reader that can seek is rewound for each attempt; any other
// reader gets one attempt, still bounded by the stall timeout.
func (s *retryStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	rs, replayable := r.(io.ReadSeeker)
	var start int64
	if replayable {
		var err error
		if start, err = rs.Seek(0, io.SeekCurrent); err != nil {
			replayable = false
		}
	}
	first := true
	return s.do(ctx, "put "+key, replayable, func(ctx context.Context, progress func()) error {
		if !first {
			if _, err := rs.Seek(start, io.SeekStart); err != nil {
				return fmt.Errorf("checkpoint: put %q: rewinding for a retry: %w", key, err)
			}
		}
		first = false
		return s.inner.Put(ctx, key, progressReader(r, progress), size)
	})
}

// List implements ObjectStore.
func (s *retryStore) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	var out []ObjectInfo
	err := s.do(ctx, "list "+prefix, true, func(ctx context.Context, _ func()) error {
		var err error
		out, err = s.inner.List(ctx, prefix)
		return err
	})
	return out, err
}

// Delete implements ObjectStore.
func (s *retryStore) Delete(ctx context.Context, key string) error {
	return s.do(ctx, "delete "+key, true, func(ctx context.Context, _ func()) error {
		return s.inner.Delete(ctx, key)
	})
}

// Get implements ObjectStore. The reader it returns resumes a body that fails or stalls
// midway with a ranged request for the bytes still missing, so a dropped connection costs a
// retry, not the read. With n >= 0 a body that ends early is resumed the same way.
func (s *retryStore) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	r := &retryReader{s: s, ctx: ctx, key: key, off: off, left: n}
	if err := r.open(time.Now()); err != nil {
		return nil, err
	}
	return r, nil
}

// retryReader is the body of a retried Get.
type retryReader struct {
	s    *retryStore
	ctx  context.Context
	key  string
	off  int64 // offset of the next byte
	left int64 // bytes still to read; < 0: to the end

	cur    io.ReadCloser
	cancel context.CancelCauseFunc
	watch  *watch
	// failing is when the current streak of failed attempts began (zero: none). An attempt
	// ends a streak only by delivering streakBreak bytes, so a connection that dies every
	// few bytes still exhausts the retry budget.
	failing time.Time
	backoff time.Duration // wait before the next resumption of the streak
	got     int64         // bytes the current attempt delivered
	closed  bool
	eof     bool
}

// open starts a request for the bytes still missing, retrying transient failures for up to
// p.For after since.
func (r *retryReader) open(since time.Time) error {
	return r.s.doSince(r.ctx, since, "get "+r.key, true, func(context.Context, func()) error {
		actx, cancel := context.WithCancelCause(r.ctx)
		w := startWatch(r.s.p.Stall, func() { cancel(fmt.Errorf("%w: no progress for %v", ErrStalled, r.s.p.Stall)) })
		body, err := r.s.inner.Get(actx, r.key, r.off, r.left)
		if err != nil {
			w.stop()
			if cause := context.Cause(actx); errors.Is(cause, ErrStalled) && r.ctx.Err() == nil {
				err = fmt.Errorf("%w (%v)", cause, err)
			}
			cancel(nil)
			return err
		}
		w.progress()
		r.cur, r.cancel, r.watch, r.got = body, cancel, w, 0
		return nil
	})
}

func (r *retryReader) drop() {
	if r.cur != nil {
		r.cur.Close()
		r.watch.stop()
		r.cancel(nil)
		r.cur = nil
	}
}

// Read implements io.Reader.
func (r *retryReader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, fmt.Errorf("checkpoint: get %s: read after close", r.key)
	}
	if r.left == 0 || r.eof {
		return 0, io.EOF
	}
	if r.left > 0 && int64(len(p)) > r.left {
		p = p[:r.left]
	}
	for {
		if r.cur == nil {
			since := r.failing
			if since.IsZero() {
				since = time.Now()
			}
			if err := r.open(since); err != nil {
				return 0, err
			}
		}
		k, err := r.cur.Read(p)
		if k > 0 {
			r.off += int64(k)
			if r.left > 0 {
				r.left -= int64(k)
			}
			r.got += int64(k)
			if r.got >= streakBreak {
				r.failing = time.Time{}
			}
			r.watch.progress()
		}
		if err == nil {
			return k, nil
		}
		if err == io.EOF && r.left <= 0 {
			r.drop()
			r.eof = true
			if k > 0 {
				return k, nil
			}
			return 0, io.EOF
		}
		if err == io.EOF {
			err = fmt.Errorf("checkpoint: get %s: body ended %d bytes early: %w", r.key, r.left, io.ErrUnexpectedEOF)
		}
		if r.watch.fired.Load() && r.ctx.Err() == nil {
			err = fmt.Errorf("%w: no progress for %v (%v)", ErrStalled, r.s.p.Stall, err)
		}
		r.drop()
		if r.ctx.Err() != nil || !Transient(err) || r.s.p.For < 0 {
			return k, err
		}
		if r.failing.IsZero() {
			r.failing, r.backoff = time.Now(), firstBackoff
		}
		if time.Since(r.failing) > r.s.p.For {
			r.s.logf("checkpoint: reading %s: giving up at byte %d after failing for %v: %v", r.key, r.off, time.Since(r.failing).Round(time.Millisecond), err)
			return k, fmt.Errorf("%w: get %s: failing for %v at byte %d: %w", ErrUnavailable, r.key, time.Since(r.failing).Round(time.Millisecond), r.off, err)
		}
		if serr := sleepCtx(r.ctx, r.backoff); serr != nil {
			return k, serr
		}
		r.backoff = min(2*r.backoff, r.s.p.MaxBackoff)
		r.s.logf("checkpoint: reading %s failed at byte %d (%v); resuming", r.key, r.off, err)
		if k > 0 {
			return k, nil // the next Read resumes
		}
	}
}

// Close implements io.Closer.
func (r *retryReader) Close() error {
	r.closed = true
	r.drop()
	return nil
}

// ReadVersion implements Swapper.
func (s *retryStore) ReadVersion(ctx context.Context, key string) ([]byte, string, error) {
	sw, ok := s.inner.(Swapper)
	if !ok {
		return nil, "", fmt.Errorf("%w: %v cannot replace objects conditionally", errors.ErrUnsupported, s.inner)
	}
	var data []byte
	var ver string
	err := s.do(ctx, "read "+key, true, func(ctx context.Context, _ func()) error {
		var err error
		data, ver, err = sw.ReadVersion(ctx, key)
		return err
	})
	return data, ver, err
}

// Swap implements Swapper. An attempt whose answer was lost may still have replaced the
// object, so after a transient failure the object is read back: holding data means the swap
// happened, holding the old version means it may be tried again, anything else is a conflict.
func (s *retryStore) Swap(ctx context.Context, key, old string, data []byte) (string, error) {
	sw, ok := s.inner.(Swapper)
	if !ok {
		return "", fmt.Errorf("%w: %v cannot replace objects conditionally", errors.ErrUnsupported, s.inner)
	}
	var ver string
	err := s.do(ctx, "swap "+key, true, func(ctx context.Context, _ func()) error {
		v, err := sw.Swap(ctx, key, old, data)
		if err == nil || !Transient(err) {
			ver = v
			return err
		}
		cur, cv, rerr := sw.ReadVersion(ctx, key)
		switch {
		case rerr == nil && string(cur) == string(data):
			ver = cv
			return nil
		case rerr == nil && cv == old, errors.Is(rerr, ErrNotFound) && old == "":
			return err // unchanged: try again
		case rerr == nil, errors.Is(rerr, ErrNotFound):
			return fmt.Errorf("%w: %s changed while a swap was retried", ErrConflict, key)
		}
		return err
	})
	return ver, err
}

// watch calls fire once when progress has not been called for stall.
type watch struct {
	last  atomic.Int64 // unix nanoseconds of the last progress
	fired atomic.Bool
	done  chan struct{}
	once  sync.Once
}

func startWatch(stall time.Duration, fire func()) *watch {
	w := &watch{done: make(chan struct{})}
	w.progress()
	go func() {
		tick := time.NewTicker(max(stall/8, time.Millisecond))
		defer tick.Stop()
		for {
			select {
			case <-w.done:
				return
			case now := <-tick.C:
				if now.Sub(time.Unix(0, w.last.Load())) >= stall {
					w.fired.Store(true)
					fire()
					return
				}
			}
		}
	}()
	return w
}

func (w *watch) progress() { w.last.Store(time.Now().UnixNano()) }

func (w *watch) stop() { w.once.Do(func() { close(w.done) }) }

// progressReader returns r reporting each read to progress, keeping the io.ReaderAt and
// io.Seeker of r (which let the S3 store upload parts in parallel and re-read them).
func progressReader(r io.Reader, progress func()) io.Reader {
	ra, isAt := r.(io.ReaderAt)
	sk, isSeek := r.(io.Seeker)
	if isAt && isSeek {
		return &progressReadSeeker{r: r, ra: ra, sk: sk, progress: progress}
	}
	return &plainProgress{r: r, progress: progress}
}

type plainProgress struct {
	r        io.Reader
	progress func()
}

func (p *plainProgress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.progress()
	}
	return n, err
}

type progressReadSeeker struct {
	r        io.Reader
	ra       io.ReaderAt
	sk       io.Seeker
	progress func()
}

func (p *progressReadSeeker) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.progress()
	}
	return n, err
}

func (p *progressReadSeeker) ReadAt(b []byte, off int64) (int, error) {
	n, err := p.ra.ReadAt(b, off)
	if n > 0 {
		p.progress()
	}
	return n, err
}

func (p *progressReadSeeker) Seek(off int64, whence int) (int64, error) {
	return p.sk.Seek(off, whence)
}
