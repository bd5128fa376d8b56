// Package manifests holds no Go code: its tests check the deployment files beside them (the
// Kubernetes manifests, the alerting rules, the Grafana dashboard, the Slurm script and the
// Dockerfile) offline, with the tools their users run: kustomize, kubeconform in strict mode
// against the Kubernetes schema that ships in kubeconform's module, promtool, bash.
//
// The tools are found through HERD_KUSTOMIZE, HERD_KUBECONFORM (paths) or on PATH; .ci/run
// installs them with go install and sets HERD_REQUIRE_MANIFEST_TOOLS=1, which makes a missing
// tool a failure rather than a skip.
package manifests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"sigs.k8s.io/yaml"

	"github.com/herd-llm/herd/cluster"
)

// tool returns the path of a command-line tool, or skips (fails when required).
func tool(t *testing.T, env, name string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if os.Getenv("HERD_REQUIRE_MANIFEST_TOOLS") == "1" {
		t.Fatalf("HERD_REQUIRE_MANIFEST_TOOLS=1 but %s is not found (set %s or put it on PATH)", name, env)
	}
	t.Skipf("%s not found (set %s or put it on PATH; .ci/run installs it)", name, env)
	return ""
}

func run(t *testing.T, stdin []byte, name string, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

var overlays = []string{"kubernetes/overlays/small", "kubernetes/overlays/large"}

// objects splits a multi-document YAML stream into its objects.
func objects(t *testing.T, stream []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(stream), -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("%v\n%s", err, doc)
		}
		out = append(out, m)
	}
	return out
}

func kindOf(o map[string]any) string { s, _ := o["kind"].(string); return s }

func nameOf(o map[string]any) string {
	md, _ := o["metadata"].(map[string]any)
	s, _ := md["name"].(string)
	return s
}

// Every overlay builds with kustomize, and every object it makes passes kubeconform in strict
// mode (no field the schema lacks, no duplicate key) against the Kubernetes schema, or, for
// the Prometheus operator's kinds, decodes strictly into the operator's own API types. The
// job file each overlay carries loads as herd's coordinator loads it, and the workers ask for
// as many GPUs as the job runs ranks per node.
func TestKubernetesManifests(t *testing.T) {
	kustomize := tool(t, "HERD_KUSTOMIZE", "kustomize")
	kubeconform := tool(t, "HERD_KUBECONFORM", "kubeconform")
	schemas := strictSchemas(t)
	location := filepath.Join(schemas, "{{ .ResourceKind }}{{ .KindSuffix }}.json")
	operatorKinds := map[string]any{"PodMonitor": &monitoringv1.PodMonitor{}, "ServiceMonitor": &monitoringv1.ServiceMonitor{}, "PrometheusRule": &monitoringv1.PrometheusRule{}}
	for _, overlay := range overlays {
		built, err := run(t, nil, kustomize, "build", overlay)
		if err != nil {
			t.Fatalf("kustomize build %s: %v\n%s", overlay, err, built)
		}
		out, err := run(t, built, kubeconform, "-strict", "-summary", "-schema-location", location,
			"-skip", "PodMonitor,ServiceMonitor,PrometheusRule", "-")
		if err != nil {
			t.Errorf("kubeconform -strict on %s: %v\n%s", overlay, err, out)
		}
		t.Logf("%s: %s", overlay, bytes.TrimSpace(out))
		kinds := map[string]int{}
		var job *cluster.JobSpec
		var worker map[string]any
		for _, o := range objects(t, built) {
			kinds[kindOf(o)]++
			if into, ok := operatorKinds[kindOf(o)]; ok {
				raw, _ := yaml.Marshal(o)
				if err := yaml.UnmarshalStrict(raw, into); err != nil {
					t.Errorf("%s: %s %s does not decode strictly into the operator's type: %v", overlay, kindOf(o), nameOf(o), err)
				}
			}
			switch {
			case kindOf(o) == "ConfigMap" && strings.HasPrefix(nameOf(o), "herd-job"):
				data, _ := o["data"].(map[string]any)
				text, _ := data["job.yaml"].(string)
				path := filepath.Join(t.TempDir(), "job.yaml")
				os.WriteFile(path, []byte(text), 0o644)
				if job, err = cluster.LoadJobSpec(path); err != nil {
					t.Errorf("%s: the job file: %v", overlay, err)
				}
			case kindOf(o) == "StatefulSet" && nameOf(o) == "herd-worker":
				worker = o
			}
		}
		for _, k := range []string{"StatefulSet", "Service", "Secret", "ConfigMap", "PersistentVolumeClaim", "PodMonitor", "ServiceMonitor", "PrometheusRule"} {
			if kinds[k] == 0 {
				t.Errorf("%s: no %s", overlay, k)
			}
		}
		if job != nil && worker != nil {
			checkWorkers(t, overlay, job, worker)
		}
	}

	// The schemas are strict: a misspelt field fails.
	bad := []byte("apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: x\nspec:\n  replica: 3\n  selector: {}\n  serviceName: x\n  template: {}\n")
	if out, err := run(t, bad, kubeconform, "-strict", "-schema-location", location, "-"); err == nil {
		t.Errorf("kubeconform accepted spec.replica (for replicas):\n%s", out)
	}
}

// checkWorkers checks the worker StatefulSet against the job: one rank per GPU, ranks per
// node as the job says, and at least workers.min pods.
func checkWorkers(t *testing.T, overlay string, job *cluster.JobSpec, sts map[string]any) {
	raw, _ := json.Marshal(sts)
	var s struct {
		Spec struct {
			Replicas int `json:"replicas"`
			Template struct {
				Spec struct {
					Containers []struct {
						Args      []string `json:"args"`
						Resources struct {
							Limits map[string]string `json:"limits"`
						} `json:"resources"`
					} `json:"containers"`
				} `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	json.Unmarshal(raw, &s)
	c := s.Spec.Template.Spec.Containers[0]
	nproc := fmt.Sprint(job.Workers.NprocPerNode)
	if gpus := c.Resources.Limits["nvidia.com/gpu"]; gpus != nproc || !slices.Contains(c.Args, "--nproc-per-node="+nproc) {
		t.Errorf("%s: workers ask for %s GPUs with args %v; the job runs %s ranks per node", overlay, gpus, c.Args, nproc)
	}
	if s.Spec.Replicas < job.Workers.Min || s.Spec.Replicas > job.Workers.Max {
		t.Errorf("%s: %d worker pods, the job's workers.min..max is %d..%d", overlay, s.Spec.Replicas, job.Workers.Min, job.Workers.Max)
	}
}

// strictSchemas writes, for every kind of the Kubernetes schema in kubeconform's module (its
// fixtures hold the whole of Kubernetes' definitions, already in JSON schema form), a schema
// file named as kubeconform looks for it (statefulset-apps-v1.json), made strict as
// kubeconform's own strict schemas are: every object with properties allows no others.
func strictSchemas(t *testing.T) string {
	t.Helper()
	defs := findDefinitions(t)
	var all struct {
		Definitions map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(defs, &all); err != nil {
		t.Fatal(err)
	}
	for _, d := range all.Definitions {
		strict(d)
	}
	dir := t.TempDir()
	for name, d := range all.Definitions {
		m, _ := d.(map[string]any)
		gvks, _ := m["x-kubernetes-group-version-kind"].([]any)
		for _, g := range gvks {
			gvk, _ := g.(map[string]any)
			group, _ := gvk["group"].(string)
			version, _ := gvk["version"].(string)
			kind, _ := gvk["kind"].(string)
			suffix := "-" + version
			if group != "" {
				suffix = "-" + strings.Split(group, ".")[0] + suffix
			}
			schema := map[string]any{"$ref": "#/definitions/" + name, "definitions": all.Definitions}
			raw, _ := json.Marshal(schema)
			if err := os.WriteFile(filepath.Join(dir, strings.ToLower(kind)+suffix+".json"), raw, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

// strict forbids properties a schema does not list, everywhere below s.
func strict(s any) {
	switch v := s.(type) {
	case map[string]any:
		if _, ok := v["properties"]; ok {
			if _, set := v["additionalProperties"]; !set {
				v["additionalProperties"] = false
			}
		}
		for _, c := range v {
			strict(c)
		}
	case []any:
		for _, c := range v {
			strict(c)
		}
	}
}

// findDefinitions returns Kubernetes' definitions from kubeconform's module in the module
// cache (HERD_K8S_SCHEMA names the file instead).
func findDefinitions(t *testing.T) []byte {
	t.Helper()
	if p := os.Getenv("HERD_K8S_SCHEMA"); p != "" {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	gomodcache, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(strings.TrimSpace(string(gomodcache)), "github.com", "yannh", "kubeconform@*", "fixtures", "cache", "*"))
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err == nil && bytes.Contains(raw[:min(len(raw), 64)], []byte(`"definitions"`)) && bytes.Contains(raw, []byte(`"io.k8s.api.apps.v1.StatefulSet"`)) {
			return raw
		}
	}
	if os.Getenv("HERD_REQUIRE_MANIFEST_TOOLS") == "1" {
		t.Fatal("no Kubernetes schema in kubeconform's module (go install github.com/yannh/kubeconform/cmd/kubeconform puts it in the module cache)")
	}
	t.Skip("no Kubernetes schema in kubeconform's module in the module cache")
	return nil
}

// The alerting rules pass promtool check rules and their unit tests (promtool test rules), and
// the PrometheusRule of monitoring.yaml carries the same groups.
func TestAlertRules(t *testing.T) {
	promtool := tool(t, "HERD_PROMTOOL", "promtool")
	rules := "kubernetes/base/herd-alerts.rules.yaml"
	if out, err := run(t, nil, promtool, "check", "rules", rules); err != nil {
		t.Errorf("promtool check rules: %v\n%s", err, out)
	}
	cmd := exec.Command(promtool, "test", "rules", "herd-alerts.test.yaml")
	cmd.Dir = "kubernetes/base"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool test rules: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(rules)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups any `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(raw, &file); err != nil {
		t.Fatal(err)
	}
	mon, err := os.ReadFile("kubernetes/base/monitoring.yaml")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, o := range objects(t, mon) {
		if kindOf(o) == "PrometheusRule" {
			found = true
			spec, _ := o["spec"].(map[string]any)
			if !reflect.DeepEqual(spec["groups"], file.Groups) {
				t.Errorf("the PrometheusRule's groups differ from %s", rules)
			}
		}
	}
	if !found {
		t.Error("monitoring.yaml has no PrometheusRule")
	}
}

// The Grafana dashboard is JSON with a query in every panel, and the panels the operations
// guide names are there.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile("kubernetes/base/herd-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&d); err != nil || d.UID == "" {
		t.Fatalf("dashboard: %v (uid %q)", err, d.UID)
	}
	var titles []string
	for _, p := range d.Panels {
		titles = append(titles, p.Title)
		if len(p.Targets) == 0 || slices.ContainsFunc(p.Targets, func(q struct {
			Expr string `json:"expr"`
		}) bool {
			return q.Expr == ""
		}) {
			t.Errorf("panel %q has a target without a query", p.Title)
		}
	}
	for _, want := range []string{"Tokens/s per GPU", "MFU", "Loss", "Step time", "All-reduce wait per step", "Checkpoint write time", "GPU utilization"} {
		if !slices.Contains(titles, want) {
			t.Errorf("no panel %q (panels: %v)", want, titles)
		}
	}
}

// The Slurm script is valid bash.
func TestSlurmScript(t *testing.T) {
	if out, err := exec.Command("bash", "-n", "slurm/herd.sbatch").CombinedOutput(); err != nil {
		t.Errorf("bash -n: %v\n%s", err, out)
	}
}

// The Dockerfile's stages use only files that exist: every COPY from the build context names a
// path of the repository (and the .dockerignore keeps none of them out), every COPY --from and
// FROM names an earlier stage or an image, the build compiles a package that exists, and the
// Go image's version is the one go.mod asks for.
func TestDockerfile(t *testing.T) {
	raw, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	ignored := dockerignore(t)
	args := map[string]string{}
	stages := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(bytes.ReplaceAll(raw, []byte("\\\n"), nil)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "ARG":
			if k, v, ok := strings.Cut(f[1], "="); ok {
				args[k] = v
			}
		case "FROM":
			image := os.Expand(f[1], func(k string) string { return args[k] })
			if strings.HasPrefix(image, "golang:") {
				if v := strings.TrimPrefix(strings.Split(image, "-")[0], "golang:"); !goModAllows(t, v) {
					t.Errorf("FROM %s: go.mod asks for another Go", image)
				}
			}
			if len(f) == 4 && strings.EqualFold(f[2], "AS") {
				stages[f[3]] = true
			}
		case "COPY":
			srcs := f[1 : len(f)-1]
			if len(srcs) > 0 && strings.HasPrefix(srcs[0], "--from=") {
				if from := strings.TrimPrefix(srcs[0], "--from="); !stages[from] {
					t.Errorf("COPY --from=%s: no such earlier stage", from)
				}
				continue
			}
			for _, s := range srcs {
				if s == "." {
					continue
				}
				if _, err := os.Stat(filepath.Join("..", s)); err != nil {
					t.Errorf("COPY %s: %v", s, err)
				}
				if slices.Contains(ignored, s) {
					t.Errorf("COPY %s: .dockerignore leaves it out of the context", s)
				}
			}
		case "RUN":
			for _, w := range f {
				if strings.HasPrefix(w, "./cmd/") {
					if _, err := os.Stat(filepath.Join("..", w)); err != nil {
						t.Errorf("RUN builds %s: %v", w, err)
					}
				}
			}
		}
	}
	if !stages["build"] || !stages["go"] {
		t.Errorf("stages %v: want go and build", stages)
	}
}

func dockerignore(t *testing.T) []string {
	raw, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(raw))
}

// goModAllows reports whether go.mod's go line names version v's release (1.26.8 -> 1.26).
func goModAllows(t *testing.T, v string) bool {
	raw, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(raw)
	return m != nil && strings.HasPrefix(v, string(m[1]))
}
