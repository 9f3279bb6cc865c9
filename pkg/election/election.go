// Package election decides which Node owns an egress IP. It is pure: every
// helper runs the same function over the same inputs (the alive gossip
// members that match the pool's nodeSelector) and gets the same answer, so
// there is no leader and nothing to agree on over the network.
//
// The ring is Antrea's: crc32 (IEEE) of strconv.Itoa(i)+member for
// VirtualNodes virtual nodes per member, keyed by the IP string. A member
// leaving only moves the IPs it owned; a member joining takes about
// 1/(N+1) of the IPs and moves nothing else. One deliberate difference: on a
// crc32 collision of two virtual nodes Antrea keeps whichever member was
// added last (input order); here the smaller name wins, so every helper
// agrees whatever order its member list comes in.
//
// Pool IPs are placed together by AssignBounded (bounded loads), which
// first keeps each IP on its current owner while that owner is eligible
// and within the fair share, so a departure moves only the departed
// member's IPs. The two policies then decide what happens when a Node
// comes back (--on-node-return):
//
//   - Rebalance ("failback", the default): a returning Node takes back its
//     fair share: IPs over the share on other owners move to it, nothing
//     else moves, and the layout is balanced again.
//   - Sticky ("stay"): an eligible current owner keeps its IPs past the
//     share. A returning Node takes nothing back, so a flow breaks only
//     once; load stays skewed until the next failure.
//
// Either way ownership depends on history, read from one agreed source
// (each Egress's status.egressNode); Owner (one IP, no bounds) is what the
// allocator's leader election uses.
//
// Neither flaps: an owner changes only when the eligible set changes.
package election

import (
	"cmp"
	"fmt"
	"hash/crc32"
	"slices"
	"sort"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// VirtualNodes is the number of ring points per member. Antrea uses 50:
// enough for an even spread on small clusters, cheap to rebuild.
const VirtualNodes = 50

// Policy chooses what an eligible current owner means.
type Policy int

const (
	// Rebalance ignores the current owner: pure consistent hashing.
	Rebalance Policy = iota
	// Sticky keeps the current owner while it stays eligible.
	Sticky
)

func (p Policy) String() string {
	switch p {
	case Rebalance:
		return "rebalance"
	case Sticky:
		return "sticky"
	}
	return "Policy(" + strconv.Itoa(int(p)) + ")"
}

// ParsePolicy maps a flag value to a Policy.
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "rebalance", "":
		return Rebalance, nil
	case "sticky":
		return Sticky, nil
	}
	return 0, fmt.Errorf("unknown election policy %q: want rebalance or sticky", s)
}

type point struct {
	hash   uint32
	member string
}

// Ring is a consistent-hash ring over a set of members. Build it once per
// membership change and ask it for many IPs.
type Ring struct {
	points  []point
	members map[string]struct{}
}

// NewRing builds the ring over members. Order and duplicates don't matter;
// empty names are ignored. When two virtual nodes hash to the same point the
// smaller member name wins, so the result never depends on input order.
func NewRing(members []string) *Ring {
	r := &Ring{members: make(map[string]struct{}, len(members))}
	for _, m := range members {
		if m != "" {
			r.members[m] = struct{}{}
		}
	}
	r.points = make([]point, 0, len(r.members)*VirtualNodes)
	for m := range r.members {
		for i := range VirtualNodes {
			r.points = append(r.points, point{crc32.ChecksumIEEE([]byte(strconv.Itoa(i) + m)), m})
		}
	}
	slices.SortFunc(r.points, func(a, b point) int {
		return cmp.Or(cmp.Compare(a.hash, b.hash), cmp.Compare(a.member, b.member))
	})
	r.points = slices.CompactFunc(r.points, func(a, b point) bool { return a.hash == b.hash })
	return r
}

// Has reports whether m is a member of the ring.
func (r *Ring) Has(m string) bool {
	_, ok := r.members[m]
	return ok
}

// Len is the number of members.
func (r *Ring) Len() int { return len(r.members) }

// Owner returns the member owning ip under policy p, or "" when the ring is
// empty. current is the IP's owner today ("" if none); only Sticky reads it.
func (r *Ring) Owner(ip string, current string, p Policy) string {
	if len(r.points) == 0 {
		return ""
	}
	if p == Sticky && current != "" && r.Has(current) {
		return current
	}
	h := crc32.ChecksumIEEE([]byte(ip))
	i := sort.Search(len(r.points), func(i int) bool { return r.points[i].hash >= h })
	if i == len(r.points) {
		i = 0
	}
	return r.points[i].member
}

// Owner is the one-shot form of Ring.Owner: the owner of ip among eligible
// under policy p, or "" when eligible is empty.
func Owner(ip string, eligible []string, current string, p Policy) string {
	return NewRing(eligible).Owner(ip, current, p)
}

// Assign computes the owner of every IP in ips over one ring. current maps
// IP → today's owner (may be nil). IPs without an owner map to "".
func Assign(ips []string, eligible []string, current map[string]string, p Policy) map[string]string {
	r := NewRing(eligible)
	out := make(map[string]string, len(ips))
	for _, ip := range ips {
		out[ip] = r.Owner(ip, current[ip], p)
	}
	return out
}

// Eligible returns the alive members whose Node labels match the pool's
// nodeSelector, sorted and without duplicates. An empty selector matches
// every Node. An alive member without known labels (no Node object seen yet)
// is not eligible: its labels can't be checked, and every helper must reach
// the same answer. An invalid selector makes no Node eligible and is
// returned as an error.
func Eligible(alive []string, nodeLabels map[string]map[string]string, sel metav1.LabelSelector) ([]string, error) {
	s, err := metav1.LabelSelectorAsSelector(&sel)
	if err != nil {
		return nil, fmt.Errorf("parse nodeSelector: %w", err)
	}
	out := make([]string, 0, len(alive))
	for _, m := range alive {
		l, ok := nodeLabels[m]
		if ok && m != "" && s.Matches(labels.Set(l)) {
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
