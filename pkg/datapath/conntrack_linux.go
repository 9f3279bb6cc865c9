package datapath

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// staleFilter selects the conntrack entries staleFlow calls stale.
type staleFilter struct {
	prev   *natState
	next   natState
	except func(netip.Addr) bool
}

func (s staleFilter) MatchConntrackFlow(f *netlink.ConntrackFlow) bool {
	src, ok1 := netip.AddrFromSlice(f.Forward.SrcIP)
	dst, ok2 := netip.AddrFromSlice(f.Reverse.SrcIP)
	rdst, ok3 := netip.AddrFromSlice(f.Reverse.DstIP)
	if !ok1 || !ok2 || !ok3 {
		return false
	}
	return staleFlow(s.prev, s.next, s.except, flow{Src: src.Unmap(), Dst: dst.Unmap(), ReplyDst: rdst.Unmap()})
}

// cleanConntrack removes the entries the move from the last plan to next
// left stale (see conntrack.go). Called after the rules are in place, so
// the next packet of each such flow is decided by them. On an error the
// last plan is kept, so the next Apply tries again.
func (d *Datapath) cleanConntrack(next natState, except []netip.Prefix) error {
	if d.noHygiene || d.nat != nil && d.nat.equal(next) {
		return nil
	}
	if needsScan(d.nat, next) {
		n, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET,
			staleFilter{prev: d.nat, next: next, except: exceptMatcher(except)})
		if err != nil {
			return fmt.Errorf("remove stale conntrack entries: %w", err)
		}
		if n > 0 {
			d.writes++
			d.log.Info("removed stale conntrack entries", "entries", n)
		}
	}
	d.nat = &next
	return nil
}
