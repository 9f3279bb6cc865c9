// Package datapath turns the egress desired state into kernel objects:
// iptables chains, ipsets, policy-routing rules and tables, a VXLAN tunnel
// and the egress IPs held on the uplink. Everything is built as plain data
// by pure functions (rules.go, routes.go) and applied by one idempotent
// reconciler (Datapath.Apply, Linux only).
//
// Packet path for a selected Pod on node A whose egress IP is held by node B:
//
//	pod ──► A mangle PREROUTING: src in SLUICE-EG-<h>, dst not in SLUICE-EXCEPT
//	        → MARK id<<16 → rule 9930 fwmark → table 10000+id
//	        → default via B dev sluice.vxlan onlink ──VXLAN──►
//	    B mangle PREROUTING: -i sluice.vxlan → MARK 0xffe, CONNMARK 0xffe
//	        → main table → uplink → nat POSTROUTING SNAT to egress IP ──► world
//	reply ──► B: de-SNAT; ctdir REPLY + connmark 0xffe → MARK 0xffd
//	        → rule 9920 → table 9999: <pod>/32 via A dev sluice.vxlan onlink ──►
//	    A: arrives on sluice.vxlan, MARK 0xffe; rp_filter passes by rule 9901
//	        (fwmark 0xffe → table 9998 "default dev sluice.vxlan")
//	        → main table → pod
//
// IPv4 only.
package datapath

import (
	"errors"
	"fmt"
	"github.com/sluicenet/sluice/pkg/iptbackend"
	"net/netip"
	"slices"
	"time"
)

// Defaults. The tunnel port keeps clear of flannel's VXLAN (8472) and of
// Calico's and the IANA VXLAN port (4789), so Sluice's tunnel can share a
// Node with either.
const (
	DefaultTunnelDev  = "sluice.vxlan"
	DefaultTunnelPort = 8477
	DefaultVNI        = 4096
)

// Marks live in bits 16–27 (MarkMask), clear of kube-proxy's 0x4000/0x8000
// and of Cilium's 0x0f00/0xf000 bits. Calico's default mark mask
// (0xffff0000) overlaps them: on Calico, move its iptablesMarkMask.
const (
	MarkMask   uint32 = 0x0fff0000
	markShift         = 16
	MaxID             = 4000  // egress-IP ids are 1..MaxID
	idTunnel   uint32 = 0xffe // packet arrived from the tunnel
	idReply    uint32 = 0xffd // de-SNATed reply to send back through the tunnel
	MarkTunnel        = idTunnel << markShift
	MarkReply         = idReply << markShift
)

// MarkOf is the fwmark that sends an egress-IP id's Pods into the tunnel
// (0 for id 0, which has no mark).
func MarkOf(id uint16) uint32 { return uint32(id) << markShift }

// IDOfMark is the egress-IP id a mark carries (0 for a mark with bits
// outside MarkMask, which is none of Sluice's).
func IDOfMark(mark uint32) uint16 {
	if mark&^MarkMask != 0 {
		return 0
	}
	return uint16(mark >> markShift)
}

// TableOf is the route table of an egress-IP id's mark (0 for id 0).
func TableOf(id uint16) int {
	if id == 0 {
		return 0
	}
	return TableEgressLo + int(id)
}

// Route tables and rule priorities (DESIGN.md "Kernel objects Sluice owns").
const (
	TableRPCheck  = 9998  // "default dev sluice.vxlan": reverse-path check for tunnel arrivals
	TableReturn   = 9999  // <remote pod>/32 via <its node> dev sluice.vxlan onlink
	TableEgressLo = 10000 // 10000+id: default via <owner node> dev sluice.vxlan onlink
	TableMin      = 9990
	TableMax      = 14095

	PrioMin = 9900
	// Reverse-path check of tunnel arrivals. fib_validate_source looks the
	// source up with the skb mark (src_valid_mark=1 on the tunnel only) and
	// iif = the OUTPUT device of the forward route (lo only when there is
	// none), not the tunnel: so "iif lo" cannot select it. Instead every
	// 0xffe lookup goes to table 9998 ("default dev sluice.vxlan", which
	// makes the check pass) except the forward lookup itself, whose iif is
	// the tunnel: rule 9900 jumps it past 9901.
	PrioTunnelSkip = 9900 // iif sluice.vxlan fwmark 0xffe goto PrioLoopGuard
	PrioRPCheck    = 9901 // fwmark 0xffe → 9998
	PrioLoopGuard  = 9910
	PrioReturn     = 9920 // fwmark 0xffd → 9999
	PrioEgress     = 9930 // fwmark id → 10000+id
	PrioMax        = 9999
)

// Config is the node-level configuration of the datapath.
type Config struct {
	TunnelDev  string // default DefaultTunnelDev
	TunnelPort int    // default DefaultTunnelPort
	VNI        int    // default DefaultVNI
	Uplink     string // interface holding NodeIP; egress IPs are held here
	NodeIP     netip.Addr
	// ClusterCIDRs are Pod CIDRs, the Service CIDR and except CIDRs: traffic
	// to them is never redirected nor SNATed.
	ClusterCIDRs []netip.Prefix
	// IPTables is the iptables backend to use (see package iptbackend); the
	// zero value runs "iptables" from PATH.
	IPTables iptbackend.Backend
	// TunnelMTU overrides the tunnel MTU; 0 means uplink MTU - 50 (VXLAN
	// over IPv4 overhead), so encapsulated packets are never fragmented.
	TunnelMTU int
	// HeldLifetime is the lifetime of the egress IPs held on the uplink,
	// renewed by Apply and RenewHeld while the helper lives, so that the
	// Node of a dead or stuck helper stops answering for them (fencing).
	// 0 means DefaultHeldLifetime; negative means forever. Whole seconds.
	HeldLifetime time.Duration
	// ResyncPeriod is how long Apply trusts its record of what it applied
	// before reading the kernel back in full (which repairs drift). 0 means
	// DefaultResync; a negative value reads back on every Apply.
	ResyncPeriod time.Duration
}

// DefaultResync bounds how long drift (a hand-deleted rule) survives when
// Apply is called at least this often.
const DefaultResync = 3 * time.Second

// DefaultHeldLifetime bounds how long a Node whose helper died keeps
// answering for egress IPs: the kernel removes an address at most about a
// second after its lifetime ends (IPv4 lifetimes are checked on whole
// seconds), and a live helper renews it when half is gone, every second.
const DefaultHeldLifetime = 4 * time.Second

func (c Config) heldLifetime() time.Duration {
	if c.HeldLifetime == 0 {
		return DefaultHeldLifetime
	}
	return c.HeldLifetime
}

func (c Config) resync() time.Duration {
	if c.ResyncPeriod == 0 {
		return DefaultResync
	}
	return c.ResyncPeriod
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.TunnelDev == "" {
		c.TunnelDev = DefaultTunnelDev
	}
	if c.TunnelPort == 0 {
		c.TunnelPort = DefaultTunnelPort
	}
	if c.VNI == 0 {
		c.VNI = DefaultVNI
	}
	return c
}

// Validate checks a defaulted Config and names the offending field.
func (c Config) Validate() error {
	var errs []error
	if c.TunnelDev == "" || len(c.TunnelDev) > 15 {
		errs = append(errs, fmt.Errorf("TunnelDev %q: must be 1..15 characters", c.TunnelDev))
	}
	if c.TunnelPort < 1 || c.TunnelPort > 65535 {
		errs = append(errs, fmt.Errorf("TunnelPort %d: must be 1..65535", c.TunnelPort))
	}
	if c.VNI < 1 || c.VNI > 1<<24-1 {
		errs = append(errs, fmt.Errorf("VNI %d: must be 1..16777215", c.VNI))
	}
	// The address label "<uplink>:sl" must fit IFNAMSIZ-1.
	if c.Uplink == "" || len(c.Uplink)+len(labelSuffix) > 15 {
		errs = append(errs, fmt.Errorf("Uplink %q: must be 1..%d characters", c.Uplink, 15-len(labelSuffix)))
	}
	if !c.NodeIP.Is4() {
		errs = append(errs, fmt.Errorf("NodeIP %v: must be an IPv4 address (IPv6 is not supported yet)", c.NodeIP))
	}
	if len(c.ClusterCIDRs) == 0 {
		// Without them Pod↔Pod traffic of selected Pods would be redirected.
		errs = append(errs, errors.New("ClusterCIDRs: at least the Pod CIDRs are required"))
	}
	for _, p := range c.ClusterCIDRs {
		if !p.IsValid() || !p.Addr().Is4() {
			errs = append(errs, fmt.Errorf("ClusterCIDRs: %v is not an IPv4 prefix", p))
		}
	}
	if c.HeldLifetime > 0 && (c.HeldLifetime < 2*time.Second || c.HeldLifetime%time.Second != 0) {
		errs = append(errs, fmt.Errorf("HeldLifetime %v: must be whole seconds, at least 2s (or negative for forever)", c.HeldLifetime))
	}
	if c.TunnelMTU != 0 && (c.TunnelMTU < 576 || c.TunnelMTU > 65535) {
		errs = append(errs, fmt.Errorf("TunnelMTU %d: must be 0 or 576..65535", c.TunnelMTU))
	}
	return errors.Join(errs...)
}

// labelSuffix marks addresses Sluice holds on the uplink ("<uplink>:sl"):
// IPv4 labels are how a restarted helper finds its own addresses.
const labelSuffix = ":sl"

// Label is the address label of held egress IPs.
func (c Config) Label() string { return c.Uplink + labelSuffix }

// Desired is the whole datapath state of one node. Apply always gets all of it.
type Desired struct {
	Egresses []EgressState // one per Egress that selects Pods
	HeldIPs  []netip.Addr  // egress IPs this node holds on the uplink (/32)
	NodeIPs  []netip.Addr  // all node IPs; traffic to them is untouched
	// RemotePods are Pods on other nodes whose traffic this node SNATs;
	// their replies go back through the tunnel to NodeIP.
	RemotePods []RemotePod
}

// EgressState is one Egress as this node sees it.
type EgressState struct {
	Name     string
	EgressIP netip.Addr
	// ID is the mark id 1..MaxID, stable per egress IP (see AssignIDs and
	// CurrentIDs), or shared by Egresses with the same owner. 0 disables
	// the redirect (the Pods fall back to their node IP).
	ID uint16
	// LocalPodIPs are the selected Pods on this node. Informational: the
	// ipset holds AllPodIPs (see BuildIPSets).
	LocalPodIPs []netip.Addr
	AllPodIPs   []netip.Addr // selected Pods cluster-wide
	// OwnerNodeIP holds EgressIP; the zero value means nobody does, and the
	// Pods fall back to their node IP.
	OwnerNodeIP netip.Addr
	Local       bool // this node is the owner
	// FailClosed: the Egress has an IP but this Node can neither SNAT nor
	// redirect its Pods (no quorum and no known holder, or an address
	// conflict), and NoEligibleNode is not the reason. The exit guard then
	// drops its Pods' packets on the uplink instead of letting them leave
	// with the Node IP.
	FailClosed bool
}

// RemotePod is a Pod on another node whose traffic this node SNATs.
type RemotePod struct {
	IP     netip.Addr
	NodeIP netip.Addr
}

// Redirected reports whether this node marks the Egress's traffic into the
// tunnel: the owner is another, known node.
func (e EgressState) Redirected() bool { return !e.Local && e.OwnerNodeIP.IsValid() && e.ID != 0 }

// Validate checks the desired state against the config; Apply refuses a
// state that would program something wrong.
func (d Desired) Validate(c Config) error {
	var errs []error
	ids := map[uint16]netip.Addr{}
	names := map[string]bool{}
	for _, e := range d.Egresses {
		if names[e.Name] {
			errs = append(errs, fmt.Errorf("egress %q: duplicate name", e.Name))
		}
		names[e.Name] = true
		if !e.EgressIP.Is4() {
			errs = append(errs, fmt.Errorf("egress %q: EgressIP %v is not IPv4", e.Name, e.EgressIP))
		}
		if e.Redirected() {
			if e.ID < 1 || e.ID > MaxID {
				errs = append(errs, fmt.Errorf("egress %q: ID %d out of 1..%d", e.Name, e.ID, MaxID))
			}
			// Egresses may share an id only when they share the owner: the
			// id selects the route to the owner, nothing else (SNAT is
			// decided by the owner's ipsets). Sharing keeps the rule list,
			// which every routed packet walks, O(#owner nodes).
			if owner, ok := ids[e.ID]; ok && owner != e.OwnerNodeIP {
				errs = append(errs, fmt.Errorf("egress %q: ID %d already used for owner %v", e.Name, e.ID, owner))
			}
			ids[e.ID] = e.OwnerNodeIP
			if !e.OwnerNodeIP.Is4() || e.OwnerNodeIP == c.NodeIP {
				errs = append(errs, fmt.Errorf("egress %q: OwnerNodeIP %v invalid for a remote owner", e.Name, e.OwnerNodeIP))
			}
		}
	}
	for _, ip := range d.HeldIPs {
		if !ip.Is4() {
			errs = append(errs, fmt.Errorf("held IP %v is not IPv4", ip))
		}
	}
	for _, p := range d.RemotePods {
		if !p.IP.Is4() || !p.NodeIP.Is4() || p.NodeIP == c.NodeIP {
			errs = append(errs, fmt.Errorf("remote pod %v on node %v: invalid", p.IP, p.NodeIP))
		}
	}
	return errors.Join(errs...)
}

func sortedAddrs(in []netip.Addr) []netip.Addr {
	out := slices.Clone(in)
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(out)
}
