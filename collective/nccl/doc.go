// Package nccl runs collectives on float32 buffers in GPU memory, behind the build tag cuda.
//
// Device is the seam the training worker uses: AllReduce, ReduceScatter and AllGather on a
// device buffer, enqueued on a CUDA stream, with the in-place semantics and partitions of
// collective.Communicator. Two implementations:
//
//   - Comm: NCCL, loaded with dlopen at run time ($HERD_NCCL alone when set, else libnccl.so.2
//     or libnccl.so as package kernels/cuda/cudalib finds it: $HERD_CUDA_LIBDIR, the CUDA
//     directories, the nvidia packages of Python environments, the loader's path), so the
//     binary does not depend on NCCL at build time. Init bootstraps a communicator over an existing host
//     collective.Communicator (the TCP ring): rank 0 creates the ncclUniqueId and broadcasts it.
//     Calls are enqueued on the stream and return at once, as NCCL's do. NCCL needs ReduceScatter
//     and AllGather lengths that are multiples of the world size; other lengths are rejected
//     (pad the buffer to PaddedLen).
//   - Staged: any host collective.Communicator on device buffers, staged through one pinned host
//     buffer: device to host on the stream, synchronize, host collective, host to device. It
//     lets several processes share one GPU in tests and serves machines without NCCL; calls
//     return once the result is in device memory.
//
// NCCL refuses two ranks on one GPU, so on a one-GPU machine NCCL is tested at world size 1 and
// multi-rank logic through Staged over the TCP ring.
//
// Everything except this comment sits behind the build tag cuda (see package kernels/cuda for
// building and running cuda-tagged binaries).
package nccl
