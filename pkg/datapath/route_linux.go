package datapath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ruleFromKernel converts a kernel rule in Sluice's priority range to Rule;
// ok is false for a shape Sluice never writes (it gets deleted: the range
// is Sluice's).
func ruleFromKernel(r netlink.Rule) (Rule, bool) {
	ok := r.Mask != nil && *r.Mask == MarkMask && r.Src == nil && r.Dst == nil && r.OifName == "" && !r.Invert
	out := Rule{Priority: r.Priority, Mark: r.Mark, Iif: r.IifName, Table: r.Table}
	if r.Goto > 0 {
		out.Goto, out.Table = r.Goto, 0
	}
	return out, ok
}

func ruleToKernel(r Rule) *netlink.Rule {
	k := netlink.NewRule()
	k.Family = netlink.FAMILY_V4
	k.Priority = r.Priority
	k.Mark = r.Mark
	mask := MarkMask
	k.Mask = &mask
	k.Table = r.Table
	k.IifName = r.Iif
	if r.Goto > 0 {
		k.Goto, k.Table = r.Goto, 0
	}
	return k
}

// syncRules adds missing rules; with prune, it also deletes every other
// rule in 9900–9999.
func (d *Datapath) syncRules(want []Rule, prune bool) error {
	have, err := ruleList()
	if err != nil {
		return fmt.Errorf("list rules: %w", err)
	}
	present := map[Rule]bool{}
	for _, k := range have {
		if r, ok := ruleFromKernel(k); ok && inRange(k.Priority, PrioMin, PrioMax) {
			present[r] = true
		}
	}
	wanted := map[Rule]bool{}
	var errs []error
	// Highest priority first, so a goto's target exists when it is added.
	for _, r := range slices.Backward(want) {
		wanted[r] = true
		if present[r] {
			continue
		}
		d.writes++
		if err := netlink.RuleAdd(ruleToKernel(r)); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("add rule %+v: %w", r, err))
		}
	}
	if !prune {
		return errors.Join(errs...)
	}
	for _, k := range have {
		if !inRange(k.Priority, PrioMin, PrioMax) {
			continue
		}
		if r, ok := ruleFromKernel(k); ok && wanted[r] {
			continue
		}
		d.writes++
		if err := netlink.RuleDel(&k); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete stale rule prio %d table %d: %w", k.Priority, k.Table, err))
		}
	}
	return errors.Join(errs...)
}

func inRange(v, lo, hi int) bool { return v >= lo && v <= hi }

type routeKey struct {
	table int
	dst   netip.Prefix
}

func routeToKernel(r Route, tunIdx int) *netlink.Route {
	k := &netlink.Route{
		Table: r.Table, LinkIndex: tunIdx, Scope: netlink.SCOPE_LINK,
		Dst: &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), 32)},
	}
	if r.Gw.IsValid() {
		k.Gw = r.Gw.AsSlice()
		k.Scope = netlink.SCOPE_UNIVERSE
		k.Flags = int(netlink.FLAG_ONLINK)
	}
	return k
}

func routeMatches(k netlink.Route, want Route, tunIdx int) bool {
	gw, _ := netip.AddrFromSlice(k.Gw)
	return k.LinkIndex == tunIdx && gw.Unmap() == want.Gw && k.Type == unix.RTN_UNICAST
}

func kernelDst(k netlink.Route) netip.Prefix {
	if k.Dst == nil {
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	ip, _ := netip.AddrFromSlice(k.Dst.IP)
	bits, _ := k.Dst.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), bits)
}

// syncRoutes makes the routes of Sluice's tables (9990–14095) match want
// (adding or replacing); with prune it deletes every other route there.
// tunIdx 0 (no tunnel) only prunes.
func (d *Datapath) syncRoutes(tunIdx int, want []Route, prune bool) error {
	all, err := routeListAllTables()
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	have := map[routeKey]netlink.Route{}
	for _, k := range all {
		if inRange(k.Table, TableMin, TableMax) {
			have[routeKey{k.Table, kernelDst(k)}] = k
		}
	}
	var errs []error
	wanted := map[routeKey]bool{}
	for _, r := range want {
		key := routeKey{r.Table, r.Dst}
		wanted[key] = true
		if tunIdx == 0 {
			continue
		}
		if k, ok := have[key]; ok && routeMatches(k, r, tunIdx) {
			continue
		}
		d.writes++
		if err := netlink.RouteReplace(routeToKernel(r, tunIdx)); err != nil {
			errs = append(errs, fmt.Errorf("add route %v table %d: %w", r.Dst, r.Table, err))
		}
	}
	if !prune {
		return errors.Join(errs...)
	}
	for key, k := range have {
		if wanted[key] && tunIdx != 0 {
			continue
		}
		d.writes++
		if err := netlink.RouteDel(&k); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete stale route %v table %d: %w", key.dst, key.table, err))
		}
	}
	return errors.Join(errs...)
}
