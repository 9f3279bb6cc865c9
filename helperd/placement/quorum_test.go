package placement_test

import (
	"strings"
	"testing"

	"github.com/sluicenet/sluice/helperd/placement"
	"github.com/sluicenet/sluice/helperd/placement/placementtest"
	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
)

// A helper that sees only itself (a wrong gossip key) holds nothing and
// sends its Pods to the holder the API names.
func TestIsolatedHelperClaimsNothing(t *testing.T) {
	e := eg("prod", "198.51.100.5", "pool", "prod")
	for _, self := range []string{"node-a", "node-b", "node-c"} {
		s := snapshot(self, heldBy(e, "node-b"))
		s.Alive = []string{self}
		p := placement.Decide(s)
		if p.Quorum.OK || p.Quorum.Alive != 1 || p.Quorum.Voters != 3 {
			t.Errorf("%s: quorum = %+v, want 1 of 3, none", self, p.Quorum)
		}
		if len(p.Desired.HeldIPs) != 0 {
			t.Errorf("%s alone holds %v", self, p.Desired.HeldIPs)
		}
		if self == "node-b" {
			// The holder itself, cut off: gives the IP up.
			if ep := p.Egresses[0]; ep.Owner != "" || ep.Reason != v1alpha1.ReasonNoQuorum ||
				!strings.Contains(ep.Message, "1 of the 3") {
				t.Errorf("node-b alone: plan = %+v, want no owner, NoQuorum", ep)
			}
			continue
		}
		if ep := p.Egresses[0]; ep.Owner != "node-b" || ep.OwnerIP != ipB {
			t.Errorf("%s alone: owner = %q %v, want node-b from the API", self, ep.Owner, ep.OwnerIP)
		}
		if self == "node-c" {
			if st := p.Desired.Egresses[0]; st.Local || st.OwnerNodeIP != ipB {
				t.Errorf("node-c alone: state = %+v, want its Pod redirected to node-b", st)
			}
		}
	}
}

// With no holder in the API, an isolated helper leaves the IP unheld.
func TestIsolatedHelperWithoutHolderInAPI(t *testing.T) {
	s := snapshot("node-a", eg("prod", "198.51.100.5", "pool", "prod"))
	s.Alive = []string{"node-a"}
	p := placement.Decide(s)
	if ep := p.Egresses[0]; ep.Owner != "" || ep.Reason != v1alpha1.ReasonNoQuorum || len(p.Desired.HeldIPs) != 0 {
		t.Fatalf("plan = %+v, held %v; want no owner, NoQuorum", ep, p.Desired.HeldIPs)
	}
}

func TestQuorumRule(t *testing.T) {
	three := placementtest.Nodes()
	two := map[string]placement.NodeInfo{"node-a": three["node-a"], "node-b": three["node-b"]}
	downA := placementtest.Nodes()
	a := downA["node-a"]
	a.NotReady = true
	downA["node-a"] = a
	downAB := placementtest.Nodes()
	downAB["node-a"] = a
	b := downAB["node-b"]
	b.NotReady = true
	downAB["node-b"] = b
	cordoned := placementtest.Nodes()
	c := cordoned["node-c"]
	c.Unschedulable = true
	cordoned["node-c"] = c
	for _, tc := range []struct {
		name  string
		nodes map[string]placement.NodeInfo
		alive []string
		want  placement.Quorum
	}{
		{"all three", three, []string{"node-a", "node-b", "node-c"}, placement.Quorum{OK: true, Alive: 3, Voters: 3}},
		{"one of three dead", three, []string{"node-b", "node-c"}, placement.Quorum{OK: true, Alive: 2, Voters: 3}},
		{"alone of three", three, []string{"node-c"}, placement.Quorum{OK: false, Alive: 1, Voters: 3}},
		// A cordoned Node holds no IP but still gossips and votes.
		{"alone with a cordoned Node", cordoned, []string{"node-a"}, placement.Quorum{OK: false, Alive: 1, Voters: 3}},
		{"two Nodes, the first alone", two, []string{"node-a"}, placement.Quorum{OK: true, Alive: 1, Voters: 2}},
		{"two Nodes, the second alone", two, []string{"node-b"}, placement.Quorum{OK: false, Alive: 1, Voters: 2}},
		// A NotReady Node stops voting: node-b and node-c are half of
		// two each, and node-b sorts first.
		{"node-a NotReady, node-b alone", downA, []string{"node-b"}, placement.Quorum{OK: true, Alive: 1, Voters: 2}},
		{"node-a NotReady, node-c alone", downA, []string{"node-c"}, placement.Quorum{OK: false, Alive: 1, Voters: 2}},
		{"two NotReady, the last one alone", downAB, []string{"node-c"}, placement.Quorum{OK: true, Alive: 1, Voters: 1}},
		// Members the API does not list do not count.
		{"strangers", three, []string{"node-c", "x", "y"}, placement.Quorum{OK: false, Alive: 1, Voters: 3}},
	} {
		s := snapshot(tc.alive[0], eg("prod", "198.51.100.5", "pool", "prod"))
		s.Nodes, s.Alive = tc.nodes, tc.alive
		if got := placement.Decide(s).Quorum; got != tc.want {
			t.Errorf("%s: quorum = %+v, want %+v", tc.name, got, tc.want)
		}
	}
	s := snapshot("node-c")
	s.Pools, s.Alive = nil, []string{"node-c"}
	if got := placement.Decide(s).Quorum; !got.OK {
		t.Errorf("no pools: quorum = %+v, want ok", got)
	}
}

// A helper whose gossip probes go unanswered has no quorum even while its
// view still lists the others.
func TestUnhealthyHelperHasNoQuorum(t *testing.T) {
	e := eg("prod", "198.51.100.5", "pool", "prod")
	s := snapshot("node-a", heldBy(e, "node-b"))
	s.Health = 1
	if q := placement.Decide(s).Quorum; !q.OK {
		t.Fatalf("health 1: quorum = %+v, want ok (one failed probe is noise)", q)
	}
	s.Health = placement.UnhealthyScore
	p := placement.Decide(s)
	if p.Quorum.OK || len(p.Desired.HeldIPs) != 0 || p.Egresses[0].Owner != "node-b" {
		t.Fatalf("health %d: quorum %+v, held %v, owner %q; want no quorum, nothing held, node-b from the API",
			s.Health, p.Quorum, p.Desired.HeldIPs, p.Egresses[0].Owner)
	}
}
