package datapath

import (
	"errors"

	"github.com/vishvananda/netlink"
)

// Netlink dumps can be interrupted by concurrent changes (the kernel sets
// NLM_F_DUMP_INTR and netlink returns ErrDumpInterrupted); retry a few times
// so a reconcile never works from a partial list. This is what
// plugins/pkg/netlinksafe does, without its extra dependencies.
const dumpRetries = 5

func retryDump[T any](f func() (T, error)) (T, error) {
	var v T
	var err error
	for range dumpRetries {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

func linkByName(name string) (netlink.Link, error) {
	return retryDump(func() (netlink.Link, error) { return netlink.LinkByName(name) })
}

func addrList(l netlink.Link) ([]netlink.Addr, error) {
	return retryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(l, netlink.FAMILY_V4) })
}

func neighList(idx, family int) ([]netlink.Neigh, error) {
	return retryDump(func() ([]netlink.Neigh, error) { return netlink.NeighList(idx, family) })
}

func ruleList() ([]netlink.Rule, error) {
	return retryDump(func() ([]netlink.Rule, error) { return netlink.RuleList(netlink.FAMILY_V4) })
}

func routeListAllTables() ([]netlink.Route, error) {
	return retryDump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 0}, netlink.RT_FILTER_TABLE)
	})
}
