package cnibench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicenet/sluice/bench"
	cnitest "github.com/sluicenet/sluice/integration/cni"
	"github.com/sluicenet/sluice/pkg/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// BenchmarkCNIAddDel times ADD and DEL of bridge+host-local through libcni,
// with and without sluice appended (live helper), interleaving the two so
// that machine noise hits both alike. Run it once:
//
//	go test ./bench/cni -run '^$' -bench CNIAddDel -benchtime 1x
//
// SLUICE_BENCH_RUNS sets the runs per variant (default 400: at 200 the
// median overhead's 95% interval was about ±0.5 ms wide);
// SLUICE_BENCH_OUT names a JSON file for all the figures;
// SLUICE_BENCH_RECORD=1 merges the headline ones into bench/results.json.
func BenchmarkCNIAddDel(b *testing.B) {
	nstest.RequireRoot(b)
	runs := bench.EnvInt(b, "SLUICE_BENCH_RUNS", 400, 1, 10000)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	bins, err := cnitest.BuildBins(ctx, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	e := cnitest.NewEnv(b, bins, "bench")
	e.StartHelper(b)
	plain := e.Conflist(b, cnitest.ConflistOpts{CNIVersion: "1.0.0", Primary: cnitest.Bridge, NoSluice: true})
	with := e.Conflist(b, cnitest.ConflistOpts{CNIVersion: "1.0.0", Primary: cnitest.Bridge})

	var addWithout, addWith, delWithout, delWith []time.Duration
	var cpuWithout, cpuWith, bareWall, bareCPU []time.Duration
	b.ResetTimer()
	for range b.N {
		for i := 0; i < runs; i++ {
			// Alternate which variant goes first, so neither always runs
			// on a warm cache.
			order := []bool{false, true}
			if i%2 == 1 {
				order = []bool{true, false}
			}
			for _, sluice := range order {
				l := plain
				if sluice {
					l = with
				}
				p := e.NewPod(b, fmt.Sprintf("p%d%v", i, sluice))
				c0, t0 := childCPU(b), time.Now()
				if _, err := e.Add(ctx, l, p); err != nil {
					b.Fatalf("ADD (sluice=%v): %v", sluice, err)
				}
				add, cpu := time.Since(t0), childCPU(b)-c0
				t0 = time.Now()
				if err := e.Del(ctx, l, p); err != nil {
					b.Fatalf("DEL (sluice=%v): %v", sluice, err)
				}
				del := time.Since(t0)
				p.NS.Delete()
				if sluice {
					// Context: what an exec'd Go plugin costs right now.
					c0, t0 := childCPU(b), time.Now()
					if err := bareExec(ctx, bins.Sluice+"/sluice-full"); err != nil {
						b.Fatal(err)
					}
					bareWall, bareCPU = append(bareWall, time.Since(t0)), append(bareCPU, childCPU(b)-c0)
				}
				if sluice {
					addWith, delWith = append(addWith, add), append(delWith, del)
					cpuWith = append(cpuWith, cpu)
				} else {
					addWithout, delWithout = append(addWithout, add), append(delWithout, del)
					cpuWithout = append(cpuWithout, cpu)
				}
			}
		}
	}
	b.StopTimer()
	r := Compare(addWithout, addWith, delWithout, delWith)
	r.AddCPUWithout, r.AddCPUWith = Summarize(cpuWithout), Summarize(cpuWith)
	r.BareExec, r.BareExecCPU = Summarize(bareWall), Summarize(bareCPU)
	b.ReportMetric(r.AddWithout.Median, "add-plain-median-ms")
	b.ReportMetric(r.AddWith.Median, "add-sluice-median-ms")
	b.ReportMetric(r.AddOverheadMed, "add-overhead-median-ms")
	b.ReportMetric(r.AddOverheadP99, "add-overhead-p99-ms")
	b.ReportMetric(r.DelOverheadMed, "del-overhead-median-ms")
	b.ReportMetric(r.AddCPUWith.Median-r.AddCPUWithout.Median, "add-cpu-overhead-median-ms")
	b.ReportMetric(r.BareExec.Median, "go-plugin-bare-exec-median-ms")
	b.ReportMetric(r.AddPairedMedian, "add-overhead-paired-median-ms")
	out, _ := json.MarshalIndent(r, "", "  ")
	b.Logf("%s", out)
	bench.RecordIfAsked(b, Figures(r)...)
	if path := os.Getenv("SLUICE_BENCH_OUT"); path != "" {
		if err := os.WriteFile(path, append(out, '\n'), 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// childCPU is the user+system CPU time of the plugin processes libcni ran
// and reaped so far. Unlike wall time it barely moves with machine load, so
// it shows what sluice itself costs when the machine is busy.
func childCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// bareExec runs the plugin's VERSION command: process start-up and nothing
// else, the floor for any chained plugin.
func bareExec(ctx context.Context, path string) error {
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = []string{"CNI_COMMAND=VERSION"}
	cmd.Stdin = strings.NewReader(`{"cniVersion":"1.0.0"}`)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("sluice-full VERSION: %w: %s", err, out)
	}
	return nil
}
