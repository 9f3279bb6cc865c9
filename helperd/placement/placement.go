// Package placement is the helper's one decision, and it is pure: from a
// Snapshot of everything one reconcile knows (the API's objects, the CNI's
// attachments, the gossip members alive, hints, probes), Decide says who
// holds each Egress's IP and what this Node's kernel must hold
// (datapath.Desired). Every helper decides from the same inputs, so every
// Node agrees on each IP's holder without talking.
package placement

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/sluicenet/sluice/helperd/alloc"
	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluicenet/sluice/pkg/datapath"
	"github.com/sluicenet/sluice/pkg/election"
	"github.com/sluicenet/sluice/pkg/ipam"
	"github.com/sluicenet/sluice/pkg/policy"
)

// NodeInfo is what the plan needs of a Node.
type NodeInfo struct {
	IP     netip.Addr
	Labels map[string]string
	// Unschedulable (cordoned) Nodes are not eligible to hold pool IPs, so
	// `kubectl cordon` or a drain moves egress IPs away before maintenance.
	Unschedulable bool
	// NotReady: the API's Ready condition is False or Unknown. Such a Node
	// does not count towards quorum (see Quorum).
	NotReady bool
	// PodCIDRs are spec.podCIDRs; empty when the primary CNI does not use
	// them.
	PodCIDRs []netip.Prefix
}

// Snapshot is everything one reconcile decides from.
type Snapshot struct {
	Self       string
	Egresses   []*v1alpha1.Egress
	Pools      map[string]*v1alpha1.ExternalIPPool
	Pods       []policy.PodInfo
	Namespaces map[string]map[string]string
	Nodes      map[string]NodeInfo
	// Alive are the gossip members that are alive, this Node included.
	Alive []string
	// Graced are members that left gossip within the restart grace while
	// their kernel still answers for their egress IPs (see
	// helperd/agent/grace.go): placement counts them, quorum does not.
	Graced []string
	// Keep are IPs a restarting helper keeps holding until it has quorum.
	Keep map[netip.Addr]bool
	// Settling are Egresses whose IP changed (or that appeared) moments
	// ago (5 s, the agent's settleFor): a static one whose IP is on no
	// Node yet fails closed instead of leaving with the Node IP, since its
	// new holder is most likely about to be known.
	Settling map[string]bool
	// Health is this Node's gossip health score (see Quorum).
	Health int
	// LocalAddrs are the IPs configured on this Node's interfaces by
	// someone else than Sluice: how a static egress IP is found.
	LocalAddrs map[netip.Addr]bool
	Election   election.Policy
	// PrevIDs are the mark ids in use, so that ids survive.
	PrevIDs map[netip.Addr]uint16
	// Hints are the IPs of Pods that other helpers announced at their CNI
	// ADD, before the API server had them (see package hint). They count
	// only for a Pod object on the announcing Node (see withHints); which
	// Egress selects the Pod is decided here, as for any Pod.
	Hints map[policy.PodKey]HintedIP
	// ClusterCIDRs are the Pod and Service CIDRs: no egress IP lies in them.
	ClusterCIDRs []netip.Prefix
	// Conflicts are pool IPs that another host on this Node's link answers
	// ARP for (an ARP probe found it), with who: this Node does not hold
	// them.
	Conflicts map[netip.Addr]string
	// HandoffExpired are Egresses whose planned move has waited longer than
	// HandoffMax for the new holder's claim (see handoff).
	HandoffExpired map[string]bool
}

// HintedIP is a Pod's IP as the helper of the Pod's Node reported it.
type HintedIP struct {
	PodIP netip.Addr
	Node  string // the reporting Node
	// Seen are the Pod object's IPs when the hint arrived.
	Seen []netip.Addr
}

// Egress is one Egress's decided state.
type Egress struct {
	Name   string
	IP     netip.Addr // invalid until allocated
	Pool   string
	Static bool
	Owner  string // Node that holds IP; "" when none
	// OwnerIP is the Owner's Node IP.
	OwnerIP netip.Addr
	// Reason and Message explain why there is no owner.
	Reason, Message string
	ID              uint16
	PodsHere        int
	PodsCluster     int
	Shadowed        []policy.PodKey // selected but won by another Egress
	// HandoffTo is the Node a planned move gives the IP to, while Owner
	// (the old holder, still alive) keeps it until that Node claims it in
	// status.egressNode; HandoffFrom is set instead on the new holder.
	HandoffTo, HandoffFrom string
	// moving is "from>to" while a planned move is due, whether or not its
	// handoff has expired (the agent times handoffs by it).
	Moving string

	eligible []string // pooled: the Nodes that may hold IP
	current  string   // pooled: the Node status.egressNode names for IP
	inPool   bool     // pooled: IP is in its pool, which exists
	// blocked: the IP is reserved or another Egress keeps it. The Egress
	// selects no Pods and is programmed nowhere; Reason says why.
	blocked bool
}

// Plan is the outcome of one reconcile.
type Plan struct {
	Desired  datapath.Desired
	IDs      map[netip.Addr]uint16
	Egresses []Egress // sorted by name
	Policy   policy.Result
	// Quorum says whether this helper may hold pool IPs (see Quorum).
	Quorum Quorum
}

// Decide decides everything for one Node. It is pure.
func Decide(s Snapshot) Plan {
	live := make([]*v1alpha1.Egress, 0, len(s.Egresses))
	for _, eg := range s.Egresses {
		if eg.DeletionTimestamp == nil {
			live = append(live, eg)
		}
	}
	// A bad or conflicting Egress is set aside here, so that it selects no
	// Pod and never reaches the datapath: the other Egresses, and every
	// Pod it does not concern, go on as if it did not exist.
	blocked := blockedEgresses(s, live)
	usable := make([]*v1alpha1.Egress, 0, len(live))
	for _, eg := range live {
		if _, ok := blocked[eg.Name]; !ok {
			usable = append(usable, eg)
		}
	}
	res := policy.Compute(policy.View{Egresses: usable, Pods: withHints(s.Pods, s.Hints), Namespaces: s.Namespaces})
	local := res.LocalIPs(s.Self)
	podsHere, remote := perEgress(s, res)
	var plans []Egress
	for _, eg := range live {
		ep, ok := blocked[eg.Name]
		if !ok {
			ep = owner(s, eg)
		}
		if r := res.Egresses[eg.Name]; r != nil {
			ep.PodsCluster = len(r.Pods)
			ep.Shadowed = r.Shadowed
		}
		ep.PodsHere = podsHere[eg.Name]
		plans = append(plans, ep)
	}
	slices.SortFunc(plans, func(a, b Egress) int { return strings.Compare(a.Name, b.Name) })
	placePooled(s, plans)
	q := quorum(s)
	if !q.OK {
		byName := make(map[string]*v1alpha1.Egress, len(live))
		for _, eg := range live {
			byName[eg.Name] = eg
		}
		withoutQuorum(s, plans, byName, q)
	}
	for i := range plans {
		ep := &plans[i]
		if who, ok := s.Conflicts[ep.IP]; ok && ep.Owner == s.Self && !ep.Static {
			ep.Owner, ep.OwnerIP = "", netip.Addr{}
			ep.Reason = v1alpha1.ReasonIPConflict
			ep.Message = fmt.Sprintf("%s already answers ARP for %s on Node %s's link, so no Node holds it", who, ep.IP, s.Self)
		}
	}
	if q.OK {
		handoff(s, plans)
	}

	var ips []netip.Addr
	for _, ep := range plans {
		if ep.IP.Is4() && !ep.blocked {
			ips = append(ips, ep.IP)
		}
	}
	ids := datapath.AssignIDs(s.PrevIDs, ips)

	d := datapath.Desired{}
	held := map[netip.Addr]bool{}
	for i := range plans {
		ep := &plans[i]
		ep.ID = ids[ep.IP]
		if !ep.IP.Is4() || ep.blocked {
			continue // not allocated yet, or set aside; IPv6 has no datapath yet
		}
		isLocal := ep.Owner == s.Self
		if isLocal && !ep.Static && !held[ep.IP] {
			held[ep.IP] = true
			d.HeldIPs = append(d.HeldIPs, ep.IP)
		}
		r := res.Egresses[ep.Name]
		if r == nil || len(r.PodIPs) == 0 {
			continue
		}
		all := v4(r.PodIPs)
		st := datapath.EgressState{Name: ep.Name, EgressIP: ep.IP, ID: ep.ID,
			LocalPodIPs: local[ep.Name], AllPodIPs: all, Local: isLocal}
		if !isLocal && ep.OwnerIP.Is4() {
			st.OwnerNodeIP = ep.OwnerIP
		}
		// Only "no Node may hold it" (or has it, for a static IP that has
		// settled) means the Node IP; not knowing the holder (no quorum, a
		// static IP just changed) or a squatter on the IP means no egress.
		st.FailClosed = !isLocal && !st.OwnerNodeIP.IsValid() &&
			(ep.Reason == v1alpha1.ReasonNoQuorum || ep.Reason == v1alpha1.ReasonIPConflict ||
				ep.Reason == v1alpha1.ReasonNotFound && s.Settling[ep.Name])
		d.Egresses = append(d.Egresses, st)
		if isLocal {
			d.RemotePods = append(d.RemotePods, remote[ep.Name]...)
		}
	}
	for _, n := range s.Nodes {
		if n.IP.Is4() {
			d.NodeIPs = append(d.NodeIPs, n.IP)
		}
	}
	slices.SortFunc(d.NodeIPs, netip.Addr.Compare)
	slices.SortFunc(d.HeldIPs, netip.Addr.Compare)
	slices.SortFunc(d.RemotePods, func(a, b datapath.RemotePod) int { return a.IP.Compare(b.IP) })
	d.RemotePods = slices.CompactFunc(d.RemotePods, func(a, b datapath.RemotePod) bool { return a.IP == b.IP })
	return Plan{Desired: d, IDs: ids, Egresses: plans, Policy: res, Quorum: q}
}

// blockedEgresses returns the plans of the Egresses whose IP may not be
// used: reserved (a Node's address, in a cluster CIDR, loopback, ...), or
// kept by another Egress (alloc.Claims: the same winner on every Node and
// in the allocator). A static Egress may use a Node's address: it is on
// that Node already, and nobody announces it.
func blockedEgresses(s Snapshot, live []*v1alpha1.Egress) map[string]Egress {
	pools := make([]*v1alpha1.ExternalIPPool, 0, len(s.Pools))
	for _, p := range s.Pools {
		pools = append(pools, p)
	}
	claims := alloc.NewClaims(pools, live)
	pooledRes, staticRes := alloc.Reserved(NodeIPs(s.Nodes), s.ClusterCIDRs), alloc.Reserved(nil, s.ClusterCIDRs)
	out := map[string]Egress{}
	for _, eg := range live {
		ip, err := netip.ParseAddr(eg.Spec.EgressIP)
		if err != nil {
			continue
		}
		ep := Egress{Name: eg.Name, IP: ip.Unmap(), Pool: eg.Spec.ExternalIPPool, Static: eg.Spec.ExternalIPPool == "", blocked: true}
		res := pooledRes
		if ep.Static {
			res = staticRes
		}
		if ep.Reason, ep.Message = claims.Refusal(eg.Name, ep.IP, res); ep.Reason != "" {
			out[eg.Name] = ep
		}
	}
	return out
}

// NodeIPs maps each Node to its IP.
func NodeIPs(nodes map[string]NodeInfo) map[string]netip.Addr {
	out := make(map[string]netip.Addr, len(nodes))
	for name, n := range nodes {
		out[name] = n.IP
	}
	return out
}

// owner decides who holds an Egress's IP.
func owner(s Snapshot, eg *v1alpha1.Egress) Egress {
	ep := Egress{Name: eg.Name, Pool: eg.Spec.ExternalIPPool, Static: eg.Spec.ExternalIPPool == ""}
	ip, err := netip.ParseAddr(eg.Spec.EgressIP)
	if err != nil {
		ep.Reason, ep.Message = "NoIP", "no egress IP yet: waiting for allocation"
		return ep
	}
	ep.IP = ip.Unmap()
	if ep.Static {
		return staticOwner(s, eg, ep)
	}
	pool := s.Pools[ep.Pool]
	if pool == nil {
		ep.Reason, ep.Message = v1alpha1.ReasonNoEligibleNode, "ExternalIPPool "+ep.Pool+" does not exist"
		return ep
	}
	if p, err := ipam.ParseRanges(pool.Spec.IPRanges); err != nil || !p.Contains(ep.IP) {
		ep.Reason, ep.Message = v1alpha1.ReasonNoEligibleNode, ep.IP.String()+" is not in ExternalIPPool "+ep.Pool
		return ep
	}
	ep.inPool = true
	labels := map[string]map[string]string{}
	for name, n := range s.Nodes {
		if !n.Unschedulable && n.IP.IsValid() {
			labels[name] = n.Labels
		}
	}
	eligible, err := election.Eligible(slices.Concat(s.Alive, s.Graced), labels, pool.Spec.NodeSelector)
	if err != nil || len(eligible) == 0 {
		ep.Reason = v1alpha1.ReasonNoEligibleNode
		ep.Message = "no alive, schedulable Node matches the nodeSelector of ExternalIPPool " + ep.Pool
		return ep
	}
	ep.eligible = eligible
	if eg.Status.EgressIP == ep.IP.String() {
		ep.current = eg.Status.EgressNode
	}
	return ep
}

// placePooled gives every pooled Egress its Node with bounded-load
// consistent hashing over all pooled IPs at once, so Egresses spread over
// the Nodes instead of stacking (see election.AssignBounded).
//
// An IP stays on its current Node (status.egressNode) while that Node is
// eligible and within its fair share, so a departure moves only the
// departed Node's IPs. With election.Sticky ("stay") it stays there even
// past the share: a returning Node takes nothing back; with Rebalance
// ("failback", the default) it takes back what the share gives it.
func placePooled(s Snapshot, plans []Egress) {
	var reqs []election.Request
	seen := map[netip.Addr]bool{}
	for _, ep := range plans {
		if len(ep.eligible) > 0 && !seen[ep.IP] {
			seen[ep.IP] = true
			reqs = append(reqs, election.Request{IP: ep.IP.String(), Eligible: ep.eligible, Current: ep.current})
		}
	}
	owners := election.AssignBounded(reqs, s.Election == election.Sticky)
	for i := range plans {
		if ep := &plans[i]; len(ep.eligible) > 0 {
			ep.Owner = owners[ep.IP.String()]
			ep.OwnerIP = s.Nodes[ep.Owner].IP
		}
	}
}

// HandoffMax bounds a planned move's overlap: the old holder lets go of
// the IP this long after the move began even if the new holder never
// claimed it (its status write failing, say).
const HandoffMax = 3 * time.Second

// handoff makes planned moves make-before-break. When placement gives a
// pooled IP to another Node while its holder (status.egressNode) is still
// alive in gossip (a cordon, a drain, a Node label or nodeSelector change,
// a failback), only the new holder acts at once: it programs the IP,
// announces it and then claims it in status.egressNode. Until that claim
// arrives, every other Node, the old holder included, goes on as if the
// old holder still held it: the old holder keeps the IP and its SNAT, the
// others keep tunnelling to it. The claim ends the handoff everywhere,
// and the old holder lets go. A holder that is gone (failover) hands
// nothing over: its IP moves at once, as before.
func handoff(s Snapshot, plans []Egress) {
	alive := map[string]bool{}
	for _, n := range s.Alive {
		alive[n] = true
	}
	for i := range plans {
		ep := &plans[i]
		from := ep.current
		if ep.Static || ep.Owner == "" || from == "" || from == ep.Owner || !alive[from] {
			continue
		}
		if _, ok := s.Conflicts[ep.IP]; ok {
			continue
		}
		info, ok := s.Nodes[from]
		if !ok || !info.IP.IsValid() {
			continue
		}
		if ep.Moving = from + ">" + ep.Owner; s.HandoffExpired[ep.Name] {
			continue
		}
		if ep.Owner == s.Self {
			ep.HandoffFrom = from
			continue
		}
		ep.HandoffTo = ep.Owner
		ep.Owner, ep.OwnerIP = from, info.IP
	}
}

// staticOwner: the Node that has the IP on an interface holds it. This
// Node knows that of itself from netlink; of others, from status.egressNode
// written by the Node that found it.
func staticOwner(s Snapshot, eg *v1alpha1.Egress, ep Egress) Egress {
	if s.LocalAddrs[ep.IP] {
		ep.Owner, ep.OwnerIP = s.Self, s.Nodes[s.Self].IP
		return ep
	}
	if n := eg.Status.EgressNode; n != "" && n != s.Self && eg.Status.EgressIP == ep.IP.String() {
		if info, ok := s.Nodes[n]; ok {
			ep.Owner, ep.OwnerIP = n, info.IP
			return ep
		}
	}
	ep.Reason = v1alpha1.ReasonNotFound
	ep.Message = ep.IP.String() + " is not configured on any Node"
	return ep
}

// perEgress walks the Pods once: how many of each Egress's Pods run here,
// and its Pods on other Nodes (which this Node SNATs when it holds the IP,
// and routes replies back to). Scanning all Pods once per Egress instead
// costs O(#Egress x #Pods): about 450 ms at 1,000 x 10,000.
func perEgress(s Snapshot, res policy.Result) (map[string]int, map[string][]datapath.RemotePod) {
	here := map[string]int{}
	remote := map[string][]datapath.RemotePod{}
	for _, a := range res.Pods {
		if a.Egress == "" {
			continue
		}
		if a.Node == s.Self {
			here[a.Egress]++
			continue
		}
		n, ok := s.Nodes[a.Node]
		if !ok || !n.IP.Is4() {
			continue
		}
		for _, ip := range a.IPs {
			if ip.Is4() {
				remote[a.Egress] = append(remote[a.Egress], datapath.RemotePod{IP: ip, NodeIP: n.IP})
			}
		}
	}
	return here, remote
}

// withHints gives hinted IPs to the Pods they name, when the Pod is on the
// hinting Node. A Pod without IPs takes the hinted one. A Pod whose object
// still has the IPs it had when the hint came takes the hinted IP in place
// of its IPs of that family: the sender's CNI has just given a recreated
// sandbox that IP, and the kubelet has not written it yet. Once the object's
// IPs change, the API has caught up and the hint no longer counts.
func withHints(pods []policy.PodInfo, hints map[policy.PodKey]HintedIP) []policy.PodInfo {
	if len(hints) == 0 {
		return pods
	}
	out := slices.Clone(pods)
	for i := range out {
		p := &out[i]
		h, ok := hints[policy.PodKey{Namespace: p.Namespace, Name: p.Name}]
		if !ok || p.Node != h.Node || slices.Contains(p.IPs, h.PodIP) {
			continue
		}
		switch {
		case len(p.IPs) == 0:
			p.IPs = []netip.Addr{h.PodIP}
		case slices.Equal(p.IPs, h.Seen):
			ips := slices.DeleteFunc(slices.Clone(p.IPs), func(ip netip.Addr) bool { return ip.Is4() == h.PodIP.Is4() })
			p.IPs = append(ips, h.PodIP)
		}
	}
	return out
}

func v4(ips []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(ips))
	for _, ip := range ips {
		if ip.Is4() {
			out = append(out, ip)
		}
	}
	return out
}
