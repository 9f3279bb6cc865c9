package habench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicenet/sluice/bench"
	"github.com/sluicenet/sluice/integration/cluster"
	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
)

// WireCommand produces wire_wrong_source_packets.
const WireCommand = "SLUICE_BENCH=1 SLUICE_BENCH_RECORD=1 go test -run TestWireTransitions -timeout 60m ./bench/ha/"

// wireRig is TestWireTransitions' cluster: three pooled Egresses, each
// selecting the one Pod labelled app=web-<i> (on node i), so that every
// Node holds one IP and every Pod reaches its holder through the tunnel
// or on its own Node.
type wireRig struct {
	t     *testing.T
	ctx   context.Context
	c     *cluster.Cluster
	wire  *cluster.Wire
	pods  []*cluster.Pod
	round int
	stop  func() flowGaps // ends the flows startFlows began
}

// flowGaps is what the flows of one transition went through: the longest
// time without an answer and how many had to reconnect.
type flowGaps struct {
	longest    time.Duration
	reconnects int
}

// startFlows starts a long-lived flow from every Pod.
func (r *wireRig) startFlows() {
	fctx, cancel := context.WithCancel(r.ctx)
	var flows []<-chan cluster.FlowStats
	for _, p := range r.pods {
		flows = append(flows, r.c.Ext[0].KeepFlowing(fctx, p, netip.Addr{}))
	}
	r.stop = func() flowGaps {
		cancel()
		var g flowGaps
		for _, ch := range flows {
			st := <-ch
			g.longest = max(g.longest, st.MaxGap)
			g.reconnects += max(st.Connections-1, 0)
		}
		return g
	}
}

// stopFlows ends the flows, waits for them and returns their gaps.
func (r *wireRig) stopFlows() flowGaps {
	var g flowGaps
	if r.stop != nil {
		g = r.stop()
		r.stop = nil
	}
	return g
}

func wireEgress(i int) *v1alpha1.Egress {
	return &v1alpha1.Egress{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("egress-web-%d", i)}, Spec: v1alpha1.EgressSpec{
		ExternalIPPool: poolName, AppliedTo: v1alpha1.AppliedTo{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "prod"}},
			PodSelector:       &metav1.LabelSelector{MatchLabels: webLabel(i)}}}}
}

func webLabel(i int) map[string]string { return map[string]string{"app": fmt.Sprintf("web-%d", i)} }

// TestWireTransitions is the wire figure: SLUICE_BENCH_TRIALS rounds
// (default 20) of every transition in README's transition table, each
// under a long-lived flow from every Pod, while the external server's raw table
// counts every packet from a source other than a pool IP. A Node IP is
// allowed only while an Egress is deleted or a Pod unselected (where it
// is the documented outcome); a Pod IP never is.
func TestWireTransitions(t *testing.T) {
	bench.Require(t)
	trials := bench.EnvInt(t, "SLUICE_BENCH_TRIALS", 20, 1, 100)
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Minute)
	defer cancel()
	r := &wireRig{t: t, ctx: ctx, c: startCluster(t)}
	if err := r.c.CreateNamespace(ctx, "prod", nil); err != nil {
		t.Fatal(err)
	}
	for i, n := range r.c.Nodes {
		p, err := r.c.AddPod(ctx, n.Name, "prod", "web-"+n.Name, webLabel(i))
		if err != nil {
			t.Fatal(err)
		}
		r.pods = append(r.pods, p)
		if _, err := r.c.SluiceClient().SluiceV1alpha1().Egresses().Create(ctx, wireEgress(i), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.converge(); err != nil {
		t.Fatal(err)
	}
	var pool []netip.Addr
	for ip := netip.MustParseAddr(poolStart); ip.Compare(netip.MustParseAddr(poolEnd)) <= 0; ip = ip.Next() {
		pool = append(pool, ip)
	}
	wire, err := r.c.Ext[0].WatchWire(pool...)
	if err != nil {
		t.Fatal(err)
	}
	defer wire.Close()
	r.wire = wire
	if path := os.Getenv("SLUICE_WIRE_CAPTURE"); path != "" {
		defer r.capture(path)()
	}

	kinds := []struct {
		name string
		run  func() error
	}{
		{"pod_start", r.podStart},
		{"sandbox_recreate", r.sandbox},
		{"label_change", r.labelChange},
		{"egress_ip_change", r.ipChange},
		{"failover_failback", r.failover},
		{"planned_move", r.cordon},
		{"helper_sigterm", func() error { return r.restart(false) }},
		{"helper_sigkill", func() error { return r.restart(true) }},
		{"egress_delete", r.deleteEgress},
		{"foreign_masquerade", r.masquerade},
	}
	byKind := map[string]uint64{}
	worst := map[string]time.Duration{}
	var total uint64
	for r.round = 0; r.round < trials; r.round++ {
		for _, k := range kinds {
			_, before, err := wire.Wrong()
			if err != nil {
				t.Fatal(err)
			}
			r.startFlows()
			start := time.Now()
			err = k.run()
			if err == nil {
				err = r.converge()
			}
			gaps := r.stopFlows()
			if gaps.longest > worst[k.name] {
				worst[k.name] = gaps.longest
			}
			if err != nil {
				t.Fatalf("round %d, %s: %v\n%s", r.round+1, k.name, err, r.c.LogTails(20))
			}
			_, after, err := wire.Wrong()
			if err != nil {
				t.Fatal(err)
			}
			byKind[k.name] += after - before
			total = after
			t.Logf("round %d %-18s %6.2fs, wrong-source packets %d, longest flow gap %v, reconnects %d",
				r.round+1, k.name, time.Since(start).Seconds(), after-before, gaps.longest.Round(time.Millisecond), gaps.reconnects)
			if after > before {
				t.Logf("  the server has seen %v", wire)
			}
		}
	}
	var parts, stalls []string
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s %d", k.name, byKind[k.name]))
		stalls = append(stalls, fmt.Sprintf("%s %v", k.name, worst[k.name].Round(time.Millisecond)))
	}
	note := fmt.Sprintf("%d rounds of each transition (%s wrong-source packets), 3 Nodes, 3 pooled Egresses with one Pod each, a long-lived "+
		"flow from every Pod during each transition; the external server's raw PREROUTING counts every packet from a source other than a "+
		"pool IP (a Node IP is allowed only while an Egress is deleted or a Pod unselected, its documented outcome). Helpers with the "+
		"default --restart-grace (30 s); failover is an uplink cut, failback its return. Longest gap of any flow, by kind: %s. "+
		"2 shared cores, one run; seen: %s",
		trials, strings.Join(parts, ", "), strings.Join(stalls, ", "), wire)
	figs := []bench.Figure{{Name: "wire_wrong_source_packets", Value: float64(total), Unit: "packets", Target: "0", Command: WireCommand, Note: note}}
	bench.Log(t, figs...)
	bench.RecordIfAsked(t, figs...)
}

// capture writes what the external server receives from Pod IPs and Node
// IPs, and every ICMP packet, to path (tcpdump, with Unix timestamps), to
// tell which packets the wire counted; the returned func stops it.
func (r *wireRig) capture(path string) func() {
	f, err := os.Create(path)
	if err != nil {
		r.t.Fatal(err)
	}
	filter := "icmp or src net 10.244.0.0/16"
	for _, n := range r.c.Nodes {
		filter += " or src host " + n.IP.String()
	}
	cmd := r.c.Ext[0].NS.Cmd("tcpdump", "-i", "eth0", "-n", "-l", "-tt", "-v", filter)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("capture: %v", err)
	}
	return func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		f.Close()
	}
}

// egressIPs are the Egresses' status IPs and Nodes, by index.
func (r *wireRig) egressIPs() ([]egressState, error) {
	var out []egressState
	for i := range r.pods {
		s, err := getState(r.ctx, r.c, wireEgress(i).Name)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// converge waits until every Egress is assigned and every Pod reaches the
// server with its Egress's IP.
func (r *wireRig) converge() error {
	deadline := time.Now().Add(45 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		states, err := r.egressIPs()
		if err != nil {
			return err
		}
		ok := true
		var seen []string
		for i, p := range r.pods {
			actx, cancel := context.WithTimeout(r.ctx, 300*time.Millisecond)
			got, err := r.c.Whoami(actx, p)
			cancel()
			seen = append(seen, fmt.Sprintf("%s→%v (want %v on %s)", p.Name, got, states[i].IP, states[i].Node))
			if err != nil || !states[i].Assigned || got != states[i].IP {
				ok = false
			}
		}
		if ok {
			return nil
		}
		last = strings.Join(seen, ", ")
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("did not converge: %s", last)
}

// asks connects n times from p, every 100 ms (the answers are not judged
// here: the wire is).
func (r *wireRig) asks(p *cluster.Pod, n int) {
	for range n {
		actx, cancel := context.WithTimeout(r.ctx, 300*time.Millisecond)
		_, _ = r.c.Whoami(actx, p)
		cancel()
		time.Sleep(100 * time.Millisecond)
	}
}

// withNodeIPs runs fn while the Node IPs are allowed sources (a Pod IP
// stays wrong).
func (r *wireRig) withNodeIPs(fn func() error) error {
	for _, n := range r.c.Nodes {
		if err := r.wire.Allow(n.IP); err != nil {
			return err
		}
	}
	err := fn()
	// The change has converged where the test looked (new connections);
	// give every Node's Apply a moment to finish before Node IPs are
	// wrong again.
	time.Sleep(time.Second)
	for _, n := range r.c.Nodes {
		if derr := r.wire.Disallow(n.IP); err == nil {
			err = derr
		}
	}
	return err
}

// endNodeIPFlows ends the flows while they still leave with the Node IP,
// before the Pod is selected again: a connection left open would go on
// from the server's side after that, and the Node would answer the
// server's retransmissions with its own reset, from its own IP (the Node's
// packet, not a Pod's, but one the wire cannot tell apart).
func (r *wireRig) endNodeIPFlows() {
	r.stopFlows()
	time.Sleep(300 * time.Millisecond)
}

// podStart: a new selected Pod connects from its start.
func (r *wireRig) podStart() error {
	i := r.round % len(r.pods)
	node := r.c.Nodes[(r.round+1)%len(r.c.Nodes)].Name
	p, err := r.c.AddPod(r.ctx, node, "prod", fmt.Sprintf("new-%d", r.round), webLabel(i))
	if err != nil {
		return err
	}
	r.asks(p, 8)
	return r.c.DelPod(r.ctx, p)
}

// sandbox recreates a Pod's sandbox, in alternating ADD/DEL order; the
// kubelet writes the new IP after 0.5 s.
func (r *wireRig) sandbox() error {
	p := r.pods[r.round%len(r.pods)]
	if err := r.c.RecreateSandbox(r.ctx, p, r.round%2 == 0); err != nil {
		return err
	}
	r.asks(p, 5)
	if err := r.c.WritePodIP(r.ctx, p); err != nil {
		return err
	}
	r.asks(p, 3)
	return nil
}

// labelChange unselects a Pod and selects it again.
func (r *wireRig) labelChange() error {
	i := r.round % len(r.pods)
	p := r.pods[i]
	return r.withNodeIPs(func() error {
		if err := r.c.LabelPod(r.ctx, p, map[string]string{"app": "none"}); err != nil {
			return err
		}
		if err := r.waitSource(p, p.Node.IP); err != nil {
			return err
		}
		r.endNodeIPFlows()
		if err := r.c.LabelPod(r.ctx, p, webLabel(i)); err != nil {
			return err
		}
		err := r.converge()
		r.startFlows()
		return err
	})
}

// waitSource waits until p reaches the server as want.
func (r *wireRig) waitSource(p *cluster.Pod, want netip.Addr) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		actx, cancel := context.WithTimeout(r.ctx, 300*time.Millisecond)
		got, err := r.c.Whoami(actx, p)
		cancel()
		if err == nil && got == want {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s never reached the server as %s", p, want)
}

// ipChange gives an Egress another (free) IP of the pool.
func (r *wireRig) ipChange() error {
	i := r.round % len(r.pods)
	states, err := r.egressIPs()
	if err != nil {
		return err
	}
	var used []netip.Addr
	for _, s := range states {
		used = append(used, s.IP)
	}
	next := netip.MustParseAddr(poolEnd)
	for slices.Contains(used, next) {
		next = next.Prev()
	}
	egs := r.c.SluiceClient().SluiceV1alpha1().Egresses()
	eg, err := egs.Get(r.ctx, wireEgress(i).Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	eg.Spec.EgressIP = next.String()
	if _, err := egs.Update(r.ctx, eg, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("change the IP of %s to %s: %w", eg.Name, next, err)
	}
	return r.waitSource(r.pods[i], next)
}

// holderOf is the Node holding Egress i's IP.
func (r *wireRig) holderOf(i int) (string, error) {
	states, err := r.egressIPs()
	if err != nil {
		return "", err
	}
	return states[i].Node, nil
}

// failover cuts a holder's uplink until its IP moved, and restores it;
// failback then gives the returning Node its share again.
func (r *wireRig) failover() error {
	node, err := r.holderOf(r.round % len(r.pods))
	if err != nil {
		return err
	}
	if err := r.c.UplinkDown(r.ctx, node); err != nil {
		return err
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		now, err := r.holderOf(r.round % len(r.pods))
		if err == nil && now != node && now != "" {
			break
		}
		if time.Now().After(deadline) {
			_ = r.c.UplinkUp(r.ctx, node)
			return fmt.Errorf("IP never moved off %s", node)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	if err := r.c.UplinkUp(r.ctx, node); err != nil {
		return err
	}
	// The returning Node's stale hold lapses, then failback.
	time.Sleep(6 * time.Second)
	return nil
}

// cordon moves an IP by cordoning its holder, then uncordons it.
func (r *wireRig) cordon() error {
	i := r.round % len(r.pods)
	node, err := r.holderOf(i)
	if err != nil {
		return err
	}
	if err := r.c.Cordon(r.ctx, node, true); err != nil {
		return err
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		now, err := r.holderOf(i)
		if err == nil && now != node && now != "" {
			break
		}
		if time.Now().After(deadline) {
			_ = r.c.Cordon(r.ctx, node, false)
			return fmt.Errorf("IP never moved off cordoned %s", node)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	return r.c.Cordon(r.ctx, node, false)
}

// restart stops a holder's helper (SIGTERM, or SIGKILL as a crash) and
// starts it again.
func (r *wireRig) restart(kill bool) error {
	node := r.c.Nodes[r.round%len(r.c.Nodes)].Name
	var err error
	if kill {
		err = r.c.KillHelper(node)
	} else {
		err = r.c.StopHelper(node)
	}
	if err != nil {
		return err
	}
	time.Sleep(time.Second)
	if err := r.c.StartHelper(node); err != nil {
		return err
	}
	return r.c.WaitHelper(r.ctx, node, 30*time.Second)
}

// deleteEgress deletes an Egress, waits for its Pod to leave with its
// Node IP, and creates it again.
func (r *wireRig) deleteEgress() error {
	i := r.round % len(r.pods)
	p := r.pods[i]
	egs := r.c.SluiceClient().SluiceV1alpha1().Egresses()
	return r.withNodeIPs(func() error {
		if err := egs.Delete(r.ctx, wireEgress(i).Name, metav1.DeleteOptions{}); err != nil {
			return err
		}
		if err := r.waitSource(p, p.Node.IP); err != nil {
			return err
		}
		r.endNodeIPFlows()
		if _, err := egs.Create(r.ctx, wireEgress(i), metav1.CreateOptions{}); err != nil {
			return err
		}
		err := r.converge()
		r.startFlows()
		return err
	})
}

// masquerade: another agent inserts a MASQUERADE at position 1 of nat
// POSTROUTING on every Node while the Pods connect, and later removes it.
func (r *wireRig) masquerade() error {
	rule := []string{"POSTROUTING", "1", "-s", "10.244.0.0/16", "!", "-d", "10.244.0.0/16", "-j", "MASQUERADE"}
	for _, n := range r.c.Nodes {
		if out, err := r.c.Exec(r.ctx, n.Name, "iptables", slices.Concat([]string{"-w", "-t", "nat", "-I"}, rule)...); err != nil {
			return fmt.Errorf("insert on %s: %v: %s", n.Name, err, out)
		}
	}
	for _, p := range r.pods {
		r.asks(p, 3)
	}
	for _, n := range r.c.Nodes {
		del := slices.Concat([]string{"-w", "-t", "nat", "-D"}, slices.Delete(slices.Clone(rule), 1, 2))
		if out, err := r.c.Exec(r.ctx, n.Name, "iptables", del...); err != nil {
			return fmt.Errorf("remove on %s: %v: %s", n.Name, err, out)
		}
	}
	return nil
}
