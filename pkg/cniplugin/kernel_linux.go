package cniplugin

import (
	"errors"
	"fmt"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/pkg/cniproto"
)

// Netlink is the real Kernel. The plugin runs in the Node's namespace (the
// caller's); only HostPeer enters the Pod's.
type Netlink struct{}

// HostPeer reads the peer ifindex of ifName inside the Pod's netns (the
// IFLA_LINK of a veth whose peer is in another namespace), then finds that
// index in the caller's namespace. It asks through a netlink socket opened
// inside the Pod's netns, so no thread of the caller ever switches
// namespace (the helper runs this for every ADD; a thread per call costs
// more than the lookup).
func (Netlink) HostPeer(netnsPath, ifName string) (HostLink, error) {
	if netnsPath == "" {
		return HostLink{}, errors.New("no netns")
	}
	pod, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return HostLink{}, fmt.Errorf("open netns %s: %w", netnsPath, err)
	}
	defer pod.Close()
	h, err := netlink.NewHandleAt(pod, unix.NETLINK_ROUTE)
	if err != nil {
		return HostLink{}, fmt.Errorf("netlink socket in %s: %w", netnsPath, err)
	}
	defer h.Close()
	l, err := h.LinkByName(ifName)
	if err != nil {
		return HostLink{}, fmt.Errorf("find %s: %w", ifName, err)
	}
	v, ok := l.(*netlink.Veth)
	if !ok {
		return HostLink{}, fmt.Errorf("%s is a %s, not a veth", ifName, l.Type())
	}
	peer := v.Attrs().ParentIndex
	if peer == 0 {
		// The kernel leaves IFLA_LINK out when the peer's index equals the
		// veth's own; only ethtool, from inside the namespace, tells then.
		err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
			var err error
			peer, err = netlink.VethPeerIndex(v)
			return err
		})
		if err != nil {
			return HostLink{}, fmt.Errorf("peer index of %s: %w", ifName, err)
		}
	}
	l, err = netlink.LinkByIndex(peer)
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

// SetAlias sets a link's alias; "" clears it. Only the index goes to the
// kernel, so there is no lookup first.
func (Netlink) SetAlias(index int, alias string) error {
	l := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: index}}
	if err := netlink.LinkSetAlias(l, alias); err != nil {
		return fmt.Errorf("set alias on ifindex %d: %w", index, err)
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
