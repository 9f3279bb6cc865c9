package agent

import (
	"context"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluicenet/sluice/pkg/datapath"
)

// statsDatapath counts reads of the kernel counters.
type statsDatapath struct {
	fakeDatapath
	mu    sync.Mutex
	reads int
}

func (s *statsDatapath) Stats(context.Context) (datapath.Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	return datapath.Stats{Rules: []datapath.RuleStats{{Table: "filter", Chain: datapath.ChainGuard, DropReason: datapath.DropFromPod, Packets: 7}},
		ExitDrops: map[string]uint64{datapath.ExitDropWrongSource: 5}}, nil
}

// A burst of scrapes costs one read of the kernel's counters.
func TestCollectorCachesCountersBetweenScrapes(t *testing.T) {
	dp := &statsDatapath{}
	reg := prometheus.NewRegistry()
	reg.MustRegister(&Collector{Datapath: dp})
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mfs, err := reg.Gather()
			if err != nil {
				t.Error(err)
				return
			}
			tunnel, exit := false, false
			for _, mf := range mfs {
				if mf.GetName() == "sluice_tunnel_dropped_packets_total" && mf.GetMetric()[0].GetCounter().GetValue() == 7 {
					tunnel = true
				}
				if mf.GetName() == "sluice_exit_guard_dropped_packets_total" {
					for _, m := range mf.GetMetric() {
						if m.GetLabel()[0].GetValue() == datapath.ExitDropWrongSource && m.GetCounter().GetValue() == 5 {
							exit = true
						}
					}
				}
			}
			if !tunnel || !exit {
				t.Errorf("scrape lacks sluice_tunnel_dropped_packets_total 7 (%v) or sluice_exit_guard_dropped_packets_total{reason=wrong-source} 5 (%v)", tunnel, exit)
			}
		}()
	}
	wg.Wait()
	if dp.reads != 1 {
		t.Fatalf("%d counter reads for 50 scrapes within the cache time, want 1", dp.reads)
	}
}
