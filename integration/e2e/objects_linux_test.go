package e2e_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/sluicenet/sluice/helperd/egstatus"
	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestConflictingObjects: objects that pass the schema but conflict with
// each other or with the cluster, all at once on one live cluster. A pool
// spanning Node IPs hands out only the address that is no Node's;
// overlapping pools never give one IP twice; a pooled Egress naming a
// static Egress's IP loses it and is set aside; and through all of it,
// every IP has one holder, the winners' Pods leave with their IPs, the
// losers' and unrelated Pods with their Node's, and new Pods start on every
// Node.
func TestConflictingObjects(t *testing.T) {
	ctx := context.Background()
	c := sluiceCluster(t, 3, 1)
	for _, ns := range []string{"st", "named", "auto", "ov1", "ov2", "ov3", "nodes", "other"} {
		if err := c.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
	}
	sl := c.SluiceClient().SluiceV1alpha1()
	static := netip.MustParseAddr("192.0.2.248")
	addAddr(t, c, "node-a", static)
	createEgress(t, c, staticEgress("st", static.String(), "st", nil))
	for _, p := range []*v1alpha1.ExternalIPPool{
		pool("with-static", "192.0.2.248", "192.0.2.249", nil),
		pool("ov-1", "192.0.2.243", "192.0.2.244", nil),
		pool("ov-2", "192.0.2.244", "192.0.2.246", nil),
		// node-b and node-c are 192.0.2.12 and .13.
		pool("with-nodes", "192.0.2.12", "192.0.2.14", nil),
	} {
		if _, err := sl.ExternalIPPools().Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	named := pooledEgress("named", "with-static", "named")
	named.Spec.EgressIP = static.String()
	createEgress(t, c, named)
	createEgress(t, c, pooledEgress("auto", "with-static", "auto"))
	createEgress(t, c, pooledEgress("ov1", "ov-1", "ov1"))
	createEgress(t, c, pooledEgress("ov2", "ov-2", "ov2"))
	createEgress(t, c, pooledEgress("ov3", "ov-2", "ov3"))
	createEgress(t, c, pooledEgress("nodes", "with-nodes", "nodes"))
	web := map[string]string{"app": "web"}

	// The winners: each its own IP, held once, and its Pods leave with it.
	want := map[string]netip.Addr{"auto": netip.MustParseAddr("192.0.2.249"), "nodes": netip.MustParseAddr("192.0.2.14")}
	seen := map[netip.Addr]string{static: "st"}
	for _, name := range []string{"auto", "ov1", "ov2", "ov3", "nodes"} {
		ip, _ := assigned(t, c, name)
		if w, ok := want[name]; ok && ip != w {
			t.Errorf("%s got %s, want %s", name, ip, w)
		}
		if other, dup := seen[ip]; dup {
			t.Errorf("%s and %s both got %s", name, other, ip)
		}
		seen[ip] = name
		// Placement settles as the other Egresses get their IPs (bounded
		// loads move an IP when the count changes): one holder in the end.
		// The moment of a move can show two (a planned move's handoff, see
		// TestPlannedMovesMakeBeforeBreak).
		eventually(t, converge, name+"'s IP on one Node, the one status names", func() error {
			node := getEgress(t, c, name).Status.EgressNode
			if h := holders(t, c, ip); len(h) != 1 || h[0] != node {
				return fmt.Errorf("%s is held by %v, status says %s", ip, h, node)
			}
			return nil
		})
		expectSource(t, c, mustPod(t, c, "node-c", name, "web", web), ip, converge)
	}
	expectSource(t, c, mustPod(t, c, "node-b", "st", "web", web), static, converge)

	// The loser is set aside: it says why, and its Pod keeps its Node's IP.
	eventually(t, converge, "named is set aside with IPInUse", func() error {
		eg := getEgress(t, c, "named")
		for _, typ := range []string{v1alpha1.IPAllocated, v1alpha1.IPAssigned} {
			if cond, ok := egstatus.Find(eg.Status.Conditions, typ); ok && cond.Reason == "IPInUse" && cond.Status == metav1.ConditionFalse {
				return nil
			}
		}
		return fmt.Errorf("conditions %+v", eg.Status.Conditions)
	})
	expectSource(t, c, mustPod(t, c, "node-c", "named", "web", web), c.Node("node-c").IP, converge)
	if h := holders(t, c, static); len(h) != 1 || h[0] != "node-a" {
		t.Errorf("the static IP is on %v, want node-a only", h)
	}

	// No Node holds another Node's address; the LAN still reaches node-b.
	for _, n := range []string{"node-b", "node-c"} {
		ip := c.Node(n).IP
		if h := holders(t, c, ip); len(h) != 1 || h[0] != n {
			t.Errorf("%s is on %v, want %s only", ip, h, n)
		}
	}
	if got, err := c.Ext[0].WhoamiFrom(ctx, c.Node("node-b").NS); err != nil || got != c.Node("node-b").IP {
		t.Errorf("node-b's own traffic: %v, %v", got, err)
	}

	// New, unrelated Pods start on every Node and keep their Node's IP.
	for _, n := range c.Nodes {
		expectSource(t, c, mustPod(t, c, n.Name, "other", "late-"+n.Name, web), n.IP, converge)
	}
}
