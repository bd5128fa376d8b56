// Package gpumon samples the health of a machine's NVIDIA GPUs through NVML: utilization,
// memory, temperature and power, for the worker's Prometheus metrics. NVML needs cgo: in a
// build without cgo, Open reports that it is unavailable, and workers export no GPU metrics.
package gpumon

// GPU is one device's sample.
type GPU struct {
	Index       int
	Name        string
	Utilization float64 // fraction of the last sample period a kernel ran, 0..1
	MemoryUsed  uint64  // bytes
	MemoryTotal uint64  // bytes
	Temperature float64 // degrees Celsius
	Power       float64 // watts
}
