package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Client talks to a job's coordinator. It follows the leader: a follower's redirect, and
// when the address it used stops answering (the leader died), the next of the known
// addresses or the one Resolve finds (the leader record in etcd).
type Client struct {
	token string
	http  *http.Client
	// Resolve, when set, returns the current leader's API address.
	Resolve func(ctx context.Context) (string, error)
	// RetryFor bounds how long a call keeps trying unreachable coordinators (0: 30 s).
	RetryFor time.Duration
	// Log receives a line when the client moves to another coordinator; nil discards.
	Log func(string)

	mu    sync.Mutex
	addrs []string // known API addresses, the current one first
}

// NewClient returns a client of the coordinators at addrs (host:port, comma-separated
// lists accepted), authenticating with token.
func NewClient(addrs, token string) *Client {
	c := &Client{token: token, http: &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	for _, a := range strings.Split(addrs, ",") {
		if a = strings.TrimSpace(a); a != "" {
			c.addrs = append(c.addrs, strings.TrimPrefix(a, "http://"))
		}
	}
	return c
}

// Addr returns the coordinator address the client uses now.
func (c *Client) Addr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.addrs) == 0 {
		return ""
	}
	return c.addrs[0]
}

func (c *Client) logf(format string, a ...any) {
	if c.Log != nil {
		c.Log(fmt.Sprintf(format, a...))
	}
}

// use makes addr the current address.
func (c *Client) use(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := []string{addr}
	for _, a := range c.addrs {
		if a != addr {
			out = append(out, a)
		}
	}
	c.addrs = out
}

// rotate moves to the next known address, or the resolved leader.
func (c *Client) rotate(ctx context.Context) {
	if c.Resolve != nil {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		addr, err := c.Resolve(rctx)
		cancel()
		if err == nil && addr != "" && addr != c.Addr() {
			c.logf("cluster: following the leader to %s", addr)
			c.use(addr)
			return
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.addrs) > 1 {
		c.addrs = append(c.addrs[1:], c.addrs[0])
	}
}

// do sends a request and decodes the JSON answer into out, retrying unreachable or leaderless
// coordinators until RetryFor passes. A refusal comes back as an error wrapping the
// protocol's sentinel.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	var body []byte
	if in != nil {
		body, _ = json.Marshal(in)
	}
	retryFor := c.RetryFor
	if retryFor <= 0 {
		retryFor = 30 * time.Second
	}
	start := time.Now()
	var last error
	for attempt := 0; ; attempt++ {
		addr := c.Addr()
		if addr == "" {
			return errors.New("cluster: no coordinator address")
		}
		err := c.once(ctx, method, addr, path, query, body, out)
		var redirect *redirectError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &redirect):
			c.use(redirect.to)
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case !retryable(err):
			return err
		}
		last = err
		if time.Since(start) > retryFor {
			return fmt.Errorf("cluster: no coordinator answered for %v (last tried %s): %w", retryFor.Round(time.Second), addr, last)
		}
		c.rotate(ctx)
		t := time.NewTimer(min(time.Duration(attempt+1)*200*time.Millisecond, 2*time.Second))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

type redirectError struct{ to string }

func (e *redirectError) Error() string { return "redirected to " + e.to }

// unavailable marks an answer that another try, maybe elsewhere, may change.
type unavailable struct{ err error }

func (e *unavailable) Error() string { return e.err.Error() }
func (e *unavailable) Unwrap() error { return e.err }

func retryable(err error) bool {
	var u *unavailable
	return errors.As(err, &u)
}

func (c *Client) once(ctx context.Context, method, addr, path string, query url.Values, body []byte, out any) error {
	u := url.URL{Scheme: "http", Host: addr, Path: path, RawQuery: query.Encode()}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set(TokenHeader, "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &unavailable{fmt.Errorf("cluster: %s %s: %w", method, u.String(), err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusTemporaryRedirect || resp.StatusCode == http.StatusPermanentRedirect {
		loc, err := url.Parse(resp.Header.Get("Location"))
		if err != nil || loc.Host == "" {
			return &unavailable{fmt.Errorf("cluster: %s redirected to %q", addr, resp.Header.Get("Location"))}
		}
		return &redirectError{to: loc.Host}
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return &unavailable{fmt.Errorf("cluster: reading the answer of %s: %w", addr, err)}
	}
	if resp.StatusCode != http.StatusOK {
		var e Error
		json.Unmarshal(raw, &e)
		if e.Message == "" {
			e.Message = strings.TrimSpace(string(raw))
		}
		err := fmt.Errorf("coordinator %s: %s", addr, e.Message)
		switch e.Code {
		case "token":
			return fmt.Errorf("%w: %v", ErrToken, err)
		case "job":
			return fmt.Errorf("%w: %v", ErrWrongJob, err)
		case "cannot-run":
			return fmt.Errorf("%w: %v", ErrCannotRun, err)
		case "done":
			return fmt.Errorf("%w: %v", ErrDone, err)
		case "not-leader":
			return &unavailable{fmt.Errorf("%w: %v", ErrNotLeader, err)}
		}
		if resp.StatusCode >= 500 {
			return &unavailable{err}
		}
		return err
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("cluster: the answer of %s: %w", addr, err)
		}
	}
	return nil
}

// Join asks to take part in the job.
func (c *Client) Join(ctx context.Context, req JoinRequest) (*JoinResponse, error) {
	var out JoinResponse
	return &out, c.do(ctx, http.MethodPost, PathJoin, nil, req, &out)
}

// Round waits up to the coordinator's long-poll time for a round newer than after.
func (c *Client) Round(ctx context.Context, worker string, after uint64) (*RoundResponse, error) {
	var out RoundResponse
	q := url.Values{"worker": {worker}, "after": {fmt.Sprint(after)}}
	return &out, c.do(ctx, http.MethodGet, PathRound, q, nil, &out)
}

// Report sends a worker's news.
func (c *Client) Report(ctx context.Context, rep Report) error {
	return c.do(ctx, http.MethodPost, PathReport, nil, rep, nil)
}

// Leave says a worker is leaving.
func (c *Client) Leave(ctx context.Context, worker string) error {
	return c.do(ctx, http.MethodPost, PathLeave, url.Values{"worker": {worker}}, nil, nil)
}

// Status returns the job's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var out Status
	return &out, c.do(ctx, http.MethodGet, PathStatus, nil, nil, &out)
}
