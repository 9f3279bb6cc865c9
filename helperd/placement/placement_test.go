package placement_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/helperd/alloc"
	"github.com/sluicenet/sluice/helperd/placement"
	"github.com/sluicenet/sluice/helperd/placement/placementtest"
	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluicenet/sluice/pkg/datapath"
	"github.com/sluicenet/sluice/pkg/policy"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var (
	eg, pod, snapshot, heldBy = placementtest.Egress, placementtest.Pod, placementtest.Snapshot, placementtest.HeldBy
	ipA, ipB, ipC             = placementtest.IPA, placementtest.IPB, placementtest.IPC
)

func TestPoolEgressAllNodesAgreeOnTheOwner(t *testing.T) {
	e := eg("prod", "198.51.100.5", "pool", "prod")
	owners := map[string]bool{}
	for _, self := range []string{"node-a", "node-b", "node-c"} {
		p := placement.Decide(snapshot(self, e))
		owners[p.Egresses[0].Owner] = true
	}
	if len(owners) != 1 || owners[""] || owners["node-c"] {
		t.Fatalf("owners = %v, want one eligible Node that every helper agrees on", owners)
	}
}

func TestOwnerHoldsAndSNATsSourcesRedirect(t *testing.T) {
	e := eg("prod", "198.51.100.5", "pool", "prod")
	owner := placement.Decide(snapshot("node-a", e)).Egresses[0].Owner

	po := placement.Decide(snapshot(owner, e))
	if fmt.Sprint(po.Desired.HeldIPs) != "[198.51.100.5]" {
		t.Fatalf("owner %s holds %v, want [198.51.100.5]", owner, po.Desired.HeldIPs)
	}
	if len(po.Desired.Egresses) != 1 || !po.Desired.Egresses[0].Local {
		t.Fatalf("owner's egress state = %+v", po.Desired.Egresses)
	}
	if got := fmt.Sprint(po.Desired.Egresses[0].AllPodIPs); got != "[10.244.1.5 10.244.3.5]" {
		t.Fatalf("AllPodIPs = %s", got)
	}
	// node-c's Pod is remote to the owner: its replies go back to node-c.
	foundC := false
	for _, rp := range po.Desired.RemotePods {
		if rp.IP.String() == "10.244.3.5" && rp.NodeIP == ipC {
			foundC = true
		}
	}
	if !foundC {
		t.Fatalf("RemotePods %v lack web-c on node-c", po.Desired.RemotePods)
	}

	ps := placement.Decide(snapshot("node-c", e))
	if len(ps.Desired.HeldIPs) != 0 {
		t.Fatalf("node-c holds %v", ps.Desired.HeldIPs)
	}
	st := ps.Desired.Egresses[0]
	if st.Local || st.OwnerNodeIP != placementtest.Nodes()[owner].IP || st.ID == 0 {
		t.Fatalf("source state = %+v, want redirect to %s", st, owner)
	}
	if fmt.Sprint(st.LocalPodIPs) != "[10.244.3.5]" {
		t.Fatalf("LocalPodIPs = %v", st.LocalPodIPs)
	}
}

func TestFailoverWhenOwnerDies(t *testing.T) {
	e := eg("prod", "198.51.100.5", "pool", "prod")
	owner := placement.Decide(snapshot("node-c", e)).Egresses[0].Owner
	s := snapshot("node-c", e)
	s.Alive = []string{"node-c"}
	for _, n := range []string{"node-a", "node-b"} {
		if n != owner {
			s.Alive = append(s.Alive, n)
		}
	}
	p := placement.Decide(s)
	if p.Egresses[0].Owner == owner || p.Egresses[0].Owner == "" || p.Egresses[0].Owner == "node-c" {
		t.Fatalf("after %s died the owner is %q", owner, p.Egresses[0].Owner)
	}
}

func TestNoEligibleNodeFallsBackToNodeIP(t *testing.T) {
	s := snapshot("node-c", eg("prod", "198.51.100.5", "pool", "prod"))
	for name, n := range s.Nodes { // every Node alive, none matches the pool
		n.Labels = nil
		s.Nodes[name] = n
	}
	p := placement.Decide(s)
	if p.Egresses[0].Owner != "" || p.Egresses[0].Reason != v1alpha1.ReasonNoEligibleNode {
		t.Fatalf("plan = %+v, want NoEligibleNode", p.Egresses[0])
	}
	if len(p.Desired.Egresses) != 1 || p.Desired.Egresses[0].OwnerNodeIP.IsValid() {
		t.Fatalf("desired = %+v, want no redirect", p.Desired.Egresses)
	}
}

func TestCordonedNodeIsNotEligible(t *testing.T) {
	s := snapshot("node-c", eg("prod", "198.51.100.5", "pool", "prod"))
	n := s.Nodes["node-a"]
	n.Unschedulable = true
	s.Nodes["node-a"] = n
	for range 3 {
		if got := placement.Decide(s).Egresses[0].Owner; got != "node-b" {
			t.Fatalf("owner = %q, want node-b while node-a is cordoned", got)
		}
	}
}

func TestStaticEgress(t *testing.T) {
	static := netip.MustParseAddr("192.0.2.200")
	e := eg("prod", static.String(), "", "prod")
	// node-b has the IP on an interface.
	sb := snapshot("node-b", e)
	sb.LocalAddrs[static] = true
	pb := placement.Decide(sb)
	if pb.Egresses[0].Owner != "node-b" || len(pb.Desired.HeldIPs) != 0 || !pb.Desired.Egresses[0].Local {
		t.Fatalf("holder's plan = %+v / %+v", pb.Egresses[0], pb.Desired)
	}
	// node-a learns it from the status node-b wrote.
	e2 := e.DeepCopy()
	e2.Status.EgressNode, e2.Status.EgressIP = "node-b", static.String()
	pa := placement.Decide(snapshot("node-a", e2))
	if pa.Egresses[0].Owner != "node-b" || pa.Desired.Egresses[0].OwnerNodeIP != ipB {
		t.Fatalf("source's plan = %+v", pa.Egresses[0])
	}
	// Status naming node-a, which no longer has the IP: not found.
	e3 := e.DeepCopy()
	e3.Status.EgressNode, e3.Status.EgressIP = "node-a", static.String()
	if got := placement.Decide(snapshot("node-a", e3)).Egresses[0]; got.Owner != "" || got.Reason != v1alpha1.ReasonNotFound {
		t.Fatalf("stale self status: %+v", got)
	}
}

func TestIDsSurvive(t *testing.T) {
	e1 := eg("a", "198.51.100.5", "pool", "prod")
	e2 := eg("b", "198.51.100.6", "pool", "dev")
	s := snapshot("node-c", e1, e2)
	first := placement.Decide(s).IDs
	s.PrevIDs = map[netip.Addr]uint16{netip.MustParseAddr("198.51.100.6"): 7}
	second := placement.Decide(s).IDs
	if second[netip.MustParseAddr("198.51.100.6")] != 7 || len(first) != 2 {
		t.Fatalf("ids %v then %v", first, second)
	}
}

// A Pod another helper hinted at its ADD is SNATed and routed back by the
// holder before the API server knows the Pod's IP; a hint never puts a Pod
// into an Egress that does not select it, never overrides the API's IP,
// and counts only from the Pod's own Node.
func TestHintedPodIsProgrammedOnTheHolder(t *testing.T) {
	e := eg("prod", "198.51.100.5", "pool", "prod")
	owner := placement.Decide(snapshot("node-c", e)).Egresses[0].Owner
	withNew := func(self string) placement.Snapshot {
		s := snapshot(self, e)
		fresh := pod("prod", "web-new", "node-c", "10.244.3.77")
		fresh.IPs, fresh.Phase = nil, corev1.PodPending
		s.Pods = append(s.Pods, fresh, pod("dev", "web-dev", "node-c", "10.244.3.78"))
		s.Pods[len(s.Pods)-1].IPs = nil
		return s
	}
	fresh, devIP := netip.MustParseAddr("10.244.3.77"), netip.MustParseAddr("10.244.3.78")
	s := withNew(owner)
	s.Hints = map[policy.PodKey]placement.HintedIP{
		{Namespace: "prod", Name: "web-new"}: {PodIP: fresh, Node: "node-c"},
		{Namespace: "dev", Name: "web-dev"}:  {PodIP: devIP, Node: "node-c"}, // selected by no Egress
		{Namespace: "prod", Name: "web-a"}:   {PodIP: devIP, Node: "node-a"}, // has its IP already
		{Namespace: "prod", Name: "web-c"}:   {PodIP: devIP, Node: "node-b"}, // not the Pod's Node
	}
	p := placement.Decide(s)
	all := p.Desired.Egresses[0].AllPodIPs
	if !slices.Contains(all, fresh) {
		t.Fatalf("AllPodIPs %v lack the hinted %s", all, fresh)
	}
	if slices.Contains(all, devIP) {
		t.Fatalf("AllPodIPs %v hold %s, which only a hint claimed", all, devIP)
	}
	if !slices.Contains(p.Desired.RemotePods, datapath.RemotePod{IP: fresh, NodeIP: ipC}) {
		t.Fatalf("RemotePods %v lack the hinted Pod", p.Desired.RemotePods)
	}
	// A Node that does not hold the IP gets no hints, and without one the
	// new Pod is nowhere yet.
	other := map[string]string{"node-a": "node-b", "node-b": "node-a"}[owner]
	if slices.Contains(placement.Decide(withNew(other)).Desired.Egresses[0].AllPodIPs, fresh) {
		t.Fatal("a Pod without an IP was programmed without a hint")
	}
}

// Antrea's HA example (docs/egress.md): two Egresses sharing a pool get two
// Nodes.
func TestPooledEgressesSpreadOverNodes(t *testing.T) {
	// A plain ring puts both 192.0.2.211 and .212 on node-c.
	s := snapshot("node-c", eg("prod", "192.0.2.211", "pool", "prod"), eg("dev", "192.0.2.212", "pool", "dev"))
	s.Pools["pool"].Spec.IPRanges = []v1alpha1.IPRange{{Start: "192.0.2.211", End: "192.0.2.220"}}
	s.Pools["pool"].Spec.NodeSelector = metav1.LabelSelector{}
	p := placement.Decide(s)
	if p.Egresses[0].Owner == p.Egresses[1].Owner || p.Egresses[0].Owner == "" {
		t.Fatalf("owners %q and %q, want two different Nodes", p.Egresses[0].Owner, p.Egresses[1].Owner)
	}
}

// An Egress whose IP another Egress keeps, or that is reserved, is set
// aside on every Node: it selects nothing and is programmed nowhere, and
// the datapath state of every Node stays valid for everyone else.
func TestConflictingEgressIsSetAside(t *testing.T) {
	older := metav1.NewTime(time.Unix(1e9-60, 0))
	static := eg("static", "198.51.100.5", "", "prod")
	static.CreationTimestamp = older
	static.Status.EgressNode, static.Status.EgressIP = "node-b", "198.51.100.5"
	egs := []*v1alpha1.Egress{
		static,
		eg("pooled", "198.51.100.5", "pool", "prod"), // the static one's IP: IPInUse
		eg("dev", "198.51.100.6", "pool", "dev"),     // uninvolved
		eg("node", "192.0.2.11", "wide", "dev"),      // node-a's own address
		eg("pods", "10.244.9.9", "wide", "dev"),      // in the Pod CIDR
		eg("lo", "127.0.0.2", "", "dev"),             // loopback, static
	}
	for _, self := range []string{"node-a", "node-b", "node-c"} {
		s := snapshot(self, egs...)
		s.Pools["wide"] = &v1alpha1.ExternalIPPool{ObjectMeta: metav1.ObjectMeta{Name: "wide"},
			Spec: v1alpha1.ExternalIPPoolSpec{IPRanges: []v1alpha1.IPRange{{CIDR: "192.0.2.0/24"}, {CIDR: "10.244.9.0/24"}}}}
		s.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
		if self == "node-b" {
			s.LocalAddrs[netip.MustParseAddr("198.51.100.5")] = true
		}
		p := placement.Decide(s)
		cfg := datapath.Config{Uplink: "eth0", NodeIP: s.Nodes[self].IP,
			ClusterCIDRs: s.ClusterCIDRs}.WithDefaults()
		if err := p.Desired.Validate(cfg); err != nil {
			t.Fatalf("%s: the datapath state is refused: %v", self, err)
		}
		reasons := map[string]string{}
		for _, ep := range p.Egresses {
			reasons[ep.Name] = ep.Reason
			if ep.Reason == alloc.ReasonIPInUse || ep.Reason == alloc.ReasonIPReserved {
				if ep.Owner != "" {
					t.Errorf("%s: set-aside Egress %s has owner %s", self, ep.Name, ep.Owner)
				}
			}
		}
		for name, want := range map[string]string{"pooled": "IPInUse", "node": "IPReserved", "pods": "IPReserved", "lo": "IPReserved", "static": "", "dev": ""} {
			if reasons[name] != want {
				t.Errorf("%s: Egress %s has reason %q, want %q", self, name, reasons[name], want)
			}
		}
		programmed := map[string]bool{}
		for _, e := range p.Desired.Egresses {
			programmed[e.Name] = true
		}
		for _, ip := range p.Desired.HeldIPs {
			if ip == ipA || ip.String() == "10.244.9.9" {
				t.Errorf("%s holds %s", self, ip)
			}
		}
		if programmed["pooled"] || programmed["node"] || programmed["pods"] || programmed["lo"] {
			t.Errorf("%s programs a set-aside Egress: %v", self, programmed)
		}
		if !programmed["dev"] || !programmed["static"] {
			t.Errorf("%s: the uninvolved Egresses are not programmed: %v", self, programmed)
		}
	}
}

// An IP another host answers for is not held by the Node that would hold
// it; the Egress says why, and other Nodes' plans do not change.
func TestConflictKeepsTheOwnerFromHolding(t *testing.T) {
	e := eg("prod", "198.51.100.5", "pool", "prod")
	owner := placement.Decide(snapshot("node-c", e)).Egresses[0].Owner
	s := snapshot(owner, e)
	s.Conflicts = map[netip.Addr]string{netip.MustParseAddr("198.51.100.5"): "the host at MAC 02:00:00:00:00:99"}
	p := placement.Decide(s)
	if ep := p.Egresses[0]; ep.Owner != "" || ep.Reason != v1alpha1.ReasonIPConflict || !strings.Contains(ep.Message, "02:00:00:00:00:99") {
		t.Fatalf("plan = %+v, want no owner, IPConflict naming the MAC", ep)
	}
	if len(p.Desired.HeldIPs) != 0 {
		t.Fatalf("held %v", p.Desired.HeldIPs)
	}
	for _, st := range p.Desired.Egresses {
		if st.Local {
			t.Fatalf("state %+v SNATs on %s", st, owner)
		}
	}
}

// A cordon of the holder is a planned move: until the new holder (node-b)
// claims the IP in status, node-a keeps it and its SNAT, node-c keeps
// tunnelling to node-a, and only node-b takes it, so that some Node holds
// the IP at every moment. The claim ends it everywhere; so does
// placement.HandoffMax; a holder that left gossip hands nothing over.
func TestPlannedMoveMakesBeforeBreaks(t *testing.T) {
	e := eg("prod", "198.51.100.5", "pool", "prod")
	e.Status.EgressIP, e.Status.EgressNode = "198.51.100.5", "node-a"
	cordoned := func(self string, e *v1alpha1.Egress) placement.Snapshot {
		s := snapshot(self, e)
		n := s.Nodes["node-a"]
		n.Unschedulable = true
		s.Nodes["node-a"] = n
		return s
	}
	type view struct {
		owner, to, from string
		held            bool
		ownerIP         netip.Addr // Desired's OwnerNodeIP (invalid when Local)
	}
	look := func(s placement.Snapshot) view {
		p := placement.Decide(s)
		ep := p.Egresses[0]
		v := view{owner: ep.Owner, to: ep.HandoffTo, from: ep.HandoffFrom, held: len(p.Desired.HeldIPs) == 1}
		if len(p.Desired.Egresses) == 1 {
			v.ownerIP = p.Desired.Egresses[0].OwnerNodeIP
		}
		return v
	}
	during := map[string]view{
		"node-a": {owner: "node-a", to: "node-b", held: true},
		"node-b": {owner: "node-b", from: "node-a", held: true},
		"node-c": {owner: "node-a", to: "node-b", ownerIP: ipA},
	}
	for self, want := range during {
		if got := look(cordoned(self, e)); got != want {
			t.Errorf("%s during the handoff: %+v, want %+v", self, got, want)
		}
	}
	// The agent times the handoff by the move, on every Node.
	if p := placement.Decide(cordoned("node-a", e)); p.Egresses[0].Moving != "node-a>node-b" {
		t.Errorf("moving = %q", p.Egresses[0].Moving)
	}

	claimed := e.DeepCopy()
	claimed.Status.EgressNode = "node-b"
	after := map[string]view{
		"node-a": {owner: "node-b", ownerIP: ipB},
		"node-b": {owner: "node-b", held: true},
		"node-c": {owner: "node-b", ownerIP: ipB},
	}
	for self, want := range after {
		if got := look(cordoned(self, claimed)); got != want {
			t.Errorf("%s after node-b's claim: %+v, want %+v", self, got, want)
		}
	}

	expired := cordoned("node-a", e)
	expired.HandoffExpired = map[string]bool{e.Name: true}
	if got, want := look(expired), after["node-a"]; got != want {
		t.Errorf("node-a past HandoffMax: %+v, want %+v", got, want)
	}

	gone := cordoned("node-c", e)
	gone.Alive = []string{"node-b", "node-c"}
	if got := look(gone); got != (view{owner: "node-b", ownerIP: ipB}) {
		t.Errorf("node-c with node-a gone: %+v, want node-b at once", got)
	}
}
