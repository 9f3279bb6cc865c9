package habench

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sluicenet/sluice/bench"
)

// Commands that produce the figures (BENCHMARKS.md shows them).
const (
	FailoverCommand = "SLUICE_BENCH=1 SLUICE_BENCH_RECORD=1 go test -run TestFailover -timeout 60m ./bench/ha/"
	SoakCommand     = "SLUICE_BENCH=1 SLUICE_BENCH_RECORD=1 go test -run TestSoak -timeout 30m ./bench/ha/"
	RestartCommand  = "SLUICE_BENCH=1 SLUICE_BENCH_RECORD=1 go test -run TestRestart -timeout 30m ./bench/ha/"
)

// Failure kinds, in the order they run, as used in figure names.
var Kinds = []string{"helper_kill", "uplink_down", "node_freeze", "node_halt"}

// StopTheDatapath are the kinds after which the old holder's kernel no
// longer forwards (its uplink is cut, or the whole Node is halted): the
// headline failover_median_s and failover_p99_s are over these. After the
// others (a helper SIGKILL, a frozen Node) the old kernel goes on
// forwarding until it is fenced, so they interrupt almost nothing.
var StopTheDatapath = []string{"uplink_down", "node_halt"}

// FailoverFigures turns trials into the failover figures: median and p99
// over the StopTheDatapath kinds (the targets), the pair per kind, and takeover times as
// context. Trials that never recovered are left out of the quantiles and
// counted in the note (the benchmark fails on them anyway).
func FailoverFigures(trials []Trial, probeNote string) []bench.Figure {
	var headline, allTake []float64
	byKind, takeByKind := map[string][]float64{}, map[string][]float64{}
	counts, gaps := map[string]int{}, map[string][]float64{}
	broken, wrong, lost := 0, 0, 0
	var fences []float64
	for _, t := range trials {
		counts[t.Kind]++
		if t.Fenced {
			fences = append(fences, secs(t.Fence))
		}
		wrong += t.Wrong
		lost += t.Lost
		if !t.Recovered {
			broken++
			continue
		}
		if slices.Contains(StopTheDatapath, t.Kind) {
			headline = append(headline, secs(t.Failover))
		}
		byKind[t.Kind] = append(byKind[t.Kind], secs(t.Failover))
		gaps[t.Kind] = append(gaps[t.Kind], secs(t.MaxGap))
		if t.TookOver {
			allTake = append(allTake, secs(t.Takeover))
			takeByKind[t.Kind] = append(takeByKind[t.Kind], secs(t.Takeover))
		}
	}
	var parts []string
	for _, k := range Kinds {
		parts = append(parts, fmt.Sprintf("%s %d trials (max-gap median %.3f s)", k, counts[k], bench.Median(gaps[k])))
	}
	note := fmt.Sprintf("%s; %s; %d trials without recovery left out; after the failures %d probes got no answer and %d were answered with "+
		"another source than the egress IP (the log names it). Failover = failure call start → first answer with the "+
		"egress IP to a probe sent after the call returned; p99 by nearest rank (the maximum below 100 trials). failover_median_s and failover_p99_s are over the faults that stop "+
		"the old holder's datapath: an uplink cut (uplink_down) and a halted Node (node_halt: its processes frozen and every frame in and out of its uplink, ARP "+
		"included, dropped, its link still up). After a helper SIGKILL or a freeze the old Node's kernel keeps "+
		"its address and SNAT until the held-IP lifetime runs out (fencing), so traffic barely stops: those kinds measure little interruption by design and are rows of their own. "+
		"Helpers run with --restart-grace=0, so every kind moves the IP at once (with the default grace a killed helper or a frozen Node moves nothing: see restart_ip_moves). "+
		"2 shared cores, one run", probeNote, strings.Join(parts, ", "), broken, lost, wrong)
	fig := func(name string, v float64, target string) bench.Figure {
		return bench.Figure{Name: name, Value: round3(v), Unit: "s", Target: target, Command: FailoverCommand, Note: note}
	}
	figs := []bench.Figure{
		fig("failover_median_s", bench.Median(headline), "<= 1.0"),
		fig("failover_p99_s", bench.Quantile(headline, 0.99), "<= 2.0"),
		fig("failover_takeover_median_s", bench.Median(allTake), ""),
	}
	for _, k := range Kinds {
		figs = append(figs,
			fig("failover_"+k+"_median_s", bench.Median(byKind[k]), ""),
			fig("failover_"+k+"_p99_s", bench.Quantile(byKind[k], 0.99), ""),
			fig("failover_"+k+"_takeover_median_s", bench.Median(takeByKind[k]), ""))
	}
	if len(fences) > 0 {
		fnote := fmt.Sprintf("%d trials (helper SIGKILL and Node freeze): from the failure to the old holder's uplink no longer "+
			"holding the egress IP (polled every 100 ms), so it no longer answers ARP for it. The value is the maximum; median %.3f s. "+
			"Held IPs have a 4 s kernel lifetime that only a live helper renews (--held-ip-lifetime). 2 shared cores, one run",
			len(fences), bench.Median(fences))
		figs = append(figs, bench.Figure{Name: "stale_holder_fence_s", Value: round3(slices.Max(fences)), Unit: "s", Target: "<= 5",
			Command: FailoverCommand, Note: fnote})
	}
	return figs
}

// SoakResult is what the soak measured.
type SoakResult struct {
	Duration             time.Duration
	Loss                 float64
	Egresses, Nodes      int
	StatusChanges        int // Egress status.egressNode changes (watch and polls)
	HolderChanges        int // changes of the set of Nodes holding an egress IP
	Samples              int // holder/status samples taken
	CPUPercent, CPUMax   float64
	RSSMiB               float64 // max VmHWM over the helpers
	HelperRestarts       int
	ProbeOK, ProbeFailed int
	Dropped              int // packets the loss rules dropped, all Nodes
}

// SoakFigures turns a soak into figures.
func SoakFigures(r SoakResult) []bench.Figure {
	note := fmt.Sprintf("%s with %.0f%% random loss both ways on every Node's uplink (iptables statistic in the Node "+
		"namespaces, %d packets dropped), %d Nodes alive, %d pooled Egresses; false failovers = status.egressNode changes (%d, informer watch "+
		"+ polls) + holder-set changes (%d, ip addr on every uplink, %d samples ~200 ms apart); whoami probes ok %d / "+
		"failed %d; helper CPU is the mean over helpers (max %.2f%%) of utime+stime as %% of one core; RSS is the max VmHWM",
		r.Duration.Round(time.Second), r.Loss*100, r.Dropped, r.Nodes, r.Egresses, r.StatusChanges, r.HolderChanges, r.Samples,
		r.ProbeOK, r.ProbeFailed, r.CPUMax)
	return []bench.Figure{
		{Name: "soak_false_failovers", Value: float64(r.StatusChanges + r.HolderChanges), Unit: "count", Target: "== 0",
			Command: SoakCommand, Note: note},
		{Name: "soak_helper_cpu_percent", Value: round3(r.CPUPercent), Unit: "%", Command: SoakCommand, Note: note},
		{Name: "soak_helper_rss_mib", Value: round3(r.RSSMiB), Unit: "MiB", Command: SoakCommand, Note: note},
	}
}

func secs(d time.Duration) float64 { return d.Seconds() }

func round3(v float64) float64 { return float64(int64(v*1000+0.5)) / 1000 }
