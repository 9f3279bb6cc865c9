package cnibench

import (
	"fmt"

	"github.com/sluicenet/sluice/bench"
)

// Command is how `make bench` runs this benchmark.
const Command = "SLUICE_BENCH_RECORD=1 go test ./bench/cni -run '^$' -bench CNIAddDel -benchtime 1x"

// Figures turns results into the project's benchmark figures; the first two
// carry the targets, the rest are context for reading them.
func Figures(r Results) []bench.Figure {
	note := fmt.Sprintf("bridge+host-local via libcni, %d interleaved runs each with and without sluice appended, live helper; "+
		"overhead = median(with) - median(without) (95%% bootstrap interval %.2f-%.2f ms), p99 likewise; "+
		"paired = median of the per-iteration differences (interval %.2f-%.2f ms); "+
		"sluice is the C front, the helper (integration/cni/testhelper, the real registry, acks at once) runs the plugin in process; "+
		"a bare exec of the Go plugin alone (sluice-full VERSION) median %.1f ms; plain ADD median %.1f ms",
		r.Runs, r.AddOverheadMedCI[0], r.AddOverheadMedCI[1], r.AddPairedMedianCI[0], r.AddPairedMedianCI[1], r.BareExec.Median, r.AddWithout.Median)
	fig := func(name string, v float64, target string) bench.Figure {
		return bench.Figure{Name: name, Value: v, Unit: "ms", Target: target, Command: Command, Note: note}
	}
	return []bench.Figure{
		fig("cni_add_overhead_median_ms", r.AddOverheadMed, "<= 3"),
		fig("cni_add_overhead_p99_ms", r.AddOverheadP99, "<= 10"),
		fig("cni_add_plain_median_ms", r.AddWithout.Median, ""),
		fig("cni_add_sluice_median_ms", r.AddWith.Median, ""),
		fig("cni_del_overhead_median_ms", r.DelOverheadMed, ""),
		fig("cni_go_plugin_bare_exec_median_ms", r.BareExec.Median, ""),
		fig("cni_add_overhead_paired_median_ms", r.AddPairedMedian, ""),
		fig("cni_add_overhead_median_ci95_low_ms", r.AddOverheadMedCI[0], ""),
		fig("cni_add_overhead_median_ci95_high_ms", r.AddOverheadMedCI[1], ""),
		{Name: "cni_add_ratio_median", Value: r.AddRatioMedian, Unit: "ratio", Command: Command, Note: note},
	}
}
