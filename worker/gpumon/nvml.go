//go:build cgo

package gpumon

import (
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Monitor samples NVML.
type Monitor struct{ n int }

// Open initializes NVML. It fails where the NVIDIA driver's libnvidia-ml is missing; no other
// NVML call is made then (one after a failed init ends the process).
func Open() (*Monitor, error) {
	if ret := nvml.Init(); ret != nvml.SUCCESS {
		return nil, fmt.Errorf("gpumon: NVML: %v", nvml.ErrorString(ret))
	}
	n, ret := nvml.DeviceGetCount()
	if ret != nvml.SUCCESS {
		nvml.Shutdown()
		return nil, fmt.Errorf("gpumon: NVML device count: %v", nvml.ErrorString(ret))
	}
	return &Monitor{n: n}, nil
}

// Sample reads every device; a field NVML cannot read stays zero.
func (m *Monitor) Sample() []GPU {
	out := make([]GPU, 0, m.n)
	for i := 0; i < m.n; i++ {
		d, ret := nvml.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			continue
		}
		g := GPU{Index: i}
		g.Name, _ = d.GetName()
		if u, ret := d.GetUtilizationRates(); ret == nvml.SUCCESS {
			g.Utilization = float64(u.Gpu) / 100
		}
		if mem, ret := d.GetMemoryInfo(); ret == nvml.SUCCESS {
			g.MemoryUsed, g.MemoryTotal = mem.Used, mem.Total
		}
		if t, ret := d.GetTemperature(nvml.TEMPERATURE_GPU); ret == nvml.SUCCESS {
			g.Temperature = float64(t)
		}
		if p, ret := d.GetPowerUsage(); ret == nvml.SUCCESS {
			g.Power = float64(p) / 1000 // milliwatts
		}
		out = append(out, g)
	}
	return out
}

// Close shuts NVML down.
func (m *Monitor) Close() { nvml.Shutdown() }
