package e2e_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/sluicenet/sluice/integration/cluster"
)

// watchedEgress starts 3 Nodes and an external server, a static Egress
// of 192.0.2.201 held by node-a for Namespace prod, and a selected Pod on
// node-a and on node-c that leave with it; the server counts every packet
// from any other source. The Pods are the server's only clients.
func watchedEgress(t *testing.T) (*cluster.Cluster, netip.Addr, []*cluster.Pod, *cluster.Wire) {
	t.Helper()
	c := sluiceCluster(t, 3, 1)
	ip := netip.MustParseAddr("192.0.2.201")
	addAddr(t, c, "node-a", ip)
	if err := c.CreateNamespace(context.Background(), "prod", nil); err != nil {
		t.Fatal(err)
	}
	pods := []*cluster.Pod{mustPod(t, c, "node-a", "prod", "web-a", nil), mustPod(t, c, "node-c", "prod", "web-c", nil)}
	createEgress(t, c, staticEgress("egress-prod", ip.String(), "prod", nil))
	for _, p := range pods {
		expectSource(t, c, p, ip, converge)
	}
	wire, err := c.Ext[0].WatchWire(ip)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wire.Close)
	return c, ip, pods, wire
}

// Another agent inserts a MASQUERADE at position 1 of nat POSTROUTING on
// every Node while selected Pods connect, on the holder and through the
// tunnel. Nothing may reach the external server with a source other than
// the egress IP (the exit guard drops it and counts it), and Sluice puts
// its jump first again.
func TestForeignMasqueradeFirst(t *testing.T) {
	ctx := context.Background()
	c, ip, pods, wire := watchedEgress(t)

	masq := []string{"-w", "-t", "nat", "-I", "POSTROUTING", "1", "-s", "10.244.0.0/16", "!", "-d", "10.244.0.0/16", "-j", "MASQUERADE"}
	var inserted time.Time
	repaired := map[string]time.Duration{}
	deadline := time.Now().Add(8 * time.Second)
	for i := 0; time.Now().Before(deadline) && len(repaired) < len(pods); i++ {
		if i == 5 {
			for _, n := range c.Nodes {
				nodeRunOut(t, c, n.Name, "iptables", masq...)
			}
			inserted = time.Now()
		}
		for _, p := range pods {
			actx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			got, err := c.Whoami(actx, p)
			cancel()
			switch {
			case err == nil && got != ip:
				t.Errorf("%s left as %s", p, got)
			case err == nil && !inserted.IsZero():
				if _, ok := repaired[p.Name]; !ok {
					repaired[p.Name] = time.Since(inserted)
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("first connection with the egress IP after the insert: %v", repaired)
	if len(repaired) < len(pods) {
		t.Errorf("Pods never reached the server as %s again: %v", ip, repaired)
	}
	// The watch, not the periodic resync (2 s), put the jumps back: the
	// first attempt after the insert may time out (300 ms), the next
	// succeeds.
	for name, d := range repaired {
		if d > time.Second {
			t.Errorf("%s reached the server as %s again only %v after the insert", name, ip, d)
		}
	}
	key := `sluice_exit_guard_dropped_packets_total{reason="wrong-source"}`
	if v, ok := metric(scrape(t, c, "node-a"), key); !ok || v < 1 {
		t.Errorf("node-a: %s = %v (found %v), want ≥ 1", key, v, ok)
	}
	if _, n, err := wire.Wrong(); err != nil || n > 0 {
		t.Errorf("the external server saw %v (%v)", wire, err)
	}
	for _, n := range c.Nodes {
		first := nodeRunOut(t, c, n.Name, "iptables", "-w", "-t", "nat", "-S", "POSTROUTING", "1")
		if first != "-A POSTROUTING -j SLUICE-POSTROUTING\n" {
			t.Errorf("%s: nat POSTROUTING's first rule is %q", n.Name, first)
		}
	}
}
