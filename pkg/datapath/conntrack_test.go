package datapath

import (
	"net/netip"
	"testing"
)

func TestStaleFlow(t *testing.T) {
	pod, remote, other := netip.MustParseAddr("10.244.1.2"), netip.MustParseAddr("10.244.2.2"), netip.MustParseAddr("10.244.1.3")
	eg, nodeIP, ext, inCluster := netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("192.0.2.11"),
		netip.MustParseAddr("192.0.2.100"), netip.MustParseAddr("10.244.2.9")
	except := exceptMatcher([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("192.0.2.11/32")})
	holding := natState{Pods: map[netip.Addr]natWant{pod: {SNAT: eg}, remote: {SNAT: eg}}, Held: map[netip.Addr]bool{eg: true}}
	redirecting := natState{Pods: map[netip.Addr]natWant{pod: {Tunnel: true}}, Held: map[netip.Addr]bool{}}
	none := natState{Pods: map[netip.Addr]natWant{}, Held: map[netip.Addr]bool{}}
	for _, c := range []struct {
		name      string
		prev      *natState
		next      natState
		f         flow
		wantStale bool
	}{
		{"takeover: a flow that went into the tunnel", &redirecting, holding, flow{pod, ext, pod}, true},
		{"takeover: already SNATed right", &redirecting, holding, flow{pod, ext, eg}, false},
		{"takeover: a remote Pod's stale entry", &redirecting, holding, flow{remote, ext, nodeIP}, true},
		{"release: SNATed to the IP let go", &holding, redirecting, flow{pod, ext, eg}, true},
		{"release: a remote Pod's flow through here", &holding, redirecting, flow{remote, ext, eg}, true},
		{"redirect: masqueraded before selection", &none, redirecting, flow{pod, ext, nodeIP}, true},
		{"unselected after the tunnel", &redirecting, none, flow{pod, ext, pod}, true},
		{"unselected, already masqueraded", &redirecting, none, flow{pod, ext, nodeIP}, false},
		{"inside the cluster: never touched", &redirecting, holding, flow{pod, inCluster, pod}, false},
		{"unchanged Pod", &holding, holding, flow{pod, ext, pod}, false},
		{"another Pod", &redirecting, holding, flow{other, ext, nodeIP}, false},
		{"restart: consistent entry kept", nil, holding, flow{pod, ext, eg}, false},
		{"restart: contradicting entry removed", nil, holding, flow{pod, ext, pod}, true},
	} {
		if got := staleFlow(c.prev, c.next, except, c.f); got != c.wantStale {
			t.Errorf("%s: stale %v, want %v", c.name, got, c.wantStale)
		}
	}
	if needsScan(&holding, holding) || needsScan(&none, redirecting) {
		t.Error("scan for an unchanged plan or one that only adds Pods")
	}
	if !needsScan(&holding, redirecting) || !needsScan(nil, holding) {
		t.Error("no scan after a release or a restart")
	}
}
