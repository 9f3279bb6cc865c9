package datapath

import (
	"fmt"
	"net/netip"
	"slices"
)

// PodPath is how this node's datapath treats one Pod's egress traffic, for
// the CLI's explain. It is read off the desired state, with the same
// helpers (MarkOf, TableOf) the rules and routes are built with.
type PodPath struct {
	Egress   string     // "" when no Egress selects the Pod
	EgressIP netip.Addr // source external servers see, when an Egress applies
	Set      string     // ipset matching the Pod
	Mark     uint32     // fwmark set here (0: not redirected from this node)
	Table    int        // route table of the mark (0: none)
	Peer     netip.Addr // tunnel peer this node sends the Pod's traffic to
	SNATHere bool       // this node SNATs the Pod to EgressIP
	// FailClosed: the Egress's holder is not known, so the exit guard
	// drops the Pod's packets rather than send them with the node IP.
	FailClosed bool
	Summary    string
}

// Explain returns the path of pod's traffic at this node.
func Explain(c Config, d Desired, pod netip.Addr) PodPath {
	for _, e := range sortedEgresses(d.Egresses) {
		if !slices.Contains(e.AllPodIPs, pod) && !slices.Contains(e.LocalPodIPs, pod) {
			continue
		}
		p := PodPath{Egress: e.Name, EgressIP: e.EgressIP, Set: EgressSetName(e.Name)}
		switch {
		case e.Local:
			p.SNATHere = true
			p.Summary = fmt.Sprintf("this node holds %s: SNAT on %s", e.EgressIP, c.Uplink)
		case e.Redirected():
			p.Mark, p.Table, p.Peer = MarkOf(e.ID), TableOf(e.ID), e.OwnerNodeIP
			p.Summary = fmt.Sprintf("mark %#x → table %d → %s via %s; SNAT to %s there",
				p.Mark, p.Table, e.OwnerNodeIP, c.TunnelDev, e.EgressIP)
		case e.FailClosed:
			p.EgressIP, p.FailClosed = netip.Addr{}, true
			p.Summary = fmt.Sprintf("no node is known to hold %s: the exit guard drops its packets (never the node IP)", e.EgressIP)
		default:
			p.EgressIP = netip.Addr{}
			p.Summary = fmt.Sprintf("no node holds %s (or no mark id): leaves with its node IP", e.EgressIP)
		}
		return p
	}
	return PodPath{Summary: "no Egress selects this Pod: leaves with its node IP"}
}
