// Package placementtest holds the fixtures that the tests of placement and
// of its callers share: three Nodes (node-a and node-b may hold pool IPs,
// node-c may not), Egresses by namespace, Running Pods and a Snapshot of
// them all.
package placementtest

import (
	"net/netip"
	"time"

	"github.com/sluicenet/sluice/helperd/placement"
	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluicenet/sluice/pkg/policy"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The Nodes' IPs.
var (
	IPA = netip.MustParseAddr("192.0.2.11")
	IPB = netip.MustParseAddr("192.0.2.12")
	IPC = netip.MustParseAddr("192.0.2.13")
)

// Addrs parses each of ss.
func Addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, 0, len(ss))
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// Nodes are node-a and node-b, labelled egress=yes, and node-c.
func Nodes() map[string]placement.NodeInfo {
	return map[string]placement.NodeInfo{
		"node-a": {IP: IPA, Labels: map[string]string{"egress": "yes"}},
		"node-b": {IP: IPB, Labels: map[string]string{"egress": "yes"}},
		"node-c": {IP: IPC},
	}
}

// Egress selects every Pod of namespace ns, with the static ip or from
// pool (one of them empty).
func Egress(name string, ip, pool string, ns string) *v1alpha1.Egress {
	return &v1alpha1.Egress{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Unix(1e9, 0))},
		Spec: v1alpha1.EgressSpec{EgressIP: ip, ExternalIPPool: pool, AppliedTo: v1alpha1.AppliedTo{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}}}},
	}
}

// HeldBy returns e with its status naming node as the holder of its IP.
func HeldBy(e *v1alpha1.Egress, node string) *v1alpha1.Egress {
	e = e.DeepCopy()
	e.Status.EgressIP, e.Status.EgressNode = e.Spec.EgressIP, node
	return e
}

// Pod is a Running Pod labelled app=web.
func Pod(ns, name, node, ip string) policy.PodInfo {
	return policy.PodInfo{Namespace: ns, Name: name, Node: node, Phase: corev1.PodRunning,
		IPs: []netip.Addr{netip.MustParseAddr(ip)}, Labels: map[string]string{"app": "web"}}
}

// Snapshot is self's view of the three Nodes alive, a pool "pool"
// (198.51.100.0/28, for the egress=yes Nodes), Pods web-a (prod, node-a),
// web-c (prod, node-c), web-b (dev, node-b), and egresses.
func Snapshot(self string, egresses ...*v1alpha1.Egress) placement.Snapshot {
	return placement.Snapshot{
		Self:     self,
		Egresses: egresses,
		Pools: map[string]*v1alpha1.ExternalIPPool{"pool": {ObjectMeta: metav1.ObjectMeta{Name: "pool"},
			Spec: v1alpha1.ExternalIPPoolSpec{IPRanges: []v1alpha1.IPRange{{CIDR: "198.51.100.0/28"}},
				NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"egress": "yes"}}}}},
		Pods: []policy.PodInfo{
			Pod("prod", "web-a", "node-a", "10.244.1.5"),
			Pod("prod", "web-c", "node-c", "10.244.3.5"),
			Pod("dev", "web-b", "node-b", "10.244.2.5"),
		},
		Namespaces: map[string]map[string]string{"prod": nil, "dev": nil},
		Nodes:      Nodes(),
		Alive:      []string{"node-a", "node-b", "node-c"},
		LocalAddrs: map[netip.Addr]bool{},
	}
}
