package objectstoretest

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// FaultProxy is an HTTP reverse proxy on 127.0.0.1 in front of an S3 server, for tests that
// need the network to fail in a chosen way: a response cut short after some bytes (the
// connection then drops), or a response whose body stops arriving. Requests are passed on
// unchanged, Host header included, so the client's SigV4 signatures stay valid.
type FaultProxy struct {
	// Endpoint is http://127.0.0.1:port, to give clients instead of the server's.
	Endpoint string

	srv  *http.Server
	done chan struct{}

	mu    sync.Mutex
	rules []*FaultRule
	hits  int
}

// Fault is what a FaultRule does to a matching response.
type Fault int

const (
	// Truncate sends the status and headers (with the full Content-Length) and After bytes
	// of the body, then drops the connection.
	Truncate Fault = iota + 1
	// Stall sends After bytes of the body, then nothing more until the client gives up or
	// the proxy closes.
	Stall
	// Hold sends no answer at all (the request itself reached the server) until the client
	// gives up or the proxy closes: a stalled upload, as the client sees it.
	Hold
)

// FaultRule makes the next Count requests whose method is Method and whose path contains
// PathContains fail with Fault. Count < 0 means every such request until Clear.
type FaultRule struct {
	Method       string
	PathContains string
	Fault        Fault
	After        int64
	Count        int
}

// StartFaultProxy starts a proxy to target (http://host:port) and closes it when the test ends.
func StartFaultProxy(t testing.TB, target string) *FaultProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &FaultProxy{Endpoint: "http://" + ln.Addr().String(), done: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(u) // keeps the client's Host header
	rp.ModifyResponse = p.modify
	rp.FlushInterval = -1 // pass each byte on at once, so a cut lands inside the body
	rp.ErrorLog = nil
	p.srv = &http.Server{Handler: rp}
	go p.srv.Serve(ln)
	t.Cleanup(p.Close)
	return p
}

// Add arms a rule.
func (p *FaultProxy) Add(r FaultRule) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append(p.rules, &r)
}

// Clear disarms every rule.
func (p *FaultProxy) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = nil
}

// Hits returns how many responses the rules have damaged so far.
func (p *FaultProxy) Hits() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hits
}

// Close stops the proxy and releases every stalled response.
func (p *FaultProxy) Close() {
	select {
	case <-p.done:
		return
	default:
		close(p.done)
	}
	p.srv.Close()
}

func (p *FaultProxy) match(req *http.Request) *FaultRule {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.rules {
		if r.Count == 0 || (r.Method != "" && r.Method != req.Method) || !strings.Contains(req.URL.Path, r.PathContains) {
			continue
		}
		if r.Count > 0 {
			r.Count--
		}
		p.hits++
		return r
	}
	return nil
}

func (p *FaultProxy) modify(resp *http.Response) error {
	r := p.match(resp.Request)
	if r == nil {
		return nil
	}
	if r.Fault == Hold {
		select {
		case <-resp.Request.Context().Done():
		case <-p.done:
		}
		resp.Body.Close()
		panic(http.ErrAbortHandler)
	}
	resp.Body = &faultBody{body: resp.Body, left: r.After, fault: r.Fault, ctx: resp.Request.Context(), done: p.done}
	return nil
}

type faultBody struct {
	body  io.ReadCloser
	left  int64
	fault Fault
	ctx   context.Context
	done  chan struct{}
}

func (b *faultBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		if b.fault == Stall {
			select {
			case <-b.ctx.Done():
			case <-b.done:
			}
		}
		// Panicking with ErrAbortHandler makes net/http close the connection without
		// finishing the response, as a network failure would.
		panic(http.ErrAbortHandler)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.body.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *faultBody) Close() error { return b.body.Close() }
