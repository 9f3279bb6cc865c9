package placement_test

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/sluicenet/sluice/helperd/placement"
	"github.com/sluicenet/sluice/helperd/placement/placementtest"
	"github.com/sluicenet/sluice/pkg/policy"
	corev1 "k8s.io/api/core/v1"
)

// On the holder, a hint from the Pod's Node stands in for the Pod object's
// IPs of its family while the object still shows what it showed when the
// hint came (a recreated sandbox the kubelet has not written yet), and
// stops counting once the object changes.
func TestWithHintsRecreatedSandbox(t *testing.T) {
	key := policy.PodKey{Namespace: "t", Name: "p"}
	pod := func(ips ...string) policy.PodInfo {
		return policy.PodInfo{Namespace: "t", Name: "p", Node: "node-c", Phase: corev1.PodRunning, IPs: placementtest.Addrs(ips...)}
	}
	hintFrom := func(node, ip string, seen ...string) map[policy.PodKey]placement.HintedIP {
		return map[policy.PodKey]placement.HintedIP{key: {PodIP: netip.MustParseAddr(ip), Node: node, Seen: placementtest.Addrs(seen...)}}
	}
	for _, c := range []struct {
		name  string
		pod   policy.PodInfo
		hints map[policy.PodKey]placement.HintedIP
		want  []netip.Addr
	}{
		{"new pod without ips", pod(), hintFrom("node-c", "10.244.2.3"), placementtest.Addrs("10.244.2.3")},
		{"stale status", pod("10.244.2.2"), hintFrom("node-c", "10.244.2.3", "10.244.2.2"), placementtest.Addrs("10.244.2.3")},
		{"status caught up", pod("10.244.2.3"), hintFrom("node-c", "10.244.2.3", "10.244.2.2"), placementtest.Addrs("10.244.2.3")},
		{"status moved past the hint", pod("10.244.2.4"), hintFrom("node-c", "10.244.2.3", "10.244.2.2"), placementtest.Addrs("10.244.2.4")},
		{"other family kept", pod("10.244.2.2", "fd00::2"), hintFrom("node-c", "10.244.2.3", "10.244.2.2", "fd00::2"), placementtest.Addrs("fd00::2", "10.244.2.3")},
		{"hint from another node", pod("10.244.2.2"), hintFrom("node-b", "10.244.1.3", "10.244.2.2"), placementtest.Addrs("10.244.2.2")},
	} {
		s := snapshot("node-a", eg("e", "198.51.100.5", "pool", "t"))
		s.Namespaces["t"], s.Pods, s.Hints = nil, []policy.PodInfo{c.pod}, c.hints
		got := placement.Decide(s).Policy.Pods[key].IPs
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: IPs %v, want %v", c.name, got, c.want)
		}
	}
}
