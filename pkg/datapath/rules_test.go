package datapath

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
)

var (
	n1   = netip.MustParseAddr("192.0.2.11")
	n2   = netip.MustParseAddr("192.0.2.12")
	eip  = netip.MustParseAddr("203.0.113.10")
	eip2 = netip.MustParseAddr("203.0.113.20")
	podA = netip.MustParseAddr("10.244.1.2")
	podB = netip.MustParseAddr("10.244.2.2")
)

func testConfig() Config {
	return Config{Uplink: "eth0", NodeIP: n1,
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.96.0.0/12")},
	}.WithDefaults()
}

func TestConfigValidate(t *testing.T) {
	good := testConfig()
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	for _, tc := range []struct {
		field string
		mod   func(*Config)
	}{
		{"TunnelDev", func(c *Config) { c.TunnelDev = "a-very-long-device-name" }},
		{"TunnelPort", func(c *Config) { c.TunnelPort = 70000 }},
		{"VNI", func(c *Config) { c.VNI = 1 << 24 }},
		{"Uplink", func(c *Config) { c.Uplink = "" }},
		{"Uplink", func(c *Config) { c.Uplink = "enp0s31f6abcd" }},
		{"NodeIP", func(c *Config) { c.NodeIP = netip.MustParseAddr("2001:db8::1") }},
		{"ClusterCIDRs", func(c *Config) { c.ClusterCIDRs = []netip.Prefix{{}} }},
		{"ClusterCIDRs", func(c *Config) { c.ClusterCIDRs = nil }},
		{"TunnelMTU", func(c *Config) { c.TunnelMTU = 100 }},
	} {
		c := good
		tc.mod(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: got %v, want an error naming the field", tc.field, err)
		}
	}
	if d := (Config{}).WithDefaults(); d.TunnelDev != "sluice.vxlan" || d.TunnelPort != 8477 || d.VNI != 4096 {
		t.Errorf("defaults: %+v", d)
	}
}

func TestDesiredValidate(t *testing.T) {
	c := testConfig()
	ok := Desired{Egresses: []EgressState{{Name: "a", EgressIP: eip, ID: 1, OwnerNodeIP: n2}, {Name: "b", EgressIP: eip2, ID: 1, OwnerNodeIP: n2}}}
	if err := ok.Validate(c); err != nil {
		t.Fatalf("id shared by one owner rejected: %v", err)
	}
	for name, d := range map[string]Desired{
		"id range":   {Egresses: []EgressState{{Name: "a", EgressIP: eip, ID: 4001, OwnerNodeIP: n2}}},
		"id clash":   {Egresses: []EgressState{{Name: "a", EgressIP: eip, ID: 1, OwnerNodeIP: n2}, {Name: "b", EgressIP: eip2, ID: 1, OwnerNodeIP: netip.MustParseAddr("192.0.2.13")}}},
		"self owner": {Egresses: []EgressState{{Name: "a", EgressIP: eip, ID: 1, OwnerNodeIP: n1}}},
		"dup name":   {Egresses: []EgressState{{Name: "a", EgressIP: eip, Local: true}, {Name: "a", EgressIP: eip, Local: true}}},
		"remote pod": {RemotePods: []RemotePod{{IP: podB, NodeIP: n1}}},
	} {
		if err := d.Validate(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestAssignIDs(t *testing.T) {
	a, b, c := netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2"), netip.MustParseAddr("203.0.113.3")
	for _, tc := range []struct {
		name string
		prev map[netip.Addr]uint16
		ips  []netip.Addr
		want map[netip.Addr]uint16
	}{
		{"fresh in IP order", nil, []netip.Addr{c, a, b}, map[netip.Addr]uint16{a: 1, b: 2, c: 3}},
		{"keeps previous", map[netip.Addr]uint16{c: 1}, []netip.Addr{a, c}, map[netip.Addr]uint16{c: 1, a: 2}},
		{"drops gone, reuses hole", map[netip.Addr]uint16{a: 1, b: 2}, []netip.Addr{b, c}, map[netip.Addr]uint16{b: 2, c: 1}},
		{"previous clash", map[netip.Addr]uint16{a: 5, b: 5}, []netip.Addr{a, b}, map[netip.Addr]uint16{a: 5, b: 1}},
		{"out of range previous", map[netip.Addr]uint16{a: 4001}, []netip.Addr{a}, map[netip.Addr]uint16{a: 1}},
		{"duplicates", nil, []netip.Addr{a, a}, map[netip.Addr]uint16{a: 1}},
	} {
		if got := AssignIDs(tc.prev, tc.ips); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %v want %v", tc.name, got, tc.want)
		}
	}
	many := make([]netip.Addr, MaxID+5)
	for i := range many {
		many[i] = netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
	}
	if got := AssignIDs(nil, many); len(got) != MaxID {
		t.Errorf("assigned %d ids, want at most %d", len(got), MaxID)
	}
}

func TestEgressSetName(t *testing.T) {
	n := EgressSetName(strings.Repeat("x", 253))
	if len(n) > 31 || !strings.HasPrefix(n, "SLUICE-EG-") {
		t.Errorf("bad set name %q", n)
	}
	if EgressSetName("a") == EgressSetName("b") || EgressSetName("a") != EgressSetName("a") {
		t.Error("set names not distinct/stable")
	}
}

// twoEgresses: "prod" held by this node, "staging" held by node 2.
func twoEgresses() Desired {
	return Desired{
		Egresses: []EgressState{
			{Name: "staging", EgressIP: eip2, ID: 7, OwnerNodeIP: n2, LocalPodIPs: []netip.Addr{podA}, AllPodIPs: []netip.Addr{podA}},
			{Name: "prod", EgressIP: eip, ID: 3, OwnerNodeIP: n1, Local: true, AllPodIPs: []netip.Addr{podB, podA}},
			{Name: "orphan", EgressIP: netip.MustParseAddr("203.0.113.30"), AllPodIPs: []netip.Addr{podA}},
		},
		HeldIPs:    []netip.Addr{eip},
		NodeIPs:    []netip.Addr{n1, n2},
		RemotePods: []RemotePod{{IP: podB, NodeIP: n2}},
	}
}

func TestBuildChains(t *testing.T) {
	got := BuildChains(testConfig(), twoEgresses())
	stg, prod := EgressSetName("staging"), EgressSetName("prod")
	want := Chains{
		"mangle": {
			ChainPrerouting: {
				"-i sluice.vxlan -j MARK --set-xmark 0xffe0000/0xfff0000",
				"-i sluice.vxlan -m conntrack --ctdir ORIGINAL -j CONNMARK --set-xmark 0xffe0000/0xfff0000",
				"! -i sluice.vxlan -m conntrack --ctdir REPLY -m connmark --mark 0xffe0000/0xfff0000 -j MARK --set-xmark 0xffd0000/0xfff0000",
				"! -i sluice.vxlan -m set --match-set " + stg + ` src -m set ! --match-set SLUICE-EXCEPT dst -m comment --comment "sluice:ip=203.0.113.20" -j MARK --set-xmark 0x70000/0xfff0000`,
			},
			ChainForward: {"-o sluice.vxlan -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu"},
		},
		"nat": {ChainPostrouting: {
			"-o sluice.vxlan -j ACCEPT",
			"-o eth0 -m set --match-set " + prod + " src -m set ! --match-set SLUICE-EXCEPT dst -j SNAT --to-source 203.0.113.10",
		}},
		"filter": {
			ChainFilterForward: {"-i sluice.vxlan -j ACCEPT", "-o sluice.vxlan -j ACCEPT"},
			// Only prod is held here, so only its Pods may come out of the tunnel.
			ChainGuard: {
				"-i eth0 -p udp -m udp --dport 8477 -m addrtype --dst-type LOCAL -m set --match-set SLUICE-NODES src -j RETURN",
				`-p udp -m udp --dport 8477 -m addrtype --dst-type LOCAL -m comment --comment "sluice:drop=not-from-node" -j DROP`,
				`! -i eth0 -p udp -m udp --dport 8477 -m comment --comment "sluice:drop=from-pod" -j DROP`,
				"-i sluice.vxlan -m conntrack --ctdir REPLY -j RETURN",
				"-i sluice.vxlan -m set --match-set " + prod + " src -m set ! --match-set SLUICE-EXCEPT dst -j RETURN",
				`-i sluice.vxlan -m comment --comment "sluice:drop=not-selected" -j DROP`,
			},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
	// Rules are O(#Egress), never O(#Pods).
	d := twoEgresses()
	for i := range 1000 {
		d.Egresses[0].AllPodIPs = append(d.Egresses[0].AllPodIPs, netip.AddrFrom4([4]byte{10, 244, byte(i >> 8), byte(i)}))
	}
	if n := len(BuildChains(testConfig(), d)["mangle"][ChainPrerouting]); n != 4 {
		t.Errorf("%d mangle rules for 1000 pods", n)
	}
}

func TestBuildIPSets(t *testing.T) {
	got := BuildIPSets(testConfig(), twoEgresses())
	byName := map[string]IPSet{}
	for _, s := range got {
		byName[s.Name] = s
	}
	if !slices.IsSortedFunc(got, func(a, b IPSet) int { return strings.Compare(a.Name, b.Name) }) {
		t.Error("sets not sorted")
	}
	ex := byName[SetExcept]
	wantEx := []string{"0.0.0.0/8", "10.244.0.0/16", "10.96.0.0/12", "127.0.0.0/8", "169.254.0.0/16", "192.0.2.11", "192.0.2.12",
		"203.0.113.10", "203.0.113.20", "203.0.113.30", "224.0.0.0/4", "240.0.0.0/4"}
	if ex.Type != "hash:net" || !reflect.DeepEqual(ex.Members, wantEx) {
		t.Errorf("except set %+v", ex)
	}
	if p := byName[EgressSetName("prod")]; p.Type != "hash:ip" || !reflect.DeepEqual(p.Members, []string{"10.244.1.2", "10.244.2.2"}) {
		t.Errorf("prod set %+v", p)
	}
	if n := byName[SetNodes]; n.Type != "hash:ip" || !reflect.DeepEqual(n.Members, []string{"192.0.2.11", "192.0.2.12"}) {
		t.Errorf("nodes set %+v", n)
	}
	// The Node's own IP is a tunnel peer even before the API lists it.
	if n := BuildIPSets(testConfig(), Desired{}); len(n) != 2 || !reflect.DeepEqual(n[1].Members, []string{"192.0.2.11"}) {
		t.Errorf("sets of an empty state: %+v", n)
	}
	if len(got) != 5 {
		t.Errorf("%d sets, want 5", len(got))
	}
}

func TestBuildRulesRoutesPeers(t *testing.T) {
	d := twoEgresses()
	d.Egresses = append(d.Egresses, EgressState{Name: "staging2", EgressIP: eip2, ID: 7, OwnerNodeIP: n2})
	wantRules := []Rule{
		{Priority: 9900, Mark: 0x0ffe0000, Iif: "sluice.vxlan", Goto: 9910},
		{Priority: 9901, Mark: 0x0ffe0000, Table: 9998},
		{Priority: 9910, Mark: 0x00070000, Table: 254, Iif: "lo"},
		{Priority: 9910, Mark: 0x0ffd0000, Table: 254, Iif: "lo"},
		{Priority: 9920, Mark: 0x0ffd0000, Table: 9999},
		{Priority: 9930, Mark: 0x00070000, Table: 10007},
	}
	if got := BuildRules(testConfig(), d); !reflect.DeepEqual(got, wantRules) {
		t.Errorf("rules\n%+v\nwant\n%+v", got, wantRules)
	}
	d.RemotePods = append(d.RemotePods, RemotePod{IP: podB, NodeIP: netip.MustParseAddr("192.0.2.13")})
	wantRoutes := []Route{
		{Table: 9998, Dst: netip.MustParsePrefix("0.0.0.0/0")},
		{Table: 9999, Dst: netip.MustParsePrefix("10.244.2.2/32"), Gw: n2},
		{Table: 10007, Dst: netip.MustParsePrefix("0.0.0.0/0"), Gw: n2},
	}
	if got := BuildRoutes(d); !reflect.DeepEqual(got, wantRoutes) {
		t.Errorf("routes\n%+v\nwant\n%+v", got, wantRoutes)
	}
	peers := BuildPeers(d)
	if len(peers) != 2 || peers[0].IP != n2 || peers[0].MAC.String() != "02:5c:c0:00:02:0c" {
		t.Errorf("peers %+v", peers)
	}
}

func TestExplain(t *testing.T) {
	c, d := testConfig(), twoEgresses()
	d.Egresses[0].AllPodIPs = []netip.Addr{podA}
	d.Egresses[1].AllPodIPs = []netip.Addr{podB}
	d.Egresses[2].AllPodIPs = []netip.Addr{netip.MustParseAddr("10.244.3.3")}
	podC := netip.MustParseAddr("10.244.3.4")
	d.Egresses = append(d.Egresses, EgressState{Name: "blind", EgressIP: netip.MustParseAddr("192.0.2.99"), ID: 9,
		AllPodIPs: []netip.Addr{podC}, FailClosed: true})
	for _, tc := range []struct {
		pod  netip.Addr
		want PodPath
	}{
		{podA, PodPath{Egress: "staging", EgressIP: eip2, Set: EgressSetName("staging"), Mark: 0x70000, Table: 10007, Peer: n2}},
		{podB, PodPath{Egress: "prod", EgressIP: eip, Set: EgressSetName("prod"), SNATHere: true}},
		{netip.MustParseAddr("10.244.3.3"), PodPath{Egress: "orphan", Set: EgressSetName("orphan")}},
		{netip.MustParseAddr("10.244.9.9"), PodPath{}},
		{podC, PodPath{Egress: "blind", Set: EgressSetName("blind"), FailClosed: true}},
	} {
		got := Explain(c, d, tc.pod)
		if got.Summary == "" {
			t.Errorf("%v: no summary", tc.pod)
		}
		got.Summary = ""
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%v: got %+v want %+v", tc.pod, got, tc.want)
		}
	}
}

func TestRuleAndRouteStrings(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{Rule{Priority: 9900, Mark: MarkTunnel, Iif: "sluice.vxlan", Goto: 9910}.String(),
			"9900: from all fwmark 0xffe0000/0xfff0000 iif sluice.vxlan goto 9910"},
		{Rule{Priority: 9910, Mark: 1 << 16, Iif: "lo", Table: TableMain}.String(),
			"9910: from all fwmark 0x10000/0xfff0000 iif lo lookup main"},
		{Rule{Priority: 9930, Mark: 1 << 16, Table: 10001}.String(),
			"9930: from all fwmark 0x10000/0xfff0000 lookup 10001"},
		{Route{Table: 10001, Dst: netip.MustParsePrefix("0.0.0.0/0"), Gw: netip.MustParseAddr("192.0.2.11")}.String(),
			"table 10001: default via 192.0.2.11 dev <tunnel> onlink"},
		{Route{Table: 9998, Dst: netip.MustParsePrefix("0.0.0.0/0")}.String(), "table 9998: default dev <tunnel>"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestUnionChainsKeepsOldRulesUntilTheSecondPass(t *testing.T) {
	have := map[string][]string{"SLUICE-POSTROUTING": {"-o sluice.vxlan -j ACCEPT", "old-snat"}}
	want := map[string][]string{"SLUICE-POSTROUTING": {"-o sluice.vxlan -j ACCEPT", "new-snat"}}
	got := unionChains(have, want)["SLUICE-POSTROUTING"]
	if !slices.Equal(got, []string{"old-snat", "-o sluice.vxlan -j ACCEPT", "new-snat"}) {
		t.Fatalf("union = %q", got)
	}
}

func TestMarkAndTableOfAnID(t *testing.T) {
	for _, id := range []uint16{1, 7, MaxID} {
		m := MarkOf(id)
		if m&^MarkMask != 0 || IDOfMark(m) != id || TableOf(id) != TableEgressLo+int(id) {
			t.Errorf("id %d: mark %#x (id back %d), table %d", id, m, IDOfMark(m), TableOf(id))
		}
	}
	if MarkOf(0) != 0 || TableOf(0) != 0 || IDOfMark(0x10010000) != 0 {
		t.Error("id 0 has a mark or table, or a mark outside MarkMask reads as an id")
	}
}
