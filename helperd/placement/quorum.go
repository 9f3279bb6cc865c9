package placement

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
)

// Quorum is what one helper sees of the Nodes that decide pool IPs.
//
// Every helper places the pool IPs itself, from the gossip members it sees
// alive. A helper that sees too few of them (a wrong or stale gossip key,
// its gossip port filtered, a partition that leaves it alone) would place
// every IP on itself while the others still hold them. So a helper holds
// pool IPs only while it sees a strict majority of the voters alive: the
// Nodes the API lists with an InternalIP and not NotReady. Every one of them
// runs a helper (the DaemonSet tolerates every taint) and gossips, whether or
// not a pool's nodeSelector lets it hold IPs, so two dedicated egress Nodes
// among ten fail over to each other. An exact half has quorum when it holds
// the smallest voter's name, so that of two halves that each see the other
// as gone exactly one goes on; in a two-Node cluster that is the Node whose
// name sorts first.
//
// Counting members is not enough: when a Node is cut off, its view loses
// its peers one suspicion timeout at a time (1.8 s each for a lone accuser),
// while the peers, confirming each other, take its IPs within a second. In
// between, a stale majority could let it claim an IP from a peer it already
// declared dead. So a helper whose gossip health score (gossip.Health) is
// UnhealthyScore or more, which a cut-off Node reaches within about 0.6 s,
// has no quorum either, whatever its view says.
//
// Without quorum a helper holds no pool IP and routes its Pods to the Node
// that status.egressNode names (the API as tie-breaker): the holders the
// majority chose. A Node that the API marks NotReady (the node controller
// does so after its grace period, 50 s by default) stops being a voter, so
// a cluster that lost most of its Nodes for good regains quorum then.
type Quorum struct {
	OK     bool
	Alive  int // voters seen alive, this Node included when it is one
	Voters int
	Health int // gossip health score; 0 is healthy
}

// UnhealthyScore is the gossip health score from which a helper takes
// itself for cut off.
const UnhealthyScore = 2

// quorum computes the Quorum of s. With no pool there is nothing to hold
// and quorum is trivially there.
func quorum(s Snapshot) Quorum {
	vs := voters(s)
	if len(vs) == 0 {
		return Quorum{OK: true}
	}
	alive := map[string]bool{}
	for _, m := range s.Alive {
		alive[m] = true
	}
	q := Quorum{Voters: len(vs), Health: s.Health}
	for _, v := range vs {
		if alive[v] {
			q.Alive++
		}
	}
	q.OK = (2*q.Alive > q.Voters || 2*q.Alive == q.Voters && alive[vs[0]]) && q.Health < UnhealthyScore
	return q
}

// voters are the Nodes that decide pool IPs, sorted.
func voters(s Snapshot) []string {
	if len(s.Pools) == 0 {
		return nil
	}
	out := make([]string, 0, len(s.Nodes))
	for name, n := range s.Nodes {
		if n.IP.IsValid() && !n.NotReady {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// withoutQuorum replaces the owners of pooled IPs, which this helper could
// not decide alone, by the holders the API names; it holds none itself.
func withoutQuorum(s Snapshot, plans []Egress, egresses map[string]*v1alpha1.Egress, q Quorum) {
	for i := range plans {
		ep := &plans[i]
		if ep.Static || ep.blocked || !ep.inPool {
			continue
		}
		if s.Keep[ep.IP] && s.Nodes[s.Self].IP.IsValid() {
			// A restarting helper keeps what its kernel held until it
			// has gathered its peers (helperd/agent/grace.go).
			ep.Owner, ep.OwnerIP = s.Self, s.Nodes[s.Self].IP
			continue
		}
		ep.Owner, ep.OwnerIP = "", netip.Addr{}
		if eg := egresses[ep.Name]; eg != nil && eg.Status.EgressIP == ep.IP.String() && eg.Status.EgressNode != s.Self {
			if n, ok := s.Nodes[eg.Status.EgressNode]; ok && n.IP.IsValid() {
				ep.Owner, ep.OwnerIP = eg.Status.EgressNode, n.IP
				continue
			}
		}
		ep.Reason = v1alpha1.ReasonNoQuorum
		if q.Health >= UnhealthyScore {
			ep.Message = fmt.Sprintf("Node %s gets no answers to its gossip probes (health score %d), and no other Node holds %s", s.Self, q.Health, ep.IP)
		} else {
			ep.Message = fmt.Sprintf("Node %s sees %d of the %d Nodes that may hold pool IPs, not a majority, and no other Node holds %s", s.Self, q.Alive, q.Voters, ep.IP)
		}
	}
}
