package datapath

import (
	"context"
	"strings"
	"testing"

	"github.com/sluicenet/sluice/pkg/nstest"
)

// TestForwardPolicyDrop: Nodes whose filter FORWARD policy is DROP (Docker
// sets it) and whose primary CNI accepts only its own Pods' traffic, per
// Pod, as the CNI firewall plugin does. The egress Node must still forward
// another Node's Pods through the tunnel, and the replies back; and an
// earlier DROP of the primary's (a NetworkPolicy) must still win.
func TestForwardPolicyDrop(t *testing.T) {
	tp := newTopo(t)
	ext := extAddr + ":8080"
	serveSource(t, tp.ext, ext)
	for n, pods := range map[*nstest.NS][]string{tp.node1: {"10.244.1.2", "10.244.1.3"}, tp.node2: {"10.244.2.2"}} {
		n.MustRun(t, "iptables", "-P", "FORWARD", "DROP")
		for _, ip := range pods {
			n.MustRun(t, "iptables", "-A", "FORWARD", "-s", ip, "-j", "ACCEPT")
			n.MustRun(t, "iptables", "-A", "FORWARD", "-d", ip, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")
		}
	}
	d1, d2 := newDatapath(t, tp.node1, "192.0.2.11", -1), newDatapath(t, tp.node2, "192.0.2.12", -1)
	apply(t, tp.node2, d2, desiredFor(true, 1))
	apply(t, tp.node1, d1, desiredFor(false, 1))
	if got := seenAs(t, tp.pod1a, ext); got != "203.0.113.10" {
		t.Fatalf("pod on node1 via egress node2 seen as %s", got)
	}
	if got := seenAs(t, tp.pod2a, ext); got != "203.0.113.10" {
		t.Fatalf("pod on the egress node seen as %s", got)
	}
	// Sluice's accept comes after everybody else's rules, once.
	rules := strings.Split(strings.TrimSpace(tp.node2.MustRun(t, "iptables", "-S", "FORWARD")), "\n")
	if last := rules[len(rules)-1]; last != "-A FORWARD -j "+ChainFilterForward || strings.Count(strings.Join(rules, "\n"), ChainFilterForward) != 1 {
		t.Fatalf("FORWARD on node2:\n%s", strings.Join(rules, "\n"))
	}
	// A later rule of someone else's stays after ours; a sync does not move us.
	tp.node2.MustRun(t, "iptables", "-A", "FORWARD", "-s", "192.0.2.99", "-j", "DROP")
	if n := apply(t, tp.node2, d2, desiredFor(true, 1)); n != 0 {
		t.Errorf("sync after a foreign append wrote %d times", n)
	}
	// The primary's NetworkPolicy-style DROP, before us, still wins.
	tp.node2.MustRun(t, "iptables", "-I", "FORWARD", "1", "-s", "10.244.1.2", "-j", "DROP")
	if c, err := dialFrom(tp.pod1a, ext); err == nil {
		c.c.Close()
		t.Fatal("pod1a reached the server past node2's DROP")
	}
	if err := tp.node2.Do(func() error { return d2.Uninstall(context.Background()) }); err != nil {
		t.Fatal(err)
	}
	if out := tp.node2.MustRun(t, "iptables-save", "-t", "filter"); strings.Contains(out, "SLUICE") {
		t.Fatalf("left after Uninstall:\n%s", out)
	}
}
