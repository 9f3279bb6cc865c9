package datapath

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
)

// Chain layout. One jump from each built-in chain, inserted at position 1
// so it runs before the primary CNI's rules (its MASQUERADE in particular),
// except in filter FORWARD, where it is appended:
//
//	mangle PREROUTING  → SLUICE-PREROUTING   tunnel marks, reply marks, egress marks
//	mangle FORWARD     → SLUICE-FORWARD      TCP MSS clamp into the tunnel
//	nat    POSTROUTING → SLUICE-POSTROUTING  never NAT into the tunnel; SNAT to egress IPs
//	filter FORWARD     → SLUICE-FWD-ACCEPT   (last) accept what enters or leaves the tunnel
//	filter INPUT and FORWARD → SLUICE-GUARD  close the tunnel (see guardRules)
//
// The filter jump goes last so that it only overrides a DROP policy (Docker
// sets one): an egress Node forwards other Nodes' Pods, which a primary CNI
// that accepts its own Pods only would leave to the policy. Whatever the
// primary or the admin decided earlier in FORWARD (a NetworkPolicy DROP)
// still wins; so does an explicit trailing REJECT rule, which the README
// lists as a limit.
//
// Rule text is written exactly as `iptables -S` prints it back (hex marks
// without leading zeros, quoted comments), so a sync compares strings.
const (
	ChainPrerouting  = "SLUICE-PREROUTING"
	ChainForward     = "SLUICE-FORWARD"
	ChainPostrouting = "SLUICE-POSTROUTING"
	// ChainFilterForward is in the filter table.
	ChainFilterForward = "SLUICE-FWD-ACCEPT"
	// ChainGuard is in the filter table, first in INPUT and FORWARD.
	ChainGuard = "SLUICE-GUARD"
)

// Drop reasons of the tunnel guard, as its rule comments carry them
// ("sluice:drop=<reason>") and the metric labels them.
const (
	// DropNotFromNode: a packet to this Node's tunnel port whose source is
	// not a Node IP, or that did not arrive on the uplink.
	DropNotFromNode = "not-from-node"
	// DropFromPod: a forwarded packet (a Pod's) to any tunnel port.
	DropFromPod = "from-pod"
	// DropNotSelected: a packet out of the tunnel that is neither a reply
	// to this Node's own traffic nor from a Pod selected by an Egress this
	// Node holds.
	DropNotSelected = "not-selected"
)

func dropComment(reason string) string { return fmt.Sprintf(`"sluice:drop=%s"`, reason) }

// tables are the iptables tables Sluice writes, in the order it writes them.
var tables = []string{"mangle", "nat", "filter"}

// Jump is a built-in chain's jump into a Sluice chain.
type Jump struct {
	Table, From, To string
	// Last appends the jump, and leaves it where it is once present
	// (others may append after it); otherwise it is kept at position 1.
	Last bool
}

// Jumps are the jumps Sluice owns.
var Jumps = []Jump{
	{"mangle", "PREROUTING", ChainPrerouting, false},
	{"mangle", "FORWARD", ChainForward, false},
	{"nat", "POSTROUTING", ChainPostrouting, false},
	{"filter", "FORWARD", ChainFilterForward, true},
	{"filter", "INPUT", ChainGuard, false},
	{"filter", "FORWARD", ChainGuard, false},
}

// Chains maps table → chain → rule specs (without "-A <chain>").
type Chains map[string]map[string][]string

// idComment tags an egress mark rule with its egress IP, so a restarted
// helper can read the id assignment back (CurrentIDs).
func idComment(ip netip.Addr) string { return fmt.Sprintf(`"sluice:ip=%s"`, ip) }

func markArg(v uint32) string { return fmt.Sprintf("0x%x/0x%x", v, MarkMask) }

// BuildChains returns the desired content of every Sluice chain.
//
// Every egress set holds the Egress's Pods cluster-wide (AllPodIPs): the
// owner's SNAT rule must match Pods of other nodes, which arrive through the
// tunnel, and the mark rule's "! -i <tunnel>" keeps those from being marked
// again anywhere. One set per Egress serves both roles.
func BuildChains(c Config, d Desired) Chains {
	dev := c.TunnelDev
	pre := []string{
		// Everything from the tunnel: lets rp_filter pass (rule 9900) and
		// remembers that replies must go back through the tunnel.
		fmt.Sprintf("-i %s -j MARK --set-xmark %s", dev, markArg(MarkTunnel)),
		fmt.Sprintf("-i %s -m conntrack --ctdir ORIGINAL -j CONNMARK --set-xmark %s", dev, markArg(MarkTunnel)),
		fmt.Sprintf("! -i %s -m conntrack --ctdir REPLY -m connmark --mark %s -j MARK --set-xmark %s",
			dev, markArg(MarkTunnel), markArg(MarkReply)),
	}
	post := []string{fmt.Sprintf("-o %s -j ACCEPT", dev)}
	for _, e := range sortedEgresses(d.Egresses) {
		set := EgressSetName(e.Name)
		match := fmt.Sprintf("-m set --match-set %s src -m set ! --match-set %s dst", set, SetExcept)
		switch {
		case e.Local:
			post = append(post, fmt.Sprintf("-o %s %s -j SNAT --to-source %s", c.Uplink, match, e.EgressIP))
		case e.Redirected():
			pre = append(pre, fmt.Sprintf("! -i %s %s -m comment --comment %s -j MARK --set-xmark %s",
				dev, match, idComment(e.EgressIP), markArg(MarkOf(e.ID))))
		}
	}
	return Chains{
		"mangle": {
			ChainPrerouting: pre,
			// Pods keep the primary CNI's MTU; the tunnel's is 50 bytes
			// smaller. Clamping the MSS of SYNs entering the tunnel avoids
			// relying on ICMP "fragmentation needed" in both directions.
			ChainForward: {fmt.Sprintf("-o %s -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu", dev)},
		},
		"nat": {ChainPostrouting: post},
		"filter": {
			ChainFilterForward: {
				fmt.Sprintf("-i %s -j ACCEPT", dev),
				fmt.Sprintf("-o %s -j ACCEPT", dev),
			},
			ChainGuard: guardRules(c, d),
		},
	}
}

// guardRules close the tunnel. The VXLAN socket listens on every local
// address, and whatever it decapsulates is trusted as another Node's
// redirected Pod traffic (marked, let past rp_filter, SNATed). So:
//
//   - the tunnel port of a local address takes only packets that arrive on
//     the uplink from a Node IP (SLUICE-NODES), as flannel and Calico VXLAN
//     trust the Node network;
//   - no forwarded packet (a Pod's, whatever its destination) may go to a
//     tunnel port: a Pod's packet to another Node would otherwise arrive
//     there from this Node's IP, masqueraded by the primary CNI;
//   - what comes out of the tunnel is either a reply to a connection this
//     Node sent into it, or the traffic of a Pod selected by an Egress this
//     Node holds, to a destination outside the cluster. Anything else (a
//     redirect that reached a Node which no longer holds the IP included) is
//     dropped, never relayed with a wrong source.
//
// Each drop rule counts its packets; Stats reports them by reason.
func guardRules(c Config, d Desired) []string {
	dev, up, port := c.TunnelDev, c.Uplink, c.TunnelPort
	out := []string{
		fmt.Sprintf("-i %s -p udp -m udp --dport %d -m addrtype --dst-type LOCAL -m set --match-set %s src -j RETURN", up, port, SetNodes),
		fmt.Sprintf("-p udp -m udp --dport %d -m addrtype --dst-type LOCAL -m comment --comment %s -j DROP", port, dropComment(DropNotFromNode)),
		fmt.Sprintf("! -i %s -p udp -m udp --dport %d -m comment --comment %s -j DROP", up, port, dropComment(DropFromPod)),
		fmt.Sprintf("-i %s -m conntrack --ctdir REPLY -j RETURN", dev),
	}
	for _, e := range sortedEgresses(d.Egresses) {
		if e.Local {
			out = append(out, fmt.Sprintf("-i %s -m set --match-set %s src -m set ! --match-set %s dst -j RETURN",
				dev, EgressSetName(e.Name), SetExcept))
		}
	}
	return append(out, fmt.Sprintf("-i %s -m comment --comment %s -j DROP", dev, dropComment(DropNotSelected)))
}

func sortedEgresses(in []EgressState) []EgressState {
	out := slices.Clone(in)
	slices.SortFunc(out, func(a, b EgressState) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// IPSet is one ipset with its exact members, written as `ipset save` prints
// them (a /32 in a hash:net set is printed as the bare address).
type IPSet struct {
	Name    string
	Type    string // hash:ip or hash:net
	Members []string
}

// BuildIPSets returns every Sluice ipset, sorted by name, members sorted.
func BuildIPSets(c Config, d Desired) []IPSet {
	// Link-local (metadata services, node-local DNS), loopback, multicast
	// and the rest of ipam.Special are never sent to an egress Node: they
	// mean this link or this host. Nor are the cluster CIDRs, the Node IPs
	// and the egress IPs (Pod→egress IP is in-cluster): exceptPrefixes,
	// which the exit guard shares.
	except := map[string]bool{}
	for _, p := range exceptPrefixes(c, d) {
		except[netMember(p)] = true
	}
	nodes := map[string]bool{c.NodeIP.String(): true}
	for _, ip := range d.NodeIPs {
		nodes[ip.String()] = true
	}
	sets := []IPSet{
		{Name: SetExcept, Type: "hash:net", Members: sortedKeys(except)},
		{Name: SetNodes, Type: "hash:ip", Members: sortedKeys(nodes)},
	}
	for _, e := range sortedEgresses(d.Egresses) {
		m := map[string]bool{}
		for _, ip := range e.AllPodIPs {
			m[ip.String()] = true
		}
		for _, ip := range e.LocalPodIPs {
			m[ip.String()] = true
		}
		sets = append(sets, IPSet{Name: EgressSetName(e.Name), Type: "hash:ip", Members: sortedKeys(m)})
	}
	slices.SortFunc(sets, func(a, b IPSet) int { return cmp.Compare(a.Name, b.Name) })
	return sets
}

func netMember(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
