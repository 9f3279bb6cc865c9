package habench

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicenet/sluice/bench"
	"github.com/sluicenet/sluice/integration/cluster"
)

// TestRestart is the restart benchmark, with the helpers' default
// restart grace: five pooled Egresses and 20 long-lived flows (four Pods
// per Egress, on every Node) through a rolling SIGTERM restart of every
// helper and then a SIGKILL of each. It counts IP moves (every uplink
// sampled every 100 ms), flows that broke or stalled over 1 s, and packets
// at the external server with a source other than the egress IPs. Then
// SLUICE_BENCH_TRIALS (default 10) uplink cuts of a holder measure the
// failover that must still happen, with the grace on.
func TestRestart(t *testing.T) {
	bench.Require(t)
	trials := bench.EnvInt(t, "SLUICE_BENCH_TRIALS", 10, 1, 100)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	c := startCluster(t)
	var flows []cluster.Flow
	var ips []netip.Addr
	var prodPods []*cluster.Pod
	for i := range 5 {
		ns, name := "prod", egressName
		if i > 0 {
			ns, name = fmt.Sprintf("team%d", i), fmt.Sprintf("egress-team%d", i)
		}
		if err := c.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
		var pods []*cluster.Pod
		for j, node := range []string{"node-a", "node-b", "node-c", "node-a"} {
			p, err := c.AddPod(ctx, node, ns, fmt.Sprintf("web-%d", j), web)
			if err != nil {
				t.Fatal(err)
			}
			pods = append(pods, p)
		}
		if _, err := c.SluiceClient().SluiceV1alpha1().Egresses().Create(ctx, pooledEgress(name, ns), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		st, err := settle(ctx, c, name, settleStable, settleLimit)
		if err != nil {
			t.Fatal(err)
		}
		ips = append(ips, st.IP)
		for _, p := range pods {
			flows = append(flows, cluster.Flow{Pod: p, IP: st.IP})
		}
		if i == 0 {
			prodPods = pods[:3]
		}
	}
	wire, err := c.Ext[0].WatchWire(ips...)
	if err != nil {
		t.Fatal(err)
	}
	defer wire.Close()
	r, err := c.RestartUnderFlows(ctx, c.Ext[0], flows, ips, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("holders: %s", r.Start)
	for _, m := range r.Moves {
		t.Logf("holders changed: %s", m)
	}
	resets, asks := 0, 0
	var worst time.Duration
	for i, st := range r.Stats {
		asks += st.Asks
		worst = max(worst, st.MaxGap)
		if st.Connections != 1 || st.MaxGap > time.Second || len(st.Wrong) > 0 {
			resets++
			t.Logf("flow from %s via %s: %d asks, %d answered, %d connections, longest gap %v, wrong %v",
				flows[i].Pod, flows[i].IP, st.Asks, st.OK, st.Connections, st.MaxGap, st.Wrong)
		}
	}
	_, wrongPackets, err := wire.Wrong()
	if err != nil {
		t.Fatal(err)
	}
	note := fmt.Sprintf("3 Nodes, default --restart-grace (30 s), 5 pooled Egresses, 20 long-lived TCP flows (4 Pods per Egress, each asking the "+
		"external server its source every 50 ms, %d asks in all) through a rolling SIGTERM restart of every helper and then a SIGKILL of each "+
		"(1 s down, then started and waited for, 2 s apart); every uplink sampled every 100 ms (%d samples). A reset is a flow that had to "+
		"reconnect, stalled over 1 s or saw another source; the longest gap of any flow was %v. 2 shared cores, one run", asks, r.Samples, worst.Round(time.Millisecond))
	figs := []bench.Figure{
		{Name: "restart_ip_moves", Value: float64(len(r.Moves)), Unit: "moves", Target: "0", Command: RestartCommand, Note: note},
		{Name: "restart_flow_resets", Value: float64(resets), Unit: "flows", Target: "0", Command: RestartCommand, Note: note},
		{Name: "restart_wrong_source_packets", Value: float64(wrongPackets), Unit: "packets", Target: "0", Command: RestartCommand,
			Note: "packets at the external server's raw table with a source other than the five egress IPs during the restarts above (" + wire.String() + ")"},
	}

	// The failover that must still happen: a holder's uplink cut, with
	// the grace, then (helpers restarted with --restart-grace=0) without,
	// side by side in one cluster.
	cuts := func(label string) []float64 {
		k := failureKinds(c)[1]
		var fo []float64
		for round := range trials {
			tr, err := runTrial(ctx, t, c, k, prodPods)
			if err != nil {
				t.Fatalf("uplink cut %d (%s): %v", round+1, label, err)
			}
			t.Logf("uplink cut %d (%s): failover %6.3fs takeover %6.3fs (moved %v) lost %d wrong-source %d",
				round+1, label, tr.Failover.Seconds(), tr.Takeover.Seconds(), tr.TookOver, tr.Lost, tr.Wrong)
			if !tr.Recovered {
				t.Fatalf("uplink cut %d (%s): the probe never saw the egress IP again", round+1, label)
			}
			fo = append(fo, tr.Failover.Seconds())
		}
		return fo
	}
	graced := cuts("grace 30s")
	if err := c.RestartEach(ctx, false, 0, 0, "--restart-grace=0"); err != nil {
		t.Fatal(err)
	}
	plain := cuts("grace 0")
	fnote := fmt.Sprintf("%d uplink cuts of the holder of %s in the cluster above with the default restart grace, then %d with the helpers "+
		"restarted with --restart-grace=0 (median %.3f s, p99 %.3f s): failure call start → first answer with the egress IP to a probe "+
		"(50/s, from a Pod on another Node) sent after the call returned; p99 by nearest rank. With the grace, each Node probes the departed "+
		"Node's kernel (ARP, 60 ms) in the reconcile that sees it leave. 2 shared cores, one run",
		len(graced), egressName, len(plain), bench.Median(plain), bench.Quantile(plain, 0.99))
	figs = append(figs,
		bench.Figure{Name: "failover_uplink_down_graced_median_s", Value: round3(bench.Median(graced)), Unit: "s", Target: "<= 1.0", Command: RestartCommand, Note: fnote},
		bench.Figure{Name: "failover_uplink_down_graced_p99_s", Value: round3(bench.Quantile(graced, 0.99)), Unit: "s", Target: "<= 2.0", Command: RestartCommand, Note: fnote},
		bench.Figure{Name: "failover_uplink_down_graced_ratio", Value: round3(bench.Median(graced) / bench.Median(plain)), Unit: "ratio", Target: "",
			Command: RestartCommand, Note: "median with the grace ÷ median without, " + fnote},
	)
	bench.Report(t, figs...)
}
