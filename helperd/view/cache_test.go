package view

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/sluicenet/sluice/helperd/placement"
	"github.com/sluicenet/sluice/helperd/placement/placementtest"
	"github.com/sluicenet/sluice/pkg/cniproto"
	"github.com/sluicenet/sluice/pkg/policy"
	corev1 "k8s.io/api/core/v1"
)

var addrs = placementtest.Addrs

func att(id, ns, name string, ips ...string) cniproto.Attachment {
	return cniproto.Attachment{Key: cniproto.Key{ContainerID: id, IfName: "eth0"}, PodNamespace: ns, PodName: name, PodIPs: ips}
}

// The CNI's IPs are the truth for a Pod on its own Node: a recreated
// sandbox's new IP replaces the Pod object's stale one at once, whatever
// the order of the new ADD and the old DEL; while both sandboxes exist both
// IPs count; and a stale object never keeps an IP that another Pod's
// sandbox now has.
func TestMergeAttachmentsCNIWins(t *testing.T) {
	const self = "node-c"
	stale := policy.PodInfo{Namespace: "t", Name: "p", Node: self, Phase: corev1.PodRunning, IPs: addrs("10.244.2.2")}
	gone := policy.PodInfo{Namespace: "t", Name: "gone", Node: self, Phase: corev1.PodRunning, IPs: addrs("10.244.2.9")}
	old := policy.PodInfo{Namespace: "t", Name: "old", Node: self, Phase: corev1.PodRunning, IPs: addrs("10.244.2.7")}
	elsewhere := policy.PodInfo{Namespace: "t", Name: "moved", Node: "node-a", Phase: corev1.PodRunning, IPs: addrs("10.244.0.4")}
	cases := []struct {
		name string
		atts []cniproto.Attachment
		want map[string][]netip.Addr
	}{
		{"del then add", []cniproto.Attachment{att("new", "t", "p", "10.244.2.3")},
			map[string][]netip.Addr{"p": addrs("10.244.2.3")}},
		{"add then del", []cniproto.Attachment{att("old", "t", "p", "10.244.2.2"), att("new", "t", "p", "10.244.2.3")},
			map[string][]netip.Addr{"p": addrs("10.244.2.2", "10.244.2.3")}},
		{"ip reused by another pod", []cniproto.Attachment{att("q", "t", "q", "10.244.2.9")},
			map[string][]netip.Addr{"gone": nil, "q": addrs("10.244.2.9")}},
		{"pod without sandbox keeps its ips", nil,
			map[string][]netip.Addr{"old": addrs("10.244.2.7")}},
		{"stale sandbox of a pod now elsewhere", []cniproto.Attachment{att("m", "t", "moved", "10.244.2.5")},
			map[string][]netip.Addr{"moved": addrs("10.244.0.4")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := placement.Snapshot{Self: self, Pods: []policy.PodInfo{stale, gone, old, elsewhere}}
			byKey := map[policy.PodKey]int{}
			for i, p := range s.Pods {
				byKey[policy.PodKey{Namespace: p.Namespace, Name: p.Name}] = i
			}
			mergeAttachments(&s, byKey, self, tc.atts)
			got := map[string][]netip.Addr{}
			for _, p := range s.Pods {
				got[p.Name] = p.IPs
			}
			for name, want := range tc.want {
				if !slices.Equal(got[name], want) {
					t.Errorf("pod %s: IPs %v, want %v", name, got[name], want)
				}
			}
		})
	}
}
