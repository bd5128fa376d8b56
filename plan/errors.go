package plan

import "fmt"

// FieldError is a validation error about one field: a command-line flag ("--zero") or a key
// of a hardware entry ("peak_tflops" of "gpu a100-80g").
type FieldError struct {
	Where string // "" for a flag, else the entry: "gpu a100-80g", "fabric ib-8x200"
	Field string // the flag or key
	Msg   string // what is wrong, starting with the value: "= 4, allowed: 0, 1, 2, 3"
}

func (e *FieldError) Error() string {
	if e.Where == "" {
		return fmt.Sprintf("%v: %s %s", ErrPlan, e.Field, e.Msg)
	}
	return fmt.Sprintf("%v: %s: %s %s", ErrPlan, e.Where, e.Field, e.Msg)
}

// Unwrap makes every FieldError match ErrPlan.
func (e *FieldError) Unwrap() error { return ErrPlan }

func fieldErr(where, field, format string, a ...any) error {
	return &FieldError{Where: where, Field: field, Msg: fmt.Sprintf(format, a...)}
}

// flagErr is a FieldError about a command-line flag.
func flagErr(flag, format string, a ...any) error { return fieldErr("", flag, format, a...) }
