package shard

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// SourceSpec names one input of a dataset: documents under Path, sampled
// with the given Weight relative to the other sources. It is written on the
// command line as "name=PATH:weight", for example "web=/data/cc:0.67".
type SourceSpec struct {
	Name   string
	Path   string
	Weight float64
	// Quality holds the filters of LLaMA's pipeline this source asks for (none by default).
	Quality Quality
}

// maxNameLen bounds source names, which become directory names.
const maxNameLen = 64

// ParseSourceSpec parses "name=PATH:weight". The path may itself contain
// '=' or ':'; the name ends at the first '=' and the weight starts after the
// last ':'.
func ParseSourceSpec(value string) (SourceSpec, error) {
	bad := func(format string, args ...any) (SourceSpec, error) {
		return SourceSpec{}, fmt.Errorf("%w %q: %s (want name=PATH:weight)", ErrSourceSpec, value, fmt.Sprintf(format, args...))
	}
	name, rest, ok := strings.Cut(value, "=")
	if !ok {
		return bad("no '=' after the source name")
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return bad("no ':' before the weight")
	}
	path, ws := rest[:i], rest[i+1:]
	if err := checkName(name); err != nil {
		return bad("%v", err)
	}
	if path == "" {
		return bad("empty path")
	}
	w, err := strconv.ParseFloat(ws, 64)
	if err != nil {
		return bad("weight %q is not a number", ws)
	}
	if err := checkWeight(w); err != nil {
		return bad("%v", err)
	}
	return SourceSpec{Name: name, Path: path, Weight: w}, nil
}

// ParseSourceSpecs parses several flag values and checks that the names are unique.
func ParseSourceSpecs(values []string) ([]SourceSpec, error) {
	specs := make([]SourceSpec, 0, len(values))
	first := map[string]string{}
	for _, v := range values {
		s, err := ParseSourceSpec(v)
		if err != nil {
			return nil, err
		}
		if prev, dup := first[s.Name]; dup {
			return nil, fmt.Errorf("%w %q: name %q already used by %q", ErrSourceSpec, v, s.Name, prev)
		}
		first[s.Name] = v
		specs = append(specs, s)
	}
	return specs, nil
}

// String formats s as "name=PATH:weight"; ParseSourceSpec reads it back.
func (s SourceSpec) String() string {
	return s.Name + "=" + s.Path + ":" + strconv.FormatFloat(s.Weight, 'g', -1, 64)
}

// checkName accepts names usable as a directory: 1..64 characters of
// letters, digits, '_', '-', '.', starting with a letter or digit.
func checkName(name string) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("name %q must have 1..%d characters", name, maxNameLen)
	}
	for i, c := range []byte(name) {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '-' && c != '.') {
			return fmt.Errorf("name %q may hold only letters, digits, '_', '-', '.', and must start with a letter or digit", name)
		}
	}
	return nil
}

// checkWeight accepts finite weights above zero.
func checkWeight(w float64) error {
	if !(w > 0) || math.IsInf(w, 0) {
		return fmt.Errorf("weight %v must be a finite number > 0", w)
	}
	return nil
}
