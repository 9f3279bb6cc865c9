package inspect

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/sluicenet/sluice/helperd/placement"
	"github.com/sluicenet/sluice/helperd/view"
	"github.com/sluicenet/sluice/pkg/cniproto"
	"github.com/sluicenet/sluice/pkg/datapath"
	"github.com/sluicenet/sluice/pkg/policy"
)

// State answers the CLI from the helper's live state: the agent's last
// applied plan, the CNI attachments, the API cache and the kernel's
// counters.
type State struct {
	Self string
	// Plan returns the plan of the agent's last Apply.
	Plan        func() placement.Plan
	Attachments interface {
		List(ctx context.Context) []cniproto.Attachment
	}
	Cache    *view.Cache
	Counters interface {
		Stats(ctx context.Context) (datapath.Stats, error)
	}
	Config datapath.Config
}

var _ Source = (*State)(nil)

// markString prints an egress-IP id's mark as the CLI shows it ("" for
// none).
func markString(m uint32) string {
	if m == 0 {
		return ""
	}
	return fmt.Sprintf("%#x", m)
}

// Egresses lists every Egress with this Node's view of it.
func (s *State) Egresses() []EgressRow {
	plan := s.Plan()
	var rows []EgressRow
	for _, ep := range plan.Egresses {
		row := EgressRow{Name: ep.Name, Pool: ep.Pool, Node: ep.Owner, HeldHere: ep.Owner == s.Self,
			PodsHere: ep.PodsHere, PodsCluster: ep.PodsCluster, ConditionsNote: ep.Reason}
		if ep.IP.IsValid() {
			row.EgressIP = ep.IP.String()
		}
		if i := slices.IndexFunc(plan.Desired.Egresses, func(e datapath.EgressState) bool { return e.Name == ep.Name }); i >= 0 &&
			plan.Desired.Egresses[i].Redirected() {
			row.Mark, row.Table = markString(datapath.MarkOf(ep.ID)), datapath.TableOf(ep.ID)
		}
		for _, k := range ep.Shadowed {
			row.OverlapLosers = append(row.OverlapLosers, k.String())
		}
		rows = append(rows, row)
	}
	return rows
}

// Pods lists this Node's Pods that the CNI plugin reported or that an
// Egress selects.
func (s *State) Pods() []PodRow {
	plan := s.Plan()
	rows := map[policy.PodKey]*PodRow{}
	if s.Attachments != nil {
		for _, att := range s.Attachments.List(context.Background()) {
			k := policy.PodKey{Namespace: att.PodNamespace, Name: att.PodName}
			rows[k] = &PodRow{Namespace: k.Namespace, Name: k.Name, IPs: att.PodIPs, HostVeth: att.HostVeth, FromCNI: true}
		}
	}
	for k, a := range plan.Policy.Pods {
		if a.Node != s.Self {
			continue
		}
		r := rows[k]
		if r == nil {
			r = &PodRow{Namespace: k.Namespace, Name: k.Name}
			for _, ip := range a.IPs {
				r.IPs = append(r.IPs, ip.String())
			}
			rows[k] = r
		}
		r.Egress, r.Losers = a.Egress, a.Losers
	}
	out := make([]PodRow, 0, len(rows))
	for _, r := range rows {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b PodRow) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return out
}

// Datapath lists what Sluice installed here, with counters.
func (s *State) Datapath(ctx context.Context) (DatapathReport, error) {
	plan := s.Plan()
	rep := DatapathReport{Node: s.Self,
		Tunnel: fmt.Sprintf("%s (VXLAN VNI %d, UDP %d, via %s)", s.Config.TunnelDev, s.Config.VNI, s.Config.TunnelPort, s.Config.Uplink)}
	for _, ip := range plan.Desired.HeldIPs {
		rep.HeldIPs = append(rep.HeldIPs, ip.String())
	}
	for _, r := range datapath.BuildRules(s.Config, plan.Desired) {
		rep.Rules = append(rep.Rules, r.String())
	}
	for _, r := range datapath.BuildRoutes(plan.Desired) {
		rep.Routes = append(rep.Routes, r.String())
	}
	st, err := s.Counters.Stats(ctx)
	if err != nil {
		return rep, err
	}
	for _, set := range st.Sets {
		rep.IPSets = append(rep.IPSets, fmt.Sprintf("%s: %d members", set.Name, set.Members))
	}
	for _, r := range st.Rules {
		rep.Counters = append(rep.Counters, Counter{Object: r.Table + "/" + r.Chain, Detail: r.Rule,
			Packets: r.Packets, Bytes: r.Bytes})
	}
	rep.Counters = append(rep.Counters, exitCounters(st)...)
	return rep, nil
}

// Explain walks one Pod's path.
func (s *State) Explain(ctx context.Context, namespace, name string) (Explanation, error) {
	plan := s.Plan()
	key := policy.PodKey{Namespace: namespace, Name: name}
	ex := Explanation{Namespace: namespace, Name: name}
	a, selected := plan.Policy.Pods[key]
	if !selected {
		snap := s.Cache.Snapshot(s.Self, nil)
		found := false
		for _, p := range snap.Pods {
			if p.Namespace == namespace && p.Name == name {
				found, ex.Node = true, p.Node
				for _, ip := range p.IPs {
					ex.PodIPs = append(ex.PodIPs, ip.String())
				}
			}
		}
		if !found {
			return ex, fmt.Errorf("pod %s/%s: %w", namespace, name, ErrNotFound)
		}
		ex.Why = []string{"no Egress selects this Pod"}
		ex.Path = "Node IP: the primary CNI's own masquerade, Sluice does nothing"
		return ex, nil
	}
	ex.Node, ex.Egress = a.Node, a.Egress
	for _, ip := range a.IPs {
		ex.PodIPs = append(ex.PodIPs, ip.String())
	}
	ex.Why = append(ex.Why, fmt.Sprintf("Egress %s selects it (appliedTo matches its labels and Namespace)", a.Egress))
	if len(a.Losers) > 0 {
		ex.Why = append(ex.Why, fmt.Sprintf("also selected by %s; %s wins as the oldest (then by name)",
			strings.Join(a.Losers, ", "), a.Egress))
	}
	var ep placement.Egress
	for _, e := range plan.Egresses {
		if e.Name == a.Egress {
			ep = e
		}
	}
	if ep.IP.IsValid() {
		ex.EgressIP = ep.IP.String()
	}
	ex.EgressNode = ep.Owner
	// This Node's part is read off the desired state it applied, as the
	// datapath builds its rules from it.
	var path datapath.PodPath
	for _, ip := range a.IPs {
		if ip.Is4() {
			path = datapath.Explain(s.Config, plan.Desired, ip)
			break
		}
	}
	switch {
	case a.Node != s.Self:
		ex.Path = fmt.Sprintf("the Pod runs on %s; ask the helper there for its first hop", a.Node)
	case path.SNATHere:
		ex.Path = "local: SNAT on this Node's uplink " + s.Config.Uplink
		ex.SNATIP = path.EgressIP.String()
	case path.Mark != 0:
		ex.Path = fmt.Sprintf("tunnel: marked, routed by table %d through %s to %s (%s), SNATed there",
			path.Table, s.Config.TunnelDev, ep.Owner, path.Peer)
		ex.Mark, ex.Table, ex.TunnelPeer, ex.SNATIP = markString(path.Mark), path.Table, path.Peer.String(), path.EgressIP.String()
	case path.FailClosed:
		ex.Path = "dropped by the exit guard: no Node is known to hold the IP (" + ep.Reason + ": " + ep.Message + "), and its Pods never leave with the Node IP"
	default:
		ex.Path = "Node IP: the Egress has no holder (" + ep.Reason + ": " + ep.Message + ")"
	}
	if st, err := s.Counters.Stats(ctx); err == nil {
		for _, r := range st.Rules {
			if r.EgressIP == ep.IP && ep.IP.IsValid() {
				ex.Counters = append(ex.Counters, Counter{Object: r.Table + "/" + r.Chain, Detail: r.Rule,
					Packets: r.Packets, Bytes: r.Bytes})
			}
		}
		ex.Counters = append(ex.Counters, exitCounters(st)...)
	}
	return ex, nil
}

// exitCounters are the exit guard's drops on this Node (all Pods): what
// would have left the uplink with a wrong source.
func exitCounters(st datapath.Stats) []Counter {
	obj := "nft/" + datapath.ExitGuardTable + "/" + datapath.ExitGuardChain
	return []Counter{
		{Object: obj, Detail: "drop " + datapath.ExitDropInvalid + ": a selected Pod's INVALID or untracked packet (Node-wide)",
			Packets: st.ExitDrops[datapath.ExitDropInvalid]},
		{Object: obj, Detail: "drop " + datapath.ExitDropWrongSource + ": a selected Pod's packet not SNATed to its egress IP here (Node-wide)",
			Packets: st.ExitDrops[datapath.ExitDropWrongSource]},
		{Object: obj, Detail: "drop " + datapath.ExitDropUnNATed + ": a Pod selected moments ago leaving with its own IP (Node-wide)",
			Packets: st.ExitDrops[datapath.ExitDropUnNATed]},
	}
}
