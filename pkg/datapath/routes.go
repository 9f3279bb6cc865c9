package datapath

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// Rule is one policy-routing rule Sluice owns: "[iif Iif] fwmark
// Mark/MarkMask lookup Table" at Priority, or "goto Goto" when Goto is set.
// Table 254 is main.
type Rule struct {
	Priority int
	Mark     uint32
	Iif      string
	Table    int
	Goto     int
}

// TableMain is the kernel's main table, used by the loop-guard rules.
const TableMain = 254

// Route is one route in a Sluice table. A zero Gw is a device route; Gw
// routes are onlink (the tunnel has no addresses).
type Route struct {
	Table int
	Dst   netip.Prefix
	Gw    netip.Addr
}

// Peer is a node reached through the tunnel: its FDB entry and permanent
// neighbor use a MAC derived from its IP, so nodes need no exchange.
type Peer struct {
	IP  netip.Addr
	MAC net.HardwareAddr
}

// TunnelMAC is the tunnel device MAC of the node with this IPv4 address:
// 02:5c:<4 address bytes> (locally administered, unicast).
func TunnelMAC(ip netip.Addr) net.HardwareAddr {
	b := ip.As4()
	return net.HardwareAddr{0x02, 0x5c, b[0], b[1], b[2], b[3]}
}

// BuildRules returns the desired rules, sorted.
func BuildRules(c Config, d Desired) []Rule {
	rules := []Rule{
		{Priority: PrioTunnelSkip, Mark: MarkTunnel, Iif: c.TunnelDev, Goto: PrioLoopGuard},
		{Priority: PrioRPCheck, Mark: MarkTunnel, Table: TableRPCheck},
		{Priority: PrioLoopGuard, Mark: MarkReply, Table: TableMain, Iif: "lo"},
		{Priority: PrioReturn, Mark: MarkReply, Table: TableReturn},
	}
	seen := map[uint16]bool{}
	for _, e := range d.Egresses {
		if !e.Redirected() || seen[e.ID] {
			continue
		}
		seen[e.ID] = true
		m := MarkOf(e.ID)
		rules = append(rules,
			Rule{Priority: PrioLoopGuard, Mark: m, Table: TableMain, Iif: "lo"},
			Rule{Priority: PrioEgress, Mark: m, Table: TableOf(e.ID)})
	}
	slices.SortFunc(rules, compareRules)
	return rules
}

func compareRules(a, b Rule) int {
	return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.Mark, b.Mark),
		cmp.Compare(a.Table, b.Table), cmp.Compare(a.Iif, b.Iif), cmp.Compare(a.Goto, b.Goto))
}

// BuildRoutes returns the desired routes of every Sluice table, sorted.
// All of them go out of the tunnel device.
func BuildRoutes(d Desired) []Route {
	any4 := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	routes := []Route{{Table: TableRPCheck, Dst: any4}}
	seen := map[uint16]bool{}
	for _, e := range d.Egresses {
		if !e.Redirected() || seen[e.ID] {
			continue
		}
		seen[e.ID] = true
		routes = append(routes, Route{Table: TableOf(e.ID), Dst: any4, Gw: e.OwnerNodeIP})
	}
	remote := slices.Clone(d.RemotePods)
	slices.SortFunc(remote, func(a, b RemotePod) int {
		return cmp.Or(a.IP.Compare(b.IP), a.NodeIP.Compare(b.NodeIP))
	})
	pods := map[netip.Addr]bool{}
	for _, p := range remote {
		if pods[p.IP] {
			continue // one route per Pod IP; the lowest node IP wins
		}
		pods[p.IP] = true
		routes = append(routes, Route{Table: TableReturn, Dst: netip.PrefixFrom(p.IP, 32), Gw: p.NodeIP})
	}
	slices.SortFunc(routes, compareRoutes)
	return routes
}

func compareRoutes(a, b Route) int {
	return cmp.Or(cmp.Compare(a.Table, b.Table), a.Dst.Addr().Compare(b.Dst.Addr()),
		cmp.Compare(a.Dst.Bits(), b.Dst.Bits()), a.Gw.Compare(b.Gw))
}

// BuildPeers returns the nodes this node sends tunnel traffic to: owners of
// redirected egress IPs and nodes of remote Pods, sorted.
func BuildPeers(d Desired) []Peer {
	var ips []netip.Addr
	for _, e := range d.Egresses {
		if e.Redirected() {
			ips = append(ips, e.OwnerNodeIP)
		}
	}
	for _, p := range d.RemotePods {
		ips = append(ips, p.NodeIP)
	}
	var peers []Peer
	for _, ip := range sortedAddrs(ips) {
		peers = append(peers, Peer{IP: ip, MAC: TunnelMAC(ip)})
	}
	return peers
}

// String renders the rule as `ip rule show` would.
func (r Rule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d: from all fwmark %#x/%#x", r.Priority, r.Mark, MarkMask)
	if r.Iif != "" {
		fmt.Fprintf(&b, " iif %s", r.Iif)
	}
	switch {
	case r.Goto != 0:
		fmt.Fprintf(&b, " goto %d", r.Goto)
	case r.Table == TableMain:
		b.WriteString(" lookup main")
	default:
		fmt.Fprintf(&b, " lookup %d", r.Table)
	}
	return b.String()
}

// String renders the route like `ip route show table N`; every Sluice
// route goes through the tunnel device.
func (r Route) String() string {
	dst := r.Dst.String()
	if r.Dst.Bits() == 0 {
		dst = "default"
	}
	if r.Gw.IsValid() {
		return fmt.Sprintf("table %d: %s via %s dev <tunnel> onlink", r.Table, dst, r.Gw)
	}
	return fmt.Sprintf("table %d: %s dev <tunnel>", r.Table, dst)
}
