package datapath

import (
	"maps"
	"net/netip"
	"slices"
)

// Conntrack hygiene. NAT is decided once per connection, by its first
// packet, and conntrack keeps that decision. When an egress IP moves, the
// decision of an established connection goes stale: a flow that went into
// the tunnel recorded "no NAT", and after this Node takes the IP over its
// packets would leave the uplink with the Pod's IP; a flow SNATed here
// keeps its egress IP after the IP went elsewhere, and its packets would go
// into the tunnel with that source. The exit guard drops such packets;
// hygiene removes the stale entries at the transition, so the next packet
// is decided afresh by the current rules (TCP is picked up mid-stream) and
// the flow goes on through the right Node.
//
// natWant is what conntrack must have recorded, on this Node, for a
// selected Pod's connection to outside the cluster.
type natWant struct {
	SNAT   netip.Addr // SNATed here to this egress IP (this Node holds it)
	Tunnel bool       // sent into the tunnel: no NAT here
}

// natState is every selected Pod's natWant on this Node, and the egress IPs
// it holds.
type natState struct {
	Pods map[netip.Addr]natWant
	Held map[netip.Addr]bool
}

func buildNATState(d Desired) natState {
	p := natState{Pods: map[netip.Addr]natWant{}, Held: map[netip.Addr]bool{}}
	for _, ip := range d.HeldIPs {
		p.Held[ip] = true
	}
	for _, e := range d.Egresses {
		switch {
		case e.Local:
			for _, ip := range slices.Concat(e.AllPodIPs, e.LocalPodIPs) {
				p.Pods[ip] = natWant{SNAT: e.EgressIP}
			}
		case e.Redirected():
			for _, ip := range e.LocalPodIPs {
				p.Pods[ip] = natWant{Tunnel: true}
			}
		}
	}
	return p
}

func (p natState) equal(o natState) bool {
	return maps.Equal(p.Pods, o.Pods) && maps.Equal(p.Held, o.Held)
}

// needsScan reports whether going from prev to next can have left stale
// entries: a Pod's want changed or went away, or an IP was released. A Pod
// new to the plan is not scanned for, so a CNI ADD never waits for a dump
// of the conntrack table: a new sandbox has no entries, and a Pod that a
// label change just selected keeps its earlier connections' NAT, whose
// packets the exit guard drops (a connection cannot survive a change of
// its source anyway). With no prev (a restarted helper) every entry is
// checked once.
func needsScan(prev *natState, next natState) bool {
	if prev == nil {
		return len(next.Pods) > 0
	}
	for ip := range prev.Held {
		if !next.Held[ip] {
			return true
		}
	}
	for ip, w := range prev.Pods {
		if nw, ok := next.Pods[ip]; !ok || nw != w {
			return true
		}
	}
	return false
}

// flow is the part of a conntrack entry hygiene reads: the original source,
// the destination after any DNAT (the reply's source), and the reply's
// destination (the original source unless SNATed).
type flow struct{ Src, Dst, ReplyDst netip.Addr }

// staleFlow reports whether an entry's NAT is wrong for next, given prev
// (nil after a restart: then only entries that contradict next are stale).
// except says whether a destination is inside the cluster (SLUICE-EXCEPT),
// where Sluice redirects nothing.
func staleFlow(prev *natState, next natState, except func(netip.Addr) bool, f flow) bool {
	if prev != nil && prev.Held[f.ReplyDst] && !next.Held[f.ReplyDst] {
		return true // SNATed to an egress IP this Node let go of
	}
	if except(f.Dst) {
		return false
	}
	w, selected := next.Pods[f.Src]
	var p natWant
	had := false
	if prev != nil {
		p, had = prev.Pods[f.Src]
	}
	switch {
	case selected && (prev == nil || !had || p != w):
		if w.SNAT.IsValid() {
			return f.ReplyDst != w.SNAT
		}
		return f.ReplyDst != f.Src // into the tunnel: must not be NATed here
	case !selected && had:
		// No longer selected here: what the old want recorded is wrong now.
		return p.SNAT.IsValid() && f.ReplyDst == p.SNAT || p.Tunnel && f.ReplyDst == f.Src
	}
	return false
}

// exceptMatcher tests destinations against SLUICE-EXCEPT's prefixes: host
// routes by map, the few wider prefixes by scan.
func exceptMatcher(ps []netip.Prefix) func(netip.Addr) bool {
	hosts := map[netip.Addr]bool{}
	var nets []netip.Prefix
	for _, p := range ps {
		if p.IsSingleIP() {
			hosts[p.Addr()] = true
		} else {
			nets = append(nets, p)
		}
	}
	return func(ip netip.Addr) bool {
		if hosts[ip] {
			return true
		}
		for _, p := range nets {
			if p.Contains(ip) {
				return true
			}
		}
		return false
	}
}
