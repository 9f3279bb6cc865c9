package habench

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/sluicenet/sluice/bench"
	"github.com/sluicenet/sluice/integration/cluster"
)

// PlannedCommand produces planned_move_new_conn_gap_ms.
const PlannedCommand = "SLUICE_BENCH=1 SLUICE_BENCH_RECORD=1 go test -run TestPlannedMove -timeout 30m ./bench/ha/"

// TestPlannedMove is the make-before-break figure: SLUICE_BENCH_TRIALS
// (default 10) cordons of the Node holding a pooled Egress's IP, while a
// Pod on every Node opens a fresh connection every 20 ms. A round's gap is
// the longest time any of those Pods went without an answer carrying the
// egress IP, from the cordon until the move is over; the figure is the
// median over rounds. Each round then uncordons the Node, which takes
// nothing back (the IP's new holder is within its fair share).
func TestPlannedMove(t *testing.T) {
	bench.Require(t)
	trials := bench.EnvInt(t, "SLUICE_BENCH_TRIALS", 10, 1, 100)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	c := startCluster(t)
	pods := webOnEveryNode(ctx, t, c)
	var gaps []float64
	wrong, lost := 0, 0
	for round := range trials {
		gap, w, l, err := plannedRound(ctx, t, c, pods)
		if err != nil {
			t.Fatalf("round %d: %v", round+1, err)
		}
		gaps = append(gaps, float64(gap.Milliseconds()))
		wrong += w
		lost += l
	}
	sorted := slices.Sorted(slices.Values(gaps))
	note := fmt.Sprintf("%d cordons of the holder of one pooled Egress's IP, 3 Nodes; a fresh TCP connection to the external whoami "+
		"server every %v (%v timeout each) from a Pod on every Node (the old holder, the new one and the third); a round's gap is the longest any Pod went without an answer carrying the egress IP, from the "+
		"cordon until 1 s after the move; median of the rounds (all rounds, ms: %v); %d probes without an answer, %d answered with "+
		"another source. 2 shared cores, one run", trials, probeInterval, probeTimeout, sorted, lost, wrong)
	figs := []bench.Figure{
		{Name: "planned_move_new_conn_gap_ms", Value: bench.Median(gaps), Unit: "ms", Target: "<= 100", Command: PlannedCommand, Note: note},
		{Name: "planned_move_wrong_source_answers", Value: float64(wrong), Unit: "answers", Target: "0", Command: PlannedCommand, Note: note},
	}
	bench.Log(t, figs...)
	bench.RecordIfAsked(t, figs...)
}

// plannedRound settles, probes from every Pod, cordons the holder, waits
// for the move and the probes' recovery, and uncordons. It returns the
// longest gap of any Pod, and the wrong and lost answers after the cordon.
func plannedRound(ctx context.Context, t *testing.T, c *cluster.Cluster, pods []*cluster.Pod) (time.Duration, int, int, error) {
	st, err := settle(ctx, c, egressName, 2*time.Second, settleLimit)
	if err != nil {
		return 0, 0, 0, err
	}
	mv, err := watchMove(ctx, c, st.Node)
	if err != nil {
		return 0, 0, 0, err
	}
	defer mv.stop()
	probes := make([]*probe, len(pods))
	for i, p := range pods {
		probes[i] = startProbe(ctx, p, c.Ext[0].Addr())
	}
	stopAll := func() [][]Sample {
		out := make([][]Sample, len(probes))
		for i, pr := range probes {
			out[i] = pr.stop()
		}
		return out
	}
	time.Sleep(500 * time.Millisecond)
	for i, pr := range probes {
		if !okBefore(pr.snapshot(), st) {
			stopAll()
			return 0, 0, 0, fmt.Errorf("probe from %s does not see %s before the cordon", pods[i], st.IP)
		}
	}
	start := time.Now()
	if err := c.Cordon(ctx, st.Node, true); err != nil {
		stopAll()
		return 0, 0, 0, err
	}
	var doneAt time.Time
	for time.Since(start) < trialWindow && (doneAt.IsZero() || time.Since(doneAt) < trialTail) {
		if _, moved := mv.when(); moved && doneAt.IsZero() {
			doneAt = time.Now()
		}
		time.Sleep(50 * time.Millisecond)
	}
	traces := stopAll()
	var worst time.Duration
	wrong, lost := 0, 0
	for i, samples := range traces {
		tr := Analyze("planned", samples, st.IP, start, start)
		if !tr.Recovered {
			return 0, 0, 0, fmt.Errorf("probe from %s never saw %s again after the cordon", pods[i], st.IP)
		}
		logWrong(t, samples, st.IP, start, mv)
		t.Logf("  from %s: longest gap %v, %d sent, %d lost, %d wrong", pods[i].Node.Name, tr.MaxGap.Round(time.Millisecond), tr.Sent, tr.Lost, tr.Wrong)
		worst = max(worst, tr.MaxGap)
		wrong += tr.Wrong
		lost += tr.Lost
	}
	at, moved := mv.when()
	if !moved {
		return 0, 0, 0, fmt.Errorf("status of %s never left %s after the cordon", egressName, st.Node)
	}
	t.Logf("cordon %s: status moved after %v; longest gap of any Pod %v", st.Node, at.Sub(start).Round(time.Millisecond), worst.Round(time.Millisecond))
	if err := c.Cordon(ctx, st.Node, false); err != nil {
		return 0, 0, 0, err
	}
	return worst, wrong, lost, nil
}
