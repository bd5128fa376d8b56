package model

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/herd-llm/herd/kernels"
	"github.com/herd-llm/herd/kernels/cpu"
)

// wholeResidency lends views of whole buffers and records the calls.
type wholeResidency struct {
	be            kernels.Backend
	units         []Unit
	params, grads kernels.Buffer
	calls         []string
	held          map[int]bool
}

func (r *wholeResidency) Params(u, next int) (kernels.Buffer, kernels.Buffer) {
	r.calls = append(r.calls, fmt.Sprintf("p%d>%d", u, next))
	r.held[u] = true
	b := r.be.Slice(r.params, r.units[u].Offset, r.units[u].Size)
	return b, b
}
func (r *wholeResidency) ReleaseParams(u int) { delete(r.held, u) }
func (r *wholeResidency) Grads(u int) kernels.Buffer {
	r.calls = append(r.calls, fmt.Sprintf("g%d", u))
	return r.be.Slice(r.grads, r.units[u].Offset, r.units[u].Size)
}
func (r *wholeResidency) ReleaseGrads(u int) { r.calls = append(r.calls, fmt.Sprintf("G%d", u)) }

// A model whose storage a Residency lends computes exactly what one with whole buffers does,
// and asks for the units in the documented order, holding at most one unit's parameters
// at a time, with the right hint of what comes next.
func TestResidentModelMatches(t *testing.T) {
	be := cpu.New[float32](cpu.Options{})
	c := Default()
	ref, err := New(c, be)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	ref.Init(3)
	res := &wholeResidency{be: be, units: ref.Layout.Units(), params: be.Alloc(ref.Layout.Size), grads: be.Alloc(ref.Layout.Size), held: map[int]bool{}}
	be.Copy(res.params, ref.Params())
	m, err := NewResident(c, be, res)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if len(res.units) != c.Layers+2 {
		t.Fatalf("%d units for %d layers", len(res.units), c.Layers)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const b, seq = 2, 9
	tok, tgt := make([]int32, b*seq), make([]int32, b*seq)
	for i := range tok {
		tok[i], tgt[i] = int32(rng.IntN(c.Vocab)), int32(rng.IntN(c.Vocab))
	}
	ref.ZeroGrad()
	lr, _ := ref.Forward(tok, tgt, b, seq)
	ref.Backward()
	lm, _ := m.Forward(tok, tgt, b, seq)
	if len(res.held) != 0 {
		t.Errorf("units still held after Forward: %v", res.held)
	}
	m.Backward()
	if lr != lm {
		t.Fatalf("loss %v, whole buffers %v", lm, lr)
	}
	want, got := make([]float32, ref.Layout.Size), make([]float32, ref.Layout.Size)
	be.Read32(want, ref.Grads())
	be.Read32(got, res.grads)
	for i := range want {
		if want[i] != got[i] {
			t.Fatalf("gradient %d: %v, whole buffers %v", i, got[i], want[i])
		}
	}
	L := c.Layers
	var order []string
	for i := 0; i <= L; i++ {
		next := i + 1
		order = append(order, fmt.Sprintf("p%d>%d", i, next))
	}
	order = append(order, fmt.Sprintf("p%d>-1", L+1))
	order = append(order, fmt.Sprintf("p%d>%d", L+1, L), fmt.Sprintf("g%d", L+1), fmt.Sprintf("G%d", L+1))
	for i := L - 1; i >= 0; i-- {
		next := i
		if i == 0 {
			next = -1
		}
		order = append(order, fmt.Sprintf("p%d>%d", i+1, next), fmt.Sprintf("g%d", i+1), fmt.Sprintf("G%d", i+1))
	}
	order = append(order, "g0", "G0")
	if strings.Join(res.calls, " ") != strings.Join(order, " ") {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(res.calls, " "), strings.Join(order, " "))
	}
}
