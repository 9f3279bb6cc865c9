// Package habench measures the HA figures: failover time under three
// failure kinds, and false failovers during a lossy soak. The measuring is
// in the _test.go files (they need root and a cluster, and skip unless
// SLUICE_BENCH=1); this file holds the pure parts: what a probe trace says
// about one failure, and how traces become figures.
package habench

import (
	"net/netip"
	"slices"
	"time"
)

// Sample is one probe request: when it was sent, when its answer (or its
// error) came back, and the source address the external server reported
// (the zero Addr when the request failed or timed out).
type Sample struct {
	Sent, Done time.Time
	Src        netip.Addr
}

// Trial is what one failure did to the probe.
type Trial struct {
	Kind string
	// Failover is from the start of the failure call to the first answer
	// carrying the egress IP to a probe SENT after the failure was in
	// effect (the call had returned): answers already in flight don't
	// count. Valid when Recovered.
	Failover  time.Duration
	Recovered bool
	// MaxGap is the longest span between consecutive answers carrying the
	// egress IP, from the last one before the failure to the end of the
	// trace (to the trace's end when it never recovered).
	MaxGap time.Duration
	// Takeover is from the start of the failure to Egress
	// status.egressNode naming another Node; TookOver says it happened
	// within the trial's window.
	Takeover time.Duration
	TookOver bool
	// After the failure took effect: probes sent, probes without an answer
	// (timeout/reset) and answers with another source than the egress IP.
	Sent, Lost, Wrong int
	// Fence is from the start of the failure to the old owner no longer
	// holding the IP on its uplink, for kinds where its helper stops
	// (SIGKILL, freeze); Fenced says it happened within the window.
	Fence  time.Duration
	Fenced bool
}

// Analyze reads a probe trace around one failure. failStart is when the
// failure call began, failEnd when it returned.
func Analyze(kind string, samples []Sample, ip netip.Addr, failStart, failEnd time.Time) Trial {
	tr := Trial{Kind: kind}
	var okDone []time.Time
	var end time.Time
	for _, s := range samples {
		if s.Done.After(end) {
			end = s.Done
		}
		ok := s.Src == ip
		if ok {
			okDone = append(okDone, s.Done)
		}
		if s.Sent.Before(failEnd) {
			continue
		}
		tr.Sent++
		switch {
		case ok:
			if d := s.Done.Sub(failStart); !tr.Recovered || d < tr.Failover {
				tr.Failover, tr.Recovered = d, true
			}
		case s.Src.IsValid():
			tr.Wrong++
		default:
			tr.Lost++
		}
	}
	slices.SortFunc(okDone, func(a, b time.Time) int { return a.Compare(b) })
	// Start at the last good answer before the failure (or the failure
	// itself when there was none).
	prev, first := failStart, 0
	for i, d := range okDone {
		if d.Before(failStart) {
			prev, first = d, i+1
		}
	}
	for _, d := range okDone[first:] {
		tr.MaxGap = max(tr.MaxGap, d.Sub(prev))
		prev = d
	}
	if !tr.Recovered && end.After(prev) {
		tr.MaxGap = max(tr.MaxGap, end.Sub(prev))
	}
	return tr
}

// ChangeCount is how many keys differ between two snapshots (a value that
// changed, appeared or disappeared counts once). The soak uses it on
// Egress → status.egressNode and on egress IP → set of holders.
func ChangeCount(prev, cur map[string]string) int {
	n := 0
	for k, v := range cur {
		if pv, ok := prev[k]; !ok || pv != v {
			n++
		}
	}
	for k := range prev {
		if _, ok := cur[k]; !ok {
			n++
		}
	}
	return n
}

// CPUPercent is the share of one core used between two utime+stime
// readings in clock ticks (USER_HZ, 100 on Linux) over wall time.
func CPUPercent(ticks0, ticks1 uint64, wall time.Duration) float64 {
	if wall <= 0 || ticks1 < ticks0 {
		return 0
	}
	return float64(ticks1-ticks0) / 100 / wall.Seconds() * 100
}
