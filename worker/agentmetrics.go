package worker

import (
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/herd-llm/herd/worker/gpumon"
)

// agentMetrics is a worker's Prometheus registry: the job's progress as its ranks see it,
// the time its ranks wait for gradient sums and spend writing checkpoints, and, where NVML
// works, each GPU's utilization, memory, temperature and power.
type agentMetrics struct {
	reg       *prometheus.Registry
	mu        sync.Mutex
	last      StepMetrics
	lastEl    float64
	round     float64
	rounds    prometheus.Counter
	stepTime  prometheus.Histogram
	commWait  prometheus.Histogram
	saveTime  prometheus.Histogram
	saveFails prometheus.Counter
	gpu       *gpumon.Monitor
}

func newAgentMetrics(worker string) *agentMetrics {
	m := &agentMetrics{reg: prometheus.NewRegistry()}
	labels := prometheus.Labels{"worker": worker}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	gauge := func(name, help string, f func() float64) {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels}, func() float64 {
			m.mu.Lock()
			defer m.mu.Unlock()
			return f()
		}))
	}
	gauge("herd_step", "Optimizer steps done.", func() float64 { return float64(m.last.Step) })
	gauge("herd_loss", "Training loss of the last step.", func() float64 { return m.last.Loss })
	gauge("herd_tokens_per_second", "Training throughput of the whole job.", func() float64 { return m.last.TokensPerS })
	gauge("herd_tokens_per_second_per_gpu", "Training throughput per rank (per GPU on GPU workers).", func() float64 { return m.last.TokensPerSPerDevice })
	gauge("herd_mfu", "Model FLOPs utilization of the last step (0 when the device peak is unknown).", func() float64 { return m.last.MFU })
	gauge("herd_round", "Id of the round this worker trains in (0: none).", func() float64 { return m.round })
	m.rounds = prometheus.NewCounter(prometheus.CounterOpts{Name: "herd_rounds_total", Help: "Rounds this worker took part in.", ConstLabels: labels})
	m.stepTime = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "herd_step_seconds", Help: "Wall time of one optimizer step.",
		ConstLabels: labels, Buckets: prometheus.ExponentialBuckets(0.01, 2, 16)})
	m.commWait = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "herd_allreduce_wait_seconds",
		Help: "Time a step waited for its gradient sums after backward (communication not hidden).", ConstLabels: labels,
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18)})
	m.saveTime = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "herd_checkpoint_seconds",
		Help: "Time a rank took to write its part of a checkpoint.", ConstLabels: labels, Buckets: prometheus.ExponentialBuckets(0.01, 2, 18)})
	m.saveFails = prometheus.NewCounter(prometheus.CounterOpts{Name: "herd_checkpoint_failures_total", Help: "Checkpoint writes that failed.", ConstLabels: labels})
	m.reg.MustRegister(m.rounds, m.stepTime, m.commWait, m.saveTime, m.saveFails)
	if g, err := gpumon.Open(); err == nil {
		m.gpu = g
		m.reg.MustRegister(&gpuCollector{m: g, worker: worker})
	}
	return m
}

func (m *agentMetrics) close() {
	if m.gpu != nil {
		m.gpu.Close()
	}
}

// step records a step line of the worker's local rank 0.
func (m *agentMetrics) step(raw json.RawMessage) {
	var sm StepMetrics
	if json.Unmarshal(raw, &sm) != nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if sm.Step == m.last.Step+1 && sm.ElapsedS > m.lastEl {
		m.stepTime.Observe(sm.ElapsedS - m.lastEl)
	}
	m.commWait.Observe(sm.CommWaitS)
	m.last, m.lastEl = sm, sm.ElapsedS
}

func (m *agentMetrics) saved(seconds float64, failed bool) {
	if failed {
		m.saveFails.Inc()
		return
	}
	m.saveTime.Observe(seconds)
}

func (m *agentMetrics) joined(round uint64) {
	m.mu.Lock()
	m.round = float64(round)
	m.mu.Unlock()
	m.rounds.Inc()
}

// serve serves /metrics on addr and returns the address it listens on.
func (m *agentMetrics) serve(addr string) (string, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return ln.Addr().String(), func() { srv.Close() }, nil
}

// gpuCollector reads NVML when scraped.
type gpuCollector struct {
	m      *gpumon.Monitor
	worker string
}

// gpuMetrics names the per-GPU gauges, in the order of the descriptors below.
var gpuMetrics = [...]string{"herd_gpu_utilization_ratio", "herd_gpu_memory_used_bytes", "herd_gpu_memory_total_bytes",
	"herd_gpu_temperature_celsius", "herd_gpu_power_watts"}

var (
	gpuUtil = prometheus.NewDesc(gpuMetrics[0], "Fraction of time a kernel ran on the GPU (NVML).", []string{"worker", "gpu", "name"}, nil)
	gpuMem  = prometheus.NewDesc(gpuMetrics[1], "GPU memory in use (NVML).", []string{"worker", "gpu", "name"}, nil)
	gpuMemT = prometheus.NewDesc(gpuMetrics[2], "GPU memory (NVML).", []string{"worker", "gpu", "name"}, nil)
	gpuTemp = prometheus.NewDesc(gpuMetrics[3], "GPU temperature (NVML).", []string{"worker", "gpu", "name"}, nil)
	gpuPow  = prometheus.NewDesc(gpuMetrics[4], "GPU power draw (NVML).", []string{"worker", "gpu", "name"}, nil)
)

func (c *gpuCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{gpuUtil, gpuMem, gpuMemT, gpuTemp, gpuPow} {
		ch <- d
	}
}

func (c *gpuCollector) Collect(ch chan<- prometheus.Metric) {
	for _, g := range c.m.Sample() {
		lv := []string{c.worker, strconv.Itoa(g.Index), g.Name}
		ch <- prometheus.MustNewConstMetric(gpuUtil, prometheus.GaugeValue, g.Utilization, lv...)
		ch <- prometheus.MustNewConstMetric(gpuMem, prometheus.GaugeValue, float64(g.MemoryUsed), lv...)
		ch <- prometheus.MustNewConstMetric(gpuMemT, prometheus.GaugeValue, float64(g.MemoryTotal), lv...)
		ch <- prometheus.MustNewConstMetric(gpuTemp, prometheus.GaugeValue, g.Temperature, lv...)
		ch <- prometheus.MustNewConstMetric(gpuPow, prometheus.GaugeValue, g.Power, lv...)
	}
}

// GPUMetricNames returns the names of the per-GPU gauges a worker exports where NVML works.
func GPUMetricNames() []string { return gpuMetrics[:] }
