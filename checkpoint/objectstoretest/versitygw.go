package objectstoretest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/herd-llm/herd/checkpoint"
)

// VersityGWVersion is the versitygw release the tests are written against.
const VersityGWVersion = "v1.8.0"

// readyTimeout bounds the wait for a started gateway to answer its health check.
const readyTimeout = 30 * time.Second

// VersityGW is a versitygw S3 gateway serving a temporary directory (its posix backend) on
// a loopback port, with one bucket, started by a test and killed when the test ends.
type VersityGW struct {
	Endpoint  string // http://127.0.0.1:port
	AccessKey string
	SecretKey string
	Bucket    string

	bin, addr, dir, log string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
}

// StartVersityGW starts a gateway with an empty bucket and registers its kill with
// t.Cleanup. The binary is $HERD_VERSITYGW, else versitygw on $PATH, else in $GOBIN or
// $(go env GOPATH)/bin. Without one the test is skipped, or fails when HERD_REQUIRE_S3=1.
func StartVersityGW(t testing.TB) *VersityGW {
	t.Helper()
	bin, err := FindVersityGW()
	if err != nil {
		if os.Getenv("HERD_REQUIRE_S3") == "1" || os.Getenv("HERD_VERSITYGW") != "" {
			t.Fatalf("S3 tests need versitygw: %v", err)
		}
		t.Skipf("skipping S3 tests: %v (install: go install github.com/versity/versitygw/cmd/versitygw@%s; HERD_REQUIRE_S3=1 makes this a failure)", err, VersityGWVersion)
	}
	addr, err := freeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	g := &VersityGW{
		Endpoint:  "http://" + addr,
		AccessKey: "herd" + randomHex(8),
		SecretKey: randomHex(20),
		Bucket:    "herd-test",
		bin:       bin,
		addr:      addr,
		dir:       filepath.Join(tmp, "data"),
		log:       filepath.Join(tmp, "versitygw.log"),
	}
	if err := os.Mkdir(g.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		g.Kill()
		if t.Failed() {
			t.Logf("versitygw log (%s):\n%s", g.log, tail(g.log, 4096))
		}
	})
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	if err := g.makeBucket(); err != nil {
		t.Fatal(err)
	}
	return g
}

// FindVersityGW returns the path of the versitygw binary, or an error saying where it looked.
func FindVersityGW() (string, error) {
	if p := os.Getenv("HERD_VERSITYGW"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("HERD_VERSITYGW=%s: %w", p, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	var dirs []string
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		dirs = append(dirs, gobin)
	}
	if gopath := goPath(); gopath != "" {
		dirs = append(dirs, filepath.Join(gopath, "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "versitygw")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("versitygw not found: $HERD_VERSITYGW unset, not on $PATH, not in [%s]", strings.Join(dirs, " "))
}

// goPath returns the first entry of $GOPATH, asking the go command when it is unset.
func goPath() string {
	if p := os.Getenv("GOPATH"); p != "" {
		return filepath.SplitList(p)[0]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOPATH").Output()
	if err != nil {
		return ""
	}
	return filepath.SplitList(strings.TrimSpace(string(out)))[0]
}

// Start runs the gateway process (again, after Kill: same port, directory and keys) and
// waits until it answers its health check.
func (g *VersityGW) Start() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cmd != nil {
		return errors.New("versitygw: already running")
	}
	logf, err := os.OpenFile(g.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(g.bin, "--port", g.addr, "--access", g.AccessKey, "--secret", g.SecretKey,
		"--health", "/health", "--quiet", "posix", g.dir)
	cmd.Env = gatewayEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("versitygw: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	g.cmd, g.exited = cmd, exited
	if err := waitReady(g.Endpoint+"/health", exited); err != nil {
		g.killLocked()
		return fmt.Errorf("versitygw on %s: %w (log: %s)", g.addr, err, tail(g.log, 1024))
	}
	return nil
}

// Kill stops the gateway with SIGKILL, as a crash would, and waits for it to exit.
func (g *VersityGW) Kill() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.killLocked()
}

func (g *VersityGW) killLocked() {
	if g.cmd == nil {
		return
	}
	g.cmd.Process.Kill()
	<-g.exited
	g.cmd, g.exited = nil, nil
}

// Config returns an S3Config for the gateway's bucket with the given key prefix.
func (g *VersityGW) Config(prefix string) checkpoint.S3Config {
	return checkpoint.S3Config{
		Endpoint:  g.Endpoint,
		Bucket:    g.Bucket,
		Prefix:    prefix,
		Region:    "us-east-1",
		AccessKey: g.AccessKey,
		SecretKey: g.SecretKey,
	}
}

// Client returns a plain minio client of the gateway, for checks below the ObjectStore.
func (g *VersityGW) Client() (*minio.Core, error) {
	return minio.NewCore(strings.TrimPrefix(g.Endpoint, "http://"), &minio.Options{
		Creds:  credentials.NewStaticV4(g.AccessKey, g.SecretKey, ""),
		Region: "us-east-1",
	})
}

func (g *VersityGW) makeBucket() error {
	c, err := g.Client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := c.MakeBucket(ctx, g.Bucket, minio.MakeBucketOptions{Region: "us-east-1"}); err != nil {
		return fmt.Errorf("versitygw: make bucket %s: %w", g.Bucket, err)
	}
	return nil
}

// gatewayEnv is this process's environment without the variables versitygw reads, so that
// only the flags configure it.
func gatewayEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VGW_") && !strings.HasPrefix(kv, "ROOT_") {
			env = append(env, kv)
		}
	}
	return env
}

func waitReady(url string, exited <-chan struct{}) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(readyTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("exited during start")
		default:
		}
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %v", readyTimeout)
}

// freeLoopbackAddr returns a 127.0.0.1 address whose port was free a moment ago.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func tail(path string, n int64) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
	}
	return string(b)
}
