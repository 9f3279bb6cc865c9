package cniplugin

import (
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/pkg/cniproto"
)

// Netlink is the real Kernel. The plugin runs in the Node's namespace (the
// caller's); only HostPeer looks into the Pod's.
type Netlink struct {
	// H, when set, is a netlink handle of the caller's namespace kept
	// open across calls (the helper's); nil opens a socket per request.
	H *netlink.Handle
	// S is a route netlink socket of the caller's namespace kept open for
	// the requests netlink.Handle has no method for; nil opens one each.
	S *nl.SocketHandle
}

func (k Netlink) linkByIndex(i int) (netlink.Link, error) {
	if k.H != nil {
		return k.H.LinkByIndex(i)
	}
	return netlink.LinkByIndex(i)
}

// ErrNoNetnsAccess means the Pod's netns could only be read by entering
// it, which needs CAP_SYS_ADMIN; the helper then hands the call to the
// exec'd plugin.
var ErrNoNetnsAccess = errors.New("no permission to enter the Pod's netns")

// HostPeer finds the caller-side (Node) peer of the veth ifName inside the
// Pod's netns. It first asks from here, without entering the netns: the
// netns's id as seen from here (RTM_GETNSID), then ifName in that netns
// (RTM_GETLINK with IFLA_TARGET_NETNSID), which CAP_NET_ADMIN allows. Only
// when the netns has no id here, or the veth does not report its peer, does
// it look from inside the Pod's netns (setns, CAP_SYS_ADMIN).
// Either way the answer is checked from both ends: the peer here is a veth
// whose own peer is ifName, in that netns.
func (k Netlink) HostPeer(netnsPath, ifName string) (HostLink, error) {
	if netnsPath == "" {
		return HostLink{}, errors.New("no netns")
	}
	pod, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return HostLink{}, fmt.Errorf("open netns %s: %w", netnsPath, err)
	}
	defer pod.Close()
	var nsid int
	if k.H != nil {
		nsid, err = k.H.GetNetNsIdByFd(int(pod))
	} else {
		nsid, err = netlink.GetNetNsIdByFd(int(pod))
	}
	if err != nil {
		nsid = -1
	}
	var l netlink.Link
	if nsid >= 0 {
		l, err = linkInNsid(k.S, ifName, nsid)
		if err != nil {
			return HostLink{}, fmt.Errorf("find %s: %w", ifName, err)
		}
	}
	if l == nil {
		if l, err = linkInside(pod, netnsPath, ifName); err != nil {
			return HostLink{}, err
		}
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
		if errors.Is(err, unix.EPERM) {
			err = fmt.Errorf("%w: %w", ErrNoNetnsAccess, err)
		}
		if err != nil {
			return HostLink{}, fmt.Errorf("peer index of %s: %w", ifName, err)
		}
	}
	h, err := k.linkByIndex(peer)
	if err != nil {
		return HostLink{}, fmt.Errorf("peer ifindex %d not in this namespace: %w", peer, err)
	}
	// An index is only unique per namespace: if the peer lives elsewhere,
	// the same number may name an unrelated link here.
	hv, ok := h.(*netlink.Veth)
	if !ok {
		return HostLink{}, fmt.Errorf("ifindex %d here is %s (%s), not the pod's veth peer; is the plugin running in the node's namespace?", peer, h.Attrs().Name, h.Type())
	}
	if nsid >= 0 && (hv.Attrs().NetNsID != nsid || hv.Attrs().ParentIndex != 0 && hv.Attrs().ParentIndex != v.Attrs().Index) {
		return HostLink{}, fmt.Errorf("veth %s here is not the peer of %s in %s", hv.Attrs().Name, ifName, netnsPath)
	}
	return HostLink{Name: hv.Attrs().Name, Index: peer, Alias: hv.Attrs().Alias}, nil
}

// linkInNsid reads link name in the netns that has id nsid here, through
// s when not nil.
func linkInNsid(s *nl.SocketHandle, name string, nsid int) (netlink.Link, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_ACK)
	if s != nil {
		req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: s}
	}
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	req.AddData(nl.NewRtAttr(unix.IFLA_TARGET_NETNSID, nl.Uint32Attr(uint32(nsid))))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return nil, err
	}
	if len(msgs) != 1 {
		return nil, fmt.Errorf("%d answers for link %s in netns id %d", len(msgs), name, nsid)
	}
	return netlink.LinkDeserialize(nil, msgs[0])
}

// linkInside reads link name through a netlink socket opened inside the
// netns (setns on a locked thread, for the socket's creation only).
func linkInside(pod netns.NsHandle, path, name string) (netlink.Link, error) {
	h, err := netlink.NewHandleAt(pod, unix.NETLINK_ROUTE)
	if err != nil {
		// netlink formats the errno with %v, so it does not unwrap.
		if errors.Is(err, unix.EPERM) || strings.Contains(err.Error(), unix.EPERM.Error()) {
			err = fmt.Errorf("%w: %w", ErrNoNetnsAccess, err)
		}
		return nil, fmt.Errorf("netlink socket in %s: %w", path, err)
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", name, err)
	}
	return l, nil
}

// SetAlias sets a link's alias; "" clears it. Only the index goes to the
// kernel, so there is no lookup first.
func (k Netlink) SetAlias(index int, alias string) error {
	l := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: index}}
	set := netlink.LinkSetAlias
	if k.H != nil {
		set = k.H.LinkSetAlias
	}
	if err := set(l, alias); err != nil {
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
