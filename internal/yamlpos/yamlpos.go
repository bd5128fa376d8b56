// Package yamlpos finds where a value sits in a YAML document, so that an error about a
// field of a file can name its line.
package yamlpos

import (
	"strconv"

	"go.yaml.in/yaml/v3"
)

// Line returns the line of the value at path in the document root: each element of path is a
// mapping key, or the index of an item in a sequence. It is the line of the last key (or
// item) found, or of the nearest parent present when the path goes further than the file.
func Line(root *yaml.Node, path ...string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, p := range path {
		switch n.Kind {
		case yaml.MappingNode:
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == p {
					line, n, found = n.Content[i].Line, n.Content[i+1], true
					break
				}
			}
			if !found {
				return line
			}
		case yaml.SequenceNode:
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i >= len(n.Content) {
				return line
			}
			n = n.Content[i]
			line = n.Line
		default:
			return line
		}
	}
	return line
}
