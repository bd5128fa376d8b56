//go:build !cgo

package gpumon

import "errors"

// Monitor samples NVML; this build has none.
type Monitor struct{}

// Open reports that NVML is unavailable in a build without cgo.
func Open() (*Monitor, error) { return nil, errors.New("gpumon: built without cgo: no NVML") }

// Sample returns nothing.
func (m *Monitor) Sample() []GPU { return nil }

// Close does nothing.
func (m *Monitor) Close() {}
