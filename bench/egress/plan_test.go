package egressbench

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/sluicenet/sluice/bench"
	"github.com/sluicenet/sluice/helperd/placement"
	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluicenet/sluice/pkg/election"
	"github.com/sluicenet/sluice/pkg/policy"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// scaleSnapshot is TestScale's shape as node-a's helper sees it: 1,000
// static Egresses whose 500 IPs node-a holds, 10,000 Pods on 10 other
// Nodes.
func scaleSnapshot() placement.Snapshot {
	s := placement.Snapshot{Self: "node-a", Namespaces: map[string]map[string]string{},
		Nodes:      map[string]placement.NodeInfo{"node-a": {IP: netip.MustParseAddr("192.0.2.11")}},
		Alive:      []string{"node-a"},
		LocalAddrs: map[netip.Addr]bool{}, Election: election.Rebalance}
	for j := range scaleFakeNodes {
		s.Nodes[scaleNodeName(j)] = placement.NodeInfo{IP: netip.AddrFrom4([4]byte{192, 0, 2, byte(30 + j)})}
	}
	for k := range scaleNS {
		s.Namespaces[scaleNSName(k)] = map[string]string{"kubernetes.io/metadata.name": scaleNSName(k)}
	}
	for k := range scaleEgresses {
		s.LocalAddrs[scaleEgressIP(k)] = true
		s.Egresses = append(s.Egresses, &v1alpha1.Egress{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("sc-eg-%04d", k)},
			Spec: v1alpha1.EgressSpec{EgressIP: scaleEgressIP(k).String(), AppliedTo: v1alpha1.AppliedTo{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": scaleNSName(k / 10)}},
				PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"grp": fmt.Sprint(k % 10)}}}}})
	}
	for i := range scalePods {
		s.Pods = append(s.Pods, policy.PodInfo{Namespace: scaleNSName(i / 100), Name: scalePodName(i),
			Labels: map[string]string{"grp": scaleGroup(i)}, IPs: []netip.Addr{scalePodIP(i)},
			Node: scaleNodeName(i % scaleFakeNodes), Phase: corev1.PodRunning})
	}
	return s
}

// TestPlanAtScale checks the shape TestScale relies on (every Pod in its
// Egress, a return route per remote Pod) and logs what one placement.Decide and
// one policy.Compute cost at that scale, since the helper runs placement.Decide on
// every event.
func TestPlanAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("scale in -short mode")
	}
	s := scaleSnapshot()
	var plan placement.Plan
	var full, pol []float64
	for range 5 {
		t0 := time.Now()
		plan = placement.Decide(s)
		full = append(full, ms(time.Since(t0)))
		t0 = time.Now()
		policy.Compute(policy.View{Egresses: s.Egresses, Pods: s.Pods, Namespaces: s.Namespaces})
		pol = append(pol, ms(time.Since(t0)))
	}
	members := 0
	for _, e := range plan.Desired.Egresses {
		members += len(e.AllPodIPs)
	}
	if len(plan.Desired.Egresses) != scaleEgresses || members != scalePods || len(plan.Desired.RemotePods) != scalePods {
		t.Fatalf("plan: %d egresses, %d members, %d remote pods", len(plan.Desired.Egresses), members, len(plan.Desired.RemotePods))
	}
	t.Logf("agent.Compute median %.0f ms %s, policy.Compute alone median %.0f ms %s (wall, this machine, 5 runs)",
		bench.Median(append([]float64{}, full...)), fmtMs(full), bench.Median(append([]float64{}, pol...)), fmtMs(pol))
}
