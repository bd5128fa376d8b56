package model

import (
	"errors"
	"fmt"
	"math"

	"github.com/herd-llm/herd/kernels"
)

// Tensor parallelism (Megatron-LM's layout, with Korthikanti et al.'s sequence parallelism)
// splits every block across the tp ranks of a group, from outside the model's own code: the
// spec table is computed for a (tp rank, tp size) pair, and the passes call the group's
// collectives between the matrix multiplications.
//
//   - wq, wk, wv, w1 and w3 are column-parallel: rank r holds rows [r*out/tp, (r+1)*out/tp)
//     of each, so it computes heads [r*H/tp, (r+1)*H/tp) of attention and its slice of the
//     feed-forward hidden units, with no communication inside attention or SwiGLU.
//   - wo and w2 are row-parallel: rank r holds the matching columns, and its product is a
//     partial sum of the block's output that the group reduces.
//   - The embedding table and the output head are split over the vocabulary (rows
//     Partition(V, tp, r)); the embedding's partial rows are reduced like a row-parallel
//     output, and the cross-entropy is vocabulary-parallel: each rank sends only the
//     logsumexp of its columns and its target logit per row, never the logits.
//   - Norm gains are whole on every rank.
//
// Without sequence parallelism every rank holds the residual stream whole, and the reduction
// after wo and w2 (and the column-parallel inputs' gradients) is an all-reduce. With it, the
// stream, its norms and their statistics hold only the rank's 1/tp slice of the rows: an
// all-gather before each column-parallel multiplication and a reduce-scatter after each
// row-parallel one replace each all-reduce, moving the same bytes, and the activations kept
// between forward and backward shrink by tp. Backward gathers the norm outputs again for the
// weight gradients (Megatron's choice: keeping the gathered copies would undo the saving);
// those gathers start before the multiplications that do not need them, so they overlap.

// TensorGroup is how a tensor-parallel rank reaches the other ranks of its group. Every rank
// issues the same calls in the same order. A failed call fails the pass that made it.
type TensorGroup interface {
	Rank() int
	Size() int
	// AllReduce sums x across the group; every rank ends with the same values, bit for bit.
	AllReduce(x kernels.Buffer) error
	// AllGather fills x, whose length is a multiple of Size(), with every rank's part: part r
	// is the r-th of Size() equal parts, and this rank's part is its input.
	AllGather(x kernels.Buffer) error
	// ReduceScatter sums x across the group and leaves this rank's part of the sum (as
	// AllGather numbers them) in place; the rest of x is scratch afterwards.
	ReduceScatter(x kernels.Buffer) error
	// AllGatherAsync starts AllGather and returns the function that waits for it.
	AllGatherAsync(x kernels.Buffer) (wait func() error)
	// AllReduceAsync starts AllReduce and returns the function that waits for it.
	AllReduceAsync(x kernels.Buffer) (wait func() error)
}

// ErrTensorParallel is returned by what a tensor-parallel model cannot do on one rank alone
// (sampling, reading the whole logits).
var ErrTensorParallel = errors.New("model: not available on a tensor-parallel model (each rank holds a share of the weights)")

// Part says which part of a tensor of the whole network a rank's spec holds.
type Part struct {
	Axis   int // -1: the whole tensor; 0: rows [Lo, Hi); 1: columns [Lo, Hi)
	Lo, Hi int
}

// CheckTensorParallel returns an error naming the field when the network cannot be split
// over tp ranks: tp must divide the heads and the feed-forward size, and the vocabulary must
// have at least tp entries.
func CheckTensorParallel(c Config, tp int) error {
	switch {
	case tp < 1:
		return fmt.Errorf("%w: tensor-parallel size %d, must be >= 1", ErrConfig, tp)
	case c.Heads%tp != 0:
		return fmt.Errorf("%w: tensor-parallel size %d does not divide heads = %d (each rank computes whole heads)", ErrConfig, tp, c.Heads)
	case c.FFNHidden%tp != 0:
		return fmt.Errorf("%w: tensor-parallel size %d does not divide ffn_hidden = %d", ErrConfig, tp, c.FFNHidden)
	case c.Vocab < tp:
		return fmt.Errorf("%w: tensor-parallel size %d exceeds the vocabulary (%d)", ErrConfig, tp, c.Vocab)
	}
	return nil
}

// vocabShard returns the rows [lo, hi) of the vocabulary that rank holds among tp ranks.
func vocabShard(v, tp, rank int) (lo, hi int) {
	q, r := v/tp, v%tp
	lo = rank*q + min(rank, r)
	hi = lo + q
	if rank < r {
		hi++
	}
	return lo, hi
}

// shardShape is the shape rank computes among tp ranks.
func shardShape(c Config, rank, tp int, seq bool) shape {
	lo, hi := vocabShard(c.Vocab, tp, rank)
	sh := shape{dim: c.Dim, attn: c.Dim / tp, ffn: c.FFNHidden / tp, heads: c.Heads / tp, vocab: hi - lo, seqDiv: 1}
	if seq {
		sh.seqDiv = tp
	}
	return sh
}

// NewShardLayout returns the spec table of rank's share of the network among tp ranks: the
// same tensors in the same order as NewLayout(c), each with the shape of the part the rank
// holds, and Parts saying which part. Checkpoints keep the whole network's layout (Whole),
// so any tensor-parallel size resumes any other.
func NewShardLayout(c Config, rank, tp int) (Layout, error) {
	if err := CheckTensorParallel(c, tp); err != nil {
		return Layout{}, err
	}
	if rank < 0 || rank >= tp {
		return Layout{}, fmt.Errorf("%w: tensor-parallel rank %d out of range [0, %d)", ErrConfig, rank, tp)
	}
	whole := NewLayout(c)
	l := Layout{index: whole.index, whole: &whole}
	for i, s := range whole.Specs {
		p := Part{Axis: -1}
		shp := s.Shape
		name := s.Name
		switch {
		case name == "tok_embeddings.weight" || name == "output.weight":
			p.Axis = 0
			p.Lo, p.Hi = vocabShard(c.Vocab, tp, rank)
		case s.Layer >= 0 && len(s.Shape) == 2:
			k := (i - 1) % perLayer
			ax := 0 // column-parallel: a block of the output rows
			if k == pWo || k == pW2 {
				ax = 1 // row-parallel: a block of the input columns
			}
			each := s.Shape[ax] / tp
			p = Part{Axis: ax, Lo: rank * each, Hi: (rank + 1) * each}
		}
		if p.Axis >= 0 {
			shp = append([]int(nil), s.Shape...)
			shp[p.Axis] = p.Hi - p.Lo
		}
		n := 1
		for _, d := range shp {
			n *= d
		}
		l.Specs = append(l.Specs, ParamSpec{Name: name, Shape: shp, Offset: l.Size, Size: n, Layer: s.Layer, Decay: s.Decay})
		l.Parts = append(l.Parts, p)
		l.Size += n
	}
	return l, nil
}

// Whole returns the layout of the whole network: l itself unless l is a rank's share.
func (l Layout) Whole() Layout {
	if l.whole == nil {
		return l
	}
	return *l.whole
}

// Sharded reports whether l is a tensor-parallel rank's share of the network.
func (l Layout) Sharded() bool { return l.whole != nil }

// Take copies this layout's parts of every tensor from whole, laid out by Whole(), into local.
func (l Layout) Take(local, whole []float32) {
	l.each(func(loc, wh []float32) { copy(loc, wh) }, local, whole, 0, len(l.Specs), 0, 0)
}

// Put copies local into this layout's parts of whole, laid out by Whole().
func (l Layout) Put(whole, local []float32) {
	l.each(func(loc, wh []float32) { copy(wh, loc) }, local, whole, 0, len(l.Specs), 0, 0)
}

// PutUnit copies unit u of local (its values alone, from the unit's first element) into this
// layout's parts of the same unit of the whole network (wholeUnit, the whole unit alone).
func (l Layout) PutUnit(u int, wholeUnit, localUnit []float32) {
	from, to := -1, 0
	for i, su := range l.specUnits() {
		if su == u {
			if from < 0 {
				from = i
			}
			to = i + 1
		}
	}
	if from < 0 {
		return
	}
	w := l.Whole()
	l.each(func(loc, wh []float32) { copy(wh, loc) }, localUnit, wholeUnit, from, to, l.Specs[from].Offset, w.Specs[from].Offset)
}

// each calls f on every contiguous run that local specs [from, to) share with the whole
// layout; local and whole start at elements localBase and wholeBase of their layouts.
func (l Layout) each(f func(loc, wh []float32), local, whole []float32, from, to, localBase, wholeBase int) {
	w := l.Whole()
	for i := from; i < to; i++ {
		s, ws := l.Specs[i], w.Specs[i]
		loc := local[s.Offset-localBase : s.Offset-localBase+s.Size]
		wh := whole[ws.Offset-wholeBase : ws.Offset-wholeBase+ws.Size]
		p := Part{Axis: -1}
		if l.Sharded() {
			p = l.Parts[i]
		}
		switch p.Axis {
		case -1:
			f(loc, wh)
		case 0:
			cols := ws.Size / ws.Shape[0]
			f(loc, wh[p.Lo*cols:p.Hi*cols])
		case 1:
			cols, width := ws.Shape[1], p.Hi-p.Lo
			for r := 0; r < ws.Shape[0]; r++ {
				f(loc[r*width:(r+1)*width], wh[r*cols+p.Lo:r*cols+p.Hi])
			}
		}
	}
}

// tensorPar is a model's tensor-parallel group and its place in it.
type tensorPar struct {
	g          TensorGroup
	rank, size int
	seq        bool
	v0         int // the first vocabulary row this rank holds
	vp         kernels.VocabParallel
	sync       bool // every gather waits at once (SetTensorOverlap(false))
}

// tensorFailure carries a collective's error out of the passes, which have no error results
// inside; Forward and Backward turn it back into their error.
type tensorFailure struct{ err error }

func (tp *tensorPar) do(err error) {
	if err != nil {
		panic(tensorFailure{err})
	}
}

// NewTensorParallel allocates rank g.Rank()'s share of the network for c among g.Size()
// tensor-parallel ranks, with sequence parallelism when seq is set. The backend must run the
// vocabulary-parallel ops (kernels.VocabParallel) and compute in float32, the element type
// the collectives carry.
func NewTensorParallel(c Config, be kernels.Backend, g TensorGroup, seq bool) (*Model, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	l, err := NewShardLayout(c, g.Rank(), g.Size())
	if err != nil {
		return nil, err
	}
	vp, ok := be.(kernels.VocabParallel)
	if _, mixed := be.(kernels.Mixed); !ok || mixed || be.DType() != kernels.Float32 {
		return nil, fmt.Errorf("%w: the %s backend does not run tensor parallelism yet (it needs float32 and the vocabulary-parallel embedding and cross-entropy)", ErrConfig, be.Name())
	}
	tp := &tensorPar{g: g, rank: g.Rank(), size: g.Size(), seq: seq, vp: vp}
	tp.v0, _ = vocabShard(c.Vocab, tp.size, tp.rank)
	return newModel(c, l, shardShape(c, tp.rank, tp.size, seq), be, tp)
}

// SetTensorOverlap says whether backward's gathers of the norm outputs travel while the rank
// computes (on, the default) or are waited for as soon as they start; benchmarks turn it off
// to measure what the overlap hides. It does nothing without tensor parallelism.
func (m *Model) SetTensorOverlap(on bool) {
	if m.tp != nil {
		m.tp.sync = !on
	}
}

// TensorParallel returns the model's tensor-parallel size (1 without tensor parallelism) and
// whether sequence parallelism is on.
func (m *Model) TensorParallel() (size int, seq bool) {
	if m.tp == nil {
		return 1, false
	}
	return m.tp.size, m.tp.seq
}

// tensorWorkspace holds what tensor parallelism adds to the workspace: the gathered inputs
// of the column-parallel multiplications, the partial outputs of the row-parallel ones, the
// gathered stream gradient, the norm gains' gradient partials (sequence parallelism), and
// the cross-entropy's exchange.
type tensorWorkspace struct {
	g1, g2, gF kernels.Buffer // [N, d] gathered xn1, xn2, xn_final (views of xn* without sequence parallelism)
	part       kernels.Buffer // [N, d] a row-parallel product's partial sum
	dresF      kernels.Buffer // [N, d] the stream's gradient gathered (sequence parallelism)
	gains      kernels.Buffer // [(2L+1), d] the gains' gradients of this pass, reduced unit by unit
	ce         kernels.Buffer // [tp, 2N] every rank's logsumexp and target logit per row
	owned      []kernels.Buffer
	// held says whose norm output g1, g2 and gF hold gathered: the block's index (0 for
	// xn_final), or -1. Backward and a recomputing forward use a gather that is still there
	// (the last block's inputs and the final norm's, from forward; each block's under full
	// remat, from the recomputation just before) instead of gathering again.
	held [3]int
}

func newTensorWorkspace(m *Model, n int) *tensorWorkspace {
	d, tp := m.Cfg.Dim, m.tp
	tw := &tensorWorkspace{held: [3]int{-1, -1, -1}}
	alloc := func(k int) kernels.Buffer {
		b := m.allocMaster(k)
		tw.owned = append(tw.owned, b)
		return b
	}
	tw.part = alloc(n * d)
	tw.ce = alloc(tp.size * 2 * n)
	if tp.seq {
		tw.g1, tw.g2, tw.gF, tw.dresF = alloc(n*d), alloc(n*d), alloc(n*d), alloc(n*d)
		tw.gains = alloc((2*m.Cfg.Layers + 1) * d)
	}
	return tw
}

func (tw *tensorWorkspace) free(be kernels.Backend) {
	for _, b := range tw.owned {
		be.Free(b)
	}
	tw.owned = nil
}

// gatherStart starts gathering a stream activation x [N/tp, d] into g [N, d] and returns g
// with the function that waits for it; without sequence parallelism x is already whole.
func (m *Model) gatherStart(g, x kernels.Buffer) (kernels.Buffer, func()) {
	tp := m.tp
	if !tp.seq {
		return x, func() {}
	}
	g = m.be.Slice(g, 0, tp.size*x.Len()) // the workspace fits the largest pass so far
	m.be.Copy(m.be.Slice(g, tp.rank*x.Len(), x.Len()), x)
	wait := tp.g.AllGatherAsync(g)
	if tp.sync {
		tp.do(wait())
		return g, func() {}
	}
	return g, func() { tp.do(wait()) }
}

// gather gathers x into g (see gatherStart) and waits for it.
func (m *Model) gather(g, x kernels.Buffer) kernels.Buffer {
	g, wait := m.gatherStart(g, x)
	wait()
	return g
}

// Which gathered norm output: slots of tensorWorkspace.held.
const (
	heldXn1 = iota
	heldXn2
	heldXnF
)

// gatherNorm is gatherStart for the norm output x of block i (0 for the final norm) into
// its slot k of the workspace, unless the slot already holds it.
func (m *Model) gatherNorm(k, i int, x kernels.Buffer) (kernels.Buffer, func()) {
	tw := m.ws.tp
	g := [3]kernels.Buffer{tw.g1, tw.g2, tw.gF}[k]
	if m.tp.seq && tw.held[k] == i {
		return m.be.Slice(g, 0, m.tp.size*x.Len()), func() {}
	}
	tw.held[k] = i // a failed gather fails the pass, and the next pass starts afresh
	return m.gatherStart(g, x)
}

// reduceRows sums the ranks' partial products part [N, d] into dst, the rank's rows of the
// stream, adding addend (the rank's rows of the stream before the block, or nil) once:
// a reduce-scatter with sequence parallelism, an all-reduce without.
func (m *Model) reduceRows(dst, part, addend kernels.Buffer) {
	be, tp := m.be, m.tp
	part = be.Slice(part, 0, dst.Len()*m.shp.seqDiv) // the workspace fits the largest pass so far
	if tp.seq {
		mine := be.Slice(part, tp.rank*dst.Len(), dst.Len())
		if addend != nil {
			be.Add(mine, mine, addend)
		}
		tp.do(tp.g.ReduceScatter(part))
		be.Copy(dst, mine)
		return
	}
	if addend != nil && tp.rank == 0 {
		be.Add(part, part, addend)
	}
	tp.do(tp.g.AllReduce(part))
	be.Copy(dst, part)
}

// recoverTensor turns a collective's failure inside the passes into err.
func (m *Model) recoverTensor(err *error) {
	if r := recover(); r != nil {
		f, ok := r.(tensorFailure)
		if !ok {
			panic(r)
		}
		m.dropPass()
		*err = fmt.Errorf("model: tensor-parallel rank %d of %d: %w", m.tp.rank, m.tp.size, f.err)
	}
}

// tensorForward is Forward for a tensor-parallel rank.
func (m *Model) tensorForward(tokens, targets []int32, b, t, valid int) (loss float64, err error) {
	defer m.recoverTensor(&err)
	c, be, tp, tw := m.Cfg, m.be, m.tp, m.ws.tp
	n, d := b*t, c.Dim
	tw.held = [3]int{-1, -1, -1}
	start := be.LiveBytes()
	ps := &pass{b: b, t: t, tokens: tokens, targets: targets, valid: valid, layers: make([][numLayerActs]kernels.Buffer, c.Layers)}
	m.pass = ps
	for k := range ps.head {
		ps.head[k] = m.actBuf(ps, headActs[k], m.ws.head[k], n)
	}
	emb, _ := m.headParam("tok_embeddings.weight")
	tp.vp.EmbeddingShard(tw.part, emb, tokens, tp.v0, d)
	m.reduceRows(ps.head[hX0], tw.part, nil)
	headBytes := be.LiveBytes() - start

	m.kept.PerLayer = make([]int64, c.Layers)
	x := ps.head[hX0]
	for i := 0; i < c.Layers; i++ {
		before := be.LiveBytes()
		a := m.layerBufs(ps, i, n)
		m.tensorLayerForward(i, x, a, b, t, func(act) bool { return true })
		m.kept.PerLayer[i] = be.LiveBytes() - before
		x = a[aOut]
	}

	h := &ps.head
	norm, _ := m.headParam("norm.weight")
	out, _ := m.headParam("output.weight")
	nl := n / m.shp.seqDiv
	be.RMSNorm(h[hXnF], h[hRstdF], x, norm, nl, d, c.NormEps)
	gF, wait := m.gatherNorm(heldXnF, 0, h[hXnF])
	wait()
	vl := m.shp.vocab
	m.linear(h[hLogits], gF, out, n, vl, d)
	losses := m.tensorCrossEntropy(h[hLseCE], h[hLogits], targets, n, vl)
	be.Write(h[hLoss], losses)
	var sum float64
	for _, l := range losses {
		sum += l
	}
	m.kept.Head = headBytes
	m.kept.Total = be.LiveBytes() - start
	if valid == 0 {
		return 0, nil
	}
	return sum / float64(valid), nil
}

// tensorCrossEntropy is the vocabulary-parallel cross-entropy: each rank computes the
// logsumexp of its columns and the target's logit when it holds it, the group gathers those
// 2N values per rank, and every rank combines them into the loss per row. It stores the
// logsumexp over the whole vocabulary in lse for backward.
func (m *Model) tensorCrossEntropy(lse, logits kernels.Buffer, targets []int32, n, vl int) []float64 {
	be, tp, tw := m.be, m.tp, m.ws.tp
	ce := be.Slice(tw.ce, 0, tp.size*2*n)
	mine := be.Slice(ce, tp.rank*2*n, 2*n)
	tp.vp.CrossEntropyShard(be.Slice(mine, 0, n), be.Slice(mine, n, n), logits, targets, tp.v0, n, vl)
	tp.do(tp.g.AllGather(ce))
	all := make([]float64, ce.Len())
	be.Read(all, ce)
	whole := make([]float64, n)
	losses := make([]float64, n)
	for r := 0; r < n; r++ {
		mx := math.Inf(-1)
		for k := 0; k < tp.size; k++ {
			mx = math.Max(mx, all[k*2*n+r])
		}
		var s, tl float64
		for k := 0; k < tp.size; k++ {
			s += math.Exp(all[k*2*n+r] - mx)
			tl += all[k*2*n+n+r]
		}
		whole[r] = mx + math.Log(s)
		if targets[r] >= 0 {
			losses[r] = whole[r] - tl
		}
	}
	be.Write(lse, whole)
	return losses
}

// tensorLayerForward is layerForward for a tensor-parallel rank: x, h and out are the rank's
// rows of the stream, q, k, v, attention and the feed-forward hidden units its columns.
func (m *Model) tensorLayerForward(i int, x kernels.Buffer, a *[numLayerActs]kernels.Buffer, b, t int, need func(act) bool) {
	c, be, tw, sh := m.Cfg, m.be, m.ws.tp, m.shp
	n, d, hl := b*t, c.Dim, sh.heads
	nl := n / sh.seqDiv
	w := func(k int) kernels.Buffer { p, _ := m.layerParam(i, k); return p }
	if need(aXn1) {
		be.RMSNorm(a[aXn1], a[aRstd1], x, w(pAttnNorm), nl, d, c.NormEps)
	}
	if need(aV) {
		g1, wait := m.gatherNorm(heldXn1, i, a[aXn1])
		wait()
		m.linear(a[aQ], g1, w(pWq), n, sh.attn, d)
		m.linear(a[aK], g1, w(pWk), n, sh.attn, d)
		m.linear(a[aV], g1, w(pWv), n, sh.attn, d)
	}
	if need(aQr) {
		be.RoPE(a[aQr], a[aQ], b, t, hl, c.HeadDim(), 0, c.RopeTheta)
		be.RoPE(a[aKr], a[aK], b, t, hl, c.HeadDim(), 0, c.RopeTheta)
	}
	if need(aAtt) {
		be.Attention(a[aAtt], a[aLse], a[aQr], a[aKr], a[aV], b, t, hl, c.HeadDim())
	}
	if need(aH) {
		m.linear(tw.part, a[aAtt], w(pWo), n, d, sh.attn)
		m.reduceRows(a[aH], tw.part, x)
	}
	if need(aXn2) {
		be.RMSNorm(a[aXn2], a[aRstd2], a[aH], w(pFFNNorm), nl, d, c.NormEps)
	}
	if need(aA) {
		g2, wait := m.gatherNorm(heldXn2, i, a[aXn2])
		wait()
		m.linear(a[aA], g2, w(pW1), n, sh.ffn, d)
		m.linear(a[aB], g2, w(pW3), n, sh.ffn, d)
	}
	if need(aG) {
		be.SwiGLU(a[aG], a[aA], a[aB])
	}
	if need(aOut) {
		m.linear(tw.part, a[aG], w(pW2), n, d, sh.ffn)
		m.reduceRows(a[aOut], tw.part, a[aH])
	}
}

// Norm gain k, for the gains' partial gradients: block k/2's attention norm (k even) or
// feed-forward norm (k odd), and k = 2L the final norm.
func (m *Model) gainSpec(k int) int {
	if k == 2*m.Cfg.Layers {
		return m.Layout.index["norm.weight"]
	}
	return 1 + k/2*perLayer + []int{pAttnNorm, pFFNNorm}[k%2]
}

// gainGrad returns where the gradient of norm gain k accumulates in this pass: the gradient
// itself, or with sequence parallelism slot k of the partials reduced unit by unit.
func (m *Model) gainGrad(k int) kernels.Buffer {
	if !m.tp.seq {
		_, dg := m.spec(m.gainSpec(k))
		return dg
	}
	d := m.Cfg.Dim
	return m.be.Slice(m.ws.tp.gains, k*d, d)
}

// tensorBackward is Backward for a tensor-parallel rank.
func (m *Model) tensorBackward() (err error) {
	defer m.recoverTensor(&err)
	ps := m.pass
	c, be, tp, tw, sh := m.Cfg, m.be, m.tp, m.ws.tp, m.shp
	n, d := ps.b*ps.t, c.Dim
	nl := n / sh.seqDiv
	h := &ps.head
	dres := be.Slice(m.ws.dres, 0, nl*d)
	dxn := be.Slice(m.ws.dxn, 0, nl*d)
	if tp.seq {
		be.Zero(tw.gains)
	}
	scale := 0.0
	if ps.valid > 0 {
		scale = 1 / float64(ps.valid)
	}
	xL := h[hX0]
	if c.Layers > 0 {
		xL = ps.layers[c.Layers-1][aOut]
	}
	norm, _ := m.headParam("norm.weight")
	out, dout := m.headParam("output.weight")
	tp.vp.CrossEntropyShardBackward(h[hLogits], h[hLogits], h[hLseCE], ps.targets, tp.v0, n, sh.vocab, scale)
	if !headActs[hXnF].keep[c.Remat] {
		be.RMSNorm(h[hXnF], h[hRstdF], xL, norm, nl, d, c.NormEps)
	}
	gF, wait := m.gatherNorm(heldXnF, 0, h[hXnF])
	be.MatMul(tw.part, h[hLogits], out, n, d, sh.vocab, false, false, 0)
	wait()
	be.MatMul(dout, h[hLogits], gF, sh.vocab, d, n, true, false, 1)
	m.reduceRows(dxn, tw.part, nil)
	be.Zero(dres)
	be.RMSNormBackward(dres, m.gainGrad(2*c.Layers), dxn, xL, norm, h[hRstdF], nl, d)
	var g gainsInFlight
	m.unitDone(&g, m.headUnit(), 2*c.Layers, 1)

	for i := c.Layers - 1; i >= 0; i-- {
		x := h[hX0]
		if i > 0 {
			x = ps.layers[i-1][aOut]
		}
		a := &ps.layers[i]
		m.tensorLayerForward(i, x, a, ps.b, ps.t, func(k act) bool { return !layerActs[k].keep[c.Remat] })
		m.tensorLayerBackward(i, x, a, dres, ps.b, ps.t)
		m.unitDone(&g, m.blockUnit(i), 2*i, 2)
	}
	_, demb := m.headParam("tok_embeddings.weight")
	tp.vp.EmbeddingShardBackward(demb, m.gatherGrad(dres), ps.tokens, tp.v0, d)
	m.unitDone(&g, m.embUnit(), 0, 0)
	m.finishGains(&g)
	m.dropPass()
	return nil
}

// gainsInFlight is the all-reduce of one unit's gain gradients under sequence parallelism:
// each rank formed them from its rows, and the unit's gradient is final, and handed to
// OnGradReady, once the sum of the ranks' partials is added in.
type gainsInFlight struct {
	wait       func() error
	unit       int
	slot, size int // the unit's gains in the partials buffer, in gains of d
}

// unitDone reports that backward is done with unit u, whose gains are the n partials from
// slot on. Without sequence parallelism the unit's gradient is final at once. With it the
// unit's gains start their all-reduce, and the previous unit's, which has travelled while
// this unit computed, is finished first.
func (m *Model) unitDone(g *gainsInFlight, u, slot, n int) {
	m.finishGains(g)
	if !m.tp.seq || n == 0 {
		m.tensorUnitReady(u)
		return
	}
	d := m.Cfg.Dim
	*g = gainsInFlight{wait: m.tp.g.AllReduceAsync(m.be.Slice(m.ws.tp.gains, slot*d, n*d)), unit: u, slot: slot, size: n}
}

// finishGains waits for the gains in flight, adds the sums into the gradients and reports
// their unit ready.
func (m *Model) finishGains(g *gainsInFlight) {
	if g.wait == nil {
		return
	}
	m.tp.do(g.wait())
	be, d := m.be, m.Cfg.Dim
	for k := g.slot; k < g.slot+g.size; k++ {
		_, dg := m.spec(m.gainSpec(k))
		be.Add(dg, dg, be.Slice(m.ws.tp.gains, k*d, d))
	}
	m.tensorUnitReady(g.unit)
	g.wait = nil
}

// tensorUnitReady hands unit u's final gradient to OnGradReady. The head is handed as two
// ranges, the final norm's gain and the output head: the gain is whole on every
// tensor-parallel rank while the head's size follows the rank's vocabulary shard, and a
// data-parallel reduction of ranges of different sizes could sum the gain's copies in
// different orders, into different bits. (Blocks are the same size on every rank.)
func (m *Model) tensorUnitReady(u int) {
	if m.gradReady == nil {
		return
	}
	un := m.units[u]
	if u == m.headUnit() {
		norm, _ := m.Layout.Lookup("norm.weight")
		m.gradReady(norm.Offset, norm.Size)
		m.gradReady(norm.Offset+norm.Size, un.Offset+un.Size-norm.Offset-norm.Size)
		return
	}
	m.gradReady(un.Offset, un.Size)
}

// gatherGrad returns the stream's gradient over all N rows: with sequence parallelism the
// ranks' slices gathered (the backward of the reduce-scatter), else dres itself.
func (m *Model) gatherGrad(dres kernels.Buffer) kernels.Buffer {
	return m.gather(m.ws.tp.dresF, dres)
}

// tensorLayerBackward is layerBackward for a tensor-parallel rank: dres holds the rank's rows
// of dL/d(out_i) and becomes its rows of dL/dx_i. The gathers of the norm outputs that the
// weight gradients need start before the multiplications that do not wait for them.
func (m *Model) tensorLayerBackward(i int, x kernels.Buffer, a *[numLayerActs]kernels.Buffer, dres kernels.Buffer, b, t int) {
	c, be, ws, tw, sh := m.Cfg, m.be, &m.ws, m.ws.tp, m.shp
	n, d, f, at := b*t, c.Dim, sh.ffn, sh.attn
	nl := n / sh.seqDiv
	s := func(buf kernels.Buffer, rows, width int) kernels.Buffer { return be.Slice(buf, 0, rows*width) }
	dxn := s(ws.dxn, nl, d)
	datt, dq, dk, dv := s(ws.datt, n, at), s(ws.dq, n, at), s(ws.dk, n, at), s(ws.dv, n, at)
	dg, da, db := s(ws.dg, n, f), s(ws.da, n, f), s(ws.db, n, f)
	wt := func(k int) (kernels.Buffer, kernels.Buffer) { return m.layerParam(i, k) }

	// Feed-forward: out = h + w2(silu(w1 xn2) * w3 xn2).
	g2, wait2 := m.gatherNorm(heldXn2, i, a[aXn2])
	dresF := m.gatherGrad(dres)
	w2, dw2 := wt(pW2)
	be.MatMul(dw2, dresF, a[aG], d, f, n, true, false, 1)
	be.MatMul(dg, dresF, w2, n, f, d, false, false, 0)
	be.SwiGLUBackward(da, db, dg, a[aA], a[aB])
	w1, dw1 := wt(pW1)
	w3, dw3 := wt(pW3)
	be.MatMul(tw.part, da, w1, n, d, f, false, false, 0)
	be.MatMul(tw.part, db, w3, n, d, f, false, false, 1)
	wait2()
	be.MatMul(dw1, da, g2, f, d, n, true, false, 1)
	be.MatMul(dw3, db, g2, f, d, n, true, false, 1)
	g1, wait1 := m.gatherNorm(heldXn1, i, a[aXn1]) // overlaps the rest of the feed-forward and attention
	m.reduceRows(dxn, tw.part, nil)
	gn, _ := wt(pFFNNorm)
	be.RMSNormBackward(dres, m.gainGrad(2*i+1), dxn, a[aH], gn, a[aRstd2], nl, d)

	// Attention: h = x + wo(attention(rope(wq xn1), rope(wk xn1), wv xn1)).
	dresF = m.gatherGrad(dres)
	wo, dwo := wt(pWo)
	be.MatMul(dwo, dresF, a[aAtt], d, at, n, true, false, 1)
	be.MatMul(datt, dresF, wo, n, at, d, false, false, 0)
	be.AttentionBackward(dq, dk, dv, datt, a[aAtt], a[aLse], a[aQr], a[aKr], a[aV], b, t, sh.heads, c.HeadDim())
	be.RoPEBackward(dq, dq, b, t, sh.heads, c.HeadDim(), 0, c.RopeTheta)
	be.RoPEBackward(dk, dk, b, t, sh.heads, c.HeadDim(), 0, c.RopeTheta)
	for j, grad := range []kernels.Buffer{dq, dk, dv} {
		w, _ := wt(pWq + j)
		be.MatMul(tw.part, grad, w, n, d, at, false, false, float64(min(j, 1)))
	}
	wait1()
	for j, grad := range []kernels.Buffer{dq, dk, dv} {
		_, dw := wt(pWq + j)
		be.MatMul(dw, grad, g1, at, d, n, true, false, 1)
	}
	m.reduceRows(dxn, tw.part, nil)
	an, _ := wt(pAttnNorm)
	be.RMSNormBackward(dres, m.gainGrad(2*i), dxn, x, an, a[aRstd1], nl, d)
}

// SquaresSplit returns the sum of squares of the gradients of the tensors split across the
// tensor-parallel ranks (each rank's share: the group sums them) and of those every rank
// holds whole (counted once). Without tensor parallelism everything is whole.
func (m *Model) SquaresSplit() (split, whole float64) {
	if m.tp == nil {
		return 0, m.be.SumSquares(m.grads)
	}
	for i := range m.Layout.Specs {
		v := m.be.SumSquares(m.g[i])
		if m.Layout.Parts[i].Axis >= 0 {
			split += v
		} else {
			whole += v
		}
	}
	return split, whole
}

// TensorCommBytes returns the bytes one rank of tp tensor-parallel ranks sends in the forward
// and backward passes over n tokens under policy p, on a ring (each all-reduce of x bytes
// sends 2(tp-1)/tp x per rank, each all-gather or reduce-scatter (tp-1)/tp x), with
// activations of type dt (statistics float32). With E = n*d*size(dt) bytes, the stream at
// full width, and L layers:
//
//	without sequence parallelism: all-reduces of E: 1 (embedding) + 2L (wo, w2) forward,
//	  1 (head) + 2L (wq/wk/wv, w1/w3 inputs) backward, + L more (wo) under full remat;
//	with it: each all-reduce becomes a reduce-scatter, and all-gathers of E are added:
//	  2L + 1 forward (the norms' outputs), 4L - 1 backward (per block xn1, xn2 and twice
//	  the stream's gradient, and the embedding's gradient, less the three gathers forward
//	  left in place: the last block's xn1 and xn2 and xn_final; under full remat each
//	  block's recomputation gathers what its backward then uses, so the count is the same);
//	  and the norm gains' gradients, (2L+1) d floats, are all-reduced once per pass;
//	the cross-entropy's exchange: an all-gather of tp x 2n floats.
//
// Each optimizer step adds one all-reduce of 2 floats (the gradient norm's shares).
func TensorCommBytes(c Config, p Remat, dt kernels.DType, n, tp int, seq bool) float64 {
	if tp <= 1 {
		return 0
	}
	f := float64(tp-1) / float64(tp)
	e := float64(n) * float64(c.Dim) * float64(dt.Size())
	l := float64(c.Layers)
	reduces := 1 + 2*l + 1 + 2*l
	if p == RematFull {
		reduces += l
	}
	ce := f * float64(tp*2*n) * 4
	if !seq {
		return 2*f*e*reduces + ce
	}
	gathers := (2*l + 1) + (4*l - 1)
	gains := 2 * f * float64((2*c.Layers+1)*c.Dim) * 4
	return f*e*(reduces+gathers) + gains + ce
}
