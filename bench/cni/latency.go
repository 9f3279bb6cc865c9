// Package cnibench measures what appending sluice costs a CNI chain.
package cnibench

import (
	"math"
	"math/rand/v2"
	"sort"
	"time"
)

// Summary is the figures of one sample set, in milliseconds.
type Summary struct {
	N      int     `json:"n"`
	Median float64 `json:"median_ms"`
	P99    float64 `json:"p99_ms"`
}

// Summarize computes the median and p99 (nearest rank) of ds.
func Summarize(ds []time.Duration) Summary {
	if len(ds) == 0 {
		return Summary{}
	}
	ms := make([]float64, len(ds))
	for i, d := range ds {
		ms[i] = float64(d.Microseconds()) / 1000
	}
	sort.Float64s(ms)
	var median float64
	if n := len(ms); n%2 == 1 {
		median = ms[n/2]
	} else {
		median = (ms[n/2-1] + ms[n/2]) / 2
	}
	return Summary{N: len(ms), Median: median, P99: ms[rank(len(ms), 0.99)]}
}

// rank is the nearest-rank index of quantile q among n sorted samples.
func rank(n int, q float64) int {
	r := int(math.Ceil(q*float64(n))) - 1
	return max(0, min(r, n-1))
}

// Results is what `make bench` records.
type Results struct {
	Runs           int     `json:"runs"`
	AddWithout     Summary `json:"add_without_sluice"`
	AddWith        Summary `json:"add_with_sluice"`
	DelWithout     Summary `json:"del_without_sluice"`
	DelWith        Summary `json:"del_with_sluice"`
	AddOverheadMed float64 `json:"cni_add_overhead_median_ms"`
	AddOverheadP99 float64 `json:"cni_add_overhead_p99_ms"`
	AddRatioMedian float64 `json:"cni_add_ratio_median"`
	DelOverheadMed float64 `json:"cni_del_overhead_median_ms"`
	DelOverheadP99 float64 `json:"cni_del_overhead_p99_ms"`
	// CPU time (user+sys) of the plugin processes of one ADD: a figure that
	// load on a shared machine distorts far less than wall time.
	AddCPUWithout Summary `json:"add_cpu_without_sluice"`
	AddCPUWith    Summary `json:"add_cpu_with_sluice"`
	// A bare exec of the Go plugin, sluice-full (VERSION), measured
	// alongside: what any exec'd Go plugin costs just to start on this
	// machine, which the C front avoids unless it falls back.
	BareExec    Summary `json:"go_plugin_bare_exec"`
	BareExecCPU Summary `json:"go_plugin_bare_exec_cpu"`
	// AddPairedMedian is the median of (with − without) over the runs,
	// pairing the two ADDs of one iteration (run back to back): the median
	// of what sluice adds to one Pod's ADD, with slow drifts of the machine
	// cancelled in each difference. AddPairedP99 is that difference's p99.
	AddPairedMedian float64 `json:"cni_add_overhead_paired_median_ms"`
	AddPairedP99    float64 `json:"cni_add_overhead_paired_p99_ms"`
	// 95% bootstrap intervals (iterations resampled with replacement) of
	// AddOverheadMed and AddPairedMedian: how far machine noise alone moves
	// each estimate at this many runs.
	AddOverheadMedCI  [2]float64 `json:"cni_add_overhead_median_ci95_ms"`
	AddPairedMedianCI [2]float64 `json:"cni_add_overhead_paired_median_ci95_ms"`
	TargetMedianMax   float64    `json:"target_add_overhead_median_ms"`
	TargetP99Max      float64    `json:"target_add_overhead_p99_ms"`
}

// Compare fills the overheads: with minus without, per statistic.
func Compare(addWithout, addWith, delWithout, delWith []time.Duration) Results {
	r := Results{
		Runs:       len(addWith),
		AddWithout: Summarize(addWithout), AddWith: Summarize(addWith),
		DelWithout: Summarize(delWithout), DelWith: Summarize(delWith),
		TargetMedianMax: 3, TargetP99Max: 10,
	}
	r.AddOverheadMed = round(r.AddWith.Median - r.AddWithout.Median)
	r.AddOverheadP99 = round(r.AddWith.P99 - r.AddWithout.P99)
	r.DelOverheadMed = round(r.DelWith.Median - r.DelWithout.Median)
	r.DelOverheadP99 = round(r.DelWith.P99 - r.DelWithout.P99)
	if len(addWith) == len(addWithout) && len(addWith) > 0 {
		diffs := make([]time.Duration, len(addWith))
		for i := range addWith {
			diffs[i] = addWith[i] - addWithout[i]
		}
		d := Summarize(diffs)
		r.AddPairedMedian, r.AddPairedP99 = d.Median, d.P99
		r.AddOverheadMedCI, r.AddPairedMedianCI = bootstrap(addWithout, addWith)
	}
	if r.AddWithout.Median > 0 {
		r.AddRatioMedian = round(r.AddWith.Median / r.AddWithout.Median)
	}
	return r
}

func round(f float64) float64 { return math.Round(f*1000) / 1000 }

// bootstrapRounds resamples; the seed is fixed so a run's figures repeat.
const bootstrapRounds = 2000

// bootstrap gives the 95% percentile intervals of median(with) −
// median(without) and of the paired median, resampling iterations (both
// ADDs of one iteration together) with replacement.
func bootstrap(without, with []time.Duration) (diffOfMedians, pairedMedian [2]float64) {
	n := len(with)
	rng := rand.New(rand.NewPCG(1, uint64(n)))
	a, b, d := make([]time.Duration, n), make([]time.Duration, n), make([]time.Duration, n)
	dm, pm := make([]float64, bootstrapRounds), make([]float64, bootstrapRounds)
	for k := range bootstrapRounds {
		for i := range n {
			j := rng.IntN(n)
			a[i], b[i], d[i] = without[j], with[j], with[j]-without[j]
		}
		dm[k] = Summarize(b).Median - Summarize(a).Median
		pm[k] = Summarize(d).Median
	}
	interval := func(v []float64) [2]float64 {
		sort.Float64s(v)
		return [2]float64{round(v[rank(len(v), 0.025)]), round(v[rank(len(v), 0.975)])}
	}
	return interval(dm), interval(pm)
}
