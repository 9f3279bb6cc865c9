//go:build linux

package garp

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/pkg/nstest"
)

// twoHosts makes A (va, 192.0.2.1) and B (vb, 192.0.2.2) on one veth, and
// gives A the egress IP 192.0.2.100 as a /32, as a takeover would.
func twoHosts(t *testing.T) (a, b *nstest.NS, aMAC string) {
	a, b = nstest.New(t, "garpa"), nstest.New(t, "garpb")
	nstest.Veth(t, a, "va", b, "vb")
	a.MustRun(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "va")
	a.MustRun(t, "ip", "addr", "add", "192.0.2.100/32", "dev", "va")
	b.MustRun(t, "ip", "addr", "add", "192.0.2.2/24", "dev", "vb")
	err := a.Do(func() error {
		ifi, err := net.InterfaceByName("va")
		if err == nil {
			aMAC = ifi.HardwareAddr.String()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return a, b, aMAC
}

func announceIn(t *testing.T, a *nstest.NS) {
	t.Helper()
	err := a.Do(func() error {
		return Announce(context.Background(), "va", netip.MustParseAddr("192.0.2.100"), 3, 50*time.Millisecond)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// neighMAC returns B's neighbour entry for the egress IP ("" if none).
func neighMAC(t *testing.T, b *nstest.NS) string { return neighMACOf(t, b, "192.0.2.100") }

func neighMACOf(t *testing.T, b *nstest.NS, ip string) string {
	out := b.MustRun(t, "ip", "neigh", "show", ip, "dev", "vb")
	f := strings.Fields(out)
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

func waitNeigh(t *testing.T, b *nstest.NS, want string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if neighMAC(t, b) == want {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("B's neighbour entry for 192.0.2.100 is %q, want %q: %s", neighMAC(t, b), want,
		b.MustRun(t, "ip", "neigh", "show", "dev", "vb"))
}

// TestKernelAnnounceUpdatesStaleEntry is the failover case: B still points
// the egress IP at the old Node's MAC; A's announcement repoints it, with
// arp_accept left at its default 0.
func TestKernelAnnounceUpdatesStaleEntry(t *testing.T) {
	nstest.RequireRoot(t)
	a, b, aMAC := twoHosts(t)
	b.MustRun(t, "sysctl", "-qw", "net.ipv4.conf.vb.arp_accept=0")
	const oldMAC = "02:00:00:00:00:99"
	b.MustRun(t, "ip", "neigh", "replace", "192.0.2.100", "lladdr", oldMAC, "dev", "vb", "nud", "stale")
	if got := neighMAC(t, b); got != oldMAC {
		t.Fatalf("setup: entry %q, want %q", got, oldMAC)
	}
	announceIn(t, a)
	waitNeigh(t, b, aMAC)
}

// TestKernelAnnounceCreatesEntryWithArpAccept: with arp_accept=1 B learns
// the IP from the announcement alone.
func TestKernelAnnounceCreatesEntryWithArpAccept(t *testing.T) {
	nstest.RequireRoot(t)
	a, b, aMAC := twoHosts(t)
	b.MustRun(t, "sysctl", "-qw", "net.ipv4.conf.vb.arp_accept=1")
	if got := neighMAC(t, b); got != "" {
		t.Fatalf("setup: B already has an entry %q", got)
	}
	announceIn(t, a)
	waitNeigh(t, b, aMAC)
}

// TestKernelAdvertisementUpdatesStaleEntry is the IPv6 failover case: B's
// entry for the egress IP points at the old Node; A's unsolicited NA
// repoints it. Addresses are from the IPv6 documentation prefix, inside the
// test namespaces only.
func TestKernelAdvertisementUpdatesStaleEntry(t *testing.T) {
	nstest.RequireRoot(t)
	a, b, aMAC := twoHosts(t)
	a.MustRun(t, "ip", "-6", "addr", "add", "2001:db8::1/64", "dev", "va", "nodad")
	a.MustRun(t, "ip", "-6", "addr", "add", "2001:db8::100/128", "dev", "va", "nodad")
	b.MustRun(t, "ip", "-6", "addr", "add", "2001:db8::2/64", "dev", "vb", "nodad")
	const oldMAC = "02:00:00:00:00:99"
	b.MustRun(t, "ip", "-6", "neigh", "replace", "2001:db8::100", "lladdr", oldMAC, "dev", "vb", "nud", "stale")
	if got := neighMACOf(t, b, "2001:db8::100"); got != oldMAC {
		t.Fatalf("setup: entry %q, want %q", got, oldMAC)
	}
	err := a.Do(func() error {
		return Announce(context.Background(), "va", netip.MustParseAddr("2001:db8::100"), 3, 50*time.Millisecond)
	})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for neighMACOf(t, b, "2001:db8::100") != aMAC {
		if time.Now().After(deadline) {
			t.Fatalf("B's entry for 2001:db8::100 is %q, want %q", neighMACOf(t, b, "2001:db8::100"), aMAC)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestKernelProbeFindsSquatter: B holds 192.0.2.100 on the link. A's probe
// finds B's MAC for it, nothing for a free address, and nothing when B's
// MAC is known (another Node, a stale holder). The probe itself leaves no
// entry for A in B's ARP cache (its sender IP is 0.0.0.0).
func TestKernelProbeFindsSquatter(t *testing.T) {
	nstest.RequireRoot(t)
	a, b := nstest.New(t, "probea"), nstest.New(t, "probeb")
	nstest.Veth(t, a, "va", b, "vb")
	a.MustRun(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "va")
	b.MustRun(t, "ip", "addr", "add", "192.0.2.2/24", "dev", "vb")
	b.MustRun(t, "ip", "addr", "add", "192.0.2.100/32", "dev", "vb")
	var bMAC string
	if err := b.Do(func() error {
		ifi, err := net.InterfaceByName("vb")
		if err == nil {
			bMAC = ifi.HardwareAddr.String()
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	taken, free := netip.MustParseAddr("192.0.2.100"), netip.MustParseAddr("192.0.2.101")
	probe := func(known func(net.HardwareAddr) bool) map[netip.Addr]net.HardwareAddr {
		t.Helper()
		var found map[netip.Addr]net.HardwareAddr
		err := a.Do(func() error {
			var err error
			found, err = Probe(context.Background(), "va", []netip.Addr{taken, free}, known)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return found
	}
	start := time.Now()
	found := probe(nil)
	if took := time.Since(start); took > 5*ProbeWait {
		t.Errorf("probe took %v", took)
	}
	if len(found) != 1 || found[taken].String() != bMAC {
		t.Fatalf("found %v, want %s at %s only", found, taken, bMAC)
	}
	if found := probe(func(m net.HardwareAddr) bool { return m.String() == bMAC }); len(found) != 0 {
		t.Fatalf("with B's MAC known, found %v", found)
	}
	if out := b.MustRun(t, "ip", "neigh", "show", "192.0.2.1", "dev", "vb"); strings.Contains(out, "lladdr") {
		t.Errorf("the probe left an entry for A in B's cache: %s", out)
	}
}
