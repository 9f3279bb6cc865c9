package e2e_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/sluicenet/sluice/integration/cluster"
	"github.com/sluicenet/sluice/pkg/nstest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A rolling restart of every helper, by SIGTERM and then by SIGKILL, under
// long-lived flows through three pooled egress IPs: no IP moves (sampled
// on every uplink every 100 ms), no flow breaks, and the external server
// sees no source but the egress IPs. The Nodes' kernels go on forwarding
// while their helpers are away, and the others keep the IPs in place
// because those kernels still answer for them (--restart-grace).
func TestRollingRestartMovesNothing(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := context.Background()
	c := cluster.New(t, cluster.Options{Nodes: 3, ExtServers: 1, Sluice: true, KeepDir: os.Getenv("SLUICE_KEEP") != "",
		HelperArgs: []string{"--restart-grace=30s"}})
	dumpOnFailure(t, c)
	startHelpers(t, c)
	if _, err := c.SluiceClient().SluiceV1alpha1().ExternalIPPools().Create(ctx, pool("restart-pool", "192.0.2.230", "192.0.2.232", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var flows []cluster.Flow
	var ips []netip.Addr
	for i := range 3 {
		ns := fmt.Sprintf("team%d", i)
		if err := c.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
		var pods []*cluster.Pod
		for _, n := range c.Nodes {
			pods = append(pods, mustPod(t, c, n.Name, ns, "web-"+n.Name, map[string]string{"app": "web"}))
		}
		createEgress(t, c, pooledEgress("egress-"+ns, "restart-pool", ns))
		ip, _ := assigned(t, c, "egress-"+ns)
		ips = append(ips, ip)
		for _, p := range pods {
			expectSource(t, c, p, ip, converge)
			flows = append(flows, cluster.Flow{Pod: p, IP: ip})
		}
	}
	wire, err := c.Ext[0].WatchWire(ips...)
	if err != nil {
		t.Fatal(err)
	}
	defer wire.Close()
	r, err := c.RestartUnderFlows(ctx, c.Ext[0], flows, ips, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("holders: %s", r.Start)
	for i, st := range r.Stats {
		if st.Connections != 1 || len(st.Wrong) > 0 || st.OK < st.Asks-1 {
			t.Errorf("flow from %s via %s: %d asks, %d answered, %d connections, wrong sources %v",
				flows[i].Pod, flows[i].IP, st.Asks, st.OK, st.Connections, st.Wrong)
		}
	}
	if len(r.Moves) > 0 {
		t.Errorf("egress IPs moved during the restarts (from %s): %v", r.Start, r.Moves)
	}
	if _, n, err := wire.Wrong(); err != nil || n > 0 {
		t.Errorf("the external server saw %v (%v)", wire, err)
	}
}

// A helper that stays away past its grace loses its IPs: its Node's kernel
// drops them when their lifetime (the grace) runs out, and only then does
// another Node take them, so the two never hold one together.
func TestGraceRunsOut(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := context.Background()
	const grace = 5 * time.Second
	c := cluster.New(t, cluster.Options{Nodes: 3, ExtServers: 1, Sluice: true, KeepDir: os.Getenv("SLUICE_KEEP") != "",
		HelperArgs: []string{fmt.Sprintf("--restart-grace=%s", grace)}})
	dumpOnFailure(t, c)
	startHelpers(t, c)
	if err := c.CreateNamespace(ctx, "prod", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SluiceClient().SluiceV1alpha1().ExternalIPPools().Create(ctx, pool("grace-pool", "192.0.2.233", "192.0.2.233", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		mustPod(t, c, n.Name, "prod", "web-"+n.Name, map[string]string{"app": "web"})
	}
	createEgress(t, c, pooledEgress("egress-grace", "grace-pool", "prod"))
	ip, owner := assigned(t, c, "egress-grace")
	eventually(t, converge, owner+" holds "+ip.String(), func() error {
		if h := holders(t, c, ip); len(h) != 1 || h[0] != owner {
			return fmt.Errorf("held by %v", h)
		}
		return nil
	})
	start := time.Now()
	if err := c.KillHelper(owner); err != nil {
		t.Fatal(err)
	}
	var dropped, taken, both time.Duration
	var next string
	for time.Since(start) < grace+5*time.Second && (dropped == 0 || taken == 0) {
		h := holders(t, c, ip)
		at := time.Since(start)
		old := slices.Contains(h, owner)
		if !old && dropped == 0 {
			dropped = at
		}
		if others := slices.DeleteFunc(slices.Clone(h), func(n string) bool { return n == owner }); len(others) > 0 && taken == 0 {
			taken, next = at, others[0]
		}
		if old && len(h) > 1 {
			both += 100 * time.Millisecond
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%s's helper killed: its kernel dropped %s after %v, %s took it after %v, both held it %v", owner, ip, dropped, next, taken, both)
	if dropped == 0 || taken == 0 {
		t.Fatalf("after %v: dropped %v, taken %v", grace+5*time.Second, dropped, taken)
	}
	if dropped < grace-time.Second || taken < grace-time.Second {
		t.Errorf("the IP left %s before its grace ran out (dropped %v, taken %v, grace %v)", owner, dropped, taken, grace)
	}
	if both > 0 {
		t.Errorf("%s and %s both held %s for %v", owner, next, ip, both)
	}
}

// A departure moves only the departed Node's IP; when the Node returns,
// failback (the default) gives it its fair share back, one IP, and moves
// nothing else, and --on-node-return=stay leaves every IP where it is.
func TestDepartureMovesOnlyItsIPs(t *testing.T) {
	ctx := context.Background()
	c := sluiceCluster(t, 3, 1)
	if _, err := c.SluiceClient().SluiceV1alpha1().ExternalIPPools().Create(ctx, pool("depart-pool", "192.0.2.234", "192.0.2.236", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var ips []netip.Addr
	for i := range 3 {
		ns := fmt.Sprintf("dep%d", i)
		if err := c.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
		mustPod(t, c, "node-a", ns, "web", map[string]string{"app": "web"})
		createEgress(t, c, pooledEgress("egress-"+ns, "depart-pool", ns))
		ip, _ := assigned(t, c, "egress-"+ns)
		ips = append(ips, ip)
	}
	owners := func() map[netip.Addr]string {
		out := map[netip.Addr]string{}
		for _, ip := range ips {
			if h := holders(t, c, ip); len(h) == 1 {
				out[ip] = h[0]
			}
		}
		return out
	}
	var start map[netip.Addr]string
	eventually(t, converge, "one IP per Node", func() error {
		start = owners()
		seen := map[string]bool{}
		for _, n := range start {
			seen[n] = true
		}
		if len(start) != 3 || len(seen) != 3 {
			return fmt.Errorf("holders %v", start)
		}
		return nil
	})
	round := func(policy string, wantBack bool) {
		t.Helper()
		before := owners()
		victim, victimIP := "node-c", netip.Addr{}
		for ip, n := range before {
			if n == victim {
				victimIP = ip
			}
		}
		if err := c.UplinkDown(ctx, victim); err != nil {
			t.Fatal(err)
		}
		eventually(t, failoverBudget, victimIP.String()+" moves off "+victim, func() error {
			if n := owners()[victimIP]; n == "" || n == victim {
				return fmt.Errorf("held by %v", holders(t, c, victimIP))
			}
			return nil
		})
		moved := owners()
		for ip, n := range before {
			if ip != victimIP && moved[ip] != n {
				t.Errorf("%s: %s moved from %s to %s when %s left", policy, ip, n, moved[ip], victim)
			}
		}
		if err := c.UplinkUp(ctx, victim); err != nil {
			t.Fatal(err)
		}
		time.Sleep(fenceBound + 3*time.Second)
		after := owners()
		// Failback gives the returning Node its fair share (one IP of
		// three, not necessarily the one it had) and moves nothing else;
		// stay moves nothing.
		var changed []netip.Addr
		for ip, n := range moved {
			if after[ip] != n {
				changed = append(changed, ip)
			}
		}
		switch {
		case !wantBack && len(changed) > 0:
			t.Errorf("%s: after %s came back %v moved: %v → %v", policy, victim, changed, moved, after)
		case wantBack && (len(changed) != 1 || after[changed[0]] != victim):
			t.Errorf("%s: after %s came back %v moved (want one, to %s): %v → %v", policy, victim, changed, victim, moved, after)
		}
		t.Logf("%s: %v → %v → %v", policy, before, moved, after)
	}
	round("failback", true)
	if err := c.RestartEach(ctx, false, 0, time.Second, "--on-node-return=stay"); err != nil {
		t.Fatal(err)
	}
	round("stay", false)
}
