package worker

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
	"unsafe"

	"github.com/herd-llm/herd/checkpoint"
	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/kernels/cpu"
)

// Round sources, as the coordinator names them (cluster.Source kinds).
const (
	SourceFresh      = "fresh"
	SourceBroadcast  = "broadcast"
	SourceCheckpoint = "checkpoint"
	SourceAssemble   = "assemble"
)

// RoundStart says how a Trainer enters a round of the cluster.
type RoundStart struct {
	Comm    collective.Communicator // the round's group
	Reducer GradReducer             // optional: device-memory gradient sums
	Micro   int                     // sequences per forward/backward pass on this rank
	Start   int                     // the step the round trains first
	Source  string                  // SourceFresh, SourceBroadcast, SourceCheckpoint or SourceAssemble
	Root    int                     // with SourceBroadcast: the rank whose state everyone takes
	// With SourceAssemble (ZeRO): the state of step Start is sharded over ShardWorld ranks,
	// and Holders[i] is the rank of this round that holds shard i.
	ShardWorld int
	Holders    []int
	Attempt    string // names the round's checkpoint shards
	// SaveFirst: save a checkpoint of Start before training (the previous round passed a
	// checkpoint step whose save never committed).
	SaveFirst bool
	// Mesh, under tensor parallelism, holds the round's tensor-parallel and data-parallel
	// groups; with SourceBroadcast, Root is then the first rank of the tensor-parallel group
	// whose ranks hold the state, each sending its share along its data-parallel group.
	Mesh *Mesh
}

// JoinRound makes rs.Comm the group of the coming steps and brings every rank to the state of
// step rs.Start: from the seed (fresh), from rank rs.Root's memory (broadcast: survivors of
// the last round keep their state, newcomers and ranks a step behind receive it), under ZeRO
// from the shards the holders kept (assemble), or from the committed checkpoint of that step.
// The ranks then prove they hold identical parameters. A save still in flight from the
// previous round is abandoned first.
func (t *Trainer) JoinRound(ctx context.Context, rs RoundStart) error {
	cfg := &t.cfg
	world := 1
	if rs.Comm != nil {
		world = rs.Comm.Size()
	}
	if t.tg != nil {
		if rs.Mesh == nil || rs.Mesh.TP == nil || rs.Mesh.DP == nil || world%t.tg.size != 0 {
			return fmt.Errorf("%w: a tensor-parallel job's round of %d ranks without tensor groups of %d", ErrConfig, world, t.tg.size)
		}
		if err := t.tg.use(rs.Mesh.TP); err != nil {
			return err
		}
		cfg.Tensor.TP, cfg.Tensor.DP = rs.Mesh.TP, rs.Mesh.DP
		world /= t.tg.size
	}
	if rs.Micro <= 0 || cfg.Batch%(rs.Micro*world) != 0 {
		return fmt.Errorf("%w: micro-batch %d times %d data-parallel replicas does not divide the batch %d", ErrConfig, rs.Micro, world, cfg.Batch)
	}
	t.cancelSave()
	if t.saver != nil {
		t.saver.Wait()
	}
	if (rs.Source == SourceAssemble && t.zero == nil) || (rs.Source == SourceBroadcast && t.zero != nil) {
		return fmt.Errorf("%w: round source %q for a job with zero %d", ErrConfig, rs.Source, cfg.Zero)
	}
	// Under ZeRO, this rank's shard of the previous partition is set aside before the new
	// group's partition replaces it.
	var kept zeroKept
	if rs.Source == SourceAssemble {
		kept = t.zero.keep(rs, rankOf(rs.Comm))
	}
	cfg.MicroBatch = rs.Micro
	if err := t.setComm(rs.Comm, rs.Reducer); err != nil {
		return err
	}
	t.dp.ctx = ctx
	if rs.Source != SourceBroadcast || !t.broadcastRoot(rs) {
		t.holds = false // this rank's state is about to be overwritten
	}
	switch rs.Source {
	case SourceFresh:
		if t.zero != nil {
			t.zero.init(cfg.Model, cfg.Seed)
			break
		}
		t.model.Init(cfg.Seed)
		t.sb.pull()
		clear(t.sb.host.M)
		clear(t.sb.host.V)
		t.sb.push()
	case SourceBroadcast:
		if err := t.broadcastState(ctx, rs.Root); err != nil {
			return err
		}
	case SourceAssemble:
		if err := t.zero.assemble(ctx, kept); err != nil {
			return err
		}
	case SourceCheckpoint:
		loc := cfg.Checkpoint.Save
		if loc == nil {
			return fmt.Errorf("%w: the round loads a checkpoint, but the job has no checkpoint location", ErrConfig)
		}
		var prev RunConfig
		if _, err := checkpoint.LoadStep(ctx, *loc, rs.Start, checkResume(*cfg, t.model, t.loadBuffers, t.tok.Hash(), &prev)); err != nil {
			return fmt.Errorf("loading the checkpoint of step %d: %w", rs.Start, err)
		}
		t.adoptLoaded()
	default:
		return fmt.Errorf("%w: unknown round source %q", ErrConfig, rs.Source)
	}
	t.opt.SetSteps(rs.Start)
	t.step, t.startStep = rs.Start, rs.Start
	if err := t.dp.checkParams(rs.Start); err != nil {
		return fmt.Errorf("worker: entering the round at step %d: %w", rs.Start, err)
	}
	t.holds = true
	t.attempt = rs.Attempt
	t.newSaver(ctx)
	if rs.SaveFirst && t.saver != nil {
		// The previous round passed a checkpoint step whose save never committed.
		if _, prevErr, err := t.save(rs.Start); err != nil || prevErr != nil {
			return errors.Join(err, prevErr)
		}
	}
	t.banner()
	t.bar.start = rs.Start
	t.began = time.Now()
	return nil
}

// broadcastRoot reports whether this rank sends its state in round rs's broadcast: the root,
// or under tensor parallelism a rank of the root's tensor group.
func (t *Trainer) broadcastRoot(rs RoundStart) bool {
	r := rankOf(rs.Comm)
	if t.tg != nil {
		return r/t.tg.size == rs.Root/t.tg.size
	}
	return r == rs.Root
}

// broadcastState gives every rank root's parameters and AdamW moments. Under tensor
// parallelism root is the first rank of a tensor-parallel group, and each rank receives its
// share from that group's rank of its data-parallel group.
func (t *Trainer) broadcastState(ctx context.Context, root int) error {
	st := t.sb.pull()
	comm := t.comm
	if t.tg != nil {
		comm, root = t.cfg.Tensor.DP, root/t.tg.size
	}
	for i, buf := range [][]float32{st.Params, st.M, st.V} {
		if err := comm.Broadcast(ctx, buf, root); err != nil {
			return fmt.Errorf("worker: receiving %s from rank %d: %w", checkpoint.Buffers[i], root, err)
		}
	}
	t.sb.push()
	return nil
}

// Checksum returns a CRC-32C of the parameters: ranks holding the same state agree on it.
// Under ZeRO it covers this rank's shard only.
func (t *Trainer) Checksum() uint32 {
	if t.zero != nil {
		return t.zero.shardCRC()
	}
	return paramsCRC(t.dp)
}

// State returns the optimizer steps the state this rank holds has taken (-1: it holds none)
// and, under ZeRO, which shard of which partition it is (world 0 without ZeRO).
func (t *Trainer) State() (step, shardWorld, shardRank int) {
	if t.zero == nil {
		if !t.holds {
			return -1, 0, 0
		}
		return t.step, 0, 0
	}
	if !t.zero.holds {
		return -1, 0, 0
	}
	return t.zero.Steps(), t.zero.plan.world, t.zero.plan.rank
}

// rankOf returns comm's rank of this process (0 without a group).
func rankOf(comm collective.Communicator) int {
	if comm == nil {
		return 0
	}
	return comm.Rank()
}

// paramsCRC is the checksum dataParallel.checkParams compares across ranks.
func paramsCRC(dp *dataParallel) uint32 {
	var p []float32
	if hostBackend(dp.m) {
		p = cpu.Data[float32](dp.m.Params())
	} else {
		p = make([]float32, dp.m.Layout.Size)
		dp.m.Backend().Read32(p, dp.m.Params())
	}
	return crc32.Checksum(unsafe.Slice((*byte)(unsafe.Pointer(&p[0])), 4*len(p)), crc32.MakeTable(crc32.Castagnoli))
}
