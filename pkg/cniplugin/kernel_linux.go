package cniplugin

import (
	"errors"
	"fmt"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/sluicenet/sluice/pkg/cniproto"
)

// Netlink is the real Kernel. The plugin runs in the Node's namespace (the
// caller's); only HostPeer enters the Pod's.
type Netlink struct{}

// HostPeer reads the peer ifindex of ifName inside the Pod's netns (the
// IFLA_LINK of a veth whose peer is in another namespace), then finds that
// index in the caller's namespace.
func (Netlink) HostPeer(netnsPath, ifName string) (HostLink, error) {
	if netnsPath == "" {
		return HostLink{}, errors.New("no netns")
	}
	var peer int
	err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		l, err := netlink.LinkByName(ifName)
		if err != nil {
			return fmt.Errorf("find %s: %w", ifName, err)
		}
		v, ok := l.(*netlink.Veth)
		if !ok {
			return fmt.Errorf("%s is a %s, not a veth", ifName, l.Type())
		}
		peer = v.Attrs().ParentIndex
		if peer == 0 {
			if peer, err = netlink.VethPeerIndex(v); err != nil {
				return fmt.Errorf("peer index of %s: %w", ifName, err)
			}
		}
		return nil
	})
	if err != nil {
		return HostLink{}, err
	}
	l, err := netlink.LinkByIndex(peer)
	if err != nil {
		return HostLink{}, fmt.Errorf("peer ifindex %d not in this namespace: %w", peer, err)
	}
	// An index is only unique per namespace: if the peer lives elsewhere,
	// the same number may name an unrelated link here.
	if _, ok := l.(*netlink.Veth); !ok {
		return HostLink{}, fmt.Errorf("ifindex %d here is %s (%s), not the pod's veth peer; is the plugin running in the node's namespace?", peer, l.Attrs().Name, l.Type())
	}
	return HostLink{Name: l.Attrs().Name, Index: peer, Alias: l.Attrs().Alias}, nil
}

// SetAlias sets a link's alias; "" clears it.
func (Netlink) SetAlias(index int, alias string) error {
	l, err := netlink.LinkByIndex(index)
	if err != nil {
		return fmt.Errorf("link %d: %w", index, err)
	}
	if err := netlink.LinkSetAlias(l, alias); err != nil {
		return fmt.Errorf("set alias on %s: %w", l.Attrs().Name, err)
	}
	return nil
}

// Tagged lists the links whose alias is a sluice tag.
func (Netlink) Tagged() ([]HostLink, error) {
	return TaggedLinks()
}

// TaggedLinks lists the links of the current namespace that carry a sluice
// tag. The helper's start-up scan uses it too.
func TaggedLinks() ([]HostLink, error) {
	links, err := linkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []HostLink
	for _, l := range links {
		if a := l.Attrs(); cniproto.IsTag(a.Alias) {
			out = append(out, HostLink{Name: a.Name, Index: a.Index, Alias: a.Alias, PeerNetNsID: a.NetNsID})
		}
	}
	return out, nil
}

// linkList retries a dump the kernel interrupted (links changed during it),
// as plugins' netlinksafe does, without pulling in its dependencies.
func linkList() ([]netlink.Link, error) {
	var links []netlink.Link
	var err error
	for range 5 {
		links, err = netlink.LinkList()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return links, err
		}
	}
	return links, err
}
