package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/cluster"
)

// leadership runs the leader's duties while this replica leads, and keeps every replica's
// view of who leads.
func (c *Coordinator) leadership(ctx context.Context) {
	var cancel context.CancelFunc
	done := make(chan struct{})
	close(done)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		lead := c.node.r.State() == raft.Leader
		c.mu.Lock()
		was := c.leading
		c.leading = lead
		c.mu.Unlock()
		switch {
		case lead && !was:
			var lctx context.Context
			lctx, cancel = context.WithCancel(ctx)
			done = make(chan struct{})
			go func() { defer close(done); c.lead(lctx) }()
		case !lead && was:
			cancel()
			<-done
			c.say("coordinator: %s is no longer the leader", c.cfg.RaftID)
		}
		c.followLeader(ctx)
		if c.fsm.snapshot().Done {
			c.markDone()
		}
		select {
		case <-ctx.Done():
			if cancel != nil {
				cancel()
			}
			<-done
			return
		case <-tick.C:
		}
	}
}

// followLeader records the leader's API address (from etcd) and closes Ready once known.
func (c *Coordinator) followLeader(ctx context.Context) {
	_, id := c.node.r.LeaderWithID()
	if id == "" {
		return
	}
	api := ""
	if string(id) == c.cfg.RaftID {
		api = c.addr
	} else {
		gctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := c.etcd.cli.Get(gctx, cluster.LeaderKey(c.spec.Name))
		cancel()
		if err == nil && len(resp.Kvs) > 0 {
			var rec leaderRecord
			if json.Unmarshal(resp.Kvs[0].Value, &rec) == nil && rec.ID == string(id) {
				api = rec.API
			}
		}
	}
	if api == "" {
		return
	}
	c.mu.Lock()
	c.leaderAPI = api
	c.mu.Unlock()
	select {
	case <-c.ready:
	default:
		if c.fsm.snapshot().Token != "" {
			close(c.ready)
		}
	}
}

// leaderRecord is the value of the job's leader key in etcd.
type leaderRecord struct {
	ID  string `json:"id"`
	API string `json:"api"`
}

// leaderState is what the leader's round loop remembers between decisions.
type leaderState struct {
	minSince  time.Time            // enough workers for a first round since
	growSince time.Time            // a bigger round possible since
	failSince time.Time            // the current round failed since
	endSince  time.Time            // the current round was asked to end since
	waiting   string               // the last reason printed for not forming a round
	loc       *checkpoint.Location // the job's checkpoint location, when it has one
	synced    uint64               // the round whose successor was planned with the location's commits
}

// lead runs while this replica leads: it publishes its address, leases the checkpoint
// location for the job, and forms rounds.
func (c *Coordinator) lead(ctx context.Context) {
	if err := c.node.r.Barrier(10 * time.Second).Error(); err != nil {
		c.log.Warn("raft barrier", zap.Error(err))
		return
	}
	if err := c.checkSpec(); err != nil {
		c.fail(err)
		return
	}
	if c.fsm.snapshot().Token == "" {
		tok := c.spec.Token
		if tok == "" {
			tok = randomHex(16)
		}
		if err := c.apply(command{Op: opToken, Token: tok}); err != nil {
			c.log.Warn("recording the token", zap.Error(err))
			return
		}
	}
	if err := c.publishLeader(ctx); err != nil {
		c.log.Warn("publishing the leader address", zap.Error(err))
		return
	}
	var ckptLoc *checkpoint.Location
	if c.cfg.Checkpoint != nil {
		lease, loc, err := c.leaseCheckpoint(ctx)
		if err != nil {
			c.fail(err)
			return
		}
		defer func() {
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			lease.Release(rctx)
			cancel()
		}()
		if err := c.adoptCheckpoints(ctx, loc); err != nil {
			c.fail(err)
			return
		}
		ckptLoc = &loc
	}
	s := c.fsm.snapshot()
	c.say("coordinator: %s leads job %s (%d steps, step %d done); join workers with:\n  herd worker --join %s --token %s",
		c.cfg.RaftID, c.spec.Name, c.spec.Steps, s.LastStep, c.addr, s.Token)
	ls := &leaderState{loc: ckptLoc}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := c.decide(ls, time.Now()); err != nil {
			c.log.Warn("forming a round", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-c.changes():
		case <-tick.C:
		}
	}
}

// publishLeader writes the leader record under a lease this replica keeps alive, so it
// lapses when the replica dies.
func (c *Coordinator) publishLeader(ctx context.Context) error {
	lease, err := c.etcd.cli.Grant(ctx, 5)
	if err != nil {
		return err
	}
	raw, _ := json.Marshal(leaderRecord{ID: c.cfg.RaftID, API: c.addr})
	if _, err := c.etcd.cli.Put(ctx, cluster.LeaderKey(c.spec.Name), string(raw), clientv3.WithLease(lease.ID)); err != nil {
		return err
	}
	ka, err := c.etcd.cli.KeepAlive(ctx, lease.ID)
	if err != nil {
		return err
	}
	go func() {
		for range ka {
		}
	}()
	return nil
}

// leaseCheckpoint leases the job's checkpoint location: one job writes it. A lease held by
// this job's coordinator (a replica that led before) is taken over.
func (c *Coordinator) leaseCheckpoint(ctx context.Context) (*checkpoint.Lease, checkpoint.Location, error) {
	loc, err := c.cfg.Checkpoint(ctx)
	if err != nil {
		return nil, loc, fmt.Errorf("coordinator: checkpoint.uri: %w", err)
	}
	what := "herd coordinator, job " + c.spec.Name
	lease, err := checkpoint.AcquireLease(ctx, loc, checkpoint.ThisProcess(what), checkpoint.LeaseOptions{
		TakeOver: func(h checkpoint.Holder) bool { return h.What == what },
		Log:      func(s string) { c.say("%s", s) },
	})
	if err != nil {
		return nil, loc, fmt.Errorf("coordinator: checkpoint.uri: %w", err)
	}
	return lease, loc, nil
}

// adoptCheckpoints resumes a job whose log is new (a first start, or a data directory that
// was lost) from the committed checkpoints its location already holds.
func (c *Coordinator) adoptCheckpoints(ctx context.Context, loc checkpoint.Location) error {
	if s := c.fsm.snapshot(); len(s.Checkpoints) > 0 || s.Round != nil {
		return nil
	}
	steps, err := checkpoint.ListSteps(ctx, loc)
	if err != nil {
		return fmt.Errorf("coordinator: checkpoint.uri: %w", err)
	}
	var found []int
	for _, st := range steps {
		if st.Committed {
			found = append(found, st.Step)
		}
	}
	if len(found) == 0 {
		return nil
	}
	c.say("coordinator: %v holds committed checkpoints up to step %d: the job continues from there", loc, found[len(found)-1])
	return c.apply(command{Op: opAdopt, Adopted: found})
}

// syncCheckpoints records the checkpoints committed in loc after the newest the log knows:
// rank 0 reports each commit through its worker, and a worker lost right after a commit takes
// the report with it. A location that cannot be listed now leaves the log as it is.
func (c *Coordinator) syncCheckpoints(loc checkpoint.Location) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	steps, err := checkpoint.ListSteps(ctx, loc)
	if err != nil {
		c.log.Warn("listing the checkpoint location", zap.Error(err))
		return
	}
	for _, st := range steps {
		if s := c.fsm.snapshot(); st.Committed && st.Step > s.LastCheckpoint() {
			c.say("coordinator: checkpoint of step %d found committed in %v (its report was lost)", st.Step, loc)
			if err := c.apply(command{Op: opCheckpoint, Checkpoint: st.Step}); err != nil {
				c.log.Warn("recording a checkpoint", zap.Error(err))
				return
			}
		}
	}
}

// reportWait bounds how long a failed or ending round waits for its members' reports.
func (c *Coordinator) reportWait() time.Duration {
	return max(3*time.Second, c.spec.Workers.LeaseTTL.D())
}

// decide forms the next round when the current one must change.
func (c *Coordinator) decide(ls *leaderState, now time.Time) error {
	s := c.fsm.snapshot()
	if s.Done {
		c.markDone()
		return nil
	}
	live := c.liveInOrder()
	cur := s.Round
	if cur == nil {
		r, why := c.plan(live, nil, s, 1, now)
		if r == nil {
			ls.minSince = time.Time{}
			c.waitingFor(ls, why)
			return nil
		}
		if ls.minSince.IsZero() {
			ls.minSince = now
		}
		if len(r.Members) < c.spec.Workers.Max && now.Sub(ls.minSince) < c.spec.Workers.LastCall.D() {
			return nil // last call: more workers may be on their way
		}
		return c.form(ls, r, false, "the job starts")
	}
	liveSet := map[string]bool{}
	for _, r := range live {
		liveSet[r.WorkerID] = true
	}
	states := c.roundStates(cur.ID)
	var lost, failed []string
	reported := true
	for _, m := range cur.Members {
		if !liveSet[m.WorkerID] {
			lost = append(lost, m.WorkerID)
			continue
		}
		sts := states[m.WorkerID]
		ended := len(sts) == len(m.Ranks)
		for _, st := range sts {
			if st.Phase == cluster.PhaseFailed || st.Phase == cluster.PhaseStopped {
				failed = append(failed, fmt.Sprintf("%s rank %d: %s", m.WorkerID, st.Rank, firstLine(st.Error)))
			}
			if st.Phase == cluster.PhaseTraining {
				ended = false
			}
		}
		if !ended {
			reported = false
		}
	}
	switch {
	case s.Ending == cur.ID && len(lost) == 0:
		// Asked to end (scale up): every rank stops after its step and reports its state.
		if ls.endSince.IsZero() {
			ls.endSince = now
		}
		if !reported && now.Sub(ls.endSince) < c.reportWait() {
			return nil
		}
		return c.next(ls, cur, live, s, now, false, s.EndReason)
	case len(lost) > 0 || len(failed) > 0:
		if ls.failSince.IsZero() {
			ls.failSince = now
			why := ""
			if len(lost) > 0 {
				why = "lost " + strings.Join(lost, ", ")
			} else {
				why = failed[0]
			}
			c.say("coordinator: round %d failed (%s); waiting for the survivors' state", cur.ID, why)
		}
		if !reported && now.Sub(ls.failSince) < c.reportWait() {
			return nil
		}
		return c.next(ls, cur, live, s, now, true, "recovery: "+strings.Join(append(lost, failed...), "; "))
	}
	if r, _ := c.plan(live, cur, s, cur.ID+1, now); r != nil && len(r.Members) > len(cur.Members) {
		if ls.growSince.IsZero() {
			ls.growSince = now
		}
		if len(r.Members) == c.spec.Workers.Max || now.Sub(ls.growSince) >= c.spec.Workers.LastCall.D() {
			ls.endSince = now
			return c.apply(command{Op: opEnd, End: cur.ID,
				Reason: fmt.Sprintf("scale up from %d to %d workers", len(cur.Members), len(r.Members))})
		}
	} else {
		ls.growSince = time.Time{}
	}
	return nil
}

// next forms the round after cur from the live workers that are not known to be broken:
// a member of cur that did not report after cur failed is left out of the next round (it
// rejoins the one after, if it is alive).
func (c *Coordinator) next(ls *leaderState, cur *cluster.Round, live []cluster.Registration, s JobState, now time.Time, recovery bool, reason string) error {
	states := c.roundStates(cur.ID)
	var usable []cluster.Registration
	for _, reg := range live {
		m, inCur := cur.Member(reg.WorkerID)
		if inCur && len(states[reg.WorkerID]) < len(m.Ranks) {
			continue
		}
		usable = append(usable, reg)
	}
	if ls.loc != nil && ls.synced != cur.ID {
		// A commit whose report died with its worker is still in the location.
		ls.synced = cur.ID
		c.syncCheckpoints(*ls.loc)
		s = c.fsm.snapshot()
		if s.LastCheckpoint() >= c.spec.Steps {
			// The workers committed the final checkpoint and died before reporting it (and
			// the last steps): the trained model is there, so the job is done; a round from
			// the last step would have nothing to train and nothing to report.
			if err := c.finish(fmt.Sprintf("the final checkpoint (step %d) was committed before the workers were lost; the metrics of steps %d to %d went with them",
				c.spec.Steps, s.LastStep+1, c.spec.Steps)); err != nil {
				return err
			}
			c.markDone()
			return nil
		}
	}
	r, why := c.plan(usable, cur, s, cur.ID+1, now)
	if r == nil {
		c.waitingFor(ls, why)
		return nil
	}
	return c.form(ls, r, recovery, reason)
}

func (c *Coordinator) plan(live []cluster.Registration, prev *cluster.Round, s JobState, id uint64, now time.Time) (*cluster.Round, string) {
	var states map[string][]cluster.RankState
	if prev != nil {
		states = c.roundStates(prev.ID)
	}
	return planRound(planInput{spec: c.spec, live: live, prev: prev, states: states, checkpoints: s.Checkpoints, lastStep: s.LastStep}, id, now)
}

func (c *Coordinator) waitingFor(ls *leaderState, why string) {
	if why != ls.waiting {
		c.say("coordinator: %s", why)
		ls.waiting = why
	}
}

// form records round r in the log and publishes it (without its secret) in etcd.
func (c *Coordinator) form(ls *leaderState, r *cluster.Round, recovery bool, reason string) error {
	r.Reason = reason
	if err := c.apply(command{Op: opRound, Round: r, Recovery: recovery}); err != nil {
		return err
	}
	*ls = leaderState{loc: ls.loc, synced: ls.synced}
	c.mu.Lock()
	for id := range c.states {
		if id+1 < r.ID {
			delete(c.states, id) // only the previous round's reports can matter now
		}
	}
	c.mu.Unlock()
	pub := *r
	pub.Secret = ""
	raw, _ := json.Marshal(pub)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.etcd.cli.Put(ctx, cluster.RoundKey(c.spec.Name), string(raw)); err != nil {
		c.log.Warn("publishing the round", zap.Error(err))
	}
	var ids []string
	for _, m := range r.Members {
		ids = append(ids, m.WorkerID)
	}
	src := r.Source.Kind
	switch r.Source.Kind {
	case cluster.SourceBroadcast:
		src = fmt.Sprintf("rank %d's state", r.Source.Rank)
	case cluster.SourceAssemble:
		src = fmt.Sprintf("the %d shards its ranks hold", r.Source.World)
	}
	if r.SaveFirst {
		src += fmt.Sprintf(", saved first: the checkpoint due at step %d never committed", dueCheckpoint(c.spec, r.Start))
	}
	c.say("coordinator: round %d: %d workers (%s), %d ranks, micro-batch %d, from step %d (%s); %s",
		r.ID, len(r.Members), strings.Join(ids, ", "), r.World, r.Micro, r.Start, src, reason)
	return nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// roundStates returns a copy of what the members of round id reported.
func (c *Coordinator) roundStates(id uint64) map[string][]cluster.RankState {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string][]cluster.RankState, len(c.states[id]))
	for w, st := range c.states[id] {
		out[w] = st
	}
	return out
}

// checkSpec records the job file in the log the first time, and refuses to lead a job whose
// recorded file differs from this replica's: replicas must run the same job.
func (c *Coordinator) checkSpec() error {
	raw, _ := json.Marshal(c.spec)
	s := c.fsm.snapshot()
	if s.Spec == "" {
		return c.apply(command{Op: opSpec, Spec: string(raw)})
	}
	if s.Spec == string(raw) {
		return nil
	}
	var rec cluster.JobSpec
	json.Unmarshal([]byte(s.Spec), &rec)
	return fmt.Errorf("coordinator: %s's job file differs from the one job %s was started with (%s); every replica needs the same file",
		c.cfg.RaftID, c.spec.Name, specDiff(&rec, c.spec))
}

// specDiff names the first top-level field that differs between two job specs.
func specDiff(a, b *cluster.JobSpec) string {
	var ma, mb map[string]json.RawMessage
	ra, _ := json.Marshal(a)
	rb, _ := json.Marshal(b)
	json.Unmarshal(ra, &ma)
	json.Unmarshal(rb, &mb)
	keys := make([]string, 0, len(ma))
	for k := range ma {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if string(ma[k]) != string(mb[k]) {
			return fmt.Sprintf("%s: %s, now %s", k, ma[k], mb[k])
		}
	}
	return "the files differ"
}
