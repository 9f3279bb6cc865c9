// Package alloc hands out egress IPs from ExternalIPPools.
//
// The truth lives in the API objects: each pool's status.allocations records
// which Egress holds which IP, and spec.egressIP of the Egress carries it.
// Taking an IP is one status update of the pool with a resourceVersion
// precondition, so two allocators racing (a helper that just restarted, or
// two helpers that both think they allocate) cannot hand out one IP twice:
// the loser gets a conflict and plans again from fresh objects. The list
// being a map keyed by IP makes the API server refuse a duplicate as well.
//
// Allocate is pure; Allocator (allocator.go) reads and writes the API.
package alloc

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	v1alpha1 "github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluicenet/sluice/pkg/ipam"
)

// AllocatedFromAnnotation marks an Egress whose spec.egressIP Sluice wrote,
// with the pool it came from. An egressIP without it was given by the user.
const AllocatedFromAnnotation = "sluice.dev/allocated-from"

// Condition is the IPAllocated condition an Egress should carry.
type Condition struct {
	Allocated bool
	Reason    string
	Message   string
}

// Allocation is what one pool's status and its Egresses should become.
type Allocation struct {
	Allocations []v1alpha1.IPAllocation // sorted by IP
	Usage       v1alpha1.IPPoolUsage
	// SetIP maps an Egress to the IP to write into its spec.egressIP (with
	// AllocatedFromAnnotation). "" means clear an IP Sluice had allocated.
	SetIP      map[string]string
	Conditions map[string]Condition // IPAllocated, per Egress of this pool
}

// World is what one pool's plan needs of the rest of the cluster.
type World struct {
	// Claims keeps egress IPs unique across pools and static Egresses.
	Claims Claims
	// Reserved are the addresses no pool hands out (see Reserved).
	Reserved []ipam.Reserved
}

// Allocate computes one pool's allocations. egresses may hold every Egress; only
// those naming the pool count. They are served oldest first (then by name),
// so when the pool runs short the newest Egress waits. An IP that w
// reserves, or that another Egress keeps, is never handed out: an Egress
// that names one is told why, and one that Sluice gave such an IP gets
// another.
func Allocate(pool *v1alpha1.ExternalIPPool, egresses []*v1alpha1.Egress, w World) Allocation {
	plan := Allocation{SetIP: map[string]string{}, Conditions: map[string]Condition{}}
	mine := poolEgresses(pool.Name, egresses)
	if w.Claims.winner == nil {
		w.Claims = NewClaims([]*v1alpha1.ExternalIPPool{pool}, egresses)
	}
	p, err := ipam.ParseRanges(pool.Spec.IPRanges)
	if err != nil {
		for _, eg := range mine {
			plan.Conditions[eg.Name] = Condition{Reason: v1alpha1.ReasonInvalidPool,
				Message: fmt.Sprintf("ExternalIPPool %s is invalid: %v", pool.Name, err)}
		}
		plan.Allocations = slices.Clone(pool.Status.Allocations)
		plan.Usage = v1alpha1.IPPoolUsage{Used: int64(len(plan.Allocations))}
		return plan
	}

	byName := map[string]*v1alpha1.Egress{}
	want := map[string]string{} // egress → the IP it keeps, "" to allocate
	for _, eg := range mine {
		byName[eg.Name] = eg
		want[eg.Name] = wantedIP(eg)
		// An IP Sluice gave that turned out reserved or taken (a Node got
		// that address, another Egress keeps it) is replaced, not kept.
		if ip, err := netip.ParseAddr(want[eg.Name]); err == nil && eg.Annotations[AllocatedFromAnnotation] == pool.Name &&
			(ipam.Why(w.Reserved, ip) != "" || w.Claims.Lost(eg.Name, ip) != "") {
			want[eg.Name] = ""
		}
	}
	// Keep the records that still hold: the Egress exists, names this pool,
	// and carries the IP or is about to (spec.egressIP not yet written).
	held := map[netip.Addr]string{} // ip → egress
	has := map[string]netip.Addr{}  // egress → ip
	for _, a := range pool.Status.Allocations {
		ip, err := netip.ParseAddr(a.IP)
		eg := byName[a.Egress]
		if err != nil || eg == nil || !p.Contains(ip) || has[a.Egress].IsValid() ||
			ipam.Why(w.Reserved, ip) != "" || w.Claims.Lost(eg.Name, ip) != "" {
			continue
		}
		if want := want[eg.Name]; want != "" && want != ip.String() {
			continue
		}
		held[ip], has[a.Egress] = a.Egress, ip
	}

	// User-given IPs first, so that an allocation never takes an IP a user
	// has named, whatever the creation order.
	for _, eg := range mine {
		want := want[eg.Name]
		if want == "" {
			continue
		}
		ip, err := netip.ParseAddr(want)
		switch {
		case err != nil:
			plan.Conditions[eg.Name] = Condition{Reason: v1alpha1.ReasonIPNotInPool,
				Message: fmt.Sprintf("egressIP %q is not an IP address", want)}
		case !p.Contains(ip):
			plan.Conditions[eg.Name] = Condition{Reason: v1alpha1.ReasonIPNotInPool,
				Message: fmt.Sprintf("egressIP %s is not in ExternalIPPool %s (%s)", ip, pool.Name, rangesText(p))}
		case ipam.Why(w.Reserved, ip) != "":
			plan.Conditions[eg.Name] = Condition{Reason: ReasonIPReserved,
				Message: reservedMessage(ip, ipam.Why(w.Reserved, ip))}
		case held[ip] != "" && held[ip] != eg.Name:
			plan.Conditions[eg.Name] = Condition{Reason: ReasonIPInUse,
				Message: fmt.Sprintf("egressIP %s is already allocated to Egress %s", ip, held[ip])}
		case w.Claims.Lost(eg.Name, ip) != "":
			plan.Conditions[eg.Name] = Condition{Reason: ReasonIPInUse, Message: w.Claims.Lost(eg.Name, ip)}
		default:
			held[ip], has[eg.Name] = eg.Name, ip
			plan.Conditions[eg.Name] = Condition{Allocated: true, Reason: v1alpha1.ReasonAllocated,
				Message: fmt.Sprintf("egressIP %s is in ExternalIPPool %s", ip, pool.Name)}
		}
	}
	// IPs of this pool still carried by Egresses that are not its own (one
	// that switched to another pool and has not been given its new IP yet,
	// or a static Egress) are busy: handing them out would put one IP on two
	// Egresses for a moment.
	busy := append(keys(held), w.Claims.Claimed()...)
	for _, eg := range egresses {
		if eg.Spec.ExternalIPPool == pool.Name {
			continue
		}
		if ip, err := netip.ParseAddr(eg.Spec.EgressIP); err == nil && p.Contains(ip) {
			busy = append(busy, ip)
		}
	}
	free := p.Without(w.Reserved)
	for _, eg := range mine {
		if want[eg.Name] != "" {
			continue
		}
		ip, ok := has[eg.Name]
		if !ok {
			next, err := free.Next(busy)
			if errors.Is(err, ipam.ErrPoolExhausted) {
				plan.Conditions[eg.Name] = Condition{Reason: v1alpha1.ReasonPoolExhausted,
					Message: fmt.Sprintf("ExternalIPPool %s has no free IP (%d in use)", pool.Name, len(held))}
				if eg.Annotations[AllocatedFromAnnotation] != "" && eg.Spec.EgressIP != "" {
					plan.SetIP[eg.Name] = "" // a stale IP from another pool
				}
				continue
			}
			if err != nil {
				plan.Conditions[eg.Name] = Condition{Reason: v1alpha1.ReasonInvalidPool, Message: err.Error()}
				continue
			}
			ip = next
			held[ip], has[eg.Name] = eg.Name, ip
			busy = append(busy, ip)
		}
		plan.Conditions[eg.Name] = Condition{Allocated: true, Reason: v1alpha1.ReasonAllocated,
			Message: fmt.Sprintf("allocated %s from ExternalIPPool %s", ip, pool.Name)}
		if eg.Spec.EgressIP != ip.String() || eg.Annotations[AllocatedFromAnnotation] != pool.Name {
			plan.SetIP[eg.Name] = ip.String()
		}
	}

	for ip, name := range held {
		plan.Allocations = append(plan.Allocations, v1alpha1.IPAllocation{IP: ip.String(), Egress: name})
	}
	slices.SortFunc(plan.Allocations, func(a, b v1alpha1.IPAllocation) int {
		return netip.MustParseAddr(a.IP).Compare(netip.MustParseAddr(b.IP))
	})
	plan.Usage = v1alpha1.IPPoolUsage{Total: p.Total(), Used: int64(len(plan.Allocations))}
	return plan
}

// ReasonIPInUse: the Egress names an IP of the pool that another Egress holds.
const ReasonIPInUse = "IPInUse"

// Orphans covers Egresses that name a pool that does not exist: they get
// PoolNotFound, and an IP Sluice had allocated to them is released.
func Orphans(pools map[string]bool, egresses []*v1alpha1.Egress) (setIP map[string]string, conds map[string]Condition) {
	setIP, conds = map[string]string{}, map[string]Condition{}
	for _, eg := range egresses {
		name := eg.Spec.ExternalIPPool
		if name == "" || pools[name] {
			continue
		}
		conds[eg.Name] = Condition{Reason: v1alpha1.ReasonPoolNotFound,
			Message: fmt.Sprintf("ExternalIPPool %s does not exist", name)}
		if eg.Annotations[AllocatedFromAnnotation] != "" && eg.Spec.EgressIP != "" {
			setIP[eg.Name] = ""
		}
	}
	return setIP, conds
}

// StaticConditions gives each static Egress (spec.egressIP, no pool) its
// IPAllocated condition: Static, or why it may not use the IP.
func StaticConditions(egresses []*v1alpha1.Egress, claims Claims, reserved []ipam.Reserved) map[string]Condition {
	conds := map[string]Condition{}
	for _, eg := range egresses {
		if eg.Spec.ExternalIPPool != "" || eg.DeletionTimestamp != nil {
			continue
		}
		ip, err := netip.ParseAddr(eg.Spec.EgressIP)
		if err != nil {
			continue // the schema refuses it; nothing to say
		}
		if reason, msg := claims.Refusal(eg.Name, ip, reserved); reason != "" {
			conds[eg.Name] = Condition{Reason: reason, Message: msg}
			continue
		}
		conds[eg.Name] = Condition{Allocated: true, Reason: v1alpha1.ReasonStatic,
			Message: fmt.Sprintf("egressIP %s is given in the spec", ip)}
	}
	return conds
}

// wantedIP is the IP the Egress carries and keeps: spec.egressIP, unless
// Sluice wrote it from another pool (the Egress switched pools, so that
// allocation is void). An IP Sluice allocated from this pool is kept like a
// user's own, and a user who overwrites it gets the new one.
func wantedIP(eg *v1alpha1.Egress) string {
	from := eg.Annotations[AllocatedFromAnnotation]
	if from != "" && from != eg.Spec.ExternalIPPool {
		return ""
	}
	return eg.Spec.EgressIP
}

func poolEgresses(pool string, egresses []*v1alpha1.Egress) []*v1alpha1.Egress {
	var out []*v1alpha1.Egress
	for _, eg := range egresses {
		if eg.Spec.ExternalIPPool == pool && eg.DeletionTimestamp == nil {
			out = append(out, eg)
		}
	}
	slices.SortFunc(out, func(a, b *v1alpha1.Egress) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

func keys(m map[netip.Addr]string) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func rangesText(p *ipam.Pool) string {
	var parts []string
	for _, r := range p.Ranges() {
		parts = append(parts, r.String())
	}
	return strings.Join(parts, ", ")
}
