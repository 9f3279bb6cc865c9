package datapath

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/sluicenet/sluice/pkg/ipam"
)

// The exit guard is the last check on the uplink, after every NAT: an
// nftables chain at postrouting priority ExitGuardPriority, past the nat
// hooks of iptables (legacy or nft) and of any nftables table at srcnat
// (100). iptables has no hook after NAT, so a rule another agent puts
// ahead of Sluice's SNAT jump (a MASQUERADE at position 1), a conntrack
// entry that recorded "no NAT", or an INVALID packet (which skips NAT)
// would otherwise put a selected Pod's packet on the wire with the Pod's
// or the Node's address. The guard drops such a packet and counts it:
//
//   - a packet from a selected Pod that conntrack calls INVALID or
//     untracked, to a destination outside SLUICE-EXCEPT
//     (ExitDropInvalid);
//   - a packet of a connection a selected Pod opened (conntrack's
//     original source) to such a destination, whose source is not the
//     egress IP this Node SNATs that Pod to: the Pod's Egress is held elsewhere (the
//     packet should have gone into the tunnel) or the packet escaped the
//     SNAT rule (ExitDropWrongSource).
//
// On input, the guard's second chain (ExitInputChain) drops a TCP packet
// to an egress IP this Node holds that starts no connection and belongs
// to none conntrack knows (ExitDropNoConnection): the server's packets of
// a connection SNATed by the IP's previous holder, which reach this Node
// as soon as it announces the IP. The kernel would answer them with a
// reset, killing a connection that its Pod's next packet, SNATed here to
// the same port, carries on; dropped, the server retransmits.
//
// Selected are the Pods of Egresses that have a holder (Local or
// redirected) or that fail closed (EgressState.FailClosed); a Pod whose
// Egress has no eligible Node leaves with its Node's IP, as documented. Replies of connections opened from outside (a NodePort) have
// another original source and pass.
const (
	ExitGuardTable    = "sluice"
	ExitGuardChain    = "exit-guard"
	ExitGuardPriority = 300
	ExitInputChain    = "held-input"

	ExitDropInvalid     = "invalid"
	ExitDropWrongSource = "wrong-source"
	ExitDropUnNATed     = "un-nated"
	// ExitDropNoConnection is the input chain's counter (not a Pod's
	// packet: a stray one from outside to a held egress IP).
	ExitDropNoConnection = "no-connection"
)

// ExitDropReasons are the guard's counters, in the order they are shown.
var ExitDropReasons = []string{ExitDropInvalid, ExitDropWrongSource, ExitDropUnNATed, ExitDropNoConnection}

// ExitGuard is the content of the guard's sets.
type ExitGuard struct {
	Selected []netip.Addr   // Pod IPs that must leave as their egress IP or not at all
	Allowed  []ExitSource   // Pod → egress IP pairs this Node SNATs
	Except   []netip.Prefix // destinations never redirected (SLUICE-EXCEPT), disjoint, sorted
	// Lingering are Pods that were selected moments ago (ExitLinger): a
	// packet leaving with one of them as its source (not NATed at all: a
	// conntrack entry from when it went into the tunnel) is dropped
	// (ExitDropUnNATed); masqueraded ones pass.
	Lingering []netip.Addr
	// Held are the pool IPs this Node holds (Desired.HeldIPs).
	Held   []netip.Addr
	Uplink string
}

// ExitLinger is how long a Pod that stops being selected on this Node
// (its Egress deleted, its labels changed, its Egress's holder not known
// for a moment) stays in ExitGuard.Lingering: long enough for the Apply
// that removes its stale conntrack entries.
const ExitLinger = 5 * time.Second

// ExitSource is one Pod whose packets leave this Node's uplink as EgressIP.
type ExitSource struct{ Pod, EgressIP netip.Addr }

// BuildExitGuard returns the guard's content for d (IPv4).
func BuildExitGuard(c Config, d Desired) ExitGuard {
	g := ExitGuard{Uplink: c.Uplink, Except: mergePrefixes(exceptPrefixes(c, d))}
	for _, ip := range d.HeldIPs {
		if ip.Is4() {
			g.Held = append(g.Held, ip)
		}
	}
	slices.SortFunc(g.Held, netip.Addr.Compare)
	sel := map[netip.Addr]bool{}
	ok := map[ExitSource]bool{}
	for _, e := range d.Egresses {
		if !e.Local && !e.Redirected() && !e.FailClosed {
			continue
		}
		for _, ip := range slices.Concat(e.AllPodIPs, e.LocalPodIPs) {
			if !ip.Is4() {
				continue
			}
			sel[ip] = true
			if e.Local {
				ok[ExitSource{ip, e.EgressIP}] = true
			}
		}
	}
	for ip := range sel {
		g.Selected = append(g.Selected, ip)
	}
	slices.SortFunc(g.Selected, netip.Addr.Compare)
	for s := range ok {
		g.Allowed = append(g.Allowed, s)
	}
	slices.SortFunc(g.Allowed, func(a, b ExitSource) int {
		return cmp.Or(a.Pod.Compare(b.Pod), a.EgressIP.Compare(b.EgressIP))
	})
	return g
}

// exceptPrefixes are the IPv4 destinations Sluice never redirects:
// ipam.Special, the cluster CIDRs, the Node IPs and the egress IPs.
func exceptPrefixes(c Config, d Desired) []netip.Prefix {
	var out []netip.Prefix
	for _, r := range ipam.Special() {
		out = append(out, r.Prefix)
	}
	for _, p := range c.ClusterCIDRs {
		out = append(out, p.Masked())
	}
	for _, ip := range d.NodeIPs {
		out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
	}
	if c.NodeIP.IsValid() {
		out = append(out, netip.PrefixFrom(c.NodeIP, c.NodeIP.BitLen()))
	}
	for _, e := range d.Egresses {
		if e.EgressIP.IsValid() {
			out = append(out, netip.PrefixFrom(e.EgressIP, e.EgressIP.BitLen()))
		}
	}
	return slices.DeleteFunc(out, func(p netip.Prefix) bool { return !p.Addr().Is4() })
}

// mergePrefixes drops prefixes contained in others, so that what remains
// is disjoint (two CIDRs either nest or are disjoint), sorted.
func mergePrefixes(in []netip.Prefix) []netip.Prefix {
	ps := slices.Clone(in)
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	var out []netip.Prefix
	for _, p := range ps {
		if n := len(out); n > 0 && out[n-1].Contains(p.Addr()) && out[n-1].Bits() <= p.Bits() {
			continue
		}
		out = append(out, p)
	}
	return out
}

// Equal reports whether two guards have the same content.
func (g ExitGuard) Equal(o ExitGuard) bool {
	return g.Uplink == o.Uplink && slices.Equal(g.Selected, o.Selected) &&
		slices.Equal(g.Allowed, o.Allowed) && slices.Equal(g.Except, o.Except) && slices.Equal(g.Lingering, o.Lingering) &&
		slices.Equal(g.Held, o.Held)
}
