package e2e_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/sluicenet/sluice/integration/attack"
	"github.com/sluicenet/sluice/integration/cluster"
)

// scrape fetches a helper's /metrics from inside its Node's namespace.
func scrape(t *testing.T, c *cluster.Cluster, node string) string {
	t.Helper()
	body, err := attack.Scrape(context.Background(), c.Node(node))
	if err != nil {
		t.Fatalf("scrape %s: %v", node, err)
	}
	return body
}

// metric returns the value of the first sample whose name and labels start
// with prefix, e.g. `sluice_gossip_members{state="alive"}`.
func metric(body, prefix string) (float64, bool) {
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, prefix) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			return v, err == nil
		}
	}
	return 0, false
}

// checkMetrics is run by TestStaticEgress once traffic has flowed. node-a's
// helper has restarted by then, and the Pods it found on its Node at start
// are no CNI requests, so one Pod (selected by no Egress) is added for the
// CNI counters.
func checkMetrics(t *testing.T, c *cluster.Cluster) {
	if err := c.CreateNamespace(context.Background(), "metrics", nil); err != nil {
		t.Fatal(err)
	}
	mustPod(t, c, "node-a", "metrics", "probe", nil)
	eventually(t, converge, "metrics on node-a", func() error {
		body := scrape(t, c, "node-a")
		for _, want := range []struct {
			prefix string
			min    float64
		}{
			{`sluice_egress_snat_packets_total{egress="egress-prod",egress_ip="192.0.2.201"}`, 1},
			{`sluice_egress_snat_bytes_total{egress="egress-prod",egress_ip="192.0.2.201"}`, 60},
			{`sluice_egress_selected_pods{egress="egress-prod",scope="cluster"}`, 2},
			{`sluice_egress_ips_held`, 1},
			{`sluice_gossip_members{state="alive"}`, 3},
			{`sluice_cni_requests_total{result="ok",verb="add"}`, 1},
			{`sluice_reconcile_duration_seconds_count`, 1},
		} {
			v, ok := metric(body, want.prefix)
			if !ok || v < want.min {
				return fmt.Errorf("%s = %v (found %v), want >= %v", want.prefix, v, ok, want.min)
			}
		}
		// The tunnel guard's counters exist, and the Nodes' own traffic,
		// redirected Pods included, never trips them.
		for _, zero := range []string{
			"sluice_reconcile_errors_total",
			`sluice_tunnel_dropped_packets_total{reason="not-from-node"}`,
			`sluice_tunnel_dropped_packets_total{reason="not-selected"}`,
			`sluice_tunnel_dropped_packets_total{reason="from-pod"}`,
		} {
			if v, ok := metric(body, zero); !ok || v != 0 {
				return fmt.Errorf("%s = %v (found %v), want 0", zero, v, ok)
			}
		}
		return nil
	})
}
