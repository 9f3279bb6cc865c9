package e2e_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/helperd/egstatus"
	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestAddressAlreadyOnTheLAN: a pool IP that a LAN host (not a Node)
// already answers ARP for is never held: the Node that would hold it finds
// the host with an ARP probe, no Node adds the IP, the LAN keeps pointing
// at the host, and the Egress says so in a condition and an Event. Another
// Egress is unaffected. Once the host lets the IP go, it is held.
func TestAddressAlreadyOnTheLAN(t *testing.T) {
	ctx := context.Background()
	c := sluiceCluster(t, 3, 1)
	taken := netip.MustParseAddr("192.0.2.241")
	squatter, err := c.AddHost("squatter", taken)
	if err != nil {
		t.Fatal(err)
	}
	squatterMAC := strings.TrimSpace(squatter.MustRun(t, "cat", "/sys/class/net/eth0/address"))
	for _, ns := range []string{"prod", "staging"} {
		if err := c.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
	}
	sl := c.SluiceClient().SluiceV1alpha1()
	for _, p := range []*v1alpha1.ExternalIPPool{pool("squatted", "192.0.2.241", "192.0.2.241", nil), pool("clean", "192.0.2.242", "192.0.2.242", nil)} {
		if _, err := sl.ExternalIPPools().Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	web := map[string]string{"app": "web"}
	staging := mustPod(t, c, "node-a", "staging", "web", web)
	prod := mustPod(t, c, "node-b", "prod", "web", web)
	createEgress(t, c, pooledEgress("egress-prod", "squatted", "prod"))
	createEgress(t, c, pooledEgress("egress-staging", "clean", "staging"))

	eventually(t, converge, "egress-prod reports the conflict", func() error {
		eg := getEgress(t, c, "egress-prod")
		cond, _ := egstatus.Find(eg.Status.Conditions, v1alpha1.IPAssigned)
		if eg.Status.EgressIP != taken.String() || cond.Status != metav1.ConditionFalse || cond.Reason != v1alpha1.ReasonIPConflict ||
			!strings.Contains(cond.Message, squatterMAC) {
			return fmt.Errorf("status %+v", eg.Status)
		}
		return nil
	})
	eventually(t, converge, "a Warning Event IPConflict on egress-prod", func() error {
		evs, err := c.Client().CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=egress-prod"})
		if err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == v1alpha1.ReasonIPConflict && e.Type == "Warning" && strings.Contains(e.Message, squatterMAC) {
				return nil
			}
		}
		return fmt.Errorf("%d events, none IPConflict", len(evs.Items))
	})
	// For a while, no Node adds the IP, and the external server's entry
	// for it stays the squatter's.
	c.Ext[0].NS.MustRun(t, "ping", "-c1", "-W1", taken.String())
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if h := holders(t, c, taken); len(h) != 0 {
			t.Fatalf("%s, which the squatter answers for, is held by %v", taken, h)
		}
	}
	if neigh := c.Ext[0].NS.MustRun(t, "ip", "neigh", "show", taken.String()); !strings.Contains(neigh, squatterMAC) {
		t.Fatalf("the external server's entry for %s is %q, want the squatter's %s", taken, neigh, squatterMAC)
	}
	// No Node holds egress-prod's IP, but it has one: its Pod gets no
	// egress (the exit guard drops it), never the Node IP.
	actx, cancel := context.WithTimeout(ctx, time.Second)
	if got, err := c.Whoami(actx, prod); err == nil {
		t.Errorf("%s reached the external server as %s while no Node may hold %s", prod, got, taken)
	}
	cancel()
	// The other Egress works.
	ipStaging, _ := assigned(t, c, "egress-staging")
	expectSource(t, c, staging, ipStaging, converge)

	// The squatter leaves; a probe after the retry time finds no one.
	squatter.MustRun(t, "ip", "addr", "del", taken.String()+"/24", "dev", "eth0")
	ip, node := assigned(t, c, "egress-prod")
	if ip != taken {
		t.Fatalf("egress-prod has %s, want %s", ip, taken)
	}
	if h := holders(t, c, taken); len(h) != 1 || h[0] != node {
		t.Fatalf("%s is held by %v, status says %s", taken, h, node)
	}
}
