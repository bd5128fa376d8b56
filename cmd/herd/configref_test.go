package main

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/herd-llm/herd/cluster"
)

// configRefPath is the configuration reference, generated from the code by
// TestConfigReference.
const configRefPath = "../../docs/configuration.md"

// The configuration reference (docs/configuration.md) is what the code says: every command's
// --help, and every key of the job file with its documentation comment from cluster/jobspec.go.
// It cannot drift: this test regenerates it and compares; HERD_UPDATE_DOCS=1 rewrites it.
func TestConfigReference(t *testing.T) {
	got := configReference(t)
	if os.Getenv("HERD_UPDATE_DOCS") == "1" {
		if err := os.WriteFile(configRefPath, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(configRefPath)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s is not what the code says (%v); regenerate it with HERD_UPDATE_DOCS=1 go test ./cmd/herd -run TestConfigReference", configRefPath, err)
	}
}

func configReference(t *testing.T) []byte {
	var b bytes.Buffer
	b.WriteString("# Configuration reference\n\n")
	b.WriteString("Generated from the code by `HERD_UPDATE_DOCS=1 go test ./cmd/herd -run TestConfigReference`;\n")
	b.WriteString("the test suite fails when it differs from what the code says. Do not edit by hand.\n\n")
	b.WriteString("## The job file (herd coordinator --job JOB.yaml)\n\n")
	b.WriteString("Keys are read strictly: an unknown key, a wrong type or an inconsistent value is refused\n")
	b.WriteString("with its line. docs/operations.md has an example.\n\n")
	b.WriteString("| key | type | meaning |\n| --- | --- | --- |\n")
	for _, f := range jobFields(t) {
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", f[0], f[1], f[2])
	}
	b.WriteString("\n## Commands\n")
	cmds := commands()
	var names []string
	for name, c := range cmds {
		if !c.hidden {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		var out bytes.Buffer
		cmds[name].run([]string{"--help"}, io.Discard, &out)
		fmt.Fprintf(&b, "\n### herd %s\n\n%s.\n\n```\n%s```\n", name, cmds[name].summary, strings.TrimLeft(out.String(), "\n"))
	}
	return b.Bytes()
}

// jobFields lists the job file's keys (dotted for nested ones), their YAML types and their
// documentation, read from cluster/jobspec.go; every key that cluster.JobSpec decodes is in it.
func jobFields(t *testing.T) [][3]string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, filepath.Join("..", "..", "cluster", "jobspec.go"), nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	structs := map[string]*ast.StructType{}
	ast.Inspect(f, func(n ast.Node) bool {
		if ts, ok := n.(*ast.TypeSpec); ok {
			if st, ok := ts.Type.(*ast.StructType); ok {
				structs[ts.Name.Name] = st
			}
		}
		return true
	})
	var out [][3]string
	var walk func(prefix, typ string)
	walk = func(prefix, typ string) {
		for _, fld := range structs[typ].Fields.List {
			tag := reflect.StructTag(strings.Trim(fld.Tag.Value, "`")).Get("yaml")
			key := prefix + strings.Split(tag, ",")[0]
			doc := strings.TrimSpace(fld.Doc.Text() + " " + fld.Comment.Text())
			doc = strings.Join(strings.Fields(doc), " ")
			typeName := exprString(fld.Type)
			if _, nested := structs[typeName]; nested && typeName != "Duration" {
				out = append(out, [3]string{key, "map", doc})
				walk(key+".", typeName)
				continue
			}
			yamlType := map[string]string{"string": "string", "int": "integer", "*int": "integer", "uint64": "integer",
				"float64": "number", "*float64": "number", "*bool": "boolean", "bool": "boolean", "Duration": "duration (2s, 500ms, 5m)"}[typeName]
			if yamlType == "" {
				t.Fatalf("job file key %s: no YAML type for Go type %s", key, typeName)
			}
			out = append(out, [3]string{key, yamlType, doc})
		}
	}
	walk("", "JobSpec")
	// Every key the decoder knows is documented: compare with cluster.JobSpec by reflection.
	var keys func(prefix string, rt reflect.Type) []string
	keys = func(prefix string, rt reflect.Type) []string {
		var ks []string
		for i := range rt.NumField() {
			sf := rt.Field(i)
			k := prefix + strings.Split(sf.Tag.Get("yaml"), ",")[0]
			ks = append(ks, k)
			if sf.Type.Kind() == reflect.Struct {
				ks = append(ks, keys(k+".", sf.Type)...)
			}
		}
		return ks
	}
	for _, k := range keys("", reflect.TypeFor[cluster.JobSpec]()) {
		if !slices.ContainsFunc(out, func(f [3]string) bool { return f[0] == k }) {
			t.Errorf("job file key %s is not in the reference", k)
		}
	}
	for _, f := range out {
		if f[2] == "" {
			t.Errorf("job file key %s has no documentation comment in cluster/jobspec.go", f[0])
		}
	}
	return out
}

func exprString(e ast.Expr) string {
	switch v := e.(type) {
	case *ast.Ident:
		return v.Name
	case *ast.StarExpr:
		return "*" + exprString(v.X)
	case *ast.SelectorExpr:
		return exprString(v.X) + "." + v.Sel.Name
	}
	return fmt.Sprintf("%T", e)
}
