package coordinator

import (
	"encoding/json"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics is the coordinator's Prometheus registry. Gauges read the job state when scraped;
// the step-time histogram is fed from the step lines workers report. Every series carries the
// job's name as herd_job (not job, which Prometheus sets to the scrape job's name).
type metrics struct {
	mu       sync.Mutex
	reg      *prometheus.Registry
	stepTime prometheus.Histogram
	lastEl   float64
	lastStep int
}

func newMetrics(c *Coordinator) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	gauge := func(name, help string, f func(JobState) float64) {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help,
			ConstLabels: prometheus.Labels{"herd_job": c.spec.Name}}, func() float64 { return f(c.fsm.snapshot()) }))
	}
	counter := func(name, help string, f func(JobState) float64) {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help,
			ConstLabels: prometheus.Labels{"herd_job": c.spec.Name}}, func() float64 { return f(c.fsm.snapshot()) }))
	}
	gauge("herd_step", "Optimizer steps done.", func(s JobState) float64 { return float64(s.LastStep) })
	gauge("herd_loss", "Training loss of the last step.", func(s JobState) float64 { return s.Last.Loss })
	gauge("herd_tokens_per_second", "Training throughput of the whole job.", func(s JobState) float64 { return s.Last.TokensPerS })
	gauge("herd_tokens_per_second_per_gpu", "Training throughput per rank (per GPU on GPU workers).", func(s JobState) float64 { return s.Last.PerDevice })
	gauge("herd_mfu", "Model FLOPs utilization of the last step (0 when the device peak is unknown).", func(s JobState) float64 { return s.Last.MFU })
	gauge("herd_round", "Id of the current round.", func(s JobState) float64 {
		if s.Round == nil {
			return 0
		}
		return float64(s.Round.ID)
	})
	gauge("herd_last_checkpoint_step", "Step of the newest committed checkpoint (-1: none).", func(s JobState) float64 { return float64(s.LastCheckpoint()) })
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "herd_workers", Help: "Workers with a live registration.",
		ConstLabels: prometheus.Labels{"herd_job": c.spec.Name}}, func() float64 {
		c.mu.Lock()
		defer c.mu.Unlock()
		return float64(len(c.live))
	}))
	counter("herd_rounds_total", "Rounds formed.", func(s JobState) float64 { return float64(s.Rounds) })
	counter("herd_recoveries_total", "Rounds formed because a worker was lost or failed.", func(s JobState) float64 { return float64(s.Recoveries) })
	counter("herd_redone_steps_total", "Steps trained again after a failure.", func(s JobState) float64 { return float64(s.Redone) })
	m.stepTime = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "herd_step_seconds", Help: "Wall time of one optimizer step.",
		ConstLabels: prometheus.Labels{"herd_job": c.spec.Name}, Buckets: prometheus.ExponentialBuckets(0.01, 2, 16)})
	m.reg.MustRegister(m.stepTime)
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// observeSteps feeds the step-time histogram from reported step lines (elapsed_s is the time
// since the round's rank 0 began, so consecutive lines give the time of each step).
func (m *metrics) observeSteps(lines []json.RawMessage) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, line := range lines {
		var s StepSummary
		if json.Unmarshal(line, &s) != nil {
			continue
		}
		if s.Step == m.lastStep+1 && s.ElapsedS > m.lastEl {
			m.stepTime.Observe(s.ElapsedS - m.lastEl)
		}
		m.lastStep, m.lastEl = s.Step, s.ElapsedS
	}
}
