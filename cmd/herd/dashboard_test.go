package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/herd-llm/herd/internal/testcluster"
)

// chromium returns the headless browser the dashboard tests open the page in (HERD_CHROMIUM,
// else chromium on PATH), or skips; HERD_REQUIRE_CHROMIUM=1 (set by .ci/run, which installs
// Debian's chromium) makes its absence a failure.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("HERD_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("HERD_REQUIRE_CHROMIUM") == "1" {
		t.Fatal("HERD_REQUIRE_CHROMIUM=1 but chromium is not installed")
	}
	t.Skip("chromium not found (Debian's chromium package; HERD_REQUIRE_CHROMIUM=1 makes this a failure)")
	return ""
}

// browse loads url in headless Chromium, lets its scripts run for a few seconds of virtual
// time (two polls of the page), and returns the DOM as it then is.
func browse(t *testing.T, browser, url string) string {
	t.Helper()
	out, err := exec.Command(browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--user-data-dir="+t.TempDir(), "--virtual-time-budget=5000", "--dump-dom", url).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom %s: %v", url, err)
	}
	return string(out)
}

// screenshot saves the page as a PNG test artifact in HERD_TEST_ARTIFACTS (.ci/run sets it),
// else in the test's temporary directory, and returns its path.
func screenshot(t *testing.T, browser, url, name string) string {
	t.Helper()
	dir := os.Getenv("HERD_TEST_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path, _ := filepath.Abs(filepath.Join(dir, name))
	out, err := exec.Command(browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
		"--user-data-dir="+t.TempDir(), "--window-size=1280,1000", "--virtual-time-budget=5000", "--screenshot="+path, url).CombinedOutput()
	if st, serr := os.Stat(path); err != nil || serr != nil || st.Size() < 10000 {
		t.Errorf("chromium --screenshot: %v %v\n%s", err, serr, out)
	}
	return path
}

var pointsRE = regexp.MustCompile(`id="chart-(\w+)"[^>]*data-points="(\d+)"|data-points="(\d+)"[^>]*id="chart-(\w+)"`)

// chartPoints returns the number of points each chart of the page drew.
func chartPoints(dom string) map[string]int {
	got := map[string]int{}
	for _, m := range pointsRE.FindAllStringSubmatch(dom, -1) {
		name, n := m[1], m[2]
		if name == "" {
			name, n = m[4], m[3]
		}
		got[name], _ = strconv.Atoi(n)
	}
	return got
}

// herd dashboard --run serves a finished run of herd train: the charts draw every step of
// loss, tokens/s per GPU, learning rate and gradient norm, and every validation, and the
// summary shows the last step.
func TestDashboardRun(t *testing.T) {
	browser := chromium(t)
	e := newCkptEnv(t)
	run := filepath.Join(e.dir, "run")
	if out, ok := e.train(t, run, nil, "--steps", "30", "--eval-every", "10"); !ok {
		t.Fatal(out)
	}
	d := testcluster.Start(t, nil, e.bin, "dashboard", "--run", run, "--listen", "127.0.0.1:0")
	addr := d.Out.WaitFor(t, regexp.MustCompile(`on http://(\S+)/`), 10*time.Second)[1]
	dom := browse(t, browser, "http://"+addr+"/")
	got := chartPoints(dom)
	want := map[string]int{"loss": 30, "tps": 30, "lr": 30, "gn": 30, "val": 3}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("chart %s drew %d points, want %d (all: %v)", k, got[k], n, got)
		}
	}
	if !strings.Contains(dom, ">30 / 30<") || strings.Count(dom, `<path class="line" d="M`) != 5 {
		t.Errorf("the page does not show step 30 of 30 and five lines:\n%s", testcluster.Tail(dom, 3000))
	}
	t.Logf("screenshot: %s", screenshot(t, browser, "http://"+addr+"/", "dashboard-run.png"))

	if out, err := exec.Command(e.bin, "dashboard", "--run", filepath.Join(e.dir, "nothing")).CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "not a run directory of herd train") {
		t.Errorf("dashboard of a directory that is no run: %v\n%s", err, out)
	}
}

// The coordinator serves the dashboard of a live cluster job on its API port: on a local
// cluster started with herd up, the charts fill as the job trains, the workers table lists
// the three workers training, and when one is killed the page shows it lost.
func TestDashboardCluster(t *testing.T) {
	browser := chromium(t)
	e := &clusterEnv{ckptEnv: newCkptEnv(t)} // no reference run: nothing is compared with one
	job := e.jobFile(t, "dash", 400, 2, 3, "")
	up := testcluster.Start(t, nil, e.bin, "up", "--job", job, "--workers", "3", "--out", filepath.Join(e.dir, "up"))
	addr := up.Out.WaitFor(t, regexp.MustCompile(`up: coordinator on (\S+);`), 60*time.Second)[1]
	var pids []int
	for _, m := range up.Out.WaitForN(t, regexp.MustCompile(`up: worker \d+ is pid (\d+)`), 3, 30*time.Second) {
		pid, _ := strconv.Atoi(m[1])
		pids = append(pids, pid)
	}
	metrics := filepath.Join(e.dir, "up", "coordinator", "runs", "dash", "metrics.jsonl")
	waitFor(t, "step 20", 60*time.Second, func() bool { return len(readLines(metrics)) >= 20 })
	url := "http://" + addr + "/"
	dom := browse(t, browser, url)
	if got := chartPoints(dom); got["loss"] < 20 || got["tps"] < 20 || got["lr"] < 20 {
		t.Errorf("charts of a live job: %v, want 20 points or more in loss, tokens/s and learning rate", got)
	}
	if n := strings.Count(dom, `data-state="training"`); n != 3 {
		t.Errorf("%d workers shown training, want 3:\n%s", n, testcluster.Tail(dom, 3000))
	}
	t.Logf("screenshot: %s", screenshot(t, browser, url, "dashboard-cluster.png"))

	if err := syscall.Kill(pids[1], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	lost := up.Out.WaitFor(t, regexp.MustCompile(`worker (\S+) left or was lost`), 30*time.Second)[1]
	dom = browse(t, browser, url)
	if !regexp.MustCompile(`<tr class="lost" data-state="lost"><td>` + regexp.QuoteMeta(lost) + `</td>`).MatchString(dom) {
		t.Errorf("the page does not show %s lost:\n%s", lost, testcluster.Tail(dom, 3000))
	}
	t.Logf("screenshot after the loss: %s", screenshot(t, browser, url, "dashboard-cluster-lost.png"))
}
