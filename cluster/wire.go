// Package cluster is the protocol between herd's coordinator and its workers: the messages of
// the coordinator's HTTP API and a client that finds and follows the Raft leader. Both sides
// import it; neither imports the other.
//
// A worker joins with the job's token (POST /v1/join), registers itself in etcd under a lease
// it keeps alive, and long-polls for rounds (GET /v1/round). A round says who trains: the
// ranks of every member worker in order, the address each rank listens on, the ring secret,
// the step the round starts at and where its state comes from. Workers report their ranks'
// progress and state (POST /v1/report); the coordinator records steps and checkpoints in its
// Raft log and forms the next round when a worker is lost, fails, or joins.
package cluster

import (
	"encoding/json"
	"errors"
	"slices"
	"time"
)

// API paths.
const (
	PathJoin   = "/v1/join"
	PathRound  = "/v1/round"
	PathReport = "/v1/report"
	PathStatus = "/v1/status"
	PathLeave  = "/v1/leave"
)

// TokenHeader carries the job token on every worker request ("Bearer TOKEN").
const TokenHeader = "Authorization"

// Errors of the protocol. The coordinator answers a refused request with an Error body
// whose Code names one of these.
var (
	ErrToken     = errors.New("cluster: wrong token")
	ErrWrongJob  = errors.New("cluster: worker of another job")
	ErrCannotRun = errors.New("cluster: worker cannot run the job")
	ErrNotLeader = errors.New("cluster: not the leader")
	ErrUnknown   = errors.New("cluster: unknown worker")
	ErrDone      = errors.New("cluster: job finished")
)

// Error is the body of a refused request.
type Error struct {
	Code    string `json:"code"` // "token", "job", "cannot-run", "not-leader", "unknown-worker", "done", "bad-request"
	Message string `json:"message"`
	Leader  string `json:"leader,omitempty"` // with not-leader: the leader's API address, when known
}

// Etcd keys of a job, all under JobPrefix(job).
func JobPrefix(job string) string     { return "/herd/jobs/" + job + "/" }
func LeaderKey(job string) string     { return JobPrefix(job) + "leader" }
func WorkersPrefix(job string) string { return JobPrefix(job) + "workers/" }
func WorkerKey(job, id string) string { return WorkersPrefix(job) + id }
func RoundKey(job string) string      { return JobPrefix(job) + "round" }

// JoinRequest is a worker asking to take part in a job.
type JoinRequest struct {
	Job     string `json:"job"`     // the job the worker was started for ("" accepts the coordinator's)
	Host    string `json:"host"`    // host name, for people
	Backend string `json:"backend"` // cpu or cuda
	Devices int    `json:"devices"` // GPUs the worker found (0 on the CPU backend)
	Slots   int    `json:"slots"`   // rank processes it can run (one per GPU on GPU workers)
}

// JoinResponse admits a worker.
type JoinResponse struct {
	WorkerID string          `json:"worker_id"`
	Job      string          `json:"job"`
	Etcd     []string        `json:"etcd"`      // client endpoints to register with
	LeaseTTL float64         `json:"lease_ttl"` // seconds
	Spec     json.RawMessage `json:"spec"`      // the job spec (coordinator.JobSpec as JSON)
}

// Registration is a worker's etcd value, kept alive by its lease.
type Registration struct {
	WorkerID string   `json:"worker_id"`
	Host     string   `json:"host"`
	Backend  string   `json:"backend"`
	Devices  int      `json:"devices"`
	Ranks    []string `json:"ranks"`
	// TPRanks and DPRanks are where each rank listens for its tensor-parallel and
	// data-parallel groups' rings (jobs with tp > 1), in the order of Ranks.
	TPRanks []string  `json:"tp_ranks,omitempty"`
	DPRanks []string  `json:"dp_ranks,omitempty"`
	Joined  time.Time `json:"joined"`
}

// Round is one configuration of the data-parallel group.
type Round struct {
	ID      uint64   `json:"id"`
	Attempt string   `json:"attempt"` // names the round's checkpoint shards
	Members []Member `json:"members"` // in rank order
	World   int      `json:"world"`
	// Micro is the sequences per forward/backward pass on each rank.
	Micro int `json:"micro"`
	// Start is the step the round trains first (optimizer steps already done).
	Start int `json:"start"`
	// Source is where the ranks' state at Start comes from.
	Source Source `json:"source"`
	// SaveFirst asks the ranks to save a checkpoint of Start before they train: the previous
	// round passed a checkpoint step whose save never committed (a round that ends abandons
	// the save it has in flight), and the state of that step is gone.
	SaveFirst bool `json:"save_first,omitempty"`
	// Secret authenticates the ring's connections; only the API hands it out, never etcd.
	Secret string    `json:"secret,omitempty"`
	Formed time.Time `json:"formed"`
	// Reason says why the round formed, for people.
	Reason string `json:"reason"`
}

// Member is a worker's part of a round: its ranks are FirstRank, FirstRank+1, ...
type Member struct {
	WorkerID  string   `json:"worker_id"`
	FirstRank int      `json:"first_rank"`
	Ranks     []string `json:"ranks"` // listen addresses, in rank order
	// With tp > 1: the listen addresses of the ranks' tensor-parallel and data-parallel rings.
	TPRanks []string `json:"tp_ranks,omitempty"`
	DPRanks []string `json:"dp_ranks,omitempty"`
}

// Source kinds.
const (
	SourceFresh      = "fresh"      // initialize from the seed (step 0)
	SourceBroadcast  = "broadcast"  // rank Rank holds the state of step Start; it broadcasts it
	SourceCheckpoint = "checkpoint" // load the committed checkpoint of step Start
	SourceAssemble   = "assemble"   // ZeRO: the Holders put their shards of step Start together
)

// Source says where a round's state comes from.
type Source struct {
	Kind string `json:"kind"`
	Rank int    `json:"rank,omitempty"` // with broadcast
	// With assemble (ZeRO): the state was sharded over World ranks, and Holders[i] is the
	// rank of this round holding shard i; together they hold all of it.
	World   int   `json:"world,omitempty"`
	Holders []int `json:"holders,omitempty"`
}

// Equal reports whether s and o are the same source.
func (s Source) Equal(o Source) bool {
	return s.Kind == o.Kind && s.Rank == o.Rank && s.World == o.World && slices.Equal(s.Holders, o.Holders)
}

// Peers returns the listen address of every rank in order.
func (r *Round) Peers() []string {
	var out []string
	for _, m := range r.Members {
		out = append(out, m.Ranks...)
	}
	return out
}

// MeshPeers returns, for rank in a round of tp-rank tensor-parallel groups (consecutive
// ranks), the listen addresses of its tensor-parallel group's ring and of its data-parallel
// group's ring (the ranks with the same index in their tensor group), each in group order.
func (r *Round) MeshPeers(rank, tp int) (tpPeers, dpPeers []string) {
	var tpAll, dpAll []string
	for _, m := range r.Members {
		tpAll = append(tpAll, m.TPRanks...)
		dpAll = append(dpAll, m.DPRanks...)
	}
	if len(tpAll) != r.World || len(dpAll) != r.World || tp < 1 || r.World%tp != 0 {
		return nil, nil
	}
	g := rank / tp * tp
	tpPeers = tpAll[g : g+tp]
	for k := rank % tp; k < r.World; k += tp {
		dpPeers = append(dpPeers, dpAll[k])
	}
	return tpPeers, dpPeers
}

// Member returns the part of worker id in r.
func (r *Round) Member(id string) (Member, bool) {
	for _, m := range r.Members {
		if m.WorkerID == id {
			return m, true
		}
	}
	return Member{}, false
}

// RankState is what a rank process says about itself.
type RankState struct {
	Rank     int    `json:"rank"`     // its rank in the round it reports on
	Step     int    `json:"step"`     // optimizer steps its state holds; -1: no state
	Checksum uint32 `json:"checksum"` // CRC-32C of its parameters at Step (under ZeRO, of its shard's)
	// Shard, under ZeRO, says which part of the state the rank holds: shard Shard.Rank of a
	// partition over Shard.World ranks.
	Shard *ShardOf `json:"shard,omitempty"`
	Phase string   `json:"phase"` // "training", "stopped", "failed", "done"
	Error string   `json:"error,omitempty"`
}

// ShardOf names one rank's shard of a ZeRO partition.
type ShardOf struct {
	World int `json:"world"`
	Rank  int `json:"rank"`
}

// Phases of a rank.
const (
	PhaseTraining = "training"
	PhaseStopped  = "stopped" // its round ended (failed or superseded); it holds its state
	PhaseFailed   = "failed"  // the process failed; no state
	PhaseDone     = "done"
)

// Report is a worker's news: its ranks' states for a round, step metrics from the round's
// rank 0, and checkpoints it committed.
type Report struct {
	WorkerID    string            `json:"worker_id"`
	Round       uint64            `json:"round"`
	Ranks       []RankState       `json:"ranks,omitempty"`
	Steps       []json.RawMessage `json:"steps,omitempty"` // worker.StepMetrics lines, in order
	Checkpoints []int             `json:"checkpoints,omitempty"`
}

// RoundResponse answers a long poll for a round.
type RoundResponse struct {
	Round *Round `json:"round,omitempty"` // nil: no newer round yet
	Done  bool   `json:"done,omitempty"`  // the job has finished
	// Spare is set when a round exists but leaves this worker out (more workers than max,
	// or than the batch divides into).
	Spare bool `json:"spare,omitempty"`
	// Ending is the current round's id when it has been asked to end: each rank stops after
	// the step it is training and reports its state.
	Ending uint64 `json:"ending,omitempty"`
}

// Status is the coordinator's view of the job.
type Status struct {
	Job          string         `json:"job"`
	Leader       string         `json:"leader"`
	Round        *Round         `json:"round,omitempty"`
	Step         int            `json:"step"`
	Steps        int            `json:"steps"`
	Loss         float64        `json:"loss"`
	TokensPerS   float64        `json:"tokens_per_s"`
	TokensPerGPU float64        `json:"tokens_per_s_per_gpu"`
	MFU          float64        `json:"mfu,omitempty"`
	ETA          float64        `json:"eta_s"`
	Checkpoint   int            `json:"last_checkpoint"`
	Done         bool           `json:"done"`
	Workers      []WorkerStatus `json:"workers"`
	Rounds       int            `json:"rounds"`
	Recoveries   int            `json:"recoveries"`
	RedoneSteps  int            `json:"redone_steps"`
}

// WorkerStatus is one worker as the coordinator sees it.
type WorkerStatus struct {
	WorkerID string    `json:"worker_id"`
	Host     string    `json:"host"`
	State    string    `json:"state"` // "training", "spare", "joining", "lost" (its lease ended), "left" (it said so); the last two for 10 minutes
	Ranks    int       `json:"ranks"`
	LastSeen time.Time `json:"last_seen"`
}
