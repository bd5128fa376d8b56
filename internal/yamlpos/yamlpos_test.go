package yamlpos

import (
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestLine(t *testing.T) {
	src := `name: x
workers:
  min: 1
  max: 2
sources:
  - name: a
    path: /a
  - name: b
    weight: 3
`
	var root yaml.Node
	if err := yaml.Unmarshal([]byte(src), &root); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path []string
		want int
	}{
		{nil, 1},
		{[]string{"name"}, 1},
		{[]string{"workers", "max"}, 4},
		{[]string{"workers", "gpus"}, 2},
		{[]string{"sources", "1", "weight"}, 9},
		{[]string{"sources", "1", "path"}, 8},
		{[]string{"sources", "7", "path"}, 5},
		{[]string{"name", "deeper"}, 1},
	} {
		if got := Line(&root, c.path...); got != c.want {
			t.Errorf("Line(%q) = %d, want %d", c.path, got, c.want)
		}
	}
}
