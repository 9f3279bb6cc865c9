package e2e_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicenet/sluice/integration/cluster"
	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
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
	return c, ip, pods, watchOnceSettled(t, c, ip, pods)
}

// watchOnceSettled waits until every Pod leaves with ip, then has the
// external server count every packet from any other source until the test
// ends.
func watchOnceSettled(t *testing.T, c *cluster.Cluster, ip netip.Addr, pods []*cluster.Pod) *cluster.Wire {
	t.Helper()
	for _, p := range pods {
		expectSource(t, c, p, ip, converge)
	}
	wire, err := c.Ext[0].WatchWire(ip)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wire.Close)
	return wire
}

// watchedPool creates Namespace prod, a one-IP pool of ip for the Nodes
// matching sel, a selected Pod on every Node and a pooled Egress for
// them, waits until every Pod leaves with ip, and has the external server
// count every packet from any other source. It returns the IP, its
// holder, the Pods and the counters.
func watchedPool(t *testing.T, c *cluster.Cluster, ip string, sel map[string]string) (netip.Addr, string, []*cluster.Pod, *cluster.Wire) {
	t.Helper()
	ctx := context.Background()
	if err := c.CreateNamespace(ctx, "prod", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SluiceClient().SluiceV1alpha1().ExternalIPPools().Create(ctx, pool("wire-pool", ip, ip, sel), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pods []*cluster.Pod
	for _, n := range c.Nodes {
		pods = append(pods, mustPod(t, c, n.Name, "prod", "web-"+n.Name, map[string]string{"app": "web"}))
	}
	createEgress(t, c, pooledEgress("egress-wire", "wire-pool", "prod"))
	got, holder := assigned(t, c, "egress-wire")
	return got, holder, pods, watchOnceSettled(t, c, got, pods)
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
			// The holder last, with a ping from its Pod in the same
			// shell right after the insert: the ping's echo request is
			// sent before Sluice can have repaired the jump, so the
			// exit guard meets a wrong source for certain (Whoami's
			// connections alone may come after the repair).
			for _, n := range c.Nodes {
				if n.Name != "node-a" {
					nodeRunOut(t, c, n.Name, "iptables", masq...)
				}
			}
			inserted = time.Now()
			nodeRunOut(t, c, "node-a", "sh", "-c", fmt.Sprintf("iptables %s && { ip netns exec %s ping -n -q -c 1 -W 0.2 %s; true; }",
				strings.Join(masq, " "), pods[0].NS.Name, c.Ext[0].IP))
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
	// Every connection the foreign rule masqueraded on the holder (its
	// counter: nat sees a connection's first packet only) was dropped by
	// the exit guard. The ping makes one such connection likely, but the
	// repair may still beat it on a busy machine: then there is nothing
	// to drop, and the wire check below is what stands.
	masqueraded := foreignHits(t, c, "node-a")
	key := `sluice_exit_guard_dropped_packets_total{reason="wrong-source"}`
	v, ok := metric(scrape(t, c, "node-a"), key)
	if !ok || v < float64(masqueraded) {
		t.Errorf("node-a: %s = %v (found %v), want ≥ %d, the connections the foreign rule masqueraded", key, v, ok, masqueraded)
	}
	t.Logf("node-a: the foreign rule masqueraded %d connections; the exit guard dropped %v packets", masqueraded, v)
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

// Failover by a cut uplink and the old holder's return, under long-lived
// flows from a Pod on every Node (the new holder, the old holder, a third
// Node): the external server never sees a source other than the egress IP,
// and the flows of the Nodes that stayed up go on with it.
func TestFailoverOnTheWire(t *testing.T) {
	ctx := context.Background()
	c := sluiceCluster(t, 3, 1)
	ip, holder, pods, wire := watchedPool(t, c, "192.0.2.210", nil)

	fctx, stop := context.WithCancel(ctx)
	defer stop()
	results := map[string]<-chan cluster.FlowStats{}
	for _, p := range pods {
		results[p.Node.Name] = c.Ext[0].KeepFlowing(fctx, p, ip)
	}
	time.Sleep(time.Second)
	if err := c.UplinkDown(ctx, holder); err != nil {
		t.Fatal(err)
	}
	var next string
	eventually(t, failoverBudget, "the egress IP moves off "+holder, func() error {
		if h := holders(t, c, ip); len(h) == 1 && h[0] != holder {
			next = h[0]
			return nil
		}
		return fmt.Errorf("held by %v", holders(t, c, ip))
	})
	time.Sleep(2 * time.Second)
	if err := c.UplinkUp(ctx, holder); err != nil {
		t.Fatal(err)
	}
	time.Sleep(fenceBound + 2*time.Second) // the return, and a failback if placement asks for one
	back := time.Now().Add(-time.Second)
	stop()
	for node, ch := range results {
		st := <-ch
		t.Logf("%s: %d asks, %d answered, %d connections", node, st.Asks, st.OK, st.Connections)
		if len(st.Wrong) > 0 {
			t.Errorf("%s: the server saw the flow's source as %v", node, st.Wrong)
		}
		if st.LastOK.Before(back) {
			t.Errorf("%s: no answer with %s in the last second (last %v)", node, ip, st.LastOK)
		}
	}
	t.Logf("%s held by %s, then %s, then %v; the server saw %v", ip, holder, next, holders(t, c, ip), wire)
	if _, n, err := wire.Wrong(); err != nil || n > 0 {
		t.Errorf("the external server saw %v (%v)", wire, err)
	}
}

// An Egress's IP changes, and then the Egress is deleted, each under a
// long-lived flow and new connections from its Pods, on the holder and
// through the tunnel. While the Egress lives, the external server sees
// only its old or its new IP; once the deletion has converged the Pods
// leave with their Node IPs, as documented, and never with an egress IP.
func TestEgressChangesOnTheWire(t *testing.T) {
	ctx := context.Background()
	c, ip, pods, wire := watchedEgress(t)
	next := netip.MustParseAddr("192.0.2.202")
	addAddr(t, c, "node-b", next)
	if err := wire.Allow(next); err != nil {
		t.Fatal(err)
	}
	fctx, stop := context.WithCancel(ctx)
	defer stop()
	var flows []<-chan cluster.FlowStats
	for _, p := range pods {
		flows = append(flows, c.Ext[0].KeepFlowing(fctx, p, ip))
	}
	time.Sleep(time.Second)
	updateEgress(t, c, "egress-prod", func(eg *v1alpha1.Egress) { eg.Spec.EgressIP = next.String() })
	for _, p := range pods {
		expectSource(t, c, p, next, converge)
	}
	time.Sleep(time.Second)
	stop()
	for i, ch := range flows {
		st := <-ch
		t.Logf("%s's flow: %d asks, %d answered as %s, %d connections, other sources %v", pods[i], st.Asks, st.OK, ip, st.Connections, st.Wrong)
		for _, src := range st.Wrong {
			if src != next {
				t.Errorf("%s's flow was seen as %s", pods[i], src)
			}
		}
	}
	if _, n, err := wire.Wrong(); err != nil || n > 0 {
		t.Errorf("during the IP change the external server saw %v (%v)", wire, err)
	}

	// Deleted: from then on the Node IPs, and the egress IPs never again.
	fctx, stop = context.WithCancel(ctx)
	defer stop()
	flows = flows[:0]
	for _, p := range pods {
		flows = append(flows, c.Ext[0].KeepFlowing(fctx, p, p.Node.IP))
	}
	time.Sleep(time.Second)
	deleteEgress(t, c, "egress-prod")
	for _, p := range pods {
		expectSource(t, c, p, p.Node.IP, converge)
	}
	after := time.Now()
	time.Sleep(time.Second)
	stop()
	for i, ch := range flows {
		st := <-ch
		if st.LastOK.Before(after) {
			t.Errorf("%s: no answer with its Node IP after the deletion (last %v)", pods[i], st.LastOK)
		}
	}
	for range 5 { // and never an egress IP again
		for _, p := range pods {
			got, err := c.Whoami(ctx, p)
			if err != nil || got != p.Node.IP {
				t.Errorf("%s after the deletion: %v %v, want its Node IP %s", p, got, err, p.Node.IP)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Planned moves are make-before-break: a cordon of the holder, and then a
// Node label change that takes the new holder out of the pool's
// nodeSelector, each while a Pod on every Node keeps a flow going. The
// kernels, sampled every few milliseconds, show the IP on some Node's
// uplink at every moment of each move (the new holder takes it before the
// old one lets go), the external server sees no other source, and the
// flows survive.
func TestPlannedMovesMakeBeforeBreak(t *testing.T) {
	ctx := context.Background()
	c := sluiceCluster(t, 3, 1)
	nodes := c.Client().CoreV1().Nodes()
	setLabel := func(node, value string) {
		t.Helper()
		obj, err := nodes.Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		obj.Labels["egress"] = value
		if _, err := nodes.Update(ctx, obj, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range c.Nodes {
		setLabel(n.Name, "yes")
	}
	ip, holder, pods, wire := watchedPool(t, c, "192.0.2.212", map[string]string{"egress": "yes"})
	fctx, stop := context.WithCancel(ctx)
	defer stop()
	var flows []<-chan cluster.FlowStats
	for _, p := range pods {
		flows = append(flows, c.Ext[0].KeepFlowing(fctx, p, ip))
	}

	// move runs change and samples every Node's uplink until one Node
	// other than from holds ip alone; it fails if at any sample none did.
	move := func(what, from string, change func()) string {
		t.Helper()
		time.Sleep(500 * time.Millisecond)
		change()
		start := time.Now()
		var bare []time.Duration // when no Node held ip
		for time.Since(start) < failoverBudget {
			h := holders(t, c, ip)
			if len(h) == 0 {
				bare = append(bare, time.Since(start))
			}
			if len(h) == 1 && h[0] != from {
				if len(bare) > 0 {
					t.Errorf("%s: no Node held %s at %v after the change", what, ip, bare)
				}
				t.Logf("%s: %s moved from %s to %s in %v", what, ip, from, h[0], time.Since(start).Round(time.Millisecond))
				return h[0]
			}
			time.Sleep(3 * time.Millisecond)
		}
		t.Fatalf("%s: %s still held by %v", what, ip, holders(t, c, ip))
		return ""
	}
	next := move("cordon "+holder, holder, func() {
		if err := c.Cordon(ctx, holder, true); err != nil {
			t.Fatal(err)
		}
	})
	last := move("unlabel "+next, next, func() { setLabel(next, "no") })
	time.Sleep(time.Second)
	stop()
	for i, ch := range flows {
		st := <-ch
		t.Logf("%s: %d asks, %d answered, %d connections, longest gap %v", pods[i], st.Asks, st.OK, st.Connections, st.MaxGap)
		if len(st.Wrong) > 0 {
			t.Errorf("%s: the server saw the flow's source as %v", pods[i], st.Wrong)
		}
		// The new holder drops the server's packets of the old holder's
		// connections instead of resetting them, and SNATs the Pod's next
		// packet to the same port: the flow goes on after a retransmit.
		if st.Connections != 1 {
			t.Errorf("%s: the flow needed %d connections across two planned moves, want 1", pods[i], st.Connections)
		}
	}
	t.Logf("%s held by %s, then %s, then %s; the server saw %v", ip, holder, next, last, wire)
	if _, n, err := wire.Wrong(); err != nil || n > 0 {
		t.Errorf("the external server saw %v (%v)", wire, err)
	}
}

// foreignHits is the packet counter of the foreign MASQUERADE rule (the
// only one with source 10.244.0.0/16) in node's nat POSTROUTING.
func foreignHits(t *testing.T, c *cluster.Cluster, node string) int {
	t.Helper()
	out := nodeRunOut(t, c, node, "iptables", "-w", "-t", "nat", "-L", "POSTROUTING", "-v", "-n", "-x")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 8 && f[2] == "MASQUERADE" && slices.Contains(f, "10.244.0.0/16") {
			n, err := strconv.Atoi(f[0])
			if err != nil {
				t.Fatalf("%s: counter of %q: %v", node, line, err)
			}
			return n
		}
	}
	t.Fatalf("%s: no foreign MASQUERADE in nat POSTROUTING:\n%s", node, out)
	return 0
}
