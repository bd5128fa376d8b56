package coordinator

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/herd-llm/herd/cluster"
	"github.com/herd-llm/herd/internal/dashboard"
)

// longPoll bounds how long GET /v1/round waits for news.
const longPoll = 20 * time.Second

func (c *Coordinator) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+cluster.PathJoin, c.worker(c.handleJoin))
	mux.HandleFunc("GET "+cluster.PathRound, c.worker(c.handleRound))
	mux.HandleFunc("POST "+cluster.PathReport, c.worker(c.handleReport))
	mux.HandleFunc("POST "+cluster.PathLeave, c.worker(c.handleLeave))
	mux.HandleFunc("GET "+cluster.PathStatus, c.handleStatus)
	mux.Handle("GET /metrics", c.met.handler())
	dashboard.Register(mux, func() any { return c.Status() }, c.metricsPath)
	return mux
}

// refuse answers a request with a cluster.Error.
func refuse(w http.ResponseWriter, status int, e cluster.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(e)
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// worker wraps the handlers that workers call: a follower sends them to the leader, and the
// leader checks the job's token.
func (c *Coordinator) worker(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		leading, leader := c.leading, c.leaderAPI
		c.mu.Unlock()
		if !leading {
			if leader == "" || leader == c.addr {
				refuse(w, http.StatusServiceUnavailable, cluster.Error{Code: "not-leader", Message: "no leader yet"})
				return
			}
			http.Redirect(w, r, "http://"+leader+r.URL.RequestURI(), http.StatusTemporaryRedirect)
			return
		}
		tok := c.fsm.snapshot().Token
		if tok == "" {
			// A new leader that has not recorded the job's token yet: ask again in a moment.
			refuse(w, http.StatusServiceUnavailable, cluster.Error{Code: "not-leader", Message: "the leader is starting"})
			return
		}
		got := strings.TrimPrefix(r.Header.Get(cluster.TokenHeader), "Bearer ")
		if subtle.ConstantTimeCompare([]byte(got), []byte(tok)) != 1 {
			c.say("coordinator: refused %s %s from %s: wrong token", r.Method, r.URL.Path, r.RemoteAddr)
			refuse(w, http.StatusUnauthorized, cluster.Error{Code: "token", Message: "wrong token for job " + c.spec.Name})
			return
		}
		h(w, r)
	}
}

func (c *Coordinator) handleJoin(w http.ResponseWriter, r *http.Request) {
	var req cluster.JoinRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		refuse(w, http.StatusBadRequest, cluster.Error{Code: "bad-request", Message: err.Error()})
		return
	}
	if req.Job != "" && req.Job != c.spec.Name {
		c.say("coordinator: refused a worker of job %q from %s (this is job %s)", req.Job, r.RemoteAddr, c.spec.Name)
		refuse(w, http.StatusForbidden, cluster.Error{Code: "job", Message: fmt.Sprintf("this coordinator runs job %s, not %s", c.spec.Name, req.Job)})
		return
	}
	if why := c.cannotRun(req); why != "" {
		c.say("coordinator: refused worker %s from %s: %s", req.Host, r.RemoteAddr, why)
		refuse(w, http.StatusForbidden, cluster.Error{Code: "cannot-run", Message: why})
		return
	}
	if c.fsm.snapshot().Done {
		refuse(w, http.StatusGone, cluster.Error{Code: "done", Message: "job " + c.spec.Name + " has finished"})
		return
	}
	spec, _ := json.Marshal(c.spec)
	host := req.Host
	if host == "" {
		host = "worker"
	}
	reply(w, cluster.JoinResponse{WorkerID: host + "-" + randomHex(3), Job: c.spec.Name, Etcd: c.etcd.endpoints,
		LeaseTTL: c.spec.Workers.LeaseTTL.D().Seconds(), Spec: spec})
}

// cannotRun says why a worker cannot take part in the job, or "".
func (c *Coordinator) cannotRun(req cluster.JoinRequest) string {
	w := c.spec.Workers
	switch {
	case req.Backend != w.Backend:
		return fmt.Sprintf("the job runs on the %s backend, the worker offers %s", w.Backend, req.Backend)
	case w.Backend == "cuda" && req.Devices < w.NprocPerNode:
		return fmt.Sprintf("the job runs %d ranks per worker, one per GPU; the worker has %d GPUs", w.NprocPerNode, req.Devices)
	case req.Slots < w.NprocPerNode:
		return fmt.Sprintf("the job runs %d ranks per worker (workers.nproc_per_node); the worker offers %d (--nproc-per-node)", w.NprocPerNode, req.Slots)
	}
	return ""
}

// handleRound answers a long poll: the newest round when it is newer than ?after, whether
// the current round is asked to end, or that the job is done.
func (c *Coordinator) handleRound(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("worker")
	after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
	deadline := time.NewTimer(longPoll)
	defer deadline.Stop()
	for {
		ch := c.changes()
		s := c.fsm.snapshot()
		c.mu.Lock()
		c.lastSeen[id] = time.Now()
		c.mu.Unlock()
		switch {
		case s.Done:
			reply(w, cluster.RoundResponse{Done: true})
			return
		case s.Round != nil && s.Round.ID > after:
			if _, in := s.Round.Member(id); in {
				reply(w, cluster.RoundResponse{Round: s.Round})
			} else {
				pub := *s.Round
				pub.Secret = ""
				reply(w, cluster.RoundResponse{Round: &pub, Spare: true})
			}
			return
		case s.Round != nil && s.Ending == s.Round.ID && s.Round.ID == after:
			reply(w, cluster.RoundResponse{Ending: s.Round.ID})
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			reply(w, cluster.RoundResponse{})
			return
		case <-r.Context().Done():
			return
		}
	}
}

func (c *Coordinator) handleReport(w http.ResponseWriter, r *http.Request) {
	var rep cluster.Report
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<20)).Decode(&rep); err != nil {
		refuse(w, http.StatusBadRequest, cluster.Error{Code: "bad-request", Message: err.Error()})
		return
	}
	if err := c.onReport(rep); err != nil {
		if errors.Is(err, cluster.ErrNotLeader) {
			refuse(w, http.StatusServiceUnavailable, cluster.Error{Code: "not-leader", Message: err.Error()})
			return
		}
		refuse(w, http.StatusInternalServerError, cluster.Error{Code: "internal", Message: err.Error()})
		return
	}
	reply(w, struct{}{})
}

// onReport records a worker's news: its ranks' states, step lines and checkpoints.
func (c *Coordinator) onReport(rep cluster.Report) error {
	c.mu.Lock()
	c.lastSeen[rep.WorkerID] = time.Now()
	if len(rep.Ranks) > 0 {
		if c.states[rep.Round] == nil {
			c.states[rep.Round] = map[string][]cluster.RankState{}
		}
		c.states[rep.Round][rep.WorkerID] = rep.Ranks
	}
	c.mu.Unlock()
	if len(rep.Steps) > 0 {
		if err := c.apply(command{Op: opSteps, Steps: rep.Steps, StepsRound: rep.Round}); err != nil {
			return err
		}
		c.met.observeSteps(rep.Steps)
	}
	for _, step := range rep.Checkpoints {
		if err := c.apply(command{Op: opCheckpoint, Checkpoint: step}); err != nil {
			return err
		}
	}
	if s := c.fsm.snapshot(); !s.Done && s.LastStep >= c.spec.Steps && s.LastCheckpoint() >= c.spec.Steps {
		if err := c.finish(fmt.Sprintf("%d steps, final checkpoint committed", c.spec.Steps)); err != nil {
			return err
		}
	}
	c.notify()
	return nil
}

// finish records that the job is done and says so, with why and its rounds.
func (c *Coordinator) finish(why string) error {
	if err := c.apply(command{Op: opDone}); err != nil {
		return err
	}
	s := c.fsm.snapshot()
	c.say("coordinator: job %s finished: %s (%d rounds, %d recoveries, %d steps redone)", c.spec.Name, why, s.Rounds, s.Recoveries, s.Redone)
	return nil
}

func (c *Coordinator) handleLeave(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("worker")
	c.mu.Lock()
	if reg, ok := c.live[id]; ok {
		c.gone[id] = goneWorker{reg: reg, at: time.Now(), state: "left"}
	}
	delete(c.live, id)
	c.mu.Unlock()
	c.say("coordinator: worker %s is leaving", id)
	c.notify()
	reply(w, struct{}{})
}

func (c *Coordinator) handleStatus(w http.ResponseWriter, r *http.Request) {
	reply(w, c.Status())
}

// Status returns the job as this replica sees it.
func (c *Coordinator) Status() cluster.Status {
	s := c.fsm.snapshot()
	c.mu.Lock()
	leader := c.leaderAPI
	live := map[string]cluster.Registration{}
	for k, v := range c.live {
		live[k] = v
	}
	seen := map[string]time.Time{}
	for k, v := range c.lastSeen {
		seen[k] = v
	}
	var gone []cluster.WorkerStatus
	for id, g := range c.gone {
		if _, back := live[id]; !back && time.Since(g.at) < goneShown {
			gone = append(gone, cluster.WorkerStatus{WorkerID: id, Host: g.reg.Host, State: g.state, Ranks: len(g.reg.Ranks), LastSeen: seen[id]})
		}
	}
	c.mu.Unlock()
	st := cluster.Status{Job: c.spec.Name, Leader: leader, Step: s.LastStep, Steps: c.spec.Steps, Loss: s.Last.Loss,
		TokensPerS: s.Last.TokensPerS, TokensPerGPU: s.Last.PerDevice, MFU: s.Last.MFU, Checkpoint: s.LastCheckpoint(),
		Done: s.Done, Rounds: s.Rounds, Recoveries: s.Recoveries, RedoneSteps: s.Redone}
	if s.Round != nil {
		pub := *s.Round
		pub.Secret = ""
		st.Round = &pub
	}
	if s.Last.TokensPerS > 0 && s.LastStep < c.spec.Steps {
		tokensLeft := float64(c.spec.Steps-s.LastStep) * float64(c.spec.Batch*c.spec.Seq)
		st.ETA = tokensLeft / s.Last.TokensPerS
	}
	for id, reg := range live {
		state := "spare"
		if s.Round != nil {
			if _, in := s.Round.Member(id); in {
				state = "training"
			}
		}
		st.Workers = append(st.Workers, cluster.WorkerStatus{WorkerID: id, Host: reg.Host, State: state, Ranks: len(reg.Ranks), LastSeen: seen[id]})
	}
	st.Workers = append(st.Workers, gone...)
	if s.Round != nil {
		for _, m := range s.Round.Members {
			_, ok := live[m.WorkerID]
			if !ok && !slices.ContainsFunc(gone, func(g cluster.WorkerStatus) bool { return g.WorkerID == m.WorkerID }) {
				st.Workers = append(st.Workers, cluster.WorkerStatus{WorkerID: m.WorkerID, State: "lost", Ranks: len(m.Ranks), LastSeen: seen[m.WorkerID]})
			}
		}
	}
	sortWorkers(st.Workers)
	return st
}

func sortWorkers(ws []cluster.WorkerStatus) {
	sort.Slice(ws, func(i, j int) bool { return ws[i].WorkerID < ws[j].WorkerID })
}
