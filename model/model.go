package model

import (
	"errors"
	"fmt"

	"github.com/herd-llm/herd/kernels"
)

// ErrInput is wrapped by errors about the tokens or shapes passed to Forward.
var ErrInput = errors.New("model: invalid input")

// Model is a LLaMA network whose parameters, gradients and activations live in a backend.
type Model struct {
	Cfg    Config
	Layout Layout

	be     kernels.Backend
	mixed  kernels.Mixed    // be, when it computes in a narrower type than its master weights
	params kernels.Buffer   // flat, laid out by Layout; float32 masters on a mixed backend
	work   kernels.Buffer   // the working copy the passes read on a mixed backend, else params
	grads  kernels.Buffer   // same layout; Backward accumulates into it
	p, g   []kernels.Buffer // per-spec views of the weights the passes read, and of grads

	ws        workspace
	shp       shape      // what this rank computes: the whole network, or its tensor-parallel share
	tp        *tensorPar // tensor parallelism; nil when one rank computes the whole network
	pass      *pass      // activations kept by the last Forward, until Backward
	kept      Kept
	gradReady func(off, n int)

	units    []Unit // the layout's units (see Residency)
	specUnit []int  // the unit of each spec
	res      Residency
	lent     []lentUnit // with res: the storage of the units held now
}

// OnGradReady registers fn to be called during Backward each time a contiguous range
// [off, off+n) of the gradient buffer has received its last contribution of the pass: the
// final norm and output head first, then each block from the last to the first, then the
// embedding (the units, see Residency). A data-parallel trainer starts reducing each range
// while backward goes on. nil unregisters.
func (m *Model) OnGradReady(fn func(off, n int)) { m.gradReady = fn }

// Kept reports the activation memory the last Forward held for Backward, measured as growth
// of the backend's live bytes.
type Kept struct {
	PerLayer []int64 // bytes allocated by each block's forward and still held
	Head     int64   // bytes held outside the blocks (embeddings, final norm, logits, loss)
	Total    int64   // growth of live bytes across the whole Forward
}

// pass holds one forward pass's kept activations.
type pass struct {
	b, t    int
	tokens  []int32
	targets []int32
	valid   int // targets that are not ignored
	layers  [][numLayerActs]kernels.Buffer
	head    [numHeadActs]kernels.Buffer
	owned   []kernels.Buffer // freed by Backward
}

// New allocates a model for c in be. Parameters start at zero; call Init or SetParams.
func New(c Config, be kernels.Backend) (*Model, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return newModel(c, NewLayout(c), wholeShape(c), be, nil)
}

// newModel allocates a model whose parameters are laid out by l (the whole network's, or a
// tensor-parallel rank's share) and whose activations have shape sh.
func newModel(c Config, l Layout, sh shape, be kernels.Backend, tp *tensorPar) (*Model, error) {
	m := &Model{Cfg: c, Layout: l, be: be, shp: sh, tp: tp}
	m.mixed, _ = be.(kernels.Mixed)
	m.units, m.specUnit = m.Layout.Units(), m.Layout.specUnits()
	m.params = m.allocMaster(m.Layout.Size)
	m.grads = m.allocMaster(m.Layout.Size)
	m.work = m.params
	if m.mixed != nil {
		m.work = be.Alloc(m.Layout.Size)
	}
	for _, s := range m.Layout.Specs {
		src := m.params
		if s.gemmOperand() {
			src = m.work
		}
		m.p = append(m.p, be.Slice(src, s.Offset, s.Size))
		m.g = append(m.g, be.Slice(m.grads, s.Offset, s.Size))
	}
	return m, nil
}

// Backend returns the backend the model computes on.
func (m *Model) Backend() kernels.Backend { return m.be }

// Params returns the flat parameter buffer: the float32 master weights on a mixed-precision
// backend. Whoever writes it directly must call ParamsUpdated afterwards. It is nil on a
// model whose storage a Residency lends.
func (m *Model) Params() kernels.Buffer { return m.params }

// ParamsUpdated refreshes what the passes read from Params after it was written directly
// (a checkpoint or weights file loaded into it): on a mixed-precision backend, the working
// copy in the activation type. On other backends it does nothing.
func (m *Model) ParamsUpdated() {
	if m.mixed != nil && m.res == nil {
		m.mixed.Cast(m.work, m.params)
	}
}

// allocMaster allocates n elements for weights, gradients, optimizer state or statistics:
// float32 on a mixed-precision backend, the backend's type otherwise.
func (m *Model) allocMaster(n int) kernels.Buffer {
	if m.mixed != nil {
		return m.mixed.AllocMaster(n)
	}
	return m.be.Alloc(n)
}

// allocAct allocates n elements of an activation in the activation type, or in float32 on a
// mixed-precision backend when f32 is set (statistics, the residual stream, logits).
func (m *Model) allocAct(n int, f32 bool) kernels.Buffer {
	if f32 {
		return m.allocMaster(n)
	}
	return m.be.Alloc(n)
}

// Grads returns the flat gradient buffer (nil on a model whose storage a Residency lends).
func (m *Model) Grads() kernels.Buffer { return m.grads }

// Init sets the parameters to InitParams(seed), drawn in float32 on all cores.
func (m *Model) Init(seed uint64) {
	if m.res != nil {
		panic(ErrResident)
	}
	host := make([]float32, m.Layout.Size)
	if m.tp != nil {
		// The shares of the whole network's initial weights: a run with any tensor-parallel
		// size starts from the same model.
		whole := m.Layout.Whole()
		all := make([]float32, whole.Size)
		InitParams(m.Cfg, whole, seed, all)
		m.Layout.Take(host, all)
	} else {
		InitParams(m.Cfg, m.Layout, seed, host)
	}
	m.be.Write32(m.params, host)
	m.ParamsUpdated()
}

// ZeroGrad sets every gradient to zero.
// A Residency lends zeroed gradient buffers: then it does nothing.
func (m *Model) ZeroGrad() {
	if m.res == nil {
		m.be.Zero(m.grads)
	}
}

// LastKept returns the activation memory measured during the last Forward.
func (m *Model) LastKept() Kept { return m.kept }

// Close frees everything the model allocated in its backend.
func (m *Model) Close() {
	m.dropPass()
	m.ws.free(m.be)
	if m.res != nil {
		return
	}
	if m.work != m.params {
		m.be.Free(m.work)
	}
	m.be.Free(m.params)
	m.be.Free(m.grads)
}

func (m *Model) layerParam(i, k int) (w, dw kernels.Buffer) {
	return m.spec(1 + i*perLayer + k)
}

func (m *Model) headParam(name string) (w, dw kernels.Buffer) {
	i, ok := m.Layout.index[name]
	if !ok {
		panic("model: no parameter " + name)
	}
	return m.spec(i)
}

// linear sets y = x w^T for x [n, in] and w [out, in].
func (m *Model) linear(y, x, w kernels.Buffer, n, out, in int) {
	m.be.MatMul(y, x, w, n, out, in, false, true, 0)
}

// residual sets y = r + x w^T, a projection that adds into the residual stream: y starts as a
// copy of r and the matrix multiplication accumulates onto it (beta = 1), so on a
// mixed-precision backend the sum is formed in float32 and the projection is never rounded to
// bf16 on its own.
func (m *Model) residual(y, r, x, w kernels.Buffer, n, out, in int) {
	m.be.Copy(y, r)
	m.be.MatMul(y, x, w, n, out, in, false, true, 1)
}

func (m *Model) checkInput(tokens, targets []int32, b, t int) (valid int, err error) {
	if b <= 0 {
		return 0, fmt.Errorf("%w: batch = %d, must be > 0", ErrInput, b)
	}
	if err := m.Cfg.CheckSeq(t); err != nil {
		return 0, err
	}
	if len(tokens) != b*t {
		return 0, fmt.Errorf("%w: %d tokens for batch %d x seq %d", ErrInput, len(tokens), b, t)
	}
	if targets != nil && len(targets) != b*t {
		return 0, fmt.Errorf("%w: %d targets for batch %d x seq %d", ErrInput, len(targets), b, t)
	}
	for i, tok := range tokens {
		if tok < 0 || int(tok) >= m.Cfg.Vocab {
			return 0, fmt.Errorf("%w: token %d at position %d is outside the vocabulary [0, %d)", ErrInput, tok, i, m.Cfg.Vocab)
		}
	}
	for i, tg := range targets {
		if int(tg) >= m.Cfg.Vocab {
			return 0, fmt.Errorf("%w: target %d at position %d is outside the vocabulary [0, %d)", ErrInput, tg, i, m.Cfg.Vocab)
		}
		if tg >= 0 {
			valid++
		}
	}
	return valid, nil
}

// Forward runs the network on tokens [b, t] and returns the mean cross-entropy against
// targets (negative targets are ignored), keeping the activations the remat policy asks for
// until Backward. A Forward not followed by Backward (evaluation) releases them at the next
// Forward. The model keeps tokens and targets (not copies) until Backward, so the caller must
// not change them in between.
func (m *Model) Forward(tokens, targets []int32, b, t int) (float64, error) {
	valid, err := m.checkInput(tokens, targets, b, t)
	if err != nil {
		return 0, err
	}
	if targets == nil {
		return 0, fmt.Errorf("%w: Forward needs targets", ErrInput)
	}
	m.dropPass()
	n := b * t
	if m.tp != nil && n%m.shp.seqDiv != 0 {
		return 0, fmt.Errorf("%w: sequence parallelism over %d ranks needs batch x seq (%d x %d) divisible by %d", ErrInput, m.shp.seqDiv, b, t, m.shp.seqDiv)
	}
	m.ws.ensure(m, n)
	if m.tp != nil {
		return m.tensorForward(tokens, targets, b, t, valid)
	}
	c, be := m.Cfg, m.be
	start := be.LiveBytes()
	ps := &pass{b: b, t: t, tokens: tokens, targets: targets, valid: valid, layers: make([][numLayerActs]kernels.Buffer, c.Layers)}

	for k := range ps.head {
		ps.head[k] = m.actBuf(ps, headActs[k], m.ws.head[k], n)
	}
	m.useParams(m.embUnit(), m.blockUnit(0))
	emb, _ := m.headParam("tok_embeddings.weight")
	be.Embedding(ps.head[hX0], emb, tokens, c.Dim)
	m.doneParams(m.embUnit())
	headBytes := be.LiveBytes() - start

	m.kept.PerLayer = make([]int64, c.Layers)
	x := ps.head[hX0]
	for i := 0; i < c.Layers; i++ {
		before := be.LiveBytes()
		a := m.layerBufs(ps, i, n)
		m.useParams(m.blockUnit(i), m.blockUnit(i+1))
		m.layerForward(i, x, a, b, t, func(act) bool { return true })
		m.doneParams(m.blockUnit(i))
		m.kept.PerLayer[i] = be.LiveBytes() - before
		x = a[aOut]
	}

	h := &ps.head
	m.useParams(m.headUnit(), -1)
	defer m.doneParams(m.headUnit())
	norm, _ := m.headParam("norm.weight")
	out, _ := m.headParam("output.weight")
	be.RMSNorm(h[hXnF], h[hRstdF], x, norm, n, c.Dim, c.NormEps)
	m.linear(h[hLogits], h[hXnF], out, n, c.Vocab, c.Dim)
	be.CrossEntropy(h[hLoss], h[hLseCE], h[hLogits], targets, n, c.Vocab)
	losses := make([]float64, n)
	be.Read(losses, be.Slice(h[hLoss], 0, n))
	var sum float64
	for _, l := range losses {
		sum += l
	}
	m.kept.Head = headBytes
	m.kept.Total = be.LiveBytes() - start
	m.pass = ps
	if valid == 0 {
		return 0, nil
	}
	return sum / float64(valid), nil
}

// layerBufs gives block i of the pass ps its activations for n rows.
func (m *Model) layerBufs(ps *pass, i, n int) *[numLayerActs]kernels.Buffer {
	a := &ps.layers[i]
	for k := range a {
		a[k] = m.actBuf(ps, layerActs[k], m.ws.layer[k], n)
	}
	if !layerActs[aQ].keep[m.Cfg.Remat] {
		a[aQ], a[aK] = a[aQr], a[aKr] // RoPE then rotates in place
	}
	return a
}

// actBuf returns storage for one activation of n rows: a fresh allocation when the policy
// keeps it, else a view of the workspace.
func (m *Model) actBuf(ps *pass, s actSpec, scratch kernels.Buffer, n int) kernels.Buffer {
	size := m.shp.rows(s, n) * s.width(m.shp)
	if s.keep[m.Cfg.Remat] {
		buf := m.allocAct(size, s.f32)
		ps.owned = append(ps.owned, buf)
		return buf
	}
	return m.be.Slice(scratch, 0, size)
}

// layerForward computes block i on input x into the activations a, step by step, running
// each step whose output need reports as wanted. Forward wants every step; Backward wants
// the steps whose outputs the policy did not keep, which recomputes them bit for bit.
func (m *Model) layerForward(i int, x kernels.Buffer, a *[numLayerActs]kernels.Buffer, b, t int, need func(act) bool) {
	c, be := m.Cfg, m.be
	n, d, f := b*t, c.Dim, c.FFNHidden
	w := func(k int) kernels.Buffer { p, _ := m.layerParam(i, k); return p }
	if need(aXn1) {
		be.RMSNorm(a[aXn1], a[aRstd1], x, w(pAttnNorm), n, d, c.NormEps)
	}
	if need(aV) {
		m.linear(a[aQ], a[aXn1], w(pWq), n, d, d)
		m.linear(a[aK], a[aXn1], w(pWk), n, d, d)
		m.linear(a[aV], a[aXn1], w(pWv), n, d, d)
	}
	if need(aQr) {
		be.RoPE(a[aQr], a[aQ], b, t, c.Heads, c.HeadDim(), 0, c.RopeTheta)
		be.RoPE(a[aKr], a[aK], b, t, c.Heads, c.HeadDim(), 0, c.RopeTheta)
	}
	if need(aAtt) {
		be.Attention(a[aAtt], a[aLse], a[aQr], a[aKr], a[aV], b, t, c.Heads, c.HeadDim())
	}
	if need(aH) {
		m.residual(a[aH], x, a[aAtt], w(pWo), n, d, d)
	}
	if need(aXn2) {
		be.RMSNorm(a[aXn2], a[aRstd2], a[aH], w(pFFNNorm), n, d, c.NormEps)
	}
	if need(aA) {
		m.linear(a[aA], a[aXn2], w(pW1), n, f, d)
		m.linear(a[aB], a[aXn2], w(pW3), n, f, d)
	}
	if need(aG) {
		be.SwiGLU(a[aG], a[aA], a[aB])
	}
	if need(aOut) {
		m.residual(a[aOut], a[aH], a[aG], w(pW2), n, d, f)
	}
}

// Backward accumulates the gradient of the last Forward's mean loss into Grads and releases
// the kept activations.
func (m *Model) Backward() error {
	ps := m.pass
	if ps == nil {
		return errors.New("model: Backward without a pending Forward")
	}
	if m.tp != nil {
		return m.tensorBackward()
	}
	c, be := m.Cfg, m.be
	n, d := ps.b*ps.t, c.Dim
	h := &ps.head
	ws := &m.ws
	dres := be.Slice(ws.dres, 0, n*d)
	dxn := be.Slice(ws.dxn, 0, n*d)

	scale := 0.0
	if ps.valid > 0 {
		scale = 1 / float64(ps.valid)
	}
	xL := h[hX0]
	if c.Layers > 0 {
		xL = ps.layers[c.Layers-1][aOut]
	}
	next := m.headUnit() - 1 // the last block (the embedding when there is none)
	m.useParams(m.headUnit(), next)
	m.useGrads(m.headUnit())
	norm, dnorm := m.headParam("norm.weight")
	out, dout := m.headParam("output.weight")
	be.CrossEntropyBackward(h[hLogits], h[hLogits], h[hLseCE], ps.targets, n, c.Vocab, scale)
	if !headActs[hXnF].keep[c.Remat] {
		be.RMSNorm(h[hXnF], h[hRstdF], xL, norm, n, d, c.NormEps)
	}
	// The logits' gradient is float32 on a mixed backend; the matrix multiplications read a
	// bf16 copy, as autocast's do.
	dlogits := h[hLogits]
	if m.mixed != nil {
		dlogits = be.Alloc(n * c.Vocab)
		defer be.Free(dlogits)
		m.mixed.Cast(dlogits, h[hLogits])
	}
	be.MatMul(dout, dlogits, h[hXnF], c.Vocab, d, n, true, false, 1)
	be.MatMul(dxn, dlogits, out, n, d, c.Vocab, false, false, 0)
	be.Zero(dres)
	be.RMSNormBackward(dres, dnorm, dxn, xL, norm, h[hRstdF], n, d)
	m.doneGrads(m.headUnit())
	m.doneParams(m.headUnit())

	for i := c.Layers - 1; i >= 0; i-- {
		x := h[hX0]
		if i > 0 {
			x = ps.layers[i-1][aOut]
		}
		a := &ps.layers[i]
		next := -1 // the embedding needs no parameters in backward
		if i > 0 {
			next = m.blockUnit(i - 1)
		}
		m.useParams(m.blockUnit(i), next)
		m.useGrads(m.blockUnit(i))
		m.layerForward(i, x, a, ps.b, ps.t, func(k act) bool { return !layerActs[k].keep[c.Remat] })
		m.layerBackward(i, x, a, dres, ps.b, ps.t)
		m.doneGrads(m.blockUnit(i))
		m.doneParams(m.blockUnit(i))
	}
	m.useGrads(m.embUnit())
	_, demb := m.headParam("tok_embeddings.weight")
	be.EmbeddingBackward(demb, dres, ps.tokens, d)
	m.doneGrads(m.embUnit())
	m.dropPass()
	return nil
}

// layerBackward turns dres = dL/d(out_i) into dL/dx_i in place, accumulating the block's
// parameter gradients. The activations a are complete (kept or recomputed). On a mixed
// backend dres is float32, and the matrix multiplications read it from a bf16 copy (dresA),
// refreshed after the feed-forward half has added into dres.
func (m *Model) layerBackward(i int, x kernels.Buffer, a *[numLayerActs]kernels.Buffer, dres kernels.Buffer, b, t int) {
	c, be, ws := m.Cfg, m.be, &m.ws
	n, d, f := b*t, c.Dim, c.FFNHidden
	s := func(buf kernels.Buffer, width int) kernels.Buffer { return be.Slice(buf, 0, n*width) }
	dxn, datt := s(ws.dxn, d), s(ws.datt, d)
	dresA := dres
	if m.mixed != nil {
		dresA = s(ws.dresA, d)
		m.mixed.Cast(dresA, dres)
	}
	dq, dk, dv := s(ws.dq, d), s(ws.dk, d), s(ws.dv, d)
	dg, da, db := s(ws.dg, f), s(ws.da, f), s(ws.db, f)
	wt := func(k int) (kernels.Buffer, kernels.Buffer) { return m.layerParam(i, k) }

	// Feed-forward: out = h + w2(silu(w1 xn2) * w3 xn2).
	w2, dw2 := wt(pW2)
	be.MatMul(dw2, dresA, a[aG], d, f, n, true, false, 1)
	be.MatMul(dg, dresA, w2, n, f, d, false, false, 0)
	be.SwiGLUBackward(da, db, dg, a[aA], a[aB])
	w1, dw1 := wt(pW1)
	w3, dw3 := wt(pW3)
	be.MatMul(dw1, da, a[aXn2], f, d, n, true, false, 1)
	be.MatMul(dw3, db, a[aXn2], f, d, n, true, false, 1)
	be.MatMul(dxn, da, w1, n, d, f, false, false, 0)
	be.MatMul(dxn, db, w3, n, d, f, false, false, 1)
	gn, dgn := wt(pFFNNorm)
	be.RMSNormBackward(dres, dgn, dxn, a[aH], gn, a[aRstd2], n, d)

	// Attention: h = x + wo(attention(rope(wq xn1), rope(wk xn1), wv xn1)).
	if m.mixed != nil {
		m.mixed.Cast(dresA, dres)
	}
	wo, dwo := wt(pWo)
	be.MatMul(dwo, dresA, a[aAtt], d, d, n, true, false, 1)
	be.MatMul(datt, dresA, wo, n, d, d, false, false, 0)
	be.AttentionBackward(dq, dk, dv, datt, a[aAtt], a[aLse], a[aQr], a[aKr], a[aV], b, t, c.Heads, c.HeadDim())
	be.RoPEBackward(dq, dq, b, t, c.Heads, c.HeadDim(), 0, c.RopeTheta)
	be.RoPEBackward(dk, dk, b, t, c.Heads, c.HeadDim(), 0, c.RopeTheta)
	for j, grad := range []kernels.Buffer{dq, dk, dv} {
		w, dw := wt(pWq + j)
		be.MatMul(dw, grad, a[aXn1], d, d, n, true, false, 1)
		be.MatMul(dxn, grad, w, n, d, d, false, false, float64(min(j, 1)))
	}
	an, dan := wt(pAttnNorm)
	be.RMSNormBackward(dres, dan, dxn, x, an, a[aRstd1], n, d)
}

func (m *Model) dropPass() {
	if m.pass == nil {
		return
	}
	for _, b := range m.pass.owned {
		m.be.Free(b)
	}
	m.pass = nil
}

// workspace holds the activations a policy does not keep and the gradient temporaries of
// one block, sized for the largest number of rows seen so far. dres, the residual stream's
// gradient, is float32 on a mixed backend, and dresA its bf16 copy for the matrix
// multiplications (a zero-length buffer elsewhere).
type workspace struct {
	rows                   int
	layer                  [numLayerActs]kernels.Buffer
	head                   [numHeadActs]kernels.Buffer
	dres, dresA, dxn, datt kernels.Buffer
	dq, dk, dv, dg, da, db kernels.Buffer
	tp                     *tensorWorkspace // under tensor parallelism
}

func (ws *workspace) buffers() []*kernels.Buffer {
	l := []*kernels.Buffer{&ws.dres, &ws.dresA, &ws.dxn, &ws.datt, &ws.dq, &ws.dk, &ws.dv, &ws.dg, &ws.da, &ws.db}
	for k := range ws.layer {
		l = append(l, &ws.layer[k])
	}
	for k := range ws.head {
		l = append(l, &ws.head[k])
	}
	return l
}

func (ws *workspace) ensure(m *Model, n int) {
	if n <= ws.rows {
		return
	}
	be, c := m.be, m.Cfg
	ws.free(be)
	ws.rows = n
	scratch := func(s actSpec) kernels.Buffer {
		if s.keep[c.Remat] {
			return m.allocAct(0, s.f32)
		}
		return m.allocAct(m.shp.rows(s, n)*s.width(m.shp), s.f32)
	}
	for k, s := range layerActs {
		ws.layer[k] = scratch(s)
	}
	for k, s := range headActs {
		ws.head[k] = scratch(s)
	}
	sh := m.shp
	nl := n / sh.seqDiv // the stream's rows
	ws.dres = m.allocAct(nl*c.Dim, true)
	ws.dresA = be.Alloc(0)
	if m.mixed != nil {
		ws.dresA = be.Alloc(nl * c.Dim)
	}
	ws.dxn = be.Alloc(nl * c.Dim)
	for _, p := range []*kernels.Buffer{&ws.datt, &ws.dq, &ws.dk, &ws.dv} {
		*p = be.Alloc(n * sh.attn)
	}
	for _, p := range []*kernels.Buffer{&ws.dg, &ws.da, &ws.db} {
		*p = be.Alloc(n * sh.ffn)
	}
	if m.tp != nil {
		ws.tp = newTensorWorkspace(m, n)
	}
}

func (ws *workspace) free(be kernels.Backend) {
	if ws.rows == 0 {
		return
	}
	for _, p := range ws.buffers() {
		be.Free(*p)
		*p = nil
	}
	ws.rows = 0
	if ws.tp != nil {
		ws.tp.free(be)
		ws.tp = nil
	}
}
