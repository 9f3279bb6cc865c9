package cniplugin

import (
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// linkMessage builds an RTM_NEWLINK payload as the kernel sends it.
func linkMessage(index int32, attrs ...*nl.RtAttr) []byte {
	m := nl.NewIfInfomsg(unix.AF_UNSPEC)
	m.Index = index
	b := m.Serialize()
	for _, a := range attrs {
		b = append(b, a.Serialize()...)
	}
	return b
}

func TestParseLink(t *testing.T) {
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(unix.IFLA_INFO_KIND, nl.ZeroTerminated("veth"))
	l, err := parseLink(linkMessage(7,
		nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated("veth1234")),
		nl.NewRtAttr(unix.IFLA_IFALIAS, []byte("sluice:1:x")),
		nl.NewRtAttr(unix.IFLA_LINK, nl.Uint32Attr(3)),
		nl.NewRtAttr(unix.IFLA_LINK_NETNSID, nl.Uint32Attr(2)),
		nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(1500)), // ignored
		info,
	))
	want := link{Index: 7, Name: "veth1234", Alias: "sluice:1:x", Kind: "veth", Peer: 3, PeerNsID: 2}
	if err != nil || l != want {
		t.Fatalf("parseLink = %+v, %v; want %+v", l, err, want)
	}

	// A device with no kind and no peer (lo): kind "device", PeerNsID -1.
	l, err = parseLink(linkMessage(1, nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated("lo"))))
	if err != nil || l.Name != "lo" || l.Kind != "" || l.kind() != "device" || l.Peer != 0 || l.PeerNsID != -1 {
		t.Fatalf("lo: %+v, %v", l, err)
	}

	if _, err := parseLink([]byte{1, 2, 3}); err == nil {
		t.Error("a short message parsed")
	}
	bad := linkMessage(1)
	bad = append(bad, 0xff, 0x00, 0x03, 0x00) // attribute claiming 255 bytes
	if _, err := parseLink(bad); err == nil {
		t.Error("a truncated attribute parsed")
	}
}
