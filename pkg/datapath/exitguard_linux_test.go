package datapath

import (
	"context"
	"encoding/binary"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/pkg/nstest"
)

// desiredOn1 is desiredFor with node1 holding the egress IP.
func desiredOn1(id uint16) Desired {
	return Desired{
		NodeIPs: []netip.Addr{node1, node2},
		HeldIPs: []netip.Addr{egIP},
		Egresses: []EgressState{{Name: "eg-a", EgressIP: egIP, ID: id, AllPodIPs: []netip.Addr{ip1a, ip2a},
			OwnerNodeIP: node1, Local: true, LocalPodIPs: []netip.Addr{ip1a}}},
		RemotePods: []RemotePod{{IP: ip2a, NodeIP: node2}},
	}
}

// wireCounter counts, in the external server's raw PREROUTING (before
// conntrack and rp_filter), the UDP packets to port 9999 from each source.
type wireCounter struct {
	t   *testing.T
	ext *nstest.NS
}

func newWireCounter(t *testing.T, ext *nstest.NS, sources ...string) *wireCounter {
	for _, s := range sources {
		ext.MustRun(t, "iptables", "-w", "-t", "raw", "-A", "PREROUTING", "-p", "udp", "--dport", "9999", "-s", s)
	}
	return &wireCounter{t, ext}
}

func (w *wireCounter) seen() map[string]uint64 {
	out := map[string]uint64{}
	for _, line := range strings.Split(w.ext.MustRun(w.t, "iptables", "-w", "-t", "raw", "-L", "PREROUTING", "-v", "-x", "-n"), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || f[2] != "17" { // a rule without target: pkts bytes prot opt in out source
			continue
		}
		n, _ := strconv.ParseUint(f[0], 10, 64)
		out[strings.TrimSuffix(f[6], "/32")] = n
	}
	return out
}

func exitDropsIn(t *testing.T, n *nstest.NS, d *Datapath) map[string]uint64 {
	t.Helper()
	var st Stats
	if err := n.Do(func() (err error) { st, err = d.Stats(context.Background()); return err }); err != nil {
		t.Fatal(err)
	}
	return st.ExitDrops
}

// TestExitGuardFailsClosed: a selected Pod's packet never leaves an
// uplink with a source other than its egress IP, whatever else goes wrong
// before it gets there. The adversaries are the two transitions the kernel
// gets wrong on its own, and another agent: a conntrack entry that
// recorded "no NAT" (the flow went into the tunnel, then this Node took
// the IP over), and a MASQUERADE inserted ahead of Sluice's SNAT jump.
// Asserted on what reached the external server, and on the guard's
// counters.
func TestExitGuardFailsClosed(t *testing.T) {
	tp := newTopo(t)
	wire := newWireCounter(t, tp.ext, "10.244.0.0/16", "192.0.2.11", "192.0.2.12", egIP.String())
	sink(t, tp.ext, extAddr+":9999")
	d1, d2 := newDatapath(t, tp.node1, "192.0.2.11", -1), newDatapath(t, tp.node2, "192.0.2.12", -1)
	d1.noHygiene, d2.noHygiene = true, true // the stale entry must stay: the guard is under test
	apply(t, tp.node2, d2, desiredFor(true, 1))
	apply(t, tp.node1, d1, desiredFor(false, 1))
	const n = 20

	// A flow from pod1a through the tunnel to node2, the holder.
	sendUDP(t, tp.pod1a, "10.244.1.2:40000", extAddr+":9999", n)
	time.Sleep(100 * time.Millisecond)
	if got := wire.seen(); got[egIP.String()] != n || got["10.244.0.0/16"] != 0 {
		t.Fatalf("before the move the server saw %v, want %d from %s only", got, n, egIP)
	}
	// node1 takes the IP over; the flow's conntrack entry on node1 says
	// "no NAT" (it went into the tunnel), so its packets would now leave
	// node1's uplink as 10.244.1.2.
	apply(t, tp.node1, d1, desiredOn1(1))
	nonHolder := desiredFor(false, 1)
	nonHolder.Egresses[0].OwnerNodeIP, nonHolder.Egresses[0].LocalPodIPs = node1, []netip.Addr{ip2a}
	apply(t, tp.node2, d2, nonHolder)
	sendUDP(t, tp.pod1a, "10.244.1.2:40000", extAddr+":9999", n)
	time.Sleep(100 * time.Millisecond)
	if got := wire.seen(); got["10.244.0.0/16"] != 0 || got["192.0.2.11"] != 0 {
		t.Errorf("after the takeover the server saw %v: a selected Pod's packets with a wrong source", got)
	}
	if got := exitDropsIn(t, tp.node1, d1)[ExitDropWrongSource]; got < n {
		t.Errorf("node1's exit guard dropped %d %s packets, want ≥ %d", got, ExitDropWrongSource, n)
	}
	// A new flow is SNATed as it should be.
	sendUDP(t, tp.pod1a, "10.244.1.2:40001", extAddr+":9999", n)
	time.Sleep(100 * time.Millisecond)
	if got := wire.seen()[egIP.String()]; got != 2*n {
		t.Errorf("new flow after the takeover: server saw %d from %s in all, want %d", got, egIP, 2*n)
	}

	// Another agent puts a MASQUERADE ahead of Sluice's SNAT jump on the
	// holder: new flows of selected Pods (local, and through the tunnel)
	// must not leave as the Node IP; unselected Pods are untouched.
	tp.node1.MustRun(t, "iptables", "-w", "-t", "nat", "-I", "POSTROUTING", "1", "-s", "10.244.0.0/16", "!", "-d", "10.244.0.0/16", "-j", "MASQUERADE")
	sendUDP(t, tp.pod1a, "10.244.1.2:40002", extAddr+":9999", n)
	sendUDP(t, tp.pod2a, "10.244.2.2:40002", extAddr+":9999", n)
	sendUDP(t, tp.pod1b, "10.244.1.3:40002", extAddr+":9999", n)
	time.Sleep(100 * time.Millisecond)
	got := wire.seen()
	if got["192.0.2.11"] != n {
		t.Errorf("with a MASQUERADE first the server saw %v; want only the %d of the unselected pod1b from 192.0.2.11", got, n)
	}
	if drops := exitDropsIn(t, tp.node1, d1)[ExitDropWrongSource]; drops < 3*n {
		t.Errorf("node1's exit guard dropped %d %s packets, want ≥ %d", drops, ExitDropWrongSource, 3*n)
	}
	// The next full Apply puts Sluice's jump first again.
	apply(t, tp.node1, d1, desiredOn1(1))
	sendUDP(t, tp.pod2a, "10.244.2.2:40003", extAddr+":9999", n)
	time.Sleep(100 * time.Millisecond)
	if got := wire.seen()[egIP.String()]; got != 3*n {
		t.Errorf("after the repair the server saw %d from %s in all, want %d", got, egIP, 3*n)
	}
	if got := wire.seen()["10.244.0.0/16"]; got != 0 {
		t.Errorf("the server saw %d packets from Pod IPs", got)
	}

	// Uninstall removes the guard's table; Apply with nothing changed
	// writes nothing, and a flushed guard comes back on the next read-back.
	apply(t, tp.node1, d1, desiredOn1(1))
	if w := apply(t, tp.node1, d1, desiredOn1(1)); w != 0 {
		t.Errorf("an unchanged Apply wrote %d times", w)
	}
	if err := tp.node1.Do(func() error { return d1.removeExitGuard() }); err != nil {
		t.Fatal(err)
	}
	if w := apply(t, tp.node1, d1, desiredOn1(1)); w == 0 {
		t.Error("Apply did not restore a removed exit guard")
	}
	if err := tp.node1.Do(func() error { return d1.Uninstall(context.Background()) }); err != nil {
		t.Fatal(err)
	}
	var present bool
	if err := tp.node1.Do(func() (err error) { present, err = exitGuardPresent(); return err }); err != nil || present {
		t.Errorf("after Uninstall the exit guard is present=%v (%v)", present, err)
	}
}

// A Pod that stops being selected lingers in the exit guard for
// ExitLinger, and not once it is selected again.
func TestExitGuardLinger(t *testing.T) {
	pod, other := netip.MustParseAddr("10.244.1.2"), netip.MustParseAddr("10.244.1.3")
	d := &Datapath{}
	now := time.Now()
	g := ExitGuard{Selected: []netip.Addr{pod, other}}
	d.linger(&g, now)
	if len(g.Lingering) != 0 {
		t.Fatalf("lingering %v at the first Apply", g.Lingering)
	}
	g = ExitGuard{Selected: []netip.Addr{other}}
	d.linger(&g, now.Add(time.Second))
	if len(g.Lingering) != 1 || g.Lingering[0] != pod {
		t.Fatalf("lingering %v after %s was unselected", g.Lingering, pod)
	}
	g = ExitGuard{Selected: []netip.Addr{other}}
	d.linger(&g, now.Add(time.Second+ExitLinger))
	if len(g.Lingering) != 0 {
		t.Fatalf("lingering %v past ExitLinger", g.Lingering)
	}
	g = ExitGuard{Selected: []netip.Addr{pod}}
	d.linger(&g, now.Add(10*time.Second))
	g = ExitGuard{Selected: []netip.Addr{pod, other}}
	d.linger(&g, now.Add(11*time.Second))
	if len(g.Lingering) != 0 {
		t.Fatalf("lingering %v for Pods selected again", g.Lingering)
	}
}

// A TCP packet from outside to a held egress IP that belongs to no
// connection this Node knows (the server's side of a connection the IP's
// previous holder SNATed) is dropped and counted, not answered with a
// reset that would kill the connection; a SYN still gets its reset.
func TestHeldIPResetsNoStrayConnection(t *testing.T) {
	tp := newTopo(t)
	tp.ext.MustRun(t, "iptables", "-w", "-t", "raw", "-A", "PREROUTING", "-s", egIP.String(), "-p", "tcp", "--tcp-flags", "RST", "RST")
	resets := func() uint64 {
		out := tp.ext.MustRun(t, "iptables", "-w", "-t", "raw", "-L", "PREROUTING", "-v", "-x", "-n")
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) > 2 && f[2] == "6" {
				n, _ := strconv.ParseUint(f[0], 10, 64)
				return n
			}
		}
		t.Fatalf("no counting rule in %s", out)
		return 0
	}
	d1 := newDatapath(t, tp.node1, "192.0.2.11", -1)
	apply(t, tp.node1, d1, desiredOn1(1))
	const ack, syn = 0x10, 0x02
	for i := range 5 {
		sendTCP(t, tp.ext, netip.MustParseAddr(extAddr), egIP, uint16(5000+i), ack)
		sendTCP(t, tp.ext, netip.MustParseAddr(extAddr), egIP, uint16(6000+i), ack|0x08) // data (PSH)
	}
	time.Sleep(500 * time.Millisecond)
	if got := resets(); got != 0 {
		t.Errorf("the holder answered %d stray packets with a reset", got)
	}
	if got := exitDropsIn(t, tp.node1, d1)[ExitDropNoConnection]; got != 10 {
		t.Errorf("%s counter = %d, want 10", ExitDropNoConnection, got)
	}
	sendTCP(t, tp.ext, netip.MustParseAddr(extAddr), egIP, 7000, syn)
	time.Sleep(500 * time.Millisecond)
	if got := resets(); got != 1 {
		t.Errorf("a SYN to the held IP got %d resets, want 1 (the test sees resets)", got)
	}
}

// sendTCP sends one bare TCP segment with flags from src to dst:40000
// through a raw socket in n.
func sendTCP(t *testing.T, n *nstest.NS, src, dst netip.Addr, sport uint16, flags byte) {
	t.Helper()
	seg := make([]byte, 20)
	binary.BigEndian.PutUint16(seg[0:], sport)
	binary.BigEndian.PutUint16(seg[2:], 40000)
	binary.BigEndian.PutUint32(seg[4:], 1000)
	binary.BigEndian.PutUint32(seg[8:], 2000)
	seg[12], seg[13] = 5<<4, flags
	binary.BigEndian.PutUint16(seg[14:], 1024)
	s, d := src.As4(), dst.As4()
	pseudo := slices.Concat(s[:], d[:], []byte{0, unix.IPPROTO_TCP, 0, byte(len(seg))}, seg)
	var sum uint32
	for i := 0; i < len(pseudo); i += 2 {
		sum += uint32(pseudo[i])<<8 | uint32(pseudo[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(seg[16:], ^uint16(sum))
	err := n.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_TCP)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, seg, 0, &unix.SockaddrInet4{Addr: d})
	})
	if err != nil {
		t.Fatalf("send tcp %s→%s: %v", src, dst, err)
	}
}

// A restarted helper whose first plan leaves out a Pod the previous one
// had selected (its Egress not yet in the new informer's list, say) must
// not let that Pod's tunnel-era flow out un-NATed: the Pods the kernel's
// guard had selected linger as if this process had selected them.
func TestRestartedGuardLingers(t *testing.T) {
	tp := newTopo(t)
	wire := newWireCounter(t, tp.ext, "10.244.0.0/16", "192.0.2.11", egIP.String())
	sink(t, tp.ext, extAddr+":9999")
	d1, d2 := newDatapath(t, tp.node1, "192.0.2.11", -1), newDatapath(t, tp.node2, "192.0.2.12", -1)
	apply(t, tp.node2, d2, desiredFor(true, 1))
	apply(t, tp.node1, d1, desiredFor(false, 1))
	const n = 20
	sendUDP(t, tp.pod1a, "10.244.1.2:40000", extAddr+":9999", n) // through the tunnel: "no NAT" on node1
	time.Sleep(100 * time.Millisecond)
	if got := wire.seen(); got[egIP.String()] != n {
		t.Fatalf("before the restart the server saw %v, want %d from %s", got, n, egIP)
	}
	restarted := newDatapath(t, tp.node1, "192.0.2.11", -1)
	apply(t, tp.node1, restarted, Desired{NodeIPs: []netip.Addr{node1, node2}})
	sendUDP(t, tp.pod1a, "10.244.1.2:40000", extAddr+":9999", n)
	time.Sleep(100 * time.Millisecond)
	if got := wire.seen(); got["10.244.0.0/16"] != 0 {
		t.Errorf("after the restart the server saw %v: the Pod's flow left un-NATed", got)
	}
	if got := exitDropsIn(t, tp.node1, restarted)[ExitDropUnNATed]; got < n {
		t.Errorf("%s drops = %d, want ≥ %d", ExitDropUnNATed, got, n)
	}
}
