package alloc

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	v1alpha1 "github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluicenet/sluice/pkg/ipam"
)

// ReasonIPReserved: the Egress names, or its pool could only give, an IP
// that is never an egress IP (a Node's address, inside a cluster CIDR,
// loopback, link-local, multicast).
const ReasonIPReserved = "IPReserved"

// Claims decides which Egress keeps an egress IP that several claim, the
// same way on every Node and in the allocator, from the API objects alone.
//
// An Egress claims the IP in its spec.egressIP, and the IP its own pool's
// status.allocations records for it. When several claim one IP:
//  1. one whose own pool records the IP for it wins: the allocation is
//     the API's commitment, and whoever holds an IP keeps it when a newer
//     claim on it appears (a static Egress, an overlapping pool, an edit);
//  2. then a static Egress over a pooled one: its IP is on a Node's
//     interface, put there by hand, and a pool cannot move it (a pooled
//     holder would put the address on a second Node);
//  3. then the oldest Egress, then the name that sorts first: the rule
//     that resolves two Egresses selecting one Pod.
//
// The losers are reported on their Egress (IPInUse) and programmed nowhere.
// Static Egresses (no pool) may share an IP with each other: the user put
// the IP on a Node by hand for them, and that Node SNATs all of them.
type Claims struct {
	winner map[netip.Addr]string
	static map[string]bool // Egresses without a pool
}

// NewClaims works out the winner of every claimed IP.
func NewClaims(pools []*v1alpha1.ExternalIPPool, egresses []*v1alpha1.Egress) Claims {
	type claimant struct {
		eg       *v1alpha1.Egress
		recorded bool
	}
	live := map[string]*v1alpha1.Egress{}
	for _, eg := range egresses {
		if eg.DeletionTimestamp == nil {
			live[eg.Name] = eg
		}
	}
	by := map[netip.Addr][]claimant{}
	add := func(ip netip.Addr, eg *v1alpha1.Egress, recorded bool) {
		for i, c := range by[ip] {
			if c.eg.Name == eg.Name {
				by[ip][i].recorded = c.recorded || recorded
				return
			}
		}
		by[ip] = append(by[ip], claimant{eg, recorded})
	}
	for _, p := range pools {
		for _, a := range p.Status.Allocations {
			ip, err := netip.ParseAddr(a.IP)
			eg := live[a.Egress]
			if err != nil || eg == nil || eg.Spec.ExternalIPPool != p.Name {
				continue
			}
			if want, err := netip.ParseAddr(wantedIP(eg)); err == nil && want.Unmap() != ip.Unmap() {
				continue // a stale record: the Egress now names another IP
			}
			add(ip.Unmap(), eg, true)
		}
	}
	for _, eg := range live {
		if ip, err := netip.ParseAddr(eg.Spec.EgressIP); err == nil {
			add(ip.Unmap(), eg, false)
		}
	}
	c := Claims{winner: make(map[netip.Addr]string, len(by)), static: map[string]bool{}}
	for name, eg := range live {
		if eg.Spec.ExternalIPPool == "" {
			c.static[name] = true
		}
	}
	for ip, cs := range by {
		best := slices.MinFunc(cs, func(a, b claimant) int {
			if a.recorded != b.recorded {
				if a.recorded {
					return -1
				}
				return 1
			}
			if sa, sb := a.eg.Spec.ExternalIPPool == "", b.eg.Spec.ExternalIPPool == ""; sa != sb {
				if sa {
					return -1
				}
				return 1
			}
			return older(a.eg, b.eg)
		})
		c.winner[ip] = best.eg.Name
	}
	return c
}

// Winner is the Egress that keeps ip, "" when nobody claims it.
func (c Claims) Winner(ip netip.Addr) string { return c.winner[ip.Unmap()] }

// Lost says why eg may not use ip ("" when it may): another Egress keeps it.
func (c Claims) Lost(eg string, ip netip.Addr) string {
	if w := c.Winner(ip); w != "" && w != eg && !(c.static[w] && c.static[eg]) {
		return fmt.Sprintf("egressIP %s is already used by Egress %s", ip, w)
	}
	return ""
}

// Refusal says why eg may not use ip, as an IPAllocated reason and
// message: reserved (ReasonIPReserved) or kept by another Egress
// (ReasonIPInUse). Both are "" when it may.
func (c Claims) Refusal(eg string, ip netip.Addr, reserved []ipam.Reserved) (reason, message string) {
	if why := ipam.Why(reserved, ip); why != "" {
		return ReasonIPReserved, reservedMessage(ip, why)
	}
	if lost := c.Lost(eg, ip); lost != "" {
		return ReasonIPInUse, lost
	}
	return "", ""
}

func reservedMessage(ip netip.Addr, why string) string {
	return fmt.Sprintf("egressIP %s is %s: it is never an egress IP", ip, why)
}

// Claimed returns every claimed IP, sorted: what no pool may hand out anew.
func (c Claims) Claimed() []netip.Addr {
	out := make([]netip.Addr, 0, len(c.winner))
	for ip := range c.winner {
		out = append(out, ip)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// Take records that eg now claims ip (an allocation just committed), if
// nobody did.
func (c Claims) Take(ip netip.Addr, eg string) {
	if _, ok := c.winner[ip.Unmap()]; !ok {
		c.winner[ip.Unmap()] = eg
	}
}

// Reserved returns the blocks no pool hands out in a cluster with these
// Node IPs and cluster CIDRs (Pods, Services), the special blocks
// included.
func Reserved(nodeIPs map[string]netip.Addr, clusterCIDRs []netip.Prefix) []ipam.Reserved {
	rs := ipam.Special()
	names := make([]string, 0, len(nodeIPs))
	for n := range nodeIPs {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if ip := nodeIPs[n]; ip.IsValid() {
			ip = ip.Unmap()
			rs = append(rs, ipam.Reserved{Prefix: netip.PrefixFrom(ip, ip.BitLen()), Why: "the address of Node " + n})
		}
	}
	for _, p := range clusterCIDRs {
		rs = append(rs, ipam.Reserved{Prefix: p.Masked(), Why: "inside the cluster CIDR " + p.Masked().String()})
	}
	return rs
}

// older orders Egresses oldest first, then by name.
func older(a, b *v1alpha1.Egress) int {
	if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}
