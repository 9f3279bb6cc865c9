package view

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
)

// WatchAddrs keeps the Cache's view of the IPs configured on this Node
// (static egress IPs are found this way) and pokes the agent when it
// changes. It skips the addresses Sluice itself holds (label ownLabel) and
// those on the tunnel device. Netlink events drive it; a slow poll covers
// a lost event.
func WatchAddrs(ctx context.Context, c *Cache, ownLabel, tunnel string, poke func()) error {
	updates := make(chan netlink.AddrUpdate, 64)
	done := make(chan struct{})
	go func() { <-ctx.Done(); close(done) }()
	if err := netlink.AddrSubscribeWithOptions(updates, done, netlink.AddrSubscribeOptions{}); err != nil {
		return fmt.Errorf("subscribe to address changes: %w", err)
	}
	refresh := func() {
		if changed, err := RefreshAddrs(c, ownLabel, tunnel); err == nil && changed {
			poke()
		}
	}
	refresh()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-updates:
			if !ok {
				return nil
			}
			// Drain a burst, then list once.
			for len(updates) > 0 {
				<-updates
			}
			refresh()
		case <-tick.C:
			refresh()
		}
	}
}

// RefreshAddrs reads the Node's addresses into the Cache once. The daemon
// calls it before the first reconcile: a first plan made without them would
// take a static egress IP for absent, rewrite the SNAT chain (resetting its
// counters) and flap the Egress's status on every restart.
func RefreshAddrs(c *Cache, ownLabel, tunnel string) (changed bool, err error) {
	addrs, err := localAddrs(ownLabel, tunnel)
	if err != nil {
		return false, err
	}
	return c.SetLocalAddrs(addrs), nil
}

func localAddrs(ownLabel, tunnel string) (map[netip.Addr]bool, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	out := map[netip.Addr]bool{}
	for _, l := range links {
		if l.Attrs().Name == tunnel {
			continue
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if a.Label == ownLabel {
				continue
			}
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				out[ip.Unmap()] = true
			}
		}
	}
	return out, nil
}

// UplinkFor returns the interface that holds ip.
func UplinkFor(ip netip.Addr) (string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return "", fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
				return l.Attrs().Name, nil
			}
		}
	}
	return "", fmt.Errorf("no interface holds the Node IP %s; pass --uplink", ip)
}
