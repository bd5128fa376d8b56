// Package collective sums the gradients of data-parallel workers: the Communicator seam
// (AllReduce, ReduceScatter, AllGather, Broadcast, Barrier, with asynchronous handles) and
// its implementations.
//
//   - InMem (inmem.go): ranks are goroutines of one process; real code for other packages'
//     tests, not a mock.
//   - Ring (ring.go): ranks are processes joined in a TCP ring. All-reduce is a reduce-scatter
//     followed by an all-gather, chunked and pipelined; each rank dials its right neighbour
//     and accepts its left one, and both connections stay open for the communicator's life.
//   - NCCL (build tag cuda) lives elsewhere and passes the same suite.
//
// Every implementation passes collectivetest.RunAll.
//
// # Matching calls
//
// The k-th collective call on every rank forms one operation, so all ranks must issue the
// same sequence of calls with the same kind, length, Op and root. Asynchronous calls start in
// the order they are made and run one after another; a rank may have many in flight. A buffer
// belongs to the communicator from the call until the call returns or its Handle is done.
//
// # Partitions
//
// ReduceScatter and AllGather split an n-element buffer into Size() contiguous parts, one per
// rank, given by Partition: the first n%Size() ranks own one element more than the others.
// Any buffer length works, including 0 and lengths below the world size.
//
// # Determinism and tolerance
//
// Each element of a reduction is summed exactly once, in an order that depends only on the
// world size and the element's position, and that single float32 result is copied to every
// rank: all ranks end with bitwise-identical buffers, and a rerun gives the same bits. The
// sum of n float32 values carries a rounding error of at most (n-1)*2^-24*sum|x_i| (one half
// ulp per addition, recursive summation); Avg divides that sum by n once, adding one more
// rounding. collectivetest checks against a float64 reference with n*2^-24*sum|x_i|.
//
// # Failure
//
// There is no partial success. The first failure anywhere (a peer dies, a connection breaks,
// a context ends, a rank calls Close or Abort, or ranks issue mismatched calls) fails every
// pending and later call on every rank with a *PeerError that names the rank and address the
// failure is attributed to, and wraps one of the sentinel errors below. Buffer contents are
// unspecified after a failed call. A failed communicator is not reused: the caller builds a
// new one for the next round.
//
// A rank that is alive but stops answering (a stopped process, a paused machine) breaks no
// connection; the other ranks fail when their calls' deadlines pass. The ring names that
// rank rather than whichever neighbour each rank was waiting for: every member sends
// heartbeats to its left neighbour, and news of a member gone silent travels around the
// ring (heartbeat.go).
package collective
