package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// herdBinary builds cmd/herd once per test run; end-to-end tests run the real binary.
func herdBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "herd")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestPlanParamCountsBinary(t *testing.T) {
	bin := herdBinary(t)
	for preset, want := range map[string]int64{
		"7b": 6_738_415_616, "13b": 13_015_864_320, "33b": 32_528_943_616, "65b": 65_285_660_672,
	} {
		out, err := exec.Command(bin, "plan", "--preset", preset, "--json").Output()
		if err != nil {
			t.Fatalf("herd plan --preset %s: %v", preset, err)
		}
		var r struct {
			Params int64            `json:"params"`
			Act    map[string]int64 `json:"activation_bytes_per_token_per_layer"`
		}
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("plan output is not JSON: %v\n%s", err, out)
		}
		if r.Params != want {
			t.Errorf("%s: params %d, want %d", preset, r.Params, want)
		}
		if !(r.Act["full"] < r.Act["hybrid"] && r.Act["hybrid"] < r.Act["none"]) {
			t.Errorf("%s: activation bytes not ordered: %v", preset, r.Act)
		}
	}
	cmd := exec.Command(bin, "plan", "--preset", "nope")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil {
		t.Fatal("herd plan --preset nope succeeded")
	}
	if !strings.Contains(stderr.String(), `unknown preset "nope"`) {
		t.Errorf("stderr = %q", stderr.String())
	}
}

func TestPlanErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"plan", "--remat", "partial"}, `unknown remat policy "partial" (allowed: none, hybrid, full)`},
		{[]string{"plan", "--preset", "125m", "--seq", "4096"}, "seq = 4096, must be in [1, max_seq = 2048]"},
		{[]string{"plan", "--batch", "0"}, "--batch = 0, must be > 0"},
		{[]string{"plan", "--dtype", "int8"}, `--dtype "int8": allowed values are float32, bfloat16, float64`},
		{[]string{"plan", "extra"}, `unexpected argument "extra"`},
		{[]string{"nosuch"}, `unknown command "nosuch"`},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(tc.args, &stdout, &stderr); code == 0 {
			t.Errorf("%v: exit 0", tc.args)
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: stderr %q, want %q", tc.args, stderr.String(), tc.want)
		}
	}
}

func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"plan", "--help"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, flag := range []string{"-preset", "-remat", "-seq", "-batch", "-dtype", "-json"} {
		if !strings.Contains(stderr.String(), flag) {
			t.Errorf("plan --help does not explain %s", flag)
		}
	}
	stdout.Reset()
	run(nil, &stdout, &stderr)
	if !strings.Contains(stdout.String(), "plan") {
		t.Errorf("herd help does not list plan: %q", stdout.String())
	}
}
