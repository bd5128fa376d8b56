package plan

import "github.com/herd-llm/herd/model"

// Comm is the predicted communication of one step on one GPU, in seconds.
//
// Data parallelism over W ranks, ring collectives over the slowest link of the ring, P the
// parameters of one tensor-parallel rank, e the bytes of an element (Assumptions: ReduceBytes
// for gradients, GatherBytes for parameters):
//
//	all-reduce                      2(W-1)/W * P*e   once per step (plain data parallelism)
//	reduce-scatter, all-gather      (W-1)/W * P*e each
//	ZeRO-1: reduce-scatter of the accumulated gradients + all-gather of the updated parameters
//	ZeRO-2: a reduce-scatter per micro-batch (gradients are kept split) + the all-gather
//	ZeRO-3: per micro-batch, an all-gather before forward, another before backward (of all
//	        but the token embedding, which backward does not read) and a reduce-scatter:
//	        about 1.5 times plain data parallelism per micro-batch
//
// Hidden: the gradient collectives run behind backward and ZeRO-3's prefetched gathers behind
// forward and backward, each up to Assumptions.Overlap of its own time and at most the
// compute it runs behind. The all-gather of ZeRO-1/2 runs after the optimizer step and is
// exposed.
//
// Tensor parallelism over t GPUs of a node (Megatron with sequence parallelism): per block, 2
// all-reduce-sized collectives of the block's activations forward and 2 backward (2 more when
// full remat repeats the forward), 2(t-1)/t * B*T*d*2 bytes each over NVLink, on the critical
// path (not hidden).
type Comm struct {
	Link      string  `json:"dp_link"`           // the data-parallel ring's slowest link: "nvlink" or a fabric
	Bandwidth float64 `json:"dp_bandwidth"`      // bytes/s per GPU on that link, after its efficiency
	DP        float64 `json:"dp_s"`              // data-parallel (ZeRO) collectives
	DPHidden  float64 `json:"dp_hidden_s"`       // of which behind compute
	TP        float64 `json:"tp_s"`              // tensor-parallel collectives, all exposed
	Exposed   float64 `json:"exposed_s"`         // DP - DPHidden + TP
	Bytes     float64 `json:"dp_bytes_per_step"` // bytes each GPU sends in data-parallel collectives
}

// dpLink returns the slowest link of the data-parallel ring and its bandwidth per GPU. The
// ring stays on NVLink while the run fits in one node; otherwise each GPU's share of its
// node's adapters is the bottleneck.
func dpLink(c Config) (string, float64) {
	nvlink := c.GPU.NVLinkBandwidth * c.GPU.NVLinkEfficiency
	if c.GPUs <= c.GPU.GPUsPerNode {
		return "nvlink", nvlink
	}
	return c.Fabric.Name, min(nvlink, c.Fabric.NodeBandwidth/float64(c.GPU.GPUsPerNode)*c.Fabric.Efficiency)
}

// commTime predicts the step's communication given one micro-batch's forward and backward.
func commTime(c Config, mb int, fwd, bwd float64) Comm {
	var cm Comm
	cm.TP = tpCommTime(c, mb)
	cm.Exposed = cm.TP
	w := c.DP()
	if w == 1 {
		return cm
	}
	cm.Link, cm.Bandwidth = dpLink(c)
	frac := float64(w-1) / float64(w)
	share := frac * float64(localParams(c))
	rsBytes, agBytes := share*float64(c.Assume.ReduceBytes), share*float64(c.Assume.GatherBytes)
	rs, ag := rsBytes/cm.Bandwidth, agBytes/cm.Bandwidth // one reduce-scatter, one all-gather
	agBwdBytes := frac * float64(localParams(c)-embeddingParams(c)) * float64(c.Assume.GatherBytes)
	agBwd := agBwdBytes / cm.Bandwidth // ZeRO-3's gather before backward
	k := float64(c.SequencesPerRank() / mb)
	hide := func(comm, behind float64) float64 { return min(c.Assume.Overlap*comm, behind) }
	switch c.ZeRO {
	case 0: // one all-reduce = reduce-scatter + all-gather of gradients
		cm.DP, cm.DPHidden, cm.Bytes = 2*rs, hide(2*rs, bwd), 2*rsBytes
	case 1:
		cm.DP, cm.DPHidden, cm.Bytes = rs+ag, hide(rs, bwd), rsBytes+agBytes
	case 2:
		cm.DP, cm.DPHidden, cm.Bytes = k*rs+ag, k*hide(rs, bwd), k*rsBytes+agBytes
	case 3:
		cm.DP, cm.DPHidden, cm.Bytes = k*(ag+agBwd+rs), k*(hide(ag, fwd)+hide(agBwd+rs, bwd)), k*(agBytes+agBwdBytes+rsBytes)
	}
	cm.Exposed += cm.DP - cm.DPHidden
	return cm
}

// tpCommTime returns the tensor-parallel collectives of all micro-batches of a step.
func tpCommTime(c Config, mb int) float64 {
	if c.TP == 1 {
		return 0
	}
	t := float64(c.TP)
	perCollective := 2 * (t - 1) / t * float64(mb*c.Seq*c.Model.Dim*c.actType().Size())
	perBlock := 4.0
	if c.Model.Remat == model.RematFull {
		perBlock = 6
	}
	k := float64(c.SequencesPerRank() / mb)
	bw := c.GPU.NVLinkBandwidth * c.GPU.NVLinkEfficiency
	return k * float64(c.Model.Layers) * perBlock * perCollective / bw
}
