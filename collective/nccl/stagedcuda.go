//go:build cuda

package nccl

import (
	"fmt"

	"github.com/herd-llm/herd/collective"
	"github.com/herd-llm/herd/kernels/cuda"
)

// NewStaged returns a Device that runs host's collectives on dev's memory through a pinned host
// buffer of max(maxElems, host.Size()) float32 values, allocated here once and reused by every
// call. maxElems must be the same on every rank (it decides the chunking, and so the host
// calls). host stays owned by the caller: Close does not close it.
func NewStaged(host collective.Communicator, dev *cuda.Device, maxElems int) (*Staged, error) {
	if maxElems < 1 {
		return nil, fmt.Errorf("%w: nccl: NewStaged with maxElems %d, want at least 1", collective.ErrInvalidArgument, maxElems)
	}
	capElems := max(maxElems, host.Size())
	buf, err := dev.AllocHost(4 * int64(capElems))
	if err != nil {
		return nil, fmt.Errorf("nccl: staging buffer of %d values: %w", capElems, err)
	}
	return newStaged(host, &pinnedMover{dev: dev, buf: buf}, buf.Float32s()), nil
}

// pinnedMover copies through a cuda.HostBuffer.
type pinnedMover struct {
	dev *cuda.Device
	buf cuda.HostBuffer
}

func (p *pinnedMover) d2h(hostOff int, src cuda.DevicePtr, n int, s cuda.Stream) error {
	return p.dev.CopyDtoHAsync(p.buf, 4*int64(hostOff), src, 4*int64(n), s)
}

func (p *pinnedMover) h2d(dst cuda.DevicePtr, hostOff int, n int, s cuda.Stream) error {
	return p.dev.CopyHtoDAsync(dst, p.buf, 4*int64(hostOff), 4*int64(n), s)
}

func (p *pinnedMover) sync(s cuda.Stream) error { return p.dev.SyncStream(s) }

func (p *pinnedMover) release() error { return p.dev.FreeHost(p.buf) }
