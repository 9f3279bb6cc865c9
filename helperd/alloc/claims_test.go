package alloc

import (
	"net/netip"
	"strings"
	"testing"

	v1alpha1 "github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestClaimsWinner(t *testing.T) {
	ip := netip.MustParseAddr("192.0.2.11")
	for _, tc := range []struct {
		name  string
		pools []*v1alpha1.ExternalIPPool
		egs   []*v1alpha1.Egress
		want  string
	}{
		{"one claimant", nil, []*v1alpha1.Egress{egress("s", 1, "", "192.0.2.11", "")}, "s"},
		{"oldest of two static Egresses", nil,
			[]*v1alpha1.Egress{egress("new", 2, "", "192.0.2.11", ""), egress("old", 1, "", "192.0.2.11", "")}, "old"},
		{"same age: the name that sorts first", nil,
			[]*v1alpha1.Egress{egress("b", 1, "", "192.0.2.11", ""), egress("a", 1, "", "192.0.2.11", "")}, "a"},
		// Created in the same second: the name would let the pooled one win.
		{"unrecorded: a static Egress beats a pooled one naming its IP", nil,
			[]*v1alpha1.Egress{egress("st", 1, "", "192.0.2.11", ""), egress("named", 1, "p", "192.0.2.11", "")}, "st"},
		{"unrecorded: even an older pooled one", nil,
			[]*v1alpha1.Egress{egress("st", 2, "", "192.0.2.11", ""), egress("named", 1, "p", "192.0.2.11", "")}, "st"},
		{"the pool's record beats an older static claim",
			[]*v1alpha1.ExternalIPPool{pool("p", map[string]string{"192.0.2.11": "pooled"}, r11to13)},
			[]*v1alpha1.Egress{egress("static", 1, "", "192.0.2.11", ""), egress("pooled", 2, "p", "192.0.2.11", "p")}, "pooled"},
		{"a record before the Egress carries the IP still counts",
			[]*v1alpha1.ExternalIPPool{pool("p", map[string]string{"192.0.2.11": "pooled"}, r11to13)},
			[]*v1alpha1.Egress{egress("static", 1, "", "192.0.2.11", ""), egress("pooled", 2, "p", "", "")}, "pooled"},
		{"a record of an Egress that left the pool does not count",
			[]*v1alpha1.ExternalIPPool{pool("p", map[string]string{"192.0.2.11": "moved"}, r11to13)},
			[]*v1alpha1.Egress{egress("static", 2, "", "192.0.2.11", ""), egress("moved", 1, "q", "", "")}, "static"},
		{"a stale record (the Egress names another IP) does not count",
			[]*v1alpha1.ExternalIPPool{pool("p", map[string]string{"192.0.2.11": "edited"}, r11to13)},
			[]*v1alpha1.Egress{egress("static", 2, "", "192.0.2.11", ""), egress("edited", 1, "p", "192.0.2.12", "")}, "static"},
		{"two pools recorded it (a race): the oldest",
			[]*v1alpha1.ExternalIPPool{pool("p", map[string]string{"192.0.2.11": "x"}, r11to13), pool("q", map[string]string{"192.0.2.11": "y"}, r11to13)},
			[]*v1alpha1.Egress{egress("y", 1, "q", "", ""), egress("x", 2, "p", "", "")}, "y"},
		{"a deleted Egress claims nothing", nil,
			[]*v1alpha1.Egress{deleting(egress("old", 1, "", "192.0.2.11", "")), egress("new", 2, "", "192.0.2.11", "")}, "new"},
	} {
		// Whatever order the objects come in, the same winner.
		for _, rev := range []bool{false, true} {
			egs := append([]*v1alpha1.Egress(nil), tc.egs...)
			if rev {
				for i, j := 0, len(egs)-1; i < j; i, j = i+1, j-1 {
					egs[i], egs[j] = egs[j], egs[i]
				}
			}
			if got := NewClaims(tc.pools, egs).Winner(ip); got != tc.want {
				t.Errorf("%s (reversed %v): winner %q, want %q", tc.name, rev, got, tc.want)
			}
		}
	}
}

// planAll plans every pool in turn the way Allocator.Sync does, each
// committed plan's allocations taken before the next pool plans.
func planAll(pools []*v1alpha1.ExternalIPPool, egs []*v1alpha1.Egress, reserved World) map[string]Allocation {
	w := World{Claims: NewClaims(pools, egs), Reserved: reserved.Reserved}
	out := map[string]Allocation{}
	for _, p := range pools {
		plan := Allocate(p, egs, w)
		for _, a := range plan.Allocations {
			w.Claims.Take(netip.MustParseAddr(a.IP), a.Egress)
		}
		out[p.Name] = plan
	}
	return out
}

func TestAllocateNeverHijacks(t *testing.T) {
	nodes := map[string]netip.Addr{"node-a": netip.MustParseAddr("192.0.2.11"), "node-b": netip.MustParseAddr("198.51.100.2")}
	w := World{Reserved: Reserved(nodes, []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.96.0.0/12")})}
	for _, tc := range []struct {
		name     string
		pools    []*v1alpha1.ExternalIPPool
		egs      []*v1alpha1.Egress
		wantIP   map[string]string // egress → allocated IP (via SetIP or kept)
		wantReas map[string]string // egress → reason
		wantMsg  map[string]string // egress → part of the message
	}{{
		name:     "a pool spanning a Node IP skips it",
		pools:    []*v1alpha1.ExternalIPPool{pool("p", nil, r11to13)},
		egs:      []*v1alpha1.Egress{egress("a", 1, "p", "", "")},
		wantIP:   map[string]string{"a": "192.0.2.12"},
		wantReas: map[string]string{"a": "Allocated"},
	}, {
		name:     "naming a Node IP: IPReserved, naming the Node",
		pools:    []*v1alpha1.ExternalIPPool{pool("p", nil, r11to13)},
		egs:      []*v1alpha1.Egress{egress("u", 1, "p", "192.0.2.11", "")},
		wantReas: map[string]string{"u": ReasonIPReserved},
		wantMsg:  map[string]string{"u": "Node node-a"},
	}, {
		name:     "an IP Sluice gave before the Node got it is replaced",
		pools:    []*v1alpha1.ExternalIPPool{pool("p", map[string]string{"192.0.2.11": "a"}, r11to13)},
		egs:      []*v1alpha1.Egress{egress("a", 1, "p", "192.0.2.11", "p")},
		wantIP:   map[string]string{"a": "192.0.2.12"},
		wantReas: map[string]string{"a": "Allocated"},
	}, {
		name:     "a pool inside the Pod CIDR hands out nothing",
		pools:    []*v1alpha1.ExternalIPPool{pool("p", nil, v1alpha1.IPRange{CIDR: "10.244.7.0/24"})},
		egs:      []*v1alpha1.Egress{egress("a", 1, "p", "", "")},
		wantReas: map[string]string{"a": v1alpha1.ReasonPoolExhausted},
	}, {
		name:     "loopback, link-local and multicast are never handed out",
		pools:    []*v1alpha1.ExternalIPPool{pool("p", nil, v1alpha1.IPRange{CIDR: "127.0.0.0/30"}, v1alpha1.IPRange{CIDR: "169.254.0.0/30"}, v1alpha1.IPRange{CIDR: "224.0.0.0/30"})},
		egs:      []*v1alpha1.Egress{egress("a", 1, "p", "", ""), egress("u", 2, "p", "169.254.0.1", "")},
		wantReas: map[string]string{"a": v1alpha1.ReasonPoolExhausted, "u": ReasonIPReserved},
		wantMsg:  map[string]string{"u": "link-local"},
	}, {
		name:     "overlapping pools never give one IP twice",
		pools:    []*v1alpha1.ExternalIPPool{pool("p", nil, r11to13), pool("q", nil, v1alpha1.IPRange{Start: "192.0.2.12", End: "192.0.2.14"})},
		egs:      []*v1alpha1.Egress{egress("x", 1, "p", "", ""), egress("y", 2, "q", "", "")},
		wantIP:   map[string]string{"x": "192.0.2.12", "y": "192.0.2.13"},
		wantReas: map[string]string{"x": "Allocated", "y": "Allocated"},
	}, {
		name: "two pools recorded one IP (two allocators raced): the older keeps it, the other gets a new one",
		pools: []*v1alpha1.ExternalIPPool{pool("p", map[string]string{"192.0.2.12": "x"}, r11to13),
			pool("q", map[string]string{"192.0.2.12": "y"}, v1alpha1.IPRange{Start: "192.0.2.12", End: "192.0.2.14"})},
		egs:      []*v1alpha1.Egress{egress("x", 2, "p", "192.0.2.12", "p"), egress("y", 1, "q", "192.0.2.12", "q")},
		wantIP:   map[string]string{"y": "192.0.2.12", "x": "192.0.2.13"},
		wantReas: map[string]string{"x": "Allocated", "y": "Allocated"},
	}, {
		name:     "a user IP another pool's Egress holds: IPInUse",
		pools:    []*v1alpha1.ExternalIPPool{pool("p", map[string]string{"192.0.2.12": "x"}, r11to13), pool("q", nil, v1alpha1.IPRange{Start: "192.0.2.12", End: "192.0.2.14"})},
		egs:      []*v1alpha1.Egress{egress("x", 2, "p", "192.0.2.12", "p"), egress("u", 1, "q", "192.0.2.12", "")},
		wantIP:   map[string]string{"x": "192.0.2.12"},
		wantReas: map[string]string{"x": "Allocated", "u": ReasonIPInUse},
		wantMsg:  map[string]string{"u": "Egress x"},
	}, {
		name:     "a static Egress and a pooled one naming its IP: the older static keeps it",
		pools:    []*v1alpha1.ExternalIPPool{pool("p", nil, r11to13)},
		egs:      []*v1alpha1.Egress{egress("static", 1, "", "192.0.2.13", ""), egress("u", 2, "p", "192.0.2.13", ""), egress("a", 3, "p", "", "")},
		wantIP:   map[string]string{"a": "192.0.2.12"},
		wantReas: map[string]string{"u": ReasonIPInUse, "a": "Allocated"},
		wantMsg:  map[string]string{"u": "Egress static"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			plans := planAll(tc.pools, tc.egs, w)
			got := map[string]string{}
			reasons := map[string]Condition{}
			owners := map[string]string{} // ip → egress, across pools
			for _, p := range plans {
				for name, ip := range p.SetIP {
					got[name] = ip
				}
				for _, a := range p.Allocations {
					if prev, dup := owners[a.IP]; dup {
						t.Errorf("%s allocated to both %s and %s", a.IP, prev, a.Egress)
					}
					owners[a.IP] = a.Egress
					if _, set := got[a.Egress]; !set {
						got[a.Egress] = a.IP
					}
				}
				for name, c := range p.Conditions {
					reasons[name] = c
				}
			}
			for name, ip := range tc.wantIP {
				if got[name] != ip {
					t.Errorf("egress %s: IP %q, want %q (all: %v)", name, got[name], ip, got)
				}
			}
			for name, r := range tc.wantReas {
				if reasons[name].Reason != r {
					t.Errorf("egress %s: reason %q (%s), want %q", name, reasons[name].Reason, reasons[name].Message, r)
				}
				if m := tc.wantMsg[name]; !strings.Contains(reasons[name].Message, m) {
					t.Errorf("egress %s: message %q, want it to say %q", name, reasons[name].Message, m)
				}
			}
			for _, p := range plans {
				for _, a := range p.Allocations {
					if r := reservedWhy(w, a.IP); r != "" {
						t.Errorf("allocated %s, %s, to %s", a.IP, r, a.Egress)
					}
				}
			}
		})
	}
}

func TestStaticConditions(t *testing.T) {
	egs := []*v1alpha1.Egress{
		egress("s", 1, "", "192.0.2.20", ""), egress("t", 2, "", "192.0.2.20", ""),
		egress("lo", 1, "", "127.0.0.9", ""), egress("node", 1, "", "192.0.2.11", ""),
		egress("pooled", 1, "p", "", ""),
	}
	egs = append(egs, egress("late", 3, "p", "192.0.2.20", ""))
	conds := StaticConditions(egs, NewClaims(nil, egs), Reserved(nil, nil))
	// Static Egresses may share an IP; a pooled one naming it may not.
	if lost := NewClaims(nil, egs).Lost("late", netip.MustParseAddr("192.0.2.20")); !strings.Contains(lost, "Egress s") {
		t.Errorf("a pooled Egress naming a static IP: Lost = %q, want it to name s", lost)
	}
	for name, want := range map[string]string{"s": v1alpha1.ReasonStatic, "t": v1alpha1.ReasonStatic, "lo": ReasonIPReserved, "node": v1alpha1.ReasonStatic} {
		if conds[name].Reason != want || conds[name].Allocated != (want == v1alpha1.ReasonStatic) {
			t.Errorf("%s: %+v, want reason %s", name, conds[name], want)
		}
	}
	if _, ok := conds["pooled"]; ok {
		t.Errorf("a pooled Egress got a static condition")
	}
}

func reservedWhy(w World, ip string) string {
	for _, r := range w.Reserved {
		if r.Prefix.Contains(netip.MustParseAddr(ip)) {
			return r.Why
		}
	}
	return ""
}

func deleting(eg *v1alpha1.Egress) *v1alpha1.Egress {
	now := metav1.NewTime(t0)
	eg.DeletionTimestamp = &now
	return eg
}
