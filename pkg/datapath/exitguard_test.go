package datapath

import (
	"net/netip"
	"slices"
	"testing"
)

// The guard's content: Pods of held, redirected and fail-closed Egresses
// are selected; only held ones are allowed, each to its own egress IP; an
// Egress with no holder (the documented Node-IP fallback) is left alone;
// SLUICE-EXCEPT arrives disjoint.
func TestBuildExitGuard(t *testing.T) {
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	held, redirected, closed, noHolder := a("10.244.1.2"), a("10.244.1.3"), a("10.244.1.4"), a("10.244.1.5")
	remote := a("10.244.2.2")
	c := Config{Uplink: "eth0", NodeIP: a("192.0.2.11"), ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}}
	d := Desired{NodeIPs: []netip.Addr{a("192.0.2.11"), a("192.0.2.12")}, Egresses: []EgressState{
		{Name: "held", EgressIP: a("203.0.113.10"), ID: 1, Local: true, LocalPodIPs: []netip.Addr{held}, AllPodIPs: []netip.Addr{held, remote}},
		{Name: "redirected", EgressIP: a("203.0.113.11"), ID: 2, OwnerNodeIP: a("192.0.2.12"), LocalPodIPs: []netip.Addr{redirected}, AllPodIPs: []netip.Addr{redirected}},
		{Name: "closed", EgressIP: a("203.0.113.12"), ID: 3, FailClosed: true, LocalPodIPs: []netip.Addr{closed}, AllPodIPs: []netip.Addr{closed}},
		{Name: "none", EgressIP: a("203.0.113.13"), ID: 4, LocalPodIPs: []netip.Addr{noHolder}, AllPodIPs: []netip.Addr{noHolder}},
	}}
	g := BuildExitGuard(c, d)
	if want := []netip.Addr{held, redirected, closed, remote}; !slices.Equal(g.Selected, want) {
		t.Errorf("selected %v, want %v", g.Selected, want)
	}
	if want := []ExitSource{{held, a("203.0.113.10")}, {remote, a("203.0.113.10")}}; !slices.Equal(g.Allowed, want) {
		t.Errorf("allowed %v, want %v", g.Allowed, want)
	}
	for i := 1; i < len(g.Except); i++ {
		if g.Except[i-1].Overlaps(g.Except[i]) || g.Except[i-1].Addr().Compare(g.Except[i].Addr()) >= 0 {
			t.Errorf("except not disjoint and sorted: %v then %v", g.Except[i-1], g.Except[i])
		}
	}
	for _, ip := range []string{"10.244.9.9", "192.0.2.12", "203.0.113.13", "169.254.169.254"} {
		if !slices.ContainsFunc(g.Except, func(p netip.Prefix) bool { return p.Contains(a(ip)) }) {
			t.Errorf("except lacks %s", ip)
		}
	}
}
