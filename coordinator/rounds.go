package coordinator

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/herd-llm/herd/cluster"
)

// A round is planned from what the leader knows: the live workers (registered in etcd, in
// the order they joined), the previous round, and what the previous round's ranks reported
// about their state when it ended.
//
// Size: the most workers, up to workers.max, whose ranks divide the global batch (each rank
// trains an equal share of it, so the batch, and with it every step's data, stays what it
// would be on one process); at least workers.min. Workers left out wait as spares.
//
// State: in data parallelism every rank holds the whole state of its last completed step.
// The round starts at the newest step some member holds, if the members holding it agree on
// its checksum; that member's first rank broadcasts it to the others. A newcomer or a rank
// one step behind simply receives it. Under ZeRO each rank holds one shard of the state: the
// round continues from the members' shards only if they hold every shard of one step (a
// scale-up, a round that failed without losing a rank), and they assemble it. Only when no
// member holds a consistent state does the round load the newest committed checkpoint, and
// with none, it starts fresh from the seed.

// planInput is what planRound decides from.
type planInput struct {
	spec        *cluster.JobSpec
	live        []cluster.Registration // in join order
	prev        *cluster.Round
	states      map[string][]cluster.RankState // reports of prev's members, by worker
	checkpoints []int                          // committed checkpoint steps, ascending
	lastStep    int                            // newest step recorded
}

// planRound returns the next round, or nil with the reason there can be none yet.
func planRound(in planInput, id uint64, now time.Time) (*cluster.Round, string) {
	spec := in.spec
	nproc := spec.Workers.NprocPerNode
	tp := max(1, spec.TP)
	k := min(len(in.live), spec.Workers.Max)
	for ; k >= spec.Workers.Min; k-- {
		if spec.Batch%(k*nproc/tp) == 0 {
			break
		}
	}
	if k < spec.Workers.Min {
		return nil, fmt.Sprintf("waiting for workers: %d present, workers.min is %d (and the data-parallel replicas must divide batch %d)",
			len(in.live), spec.Workers.Min, spec.Batch)
	}
	members := in.live[:k]
	r := &cluster.Round{ID: id, Attempt: randomHex(8), World: k * nproc, Secret: randomHex(32), Formed: now}
	for i, reg := range members {
		m := cluster.Member{WorkerID: reg.WorkerID, FirstRank: i * nproc, Ranks: reg.Ranks[:nproc]}
		if tp > 1 && len(reg.TPRanks) >= nproc && len(reg.DPRanks) >= nproc {
			m.TPRanks, m.DPRanks = reg.TPRanks[:nproc], reg.DPRanks[:nproc]
		}
		r.Members = append(r.Members, m)
	}
	r.Micro = microBatch(spec.Batch/(r.World/tp), spec.MicroBatch)
	r.Start, r.Source = chooseSource(in, r)
	r.SaveFirst = missedCheckpoint(in, r)
	return r, ""
}

// missedCheckpoint reports whether round r, continuing from its members' memory, starts past
// a checkpoint step whose checkpoint is not recorded as committed: the previous round ended
// with that save in flight. Its state is gone, so the round saves its own start instead. A
// save that did commit but was not reported yet is only saved again. A round that starts at
// the last step has nothing to train but the final checkpoint: the job ends only with it.
func missedCheckpoint(in planInput, r *cluster.Round) bool {
	if r.Source.Kind != cluster.SourceBroadcast && r.Source.Kind != cluster.SourceAssemble {
		return false
	}
	due := dueCheckpoint(in.spec, r.Start)
	n := len(in.checkpoints)
	return due > 0 && (n == 0 || in.checkpoints[n-1] < due)
}

// dueCheckpoint is the newest checkpoint step at or before step (0: none): a multiple of
// checkpoint.every, or the last step, which is always saved.
func dueCheckpoint(spec *cluster.JobSpec, step int) int {
	switch {
	case step >= spec.Steps:
		return spec.Steps
	case spec.Checkpoint.Every > 0:
		return step / spec.Checkpoint.Every * spec.Checkpoint.Every
	}
	return 0
}

// microBatch is the largest divisor of a rank's share that is at most limit (0: no limit).
func microBatch(share, limit int) int {
	if limit <= 0 || limit >= share {
		return share
	}
	for m := limit; m > 1; m-- {
		if share%m == 0 {
			return m
		}
	}
	return 1
}

// chooseSource picks where round r's state comes from and the step it starts at.
func chooseSource(in planInput, r *cluster.Round) (int, cluster.Source) {
	hs := holdersOf(in, r)
	if tp := in.spec.TP; tp > 1 {
		// A complete tensor group may hold an older step than the newest checkpoint (the
		// newer steps' groups are broken): the checkpoint is then the better start.
		n := len(in.checkpoints)
		if step, src, ok := tensorBroadcastSource(hs, tp); ok && (n == 0 || step >= in.checkpoints[n-1]) {
			return step, src
		}
	} else if in.spec.Zero > 0 {
		if step, src, ok := assembleSource(hs); ok {
			return step, src
		}
	} else if step, src, ok := broadcastSource(hs); ok {
		return step, src
	}
	if n := len(in.checkpoints); n > 0 {
		return in.checkpoints[n-1], cluster.Source{Kind: cluster.SourceCheckpoint}
	}
	return 0, cluster.Source{Kind: cluster.SourceFresh}
}

// holder is a rank of the new round that holds a state.
type holder struct {
	rank int // in the new round
	st   cluster.RankState
}

// holdersOf returns the ranks of round r whose process reported a state when the previous
// round ended, in rank order.
func holdersOf(in planInput, r *cluster.Round) []holder {
	var out []holder
	for _, m := range r.Members {
		for _, st := range in.states[m.WorkerID] {
			if st.Step < 0 || st.Phase == cluster.PhaseFailed {
				continue
			}
			local := st.Rank - firstRankIn(in.prev, m.WorkerID)
			if local < 0 || local >= len(m.Ranks) {
				continue
			}
			out = append(out, holder{rank: m.FirstRank + local, st: st})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].rank < out[j].rank })
	return out
}

// broadcastSource: with replicated state, the newest step some member holds, if the members
// holding it agree on its checksum; its first holder broadcasts it.
func broadcastSource(hs []holder) (int, cluster.Source, bool) {
	var best []holder
	bestStep := -1
	for _, h := range hs {
		switch {
		case h.st.Step > bestStep:
			best, bestStep = []holder{h}, h.st.Step
		case h.st.Step == bestStep:
			best = append(best, h)
		}
	}
	if len(best) == 0 {
		return 0, cluster.Source{}, false
	}
	for _, h := range best {
		if h.st.Checksum != best[0].st.Checksum {
			return 0, cluster.Source{}, false
		}
	}
	return bestStep, cluster.Source{Kind: cluster.SourceBroadcast, Rank: best[0].rank}, true
}

// tensorBroadcastSource: under tensor parallelism each rank holds its tensor-parallel index's
// share of the state, and a rank keeps its index from round to round (the index among its
// worker's ranks, modulo tp). The round continues from the newest step that a whole
// tensor-parallel group of it holds, if every member holding that step agrees on its index's
// checksum; that group's ranks broadcast it along their data-parallel groups (Source.Rank is
// the group's first rank).
func tensorBroadcastSource(hs []holder, tp int) (int, cluster.Source, bool) {
	type share struct{ step, index int }
	sums := map[share]uint32{}
	bad := map[share]bool{}
	groups := map[[2]int]int{} // (step, group) -> holders
	for _, h := range hs {
		k := share{h.st.Step, h.rank % tp}
		if sum, ok := sums[k]; ok && sum != h.st.Checksum {
			bad[k] = true
		}
		sums[k] = h.st.Checksum
		groups[[2]int{h.st.Step, h.rank / tp}]++
	}
	best, root := -1, -1
	for k, n := range groups {
		step, g := k[0], k[1]
		if n != tp || step < best || (step == best && g*tp > root) {
			continue
		}
		agreed := true
		for j := range tp {
			agreed = agreed && !bad[share{step, j}]
		}
		if agreed {
			best, root = step, g*tp
		}
	}
	if best < 0 {
		return 0, cluster.Source{}, false
	}
	return best, cluster.Source{Kind: cluster.SourceBroadcast, Rank: root}, true
}

// assembleSource: under ZeRO each rank holds one shard of a partition, so the members can
// continue only if together they hold every shard of one partition at one step: the newest
// such step wins, each shard taken from its first holder. A lost rank takes its shard with
// it, and the round loads a checkpoint instead.
func assembleSource(hs []holder) (int, cluster.Source, bool) {
	type part struct{ step, world int }
	parts := map[part][]int{} // shard -> new rank, -1 where no member holds it
	for _, h := range hs {
		sh := h.st.Shard
		if sh == nil || sh.World < 1 || sh.Rank < 0 || sh.Rank >= sh.World {
			continue
		}
		k := part{h.st.Step, sh.World}
		if parts[k] == nil {
			parts[k] = slices.Repeat([]int{-1}, sh.World)
		}
		if parts[k][sh.Rank] < 0 {
			parts[k][sh.Rank] = h.rank
		}
	}
	var best *part
	for k, holders := range parts {
		if slices.Contains(holders, -1) {
			continue
		}
		if best == nil || k.step > best.step || (k.step == best.step && k.world < best.world) {
			best = &k
		}
	}
	if best == nil {
		return 0, cluster.Source{}, false
	}
	return best.step, cluster.Source{Kind: cluster.SourceAssemble, World: best.world, Holders: parts[*best]}, true
}

// firstRankIn returns the first rank worker id had in round r, or -1.
func firstRankIn(r *cluster.Round, id string) int {
	if r == nil {
		return -1
	}
	if m, ok := r.Member(id); ok {
		return m.FirstRank
	}
	return -1
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
