package e2e_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/helperd/egstatus"
	"github.com/sluicenet/sluice/helperd/inspect"
	"github.com/sluicenet/sluice/integration/cluster"
	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluicenet/sluice/pkg/nstest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Convergence budget for a change to show at the external server. The
// benchmark measures the real figure; this only bounds a broken run.
const converge = 15 * time.Second

// TestStaticEgress walks the "Configuring static Egress" example of Antrea's
// Egress documentation and nine scenarios (the subtests) on one three-node
// cluster whose primary CNI (bridge + host-local, host-gw routes) knows
// nothing about Sluice.
func TestStaticEgress(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := context.Background()
	// The second external server stands in for the Service CIDR: its IP is
	// passed in --cluster-cidrs, the same list the Service CIDR is in.
	svc := cluster.ExtIP(1)
	c := cluster.New(t, cluster.Options{Nodes: 3, ExtServers: 2, Sluice: true, KeepDir: os.Getenv("SLUICE_KEEP") != "",
		HelperArgs: []string{"--cluster-cidrs=" + cluster.ClusterCIDR + "," + cluster.ServiceCIDR + "," + svc.String() + "/32"}})
	dumpOnFailure(t, c)
	startHelpers(t, c)

	ipProd := netip.MustParseAddr("192.0.2.201")    // held by hand on node-a
	ipStaging := netip.MustParseAddr("192.0.2.202") // held by hand on node-b
	addAddr(t, c, "node-a", ipProd)
	addAddr(t, c, "node-b", ipStaging)
	for _, ns := range []string{"prod", "staging", "other"} {
		if err := c.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
	}
	web := map[string]string{"app": "web"}
	prodA := mustPod(t, c, "node-a", "prod", "web-a", web) // on the egress Node
	prodC := mustPod(t, c, "node-c", "prod", "web-c", web) // tunnelled to node-a
	stagingC := mustPod(t, c, "node-c", "staging", "web-c", web)
	stagingA := mustPod(t, c, "node-a", "staging", "web-a", web)
	otherC := mustPod(t, c, "node-c", "other", "web-c", web)

	createEgress(t, c, staticEgress("egress-prod", ipProd.String(), "prod", nil))
	createEgress(t, c, staticEgress("egress-staging", ipStaging.String(), "staging", nil))

	t.Run("1 the static example", func(t *testing.T) {
		expectSource(t, c, prodA, ipProd, converge)
		expectSource(t, c, prodC, ipProd, converge)
		expectSource(t, c, stagingC, ipStaging, converge)
		expectSource(t, c, stagingA, ipStaging, converge)
		eventually(t, converge, "status names the holders", func() error {
			for name, want := range map[string]string{"egress-prod": "node-a", "egress-staging": "node-b"} {
				eg := getEgress(t, c, name)
				cond, _ := egstatus.Find(eg.Status.Conditions, v1alpha1.IPAssigned)
				if eg.Status.EgressNode != want || cond.Status != metav1.ConditionTrue {
					return fmt.Errorf("%s status = %+v", name, eg.Status)
				}
			}
			return nil
		})
		out, err := c.Kubectl("get", "egress")
		if err != nil || !strings.Contains(out, "192.0.2.201") || !strings.Contains(out, "node-a") {
			t.Fatalf("kubectl get egress:\n%s (%v)", out, err)
		}
		t.Logf("kubectl get egress:\n%s", out)
	})

	t.Run("2 unselected Pods keep their Node IP", func(t *testing.T) {
		expectSource(t, c, otherC, c.Node("node-c").IP, converge)
	})

	t.Run("3 Pod to Pod and Pod to Service CIDR untouched", func(t *testing.T) {
		listenInPod(t, stagingA, 9000)
		eventually(t, converge, "pod to pod across Nodes keeps the Pod IP", func() error {
			got, err := podToPod(ctx, prodC, stagingA, 9000)
			if err != nil {
				return err
			}
			if got != prodC.IP.String() {
				return fmt.Errorf("pod saw %s, want %s", got, prodC.IP)
			}
			return nil
		})
		got, err := c.Ext[1].Whoami(ctx, prodC)
		if err != nil {
			t.Fatal(err)
		}
		if got == ipProd {
			t.Fatalf("traffic to a --cluster-cidrs destination was SNATed to the egress IP")
		}
	})

	t.Run("4 label changes move Pods in and out", func(t *testing.T) {
		if err := c.LabelNamespace(ctx, "other", map[string]string{"kubernetes.io/metadata.name": "other", "team": "prod"}); err != nil {
			t.Fatal(err)
		}
		createEgress(t, c, &v1alpha1.Egress{ObjectMeta: metav1.ObjectMeta{Name: "egress-team"},
			Spec: v1alpha1.EgressSpec{EgressIP: ipStaging.String(), AppliedTo: v1alpha1.AppliedTo{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "prod"}},
				PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "front"}}}}})
		expectSource(t, c, otherC, c.Node("node-c").IP, converge) // no tier label yet
		if err := c.LabelPod(ctx, otherC, map[string]string{"app": "web", "tier": "front"}); err != nil {
			t.Fatal(err)
		}
		expectSource(t, c, otherC, ipStaging, converge)
		if err := c.LabelNamespace(ctx, "other", map[string]string{"kubernetes.io/metadata.name": "other"}); err != nil {
			t.Fatal(err)
		}
		expectSource(t, c, otherC, c.Node("node-c").IP, converge)
		deleteEgress(t, c, "egress-team")
	})

	t.Run("5 egressIP change and IP moved to another Node are followed", func(t *testing.T) {
		updateEgress(t, c, "egress-staging", func(eg *v1alpha1.Egress) { eg.Spec.EgressIP = ipProd.String() })
		expectSource(t, c, stagingC, ipProd, converge)
		// Move 192.0.2.201 from node-a to node-c: both Egresses follow.
		delAddr(t, c, "node-a", ipProd)
		addAddr(t, c, "node-c", ipProd)
		expectSource(t, c, prodA, ipProd, converge)
		expectSource(t, c, prodC, ipProd, converge)
		expectSource(t, c, stagingA, ipProd, converge)
		eventually(t, converge, "status follows the move", func() error {
			if n := getEgress(t, c, "egress-prod").Status.EgressNode; n != "node-c" {
				return fmt.Errorf("egressNode = %q", n)
			}
			return nil
		})
		// And back, for the scenarios below.
		delAddr(t, c, "node-c", ipProd)
		addAddr(t, c, "node-a", ipProd)
		updateEgress(t, c, "egress-staging", func(eg *v1alpha1.Egress) { eg.Spec.EgressIP = ipStaging.String() })
		expectSource(t, c, stagingC, ipStaging, converge)
		expectSource(t, c, prodC, ipProd, converge)
	})

	t.Run("7 a new Pod's first connection already leaves with the egress IP", func(t *testing.T) {
		for i := range 3 {
			p := mustPod(t, c, "node-c", "prod", fmt.Sprintf("fresh-%d", i), web)
			got, err := c.Whoami(ctx, p) // the very first packet of this Pod
			if err != nil {
				t.Fatal(err)
			}
			if got != ipProd {
				t.Fatalf("first connection of %s left as %s, want %s", p, got, ipProd)
			}
		}
	})

	t.Run("8 a helper restart keeps established flows", func(t *testing.T) {
		st, err := c.Ext[0].OpenStream(ctx, prodC)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if got, err := st.Ask(5 * time.Second); err != nil || got != ipProd {
			t.Fatalf("stream before restart: %s %v", got, err)
		}
		before := rulePackets(t, c, "node-c", "mangle", ipProd)
		for _, node := range []string{"node-c", "node-a"} {
			if err := c.StopHelper(node); err != nil {
				t.Fatal(err)
			}
			// The flow keeps going while no helper runs.
			if got, err := st.Ask(5 * time.Second); err != nil || got != ipProd {
				t.Fatalf("stream with %s's helper down: %s %v", node, got, err)
			}
			if err := c.StartHelper(node); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(3 * time.Second) // let both helpers reconcile over the live flow
		// Two asks crossed the mark rule since before: a restart that
		// rewrote the rule would have reset its counter below that.
		mid := rulePackets(t, c, "node-c", "mangle", ipProd)
		if mid < before+2 {
			t.Fatalf("mark rule packets fell from %d to %d across the restarts: the rule was rewritten", before, mid)
		}
		for range 5 {
			if got, err := st.Ask(5 * time.Second); err != nil || got != ipProd {
				t.Fatalf("stream after restarts: %s %v", got, err)
			}
		}
		// The flow's packets keep counting on its mark rule: the restart
		// rewrote nothing, so the counter was not reset either.
		if after := rulePackets(t, c, "node-c", "mangle", ipProd); after < mid+5 {
			t.Fatalf("mark rule packets %d after the restarts, %d five asks later", mid, after)
		}
	})

	t.Run("9 a Sluice rule deleted by hand is repaired", func(t *testing.T) {
		out, err := c.Exec(ctx, "node-a", "iptables", "-t", "nat", "-S", "SLUICE-POSTROUTING")
		if err != nil {
			t.Fatal(err)
		}
		var snat string
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "--to-source "+ipProd.String()) {
				snat = l
			}
		}
		if snat == "" {
			t.Fatalf("no SNAT rule for %s on node-a:\n%s", ipProd, out)
		}
		args := append([]string{"-t", "nat"}, strings.Fields(strings.Replace(snat, "-A ", "-D ", 1))...)
		if out, err := c.Exec(ctx, "node-a", "iptables", args...); err != nil {
			t.Fatalf("delete rule: %v %s", err, out)
		}
		// The Pod on node-a now leaves with the Node IP until the repair.
		eventually(t, 10*time.Second, "SNAT rule repaired", func() error {
			out, err := c.Exec(ctx, "node-a", "iptables", "-t", "nat", "-S", "SLUICE-POSTROUTING")
			if err != nil || !strings.Contains(out, "--to-source "+ipProd.String()) {
				return fmt.Errorf("not yet: %s %v", out, err)
			}
			return nil
		})
		expectSource(t, c, prodA, ipProd, converge)
		// The same for the policy rule of a tunnelled Egress on node-c.
		rules, _ := c.Exec(ctx, "node-c", "ip", "rule", "show")
		var prio string
		for _, l := range strings.Split(rules, "\n") {
			if strings.Contains(l, "lookup 10") && strings.Contains(l, "fwmark") {
				prio = strings.TrimSuffix(strings.Fields(l)[0], ":")
				break
			}
		}
		if prio == "" {
			t.Fatalf("no egress rule on node-c:\n%s", rules)
		}
		if out, err := c.Exec(ctx, "node-c", "ip", "rule", "del", "priority", prio); err != nil {
			t.Fatalf("delete ip rule: %v %s", err, out)
		}
		expectSource(t, c, prodC, ipProd, 10*time.Second)
	})

	t.Run("metrics", func(t *testing.T) { checkMetrics(t, c) })

	t.Run("CLI", func(t *testing.T) {
		var rows []inspect.EgressRow
		cli(t, c, "node-c", &rows, "egresses")
		found := false
		for _, r := range rows {
			if r.Name == "egress-prod" && r.Node == "node-a" && r.PodsHere >= 1 && r.PodsCluster >= 2 {
				found = true
			}
		}
		if !found {
			t.Fatalf("egresses on node-c: %+v", rows)
		}
		var ex inspect.Explanation
		cli(t, c, "node-c", &ex, "explain", "prod/web-c")
		if ex.Egress != "egress-prod" || ex.TunnelPeer != c.Node("node-a").IP.String() || ex.Table == 0 || ex.Mark == "" {
			t.Fatalf("explain prod/web-c: %+v", ex)
		}
		for _, verb := range []string{"egresses", "pods", "datapath"} {
			out, err := c.Node("node-c").Exec(ctx, c.Opts.HelperBinary, verb, "--status-socket="+c.Node("node-c").Paths.StatusSock)
			if err != nil {
				t.Fatalf("%s: %v", verb, err)
			}
			t.Logf("sluice-helperd %s on node-c:\n%s", verb, out)
		}
		out, _ := c.Node("node-c").Exec(ctx, c.Opts.HelperBinary, "explain", "prod/web-c", "--status-socket="+c.Node("node-c").Paths.StatusSock)
		t.Logf("sluice-helperd explain prod/web-c on node-c:\n%s", out)
	})

	t.Run("6 deleting the Egress restores the Node IP", func(t *testing.T) {
		deleteEgress(t, c, "egress-prod")
		expectSource(t, c, prodC, c.Node("node-c").IP, converge)
		expectSource(t, c, prodA, c.Node("node-a").IP, converge)
		expectSource(t, c, stagingC, ipStaging, converge)
	})

	t.Run("rp_filter stayed 1 everywhere", func(t *testing.T) {
		for _, n := range c.Nodes {
			out, err := n.Exec(ctx, "sh", "-c", "grep -H . /proc/sys/net/ipv4/conf/*/rp_filter")
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				if !strings.HasSuffix(l, ":1") {
					t.Errorf("%s: %s", n.Name, l)
				}
			}
		}
	})
}

func addAddr(t *testing.T, c *cluster.Cluster, node string, ip netip.Addr) {
	t.Helper()
	if out, err := c.Exec(context.Background(), node, "ip", "addr", "add", ip.String()+"/32", "dev", "eth0"); err != nil {
		t.Fatalf("add %s on %s: %v %s", ip, node, err, out)
	}
}

func delAddr(t *testing.T, c *cluster.Cluster, node string, ip netip.Addr) {
	t.Helper()
	if out, err := c.Exec(context.Background(), node, "ip", "addr", "del", ip.String()+"/32", "dev", "eth0"); err != nil {
		t.Fatalf("del %s on %s: %v %s", ip, node, err, out)
	}
}
