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
)

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
		case e.redirected():
			pre = append(pre, fmt.Sprintf("! -i %s %s -m comment --comment %s -j MARK --set-xmark %s",
				dev, match, idComment(e.EgressIP), markArg(uint32(e.ID)<<markShift)))
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
		"filter": {ChainFilterForward: {
			fmt.Sprintf("-i %s -j ACCEPT", dev),
			fmt.Sprintf("-o %s -j ACCEPT", dev),
		}},
	}
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
	except := map[string]bool{}
	for _, p := range c.ClusterCIDRs {
		except[netMember(p.Masked())] = true
	}
	for _, ip := range d.NodeIPs {
		except[ip.String()] = true
	}
	except[c.NodeIP.String()] = true
	// Egress IPs are node addresses too: Pod→egress IP is in-cluster.
	for _, e := range d.Egresses {
		except[e.EgressIP.String()] = true
	}
	sets := []IPSet{{Name: SetExcept, Type: "hash:net", Members: sortedKeys(except)}}
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
