package cluster

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
)

// UplinkAddrs maps every IPv4 address on a Node's uplink (eth0) to the
// Nodes that have it, sorted: who holds which egress IP, as the kernels
// say. It reads with netlink in each Node's namespace, fast enough to
// sample a move every few milliseconds.
func (c *Cluster) UplinkAddrs() (map[netip.Addr][]string, error) {
	out := map[netip.Addr][]string{}
	for _, n := range c.Nodes {
		err := n.NS.Do(func() error {
			l, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
			if err != nil {
				return err
			}
			for _, a := range addrs {
				if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
					out[ip] = append(out[ip], n.Name)
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("addresses on %s: %w", n.Name, err)
		}
	}
	for _, h := range out {
		slices.Sort(h)
	}
	return out, nil
}
