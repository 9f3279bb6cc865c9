package cniplugin

import (
	"bytes"
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
	// conn is a route netlink socket of the caller's namespace; nil opens
	// one per call.
	conn *rtconn
}

// NewNetlink opens the route netlink socket a Netlink keeps; should that
// fail, the Netlink opens one per call instead (and says why then).
func NewNetlink() Netlink {
	c, _ := dialRoute()
	return Netlink{conn: c}
}

// route returns the kept socket, or a fresh one and its closer.
func (k Netlink) route() (*rtconn, func(), error) {
	if k.conn != nil {
		return k.conn, func() {}, nil
	}
	c, err := dialRoute()
	if err != nil {
		return nil, nil, err
	}
	return c, func() { c.Close() }, nil
}

// ErrNoNetnsAccess means the Pod's netns could only be read by entering
// it, which needs CAP_SYS_ADMIN; the helper then hands the call to the
// exec'd plugin.
var ErrNoNetnsAccess = errors.New("no permission to enter the Pod's netns")

// HostPeer finds the caller-side (Node) peer of the veth ifName inside the
// Pod's netns.
func (k Netlink) HostPeer(netnsPath, ifName string) (HostLink, error) {
	if netnsPath == "" {
		return HostLink{}, errors.New("no netns")
	}
	pod, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return HostLink{}, fmt.Errorf("open netns %s: %w", netnsPath, err)
	}
	defer pod.Close()
	return k.hostPeer(pod, netnsPath, ifName)
}

// hostPeer is HostPeer with the Pod's netns open as pod. It first asks from
// here, without entering the netns: the netns's id as seen from here
// (RTM_GETNSID), then ifName in that netns (RTM_GETLINK with
// IFLA_TARGET_NETNSID), which CAP_NET_ADMIN allows. Only when the netns has
// no id here, or the veth does not report its peer, does it look from
// inside the Pod's netns (setns, CAP_SYS_ADMIN). Either way the answer is
// checked from both ends: the peer here is a veth whose own peer is ifName,
// in that netns.
func (k Netlink) hostPeer(pod netns.NsHandle, netnsPath, ifName string) (HostLink, error) {
	c, done, err := k.route()
	if err != nil {
		return HostLink{}, err
	}
	defer done()
	nsid, err := c.netnsID(int(pod))
	if err != nil {
		nsid = -1
	}
	var l link
	if nsid >= 0 {
		if l, err = c.linkInNsid(ifName, nsid); err != nil {
			return HostLink{}, fmt.Errorf("find %s: %w", ifName, err)
		}
	} else if l, err = linkInside(pod, netnsPath, ifName); err != nil {
		return HostLink{}, err
	}
	if l.Kind != "veth" {
		return HostLink{}, fmt.Errorf("%s is a %s, not a veth", ifName, l.kind())
	}
	peer := l.Peer
	if peer == 0 {
		// The kernel leaves IFLA_LINK out when the peer's index equals the
		// veth's own; only ethtool, from inside the namespace, tells then.
		err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
			var err error
			peer, err = netlink.VethPeerIndex(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: l.Name}})
			return err
		})
		if errors.Is(err, unix.EPERM) {
			err = fmt.Errorf("%w: %w", ErrNoNetnsAccess, err)
		}
		if err != nil {
			return HostLink{}, fmt.Errorf("peer index of %s: %w", ifName, err)
		}
	}
	h, err := c.linkByIndex(peer)
	if err != nil {
		return HostLink{}, fmt.Errorf("peer ifindex %d not in this namespace: %w", peer, err)
	}
	// An index is only unique per namespace: if the peer lives elsewhere,
	// the same number may name an unrelated link here.
	if h.Kind != "veth" {
		return HostLink{}, fmt.Errorf("ifindex %d here is %s (%s), not the pod's veth peer; is the plugin running in the node's namespace?", peer, h.Name, h.kind())
	}
	if nsid >= 0 && (h.PeerNsID != nsid || h.Peer != 0 && h.Peer != l.Index) {
		return HostLink{}, fmt.Errorf("veth %s here is not the peer of %s in %s", h.Name, ifName, netnsPath)
	}
	return HostLink{Name: h.Name, Index: peer, Alias: h.Alias}, nil
}

// netnsID is the id here of the netns open as fd, or -1 when it has none.
func (c *rtconn) netnsID(fd int) (int, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETNSID, 0)
	req.AddData(nl.NewRtGenMsg())
	req.AddData(nl.NewRtAttr(unix.NETNSA_FD, nl.Uint32Attr(uint32(fd))))
	msgs, err := c.do(req, unix.RTM_NEWNSID)
	if err != nil {
		return -1, err
	}
	for _, m := range msgs {
		attrs, err := nl.ParseRouteAttr(m[nl.DeserializeRtGenMsg(m).Len():])
		if err != nil {
			return -1, err
		}
		for _, a := range attrs {
			if a.Attr.Type == unix.NETNSA_NSID && len(a.Value) >= 4 {
				return int(int32(nl.NativeEndian().Uint32(a.Value))), nil
			}
		}
	}
	return -1, nil
}

// linkInNsid reads link name in the netns that has id nsid here.
func (c *rtconn) linkInNsid(name string, nsid int) (link, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, 0)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(skipStats())
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	req.AddData(nl.NewRtAttr(unix.IFLA_TARGET_NETNSID, nl.Uint32Attr(uint32(nsid))))
	return c.oneLink(req, fmt.Sprintf("link %s in netns id %d", name, nsid))
}

// linkByIndex reads the link with index i here.
func (c *rtconn) linkByIndex(i int) (link, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, 0)
	m := nl.NewIfInfomsg(unix.AF_UNSPEC)
	m.Index = int32(i)
	req.AddData(m)
	req.AddData(skipStats())
	return c.oneLink(req, fmt.Sprintf("ifindex %d", i))
}

func (c *rtconn) oneLink(req *nl.NetlinkRequest, what string) (link, error) {
	msgs, err := c.do(req, unix.RTM_NEWLINK)
	if err != nil {
		return link{}, err
	}
	if len(msgs) != 1 {
		return link{}, fmt.Errorf("%d answers for %s", len(msgs), what)
	}
	return parseLink(msgs[0])
}

// rtextFilterSkipStats (RTEXT_FILTER_SKIP_STATS) leaves a link's counters,
// which nothing here reads, out of the kernel's answer.
const rtextFilterSkipStats = 1 << 3

func skipStats() *nl.RtAttr {
	return nl.NewRtAttr(unix.IFLA_EXT_MASK, nl.Uint32Attr(rtextFilterSkipStats))
}

// link is the little of a link the plugin reads. netlink.LinkDeserialize
// would give all of it, at several times the cost in the helper's hot path.
type link struct {
	Index int
	Name  string
	Alias string
	Kind  string // IFLA_INFO_KIND: "veth", "bridge", ...; "" for none
	// Peer is IFLA_LINK (a veth's peer's index), 0 when absent.
	Peer int
	// PeerNsID is IFLA_LINK_NETNSID (the id here of the peer's netns), -1
	// when absent (the peer is in the same netns).
	PeerNsID int
}

func (l link) kind() string {
	if l.Kind == "" {
		return "device"
	}
	return l.Kind
}

// parseLink reads an RTM_NEWLINK message.
func parseLink(m []byte) (link, error) {
	if len(m) < unix.SizeofIfInfomsg {
		return link{}, errors.New("short link message")
	}
	l := link{Index: int(nl.DeserializeIfInfomsg(m).Index), PeerNsID: -1}
	attrs, err := nl.ParseRouteAttr(m[unix.SizeofIfInfomsg:])
	if err != nil {
		return link{}, fmt.Errorf("link attributes: %w", err)
	}
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.IFLA_IFNAME:
			l.Name = cstring(a.Value)
		case unix.IFLA_IFALIAS:
			l.Alias = cstring(a.Value)
		case unix.IFLA_LINK:
			if len(a.Value) >= 4 {
				l.Peer = int(nl.NativeEndian().Uint32(a.Value))
			}
		case unix.IFLA_LINK_NETNSID:
			if len(a.Value) >= 4 {
				l.PeerNsID = int(int32(nl.NativeEndian().Uint32(a.Value)))
			}
		case unix.IFLA_LINKINFO:
			info, err := nl.ParseRouteAttr(a.Value)
			if err != nil {
				return link{}, fmt.Errorf("link info: %w", err)
			}
			for _, i := range info {
				if i.Attr.Type == unix.IFLA_INFO_KIND {
					l.Kind = cstring(i.Value)
				}
			}
		}
	}
	return l, nil
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// linkOf is the same facts out of a netlink.Link.
func linkOf(l netlink.Link) link {
	a := l.Attrs()
	kind := l.Type()
	if _, ok := l.(*netlink.Device); ok {
		kind = ""
	}
	return link{Index: a.Index, Name: a.Name, Alias: a.Alias, Kind: kind, Peer: a.ParentIndex, PeerNsID: a.NetNsID}
}

// linkInside reads link name through a netlink socket opened inside the
// netns (setns on a locked thread, for the socket's creation only).
func linkInside(pod netns.NsHandle, path, name string) (link, error) {
	h, err := netlink.NewHandleAt(pod, unix.NETLINK_ROUTE)
	if err != nil {
		// netlink formats the errno with %v, so it does not unwrap.
		if errors.Is(err, unix.EPERM) || strings.Contains(err.Error(), unix.EPERM.Error()) {
			err = fmt.Errorf("%w: %w", ErrNoNetnsAccess, err)
		}
		return link{}, fmt.Errorf("netlink socket in %s: %w", path, err)
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		return link{}, fmt.Errorf("find %s: %w", name, err)
	}
	return linkOf(l), nil
}

// SetAlias sets a link's alias; "" clears it. Only the index goes to the
// kernel, so there is no lookup first.
func (k Netlink) SetAlias(index int, alias string) error {
	c, done, err := k.route()
	if err != nil {
		return err
	}
	defer done()
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	m := nl.NewIfInfomsg(unix.AF_UNSPEC)
	m.Index = int32(index)
	req.AddData(m)
	req.AddData(nl.NewRtAttr(unix.IFLA_IFALIAS, []byte(alias)))
	if _, err := c.do(req, 0); err != nil {
		return fmt.Errorf("set alias on ifindex %d: %w", index, err)
	}
	return nil
}

// Tagged lists the links whose alias is a sluice tag.
func (k Netlink) Tagged() ([]HostLink, error) {
	c, done, err := k.route()
	if err != nil {
		return nil, err
	}
	defer done()
	links, err := c.linkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []HostLink
	for _, l := range links {
		if cniproto.IsTag(l.Alias) {
			out = append(out, HostLink{Name: l.Name, Index: l.Index, Alias: l.Alias, PeerNetNsID: l.PeerNsID})
		}
	}
	return out, nil
}

// TaggedLinks lists the links of the current namespace that carry a sluice
// tag. The helper's start-up scan uses it too.
func TaggedLinks() ([]HostLink, error) {
	return Netlink{}.Tagged()
}

// linkList dumps the links, asking again when the kernel interrupted the
// dump (links changed during it), as plugins' netlinksafe does.
func (c *rtconn) linkList() ([]link, error) {
	var err error
	for range 5 {
		req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_DUMP)
		req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
		req.AddData(skipStats())
		var msgs [][]byte
		if msgs, err = c.do(req, unix.RTM_NEWLINK); errors.Is(err, errDumpInterrupted) {
			continue
		}
		if err != nil {
			return nil, err
		}
		links := make([]link, 0, len(msgs))
		for _, m := range msgs {
			l, err := parseLink(m)
			if err != nil {
				return nil, err
			}
			links = append(links, l)
		}
		return links, nil
	}
	return nil, err
}
