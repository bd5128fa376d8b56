// Package yamlpos finds where a value sits in a YAML document, so that an error about a
// field of a file can name its line.
package yamlpos

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ErrEmpty is DecodeStrict's error for a document with nothing in it.
var ErrEmpty = errors.New("the file is empty")

// DecodeStrict decodes raw into v strictly (unknown keys, wrong types and repeated keys are
// refused with their line; the error drops the library's "yaml: " prefix) and returns the
// document's node tree, for Line. An empty document returns ErrEmpty.
func DecodeStrict(raw []byte, v any) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return &yaml.Node{}, ErrEmpty
		}
		return nil, errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var root yaml.Node
	yaml.Unmarshal(raw, &root) // decoded once already: cannot fail
	return &root, nil
}

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
