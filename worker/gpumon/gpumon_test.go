package gpumon

import "testing"

// Open must fail cleanly, not crash, on a machine without the NVIDIA driver (and in a build
// without cgo); where a driver exists, every device reports a plausible sample.
func TestOpen(t *testing.T) {
	m, err := Open()
	if err != nil {
		t.Logf("no NVML here: %v", err)
		return
	}
	defer m.Close()
	for _, g := range m.Sample() {
		if g.MemoryTotal == 0 || g.Utilization < 0 || g.Utilization > 1 {
			t.Errorf("GPU %d: implausible sample %+v", g.Index, g)
		}
	}
}
