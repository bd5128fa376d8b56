package coordinator

import (
	"fmt"
	"testing"
	"time"

	"github.com/herd-llm/herd/cluster"
)

func regs(n int) []cluster.Registration {
	var out []cluster.Registration
	for i := 0; i < n; i++ {
		out = append(out, cluster.Registration{WorkerID: fmt.Sprintf("w%d", i), Ranks: []string{fmt.Sprintf("h%d:1", i), fmt.Sprintf("h%d:2", i)}})
	}
	return out
}

func testSpec(min, max, nproc, batch, micro int) *cluster.JobSpec {
	return &cluster.JobSpec{Batch: batch, MicroBatch: micro, Workers: cluster.WorkersSpec{Min: min, Max: max, NprocPerNode: nproc}}
}

func TestPlanRoundSize(t *testing.T) {
	for _, c := range []struct {
		live, min, max, nproc, batch int
		want                         int // workers in the round; 0: none
	}{
		{3, 2, 4, 1, 12, 3},
		{4, 2, 4, 1, 12, 4},
		{5, 2, 4, 1, 12, 4},
		{5, 1, 8, 1, 12, 4}, // 5 does not divide 12
		{1, 2, 4, 1, 12, 0},
		{3, 2, 3, 2, 12, 3}, // 6 ranks
		{3, 2, 3, 2, 8, 2},  // 6 does not divide 8; 4 does
		{3, 3, 3, 2, 8, 0},
	} {
		r, why := planRound(planInput{spec: testSpec(c.min, c.max, c.nproc, c.batch, 0), live: regs(c.live)}, 1, time.Now())
		got := 0
		if r != nil {
			got = len(r.Members)
			if r.World != got*c.nproc || c.batch%r.World != 0 || r.Micro != c.batch/r.World {
				t.Errorf("%+v: world %d micro %d", c, r.World, r.Micro)
			}
		} else if why == "" {
			t.Errorf("%+v: no round and no reason", c)
		}
		if got != c.want {
			t.Errorf("%+v: %d workers, want %d", c, got, c.want)
		}
	}
}

func TestMicroBatch(t *testing.T) {
	for _, c := range []struct{ share, limit, want int }{{6, 0, 6}, {6, 4, 3}, {6, 6, 6}, {7, 3, 1}, {8, 3, 2}, {12, 5, 4}} {
		if got := microBatch(c.share, c.limit); got != c.want {
			t.Errorf("microBatch(%d, %d) = %d, want %d", c.share, c.limit, got, c.want)
		}
	}
}

// The round continues from the newest step its members hold, broadcast by the lowest new
// rank holding it; disagreement or no state falls back to the checkpoint, then to fresh.
func TestPlanRoundSource(t *testing.T) {
	spec := testSpec(1, 4, 2, 12, 0)
	live := regs(3)
	prev := &cluster.Round{ID: 4, Members: []cluster.Member{
		{WorkerID: "w0", FirstRank: 0}, {WorkerID: "gone", FirstRank: 2}, {WorkerID: "w1", FirstRank: 4}}}
	st := func(rank, step int, sum uint32) cluster.RankState {
		return cluster.RankState{Rank: rank, Step: step, Checksum: sum, Phase: cluster.PhaseStopped}
	}
	cases := []struct {
		name   string
		states map[string][]cluster.RankState
		ckpts  []int
		start  int
		source cluster.Source
	}{
		{"newest step wins", map[string][]cluster.RankState{"w0": {st(0, 40, 7), st(1, 40, 7)}, "w1": {st(4, 41, 9), st(5, 41, 9)}}, []int{30},
			41, cluster.Source{Kind: cluster.SourceBroadcast, Rank: 2}},
		{"one rank ahead", map[string][]cluster.RankState{"w0": {st(0, 40, 7), st(1, 41, 8)}, "w1": {st(4, 40, 7)}}, nil,
			41, cluster.Source{Kind: cluster.SourceBroadcast, Rank: 1}},
		{"disagreement", map[string][]cluster.RankState{"w0": {st(0, 40, 7)}, "w1": {st(4, 40, 8)}}, []int{30},
			30, cluster.Source{Kind: cluster.SourceCheckpoint}},
		{"no state, checkpoint", map[string][]cluster.RankState{"w0": {{Rank: 0, Step: -1, Phase: cluster.PhaseFailed}}}, []int{10, 20},
			20, cluster.Source{Kind: cluster.SourceCheckpoint}},
		{"nothing at all", nil, nil, 0, cluster.Source{Kind: cluster.SourceFresh}},
		{"state of a worker left out is not used", map[string][]cluster.RankState{"gone": {st(2, 50, 1)}}, []int{20},
			20, cluster.Source{Kind: cluster.SourceCheckpoint}},
	}
	for _, c := range cases {
		r, _ := planRound(planInput{spec: spec, live: live, prev: prev, states: c.states, checkpoints: c.ckpts}, 5, time.Now())
		if r == nil {
			t.Fatalf("%s: no round", c.name)
		}
		if r.Start != c.start || !r.Source.Equal(c.source) {
			t.Errorf("%s: start %d source %+v, want %d %+v", c.name, r.Start, r.Source, c.start, c.source)
		}
	}
}

// Under ZeRO the members continue from their shards only when together they hold every shard
// of one partition at one step; checksums, which differ from shard to shard, do not matter.
func TestPlanRoundSourceZeRO(t *testing.T) {
	spec := testSpec(1, 4, 2, 12, 0)
	spec.Zero = 2
	live := regs(3)
	prev := &cluster.Round{ID: 4, Members: []cluster.Member{
		{WorkerID: "w0", FirstRank: 0}, {WorkerID: "gone", FirstRank: 2}, {WorkerID: "w1", FirstRank: 4}}}
	st := func(rank, step, world, shard int) cluster.RankState {
		return cluster.RankState{Rank: rank, Step: step, Checksum: uint32(100 + shard), Phase: cluster.PhaseStopped,
			Shard: &cluster.ShardOf{World: world, Rank: shard}}
	}
	cases := []struct {
		name   string
		states map[string][]cluster.RankState
		start  int
		source cluster.Source
	}{
		{"every shard held", map[string][]cluster.RankState{"w0": {st(0, 40, 4, 0), st(1, 40, 4, 1)}, "w1": {st(4, 40, 4, 2), st(5, 40, 4, 3)}},
			40, cluster.Source{Kind: cluster.SourceAssemble, World: 4, Holders: []int{0, 1, 2, 3}}},
		{"shards in another order", map[string][]cluster.RankState{"w0": {st(0, 40, 4, 3), st(1, 40, 4, 2)}, "w1": {st(4, 40, 4, 1), st(5, 40, 4, 0)}},
			40, cluster.Source{Kind: cluster.SourceAssemble, World: 4, Holders: []int{3, 2, 1, 0}}},
		{"a shard lost with its worker", map[string][]cluster.RankState{"w0": {st(0, 40, 6, 0), st(1, 40, 6, 1)}, "gone": {st(2, 40, 6, 2), st(3, 40, 6, 3)},
			"w1": {st(4, 40, 6, 4), st(5, 40, 6, 5)}}, 30, cluster.Source{Kind: cluster.SourceCheckpoint}},
		{"a shard a step ahead", map[string][]cluster.RankState{"w0": {st(0, 40, 4, 0), st(1, 40, 4, 1)}, "w1": {st(4, 40, 4, 2), st(5, 41, 4, 3)}},
			30, cluster.Source{Kind: cluster.SourceCheckpoint}},
		{"replicated states are not shards", map[string][]cluster.RankState{"w0": {{Rank: 0, Step: 40, Checksum: 7, Phase: cluster.PhaseStopped}}},
			30, cluster.Source{Kind: cluster.SourceCheckpoint}},
		{"one process held everything", map[string][]cluster.RankState{"w1": {st(4, 40, 1, 0)}},
			40, cluster.Source{Kind: cluster.SourceAssemble, World: 1, Holders: []int{2}}},
	}
	for _, c := range cases {
		r, _ := planRound(planInput{spec: spec, live: live, prev: prev, states: c.states, checkpoints: []int{30}}, 5, time.Now())
		if r == nil {
			t.Fatalf("%s: no round", c.name)
		}
		if r.Start != c.start || !r.Source.Equal(c.source) {
			t.Errorf("%s: start %d source %+v, want %d %+v", c.name, r.Start, r.Source, c.start, c.source)
		}
	}
}

// A round that continues from memory past a checkpoint step whose checkpoint is not recorded
// saves its start first; one that loads a checkpoint, starts fresh or finds the checkpoint
// recorded does not.
func TestPlanRoundSaveFirst(t *testing.T) {
	spec := testSpec(1, 4, 2, 12, 0)
	spec.Steps, spec.Checkpoint.Every = 100, 10
	live := regs(2)
	prev := &cluster.Round{ID: 1, Members: []cluster.Member{{WorkerID: "w0", FirstRank: 0}, {WorkerID: "w1", FirstRank: 2}}}
	held := func(step int) map[string][]cluster.RankState {
		return map[string][]cluster.RankState{"w0": {{Rank: 0, Step: step, Checksum: 1, Phase: cluster.PhaseStopped}}}
	}
	for _, c := range []struct {
		name   string
		states map[string][]cluster.RankState
		ckpts  []int
		want   bool
	}{
		{"due checkpoint missing", held(21), []int{10}, true},
		{"due checkpoint recorded", held(21), []int{10, 20}, false},
		{"on the checkpoint step, not recorded", held(20), []int{10}, true},
		{"before the first checkpoint", held(9), nil, false},
		{"from a checkpoint", nil, []int{10}, false},
		{"fresh", nil, nil, false},
		{"at the last step, its checkpoint missing", held(100), []int{90}, true},
		{"at the last step, its checkpoint recorded", held(100), []int{90, 100}, false},
	} {
		in := planInput{spec: spec, live: live, prev: prev, states: c.states, checkpoints: c.ckpts}
		r, _ := planRound(in, 2, time.Now())
		if r == nil {
			t.Fatalf("%s: no round", c.name)
		}
		if r.SaveFirst != c.want {
			t.Errorf("%s: start %d (%s), save first %v, want %v", c.name, r.Start, r.Source.Kind, r.SaveFirst, c.want)
		}
	}
}

// Under tensor parallelism (tp 2, two ranks per worker: each worker one tensor group) a
// round continues from memory only where a whole tensor group holds the newest step and the
// holders of each share agree; the group's first rank is the root, and the micro-batch
// follows the data-parallel replicas, not the ranks.
func TestPlanRoundSourceTensorParallel(t *testing.T) {
	spec := testSpec(1, 4, 2, 12, 0)
	spec.TP = 2
	live := regs(3)
	for i := range live {
		live[i].TPRanks, live[i].DPRanks = []string{"t:1", "t:2"}, []string{"d:1", "d:2"}
	}
	prev := &cluster.Round{ID: 4, Members: []cluster.Member{
		{WorkerID: "w0", FirstRank: 0}, {WorkerID: "gone", FirstRank: 2}, {WorkerID: "w1", FirstRank: 4}}}
	st := func(rank, step int, sum uint32) cluster.RankState {
		return cluster.RankState{Rank: rank, Step: step, Checksum: sum, Phase: cluster.PhaseStopped}
	}
	broadcast := func(root int) cluster.Source { return cluster.Source{Kind: cluster.SourceBroadcast, Rank: root} }
	cases := []struct {
		name   string
		states map[string][]cluster.RankState
		start  int
		source cluster.Source
	}{
		{"two replicas", map[string][]cluster.RankState{"w0": {st(0, 40, 1), st(1, 40, 2)}, "w1": {st(4, 40, 1), st(5, 40, 2)}},
			40, broadcast(0)},
		{"the newest step in one replica only", map[string][]cluster.RankState{"w0": {st(0, 40, 1), st(1, 40, 2)}, "w1": {st(4, 41, 3), st(5, 41, 4)}},
			41, broadcast(2)},
		{"a share a step ahead", map[string][]cluster.RankState{"w0": {st(0, 40, 1), st(1, 41, 2)}},
			30, cluster.Source{Kind: cluster.SourceCheckpoint}},
		{"replicas disagree", map[string][]cluster.RankState{"w0": {st(0, 40, 1), st(1, 40, 2)}, "w1": {st(4, 40, 1), st(5, 40, 9)}},
			30, cluster.Source{Kind: cluster.SourceCheckpoint}},
		{"half a group", map[string][]cluster.RankState{"w1": {st(5, 40, 2)}},
			30, cluster.Source{Kind: cluster.SourceCheckpoint}},
	}
	for _, c := range cases {
		r, _ := planRound(planInput{spec: spec, live: live, prev: prev, states: c.states, checkpoints: []int{30}}, 5, time.Now())
		if r == nil {
			t.Fatalf("%s: no round", c.name)
		}
		if r.Start != c.start || !r.Source.Equal(c.source) {
			t.Errorf("%s: start %d source %+v, want %d %+v", c.name, r.Start, r.Source, c.start, c.source)
		}
		if r.World != 6 || r.Micro != 4 {
			t.Errorf("%s: %d ranks, micro-batch %d; want 6 ranks as 3 replicas of 4 sequences", c.name, r.World, r.Micro)
		}
		if tpPeers, dpPeers := r.MeshPeers(5, 2); len(tpPeers) != 2 || len(dpPeers) != 3 || dpPeers[2] != "d:2" {
			t.Errorf("%s: rank 5's mesh peers %v %v", c.name, tpPeers, dpPeers)
		}
	}
}
