package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluicenet/sluice/helperd/placement"
)

// Metrics are the helper's own Prometheus metrics. Per-Egress packet and
// byte counters come from the kernel at scrape time (see collector.go).
// A nil *Metrics is valid and records nothing.
type Metrics struct {
	heldIPs       prometheus.Gauge
	failovers     prometheus.Counter
	takeovers     prometheus.Counter
	reconcileDur  prometheus.Histogram
	reconcileErrs prometheus.Counter
	cniRequests   *prometheus.CounterVec
	cniLatency    *prometheus.HistogramVec
	allocErrors   prometheus.Counter
	hints         *prometheus.CounterVec
	quorum        *prometheus.GaugeVec
}

// NewMetrics registers the metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		heldIPs: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_egress_ips_held",
			Help: "Egress IPs this Node holds on its uplink."}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_failovers_total",
			Help: "Egress IPs this Node took over from another Node."}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_takeovers_total",
			Help: "Egress IPs this Node started holding that no Node held before."}),
		reconcileDur: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sluice_reconcile_duration_seconds",
			Help: "Time to compute and apply the whole desired state.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		reconcileErrs: prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_reconcile_errors_total",
			Help: "Reconciles whose datapath Apply returned an error."}),
		cniRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_cni_requests_total",
			Help: "CNI plugin requests handled, by verb and result."}, []string{"verb", "result"}),
		cniLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sluice_cni_request_duration_seconds",
			Help: "Time from a CNI request to its reply, by verb.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 12)}, []string{"verb"}),
		allocErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_allocation_errors_total",
			Help: "Allocation or status writes that failed and will be retried."}),
		hints: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_hints_received_total",
			Help: "Hints received from other helpers, by result: ok, rate-limited, bad-signature, invalid, refused (wrong recipient, " +
				"sender or time, a replay, or a Pod that is not the sender's), error."}, []string{"result"}),
	}
	m.quorum = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sluice_quorum",
		Help: "What this helper sees of the Nodes that may hold pool IPs: voters (per the API), alive (voters it sees in gossip), " +
			"health (its gossip health score, 0 is healthy) and ok (1 when it has quorum and may hold pool IPs)."}, []string{"value"})
	reg.MustRegister(m.heldIPs, m.failovers, m.takeovers, m.reconcileDur, m.reconcileErrs,
		m.cniRequests, m.cniLatency, m.allocErrors, m.hints, m.quorum)
	return m
}

func (m *Metrics) setHeld(n int) {
	if m != nil {
		m.heldIPs.Set(float64(n))
	}
}

func (m *Metrics) setQuorum(q placement.Quorum) {
	if m == nil {
		return
	}
	ok := 0.0
	if q.OK {
		ok = 1
	}
	m.quorum.WithLabelValues("ok").Set(ok)
	m.quorum.WithLabelValues("alive").Set(float64(q.Alive))
	m.quorum.WithLabelValues("voters").Set(float64(q.Voters))
	m.quorum.WithLabelValues("health").Set(float64(q.Health))
}

func (m *Metrics) failover() {
	if m != nil {
		m.failovers.Inc()
	}
}

func (m *Metrics) takeover() {
	if m != nil {
		m.takeovers.Inc()
	}
}

func (m *Metrics) allocError() {
	if m != nil {
		m.allocErrors.Inc()
	}
}

func (m *Metrics) observeReconcile(start time.Time, err error) {
	if m == nil {
		return
	}
	m.reconcileDur.Observe(time.Since(start).Seconds())
	if err != nil {
		m.reconcileErrs.Inc()
	}
}

func (m *Metrics) observeCNI(verb string, start time.Time, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.cniRequests.WithLabelValues(verb, result).Inc()
	m.cniLatency.WithLabelValues(verb).Observe(time.Since(start).Seconds())
}

// ObserveHint counts one received hint by its result (hint.Result*).
func (m *Metrics) ObserveHint(result string) {
	if m != nil {
		m.hints.WithLabelValues(result).Inc()
	}
}
