package collective

import "context"

// handle is the Handle of both implementations: done is closed once, after err is set.
type handle struct {
	done chan struct{}
	err  error
	// giveUp aborts the communicator when a Wait's ctx ends before the operation does.
	giveUp func(ctx context.Context)
}

func newHandle(giveUp func(ctx context.Context)) *handle {
	return &handle{done: make(chan struct{}), giveUp: giveUp}
}

// doneHandle returns a handle that has already finished with err.
func doneHandle(err error) *handle {
	h := &handle{done: make(chan struct{}), err: err}
	close(h.done)
	return h
}

func (h *handle) Done() <-chan struct{} { return h.done }

func (h *handle) Wait(ctx context.Context) error {
	select {
	case <-h.done:
		return h.err
	case <-ctx.Done():
	}
	select {
	case <-h.done:
		return h.err
	default:
	}
	h.giveUp(ctx)
	<-h.done
	return h.err
}

// finish records the operation's result; it must be called exactly once.
func (h *handle) finish(err error) {
	h.err = err
	close(h.done)
}
