package model

import (
	"errors"

	"github.com/herd-llm/herd/kernels"
)

// A Model normally holds its parameters and gradients in two flat buffers. A driver that
// shards the training state across data-parallel ranks (ZeRO-2, ZeRO-3) lends the model
// their storage instead, one unit at a time, through a Residency: the model asks for a
// unit's parameters just before it reads them and for its gradient just before backward adds
// into it, and gives each back right after. The model does not know where the storage comes
// from (a gathered copy, a view of a resident buffer) or where the gradients go.
//
// Units are contiguous ranges of the layout, in layout order: the token embedding (unit 0),
// each block (units 1 to L), the final norm with the output head (unit L+1). Forward uses
// them in that order; Backward in reverse, the embedding last.

// Unit is a contiguous range of the flat layout.
type Unit struct {
	Offset, Size int
}

// Units returns the units of the layout: the embedding, each block, the head.
func (l Layout) Units() []Unit {
	var out []Unit
	for i, u := range l.specUnits() {
		s := l.Specs[i]
		if u < len(out) {
			out[u].Size += s.Size
			continue
		}
		out = append(out, Unit{Offset: s.Offset, Size: s.Size})
	}
	return out
}

// specUnits returns the unit of every spec: a new unit starts with each block and with the
// first spec after the blocks.
func (l Layout) specUnits() []int {
	out := make([]int, len(l.Specs))
	u := 0
	for i := 1; i < len(l.Specs); i++ {
		if l.Specs[i].Layer != l.Specs[i-1].Layer {
			u++
		}
		out[i] = u
	}
	return out
}

// Residency lends a model the storage of its parameters and gradients unit by unit.
type Residency interface {
	// Params returns unit u's parameters, valid until ReleaseParams(u): master holds them in
	// float32 (the masters on a mixed-precision backend), work as the matrix multiplications
	// read them (the working copy in the activation type; master itself otherwise). next is
	// the unit the model will ask for after this one (-1: none), so that it can be fetched
	// meanwhile.
	Params(u, next int) (master, work kernels.Buffer)
	// ReleaseParams says that the model is done with unit u's parameters for now.
	ReleaseParams(u int)
	// Grads returns a buffer of unit u's size into which Backward accumulates the unit's
	// gradient until ReleaseGrads(u) (a driver that reduces each pass's gradients lends
	// zeros).
	Grads(u int) kernels.Buffer
	// ReleaseGrads says that unit u's gradient of this backward pass is complete.
	ReleaseGrads(u int)
}

// ErrResident is returned by the methods that need whole flat buffers on a model whose
// storage a Residency lends.
var ErrResident = errors.New("model: the parameters are lent by a Residency, not held whole")

// NewResident returns a model of c in be whose parameters and gradients res lends unit by
// unit (see Residency): it allocates neither. Params, Grads and Init are unavailable: the
// driver owns the state.
func NewResident(c Config, be kernels.Backend, res Residency) (*Model, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	m := &Model{Cfg: c, Layout: NewLayout(c), be: be, res: res, shp: wholeShape(c)}
	m.mixed, _ = be.(kernels.Mixed)
	m.units, m.specUnit = m.Layout.Units(), m.Layout.specUnits()
	m.lent = make([]lentUnit, len(m.units))
	return m, nil
}

// Resident reports whether a Residency lends the model its storage.
func (m *Model) Resident() bool { return m.res != nil }

// lentUnit is the storage of one unit while the model holds it.
type lentUnit struct {
	master, work, grad kernels.Buffer
}

// spec returns the views of spec j's weight (what the passes read) and gradient.
func (m *Model) spec(j int) (w, dw kernels.Buffer) {
	if m.res == nil {
		return m.p[j], m.g[j]
	}
	s := m.Layout.Specs[j]
	u := m.specUnit[j]
	l := m.lent[u]
	rel := s.Offset - m.units[u].Offset
	src := l.master
	if s.gemmOperand() {
		src = l.work
	}
	if src == nil && l.grad == nil {
		panic("model: unit not acquired: " + s.Name)
	}
	if src != nil {
		w = m.be.Slice(src, rel, s.Size)
	}
	if l.grad != nil {
		dw = m.be.Slice(l.grad, rel, s.Size)
	}
	return w, dw
}

// Unit indices for the passes.
func (m *Model) embUnit() int        { return 0 }
func (m *Model) blockUnit(i int) int { return 1 + i }
func (m *Model) headUnit() int       { return m.Cfg.Layers + 1 }

// useParams acquires unit u's parameters (next: the unit that follows).
func (m *Model) useParams(u, next int) {
	if m.res != nil {
		m.lent[u].master, m.lent[u].work = m.res.Params(u, next)
	}
}

func (m *Model) doneParams(u int) {
	if m.res != nil {
		m.res.ReleaseParams(u)
		m.lent[u].master, m.lent[u].work = nil, nil
	}
}

func (m *Model) useGrads(u int) {
	if m.res != nil {
		m.lent[u].grad = m.res.Grads(u)
	}
}

// doneGrads hands unit u's gradient back, or with whole buffers reports the range finished
// to the OnGradReady hook.
func (m *Model) doneGrads(u int) {
	if m.res != nil {
		m.res.ReleaseGrads(u)
		m.lent[u].grad = nil
		return
	}
	if m.gradReady != nil {
		m.gradReady(m.units[u].Offset, m.units[u].Size)
	}
}
