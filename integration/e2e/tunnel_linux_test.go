package e2e_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/sluicenet/sluice/integration/attack"
	"github.com/sluicenet/sluice/integration/cluster"
	"github.com/sluicenet/sluice/pkg/nstest"
)

// TestTunnelInjection: forged VXLAN frames from a LAN host that is not a
// Node, from an unselected Pod and from a selected Pod naming another
// Egress's Pod never leave with an egress IP, are never relayed, and never
// reach a Pod; the helpers count them; the tunnel still works.
func TestTunnelInjection(t *testing.T) {
	nstest.RequireRoot(t)
	c := cluster.New(t, cluster.Options{Nodes: 3, ExtServers: 1, Sluice: true})
	dumpOnFailure(t, c)
	startHelpers(t, c)
	const perVector = 200
	res, err := attack.Tunnel(context.Background(), c, perVector)
	for _, v := range res.Vectors {
		t.Log("vector ", v)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(res.AtServer) != 0 || len(res.AtPod) != 0 {
		t.Errorf("injected datagrams delivered, by source: at the server %v, at the Pod %v", res.AtServer, res.AtPod)
	}
	want := map[string]int{attack.ProdIP.String(): 5, attack.StagingIP.String(): 5}
	if fmt.Sprint(res.Legit) != fmt.Sprint(want) {
		t.Errorf("selected Pods' datagrams after the attack, by source: %v, want %v", res.Legit, want)
	}
	// node-a was the target of the three LAN-host flows; node-c forwarded
	// three Pod flows (two of otherC's, prodC's to node-b) and took one at
	// its own IP.
	for _, w := range []struct {
		node, reason string
		min          float64
	}{
		{"node-a", "not-from-node", 3 * perVector},
		{"node-c", "from-pod", 3 * perVector},
		{"node-c", "not-from-node", perVector},
	} {
		eventually(t, converge, "drop counters on "+w.node, func() error {
			key := fmt.Sprintf(`sluice_tunnel_dropped_packets_total{reason=%q}`, w.reason)
			if v, ok := metric(scrape(t, c, w.node), key); !ok || v < w.min {
				return fmt.Errorf("%s = %v (found %v), want >= %v", key, v, ok, w.min)
			}
			return nil
		})
	}
}
