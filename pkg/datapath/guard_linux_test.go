package datapath

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/pkg/nstest"
)

// sink listens for UDP in n for the rest of the test.
func sink(t *testing.T, n *nstest.NS, addr string) *nstest.UDPSink {
	t.Helper()
	s, err := nstest.ListenUDP(n, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// injector forges VXLAN frames of the cluster's VNI and port from n,
// spoofing the inner source spoofed.
func injector(t *testing.T, n *nstest.NS, spoofed string) func(node netip.Addr, outer, innerDst string, count int) {
	t.Helper()
	j, err := nstest.NewInjector(n, "inj0", DefaultVNI, DefaultTunnelPort, netip.MustParseAddr(spoofed))
	if err != nil {
		t.Fatal(err)
	}
	return func(node netip.Addr, outer, innerDst string, count int) {
		t.Helper()
		if err := j.Inject(TunnelMAC(node), netip.MustParseAddr(outer), netip.AddrPortFrom(netip.MustParseAddr(innerDst), 9999), count); err != nil {
			t.Fatal(err)
		}
	}
}

func sendUDP(t *testing.T, n *nstest.NS, src, dst string, count int) {
	t.Helper()
	if err := nstest.SendUDP(n, netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst), count); err != nil {
		t.Fatal(err)
	}
}

// dropsBy returns the guard's drop counters on one Node by reason.
func dropsBy(t *testing.T, n *nstest.NS, d *Datapath) map[string]uint64 {
	t.Helper()
	var st Stats
	if err := n.Do(func() (err error) { st, err = d.Stats(context.Background()); return err }); err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, r := range st.Rules {
		if r.DropReason != "" {
			out[r.DropReason] += r.Packets
		}
	}
	return out
}

// TestTunnelClosed: the tunnel takes only Nodes' packets, and a Node SNATs
// or forwards out of the tunnel only what it should. The adversaries: a LAN
// host that is not a Node, an unselected Pod with a plain UDP socket, and
// a Node whose view of the Egress disagrees with the holder's (a
// transition). Asserted on what the external server and another Pod saw.
func TestTunnelClosed(t *testing.T) {
	tp := newTopo(t)
	rogue := nstest.New(t, "rogue")
	nstest.Veth(t, tp.lan, "p9", rogue, "eth0")
	tp.lan.MustRun(t, "ip", "link", "set", "p9", "master", "br0")
	rogue.MustRun(t, "ip", "addr", "add", "192.0.2.66/24", "dev", "eth0")
	rogue.MustRun(t, "ip", "route", "add", "203.0.113.0/24", "dev", "eth0")

	ext := extAddr + ":8080"
	serveSource(t, tp.ext, ext)
	extSink := sink(t, tp.ext, extAddr+":9999")
	podSink := sink(t, tp.pod2a, "10.244.2.2:9999")
	d1, d2 := newDatapath(t, tp.node1, "192.0.2.11", -1), newDatapath(t, tp.node2, "192.0.2.12", -1)
	apply(t, tp.node2, d2, desiredFor(true, 1))
	apply(t, tp.node1, d1, desiredFor(false, 1))
	if got := seenAs(t, tp.pod1a, ext); got != egIP.String() {
		t.Fatalf("selected pod seen as %s before any attack", got)
	}

	const n = 300
	// A LAN host, spoofing the selected pod1a, at node2's IP and at the
	// egress IP node2 holds; towards the server and towards pod2a.
	lanInj := injector(t, rogue, "10.244.1.2")
	for _, outer := range []string{"192.0.2.12", egIP.String()} {
		lanInj(node2, outer, extAddr, n)
		lanInj(node2, outer, "10.244.2.2", n)
	}
	// The unselected pod1b, spoofing pod1a: at node2 (forwarded by node1,
	// masqueraded to node1's IP by the primary CNI) and at its own node1.
	podInj := injector(t, tp.pod1b, "10.244.1.2")
	podInj(node2, "192.0.2.12", extAddr, n)
	podInj(node2, "192.0.2.12", "10.244.2.2", n)
	podInj(node1, "192.0.2.11", "10.244.2.2", n)

	time.Sleep(300 * time.Millisecond)
	if got := extSink.Counts(); len(got) != 0 {
		t.Errorf("the external server received injected packets, by source: %v", got)
	}
	if got := podSink.Counts(); len(got) != 0 {
		t.Errorf("pod2a received injected packets, by source: %v", got)
	}
	if got := dropsBy(t, tp.node2, d2)[DropNotFromNode]; got < 4*n {
		t.Errorf("node2 counted %d %s drops, want ≥ %d", got, DropNotFromNode, 4*n)
	}
	drops1 := dropsBy(t, tp.node1, d1)
	if drops1[DropFromPod] < 2*n || drops1[DropNotFromNode] < n {
		t.Errorf("node1 drops %v, want ≥ %d %s and ≥ %d %s", drops1, 2*n, DropFromPod, n, DropNotFromNode)
	}

	// node1 believes eg-a selects pod1b too; node2, the holder, does not
	// (views differ during a change). node2 must drop what node1 sends
	// rather than let it out with a source the Egress does not own.
	stale := desiredFor(false, 1)
	stale.Egresses[0].AllPodIPs = append(stale.Egresses[0].AllPodIPs, netip.MustParseAddr("10.244.1.3"))
	apply(t, tp.node1, d1, stale)
	tp.pod1b.MustRun(t, "ip", "route", "del", extAddr+"/32", "dev", "inj0")
	sendUDP(t, tp.pod1b, "10.244.1.3:0", extAddr+":9999", n)
	time.Sleep(300 * time.Millisecond)
	if got := extSink.Counts(); len(got) != 0 {
		t.Errorf("the external server received a Pod the holder does not select, by source: %v", got)
	}
	if got := dropsBy(t, tp.node2, d2)[DropNotSelected]; got < n {
		t.Errorf("node2 counted %d %s drops, want ≥ %d", got, DropNotSelected, n)
	}

	// What the tunnel is for still works, both ways.
	apply(t, tp.node1, d1, desiredFor(false, 1))
	sendUDP(t, tp.pod1a, "10.244.1.2:0", extAddr+":9999", 5)
	time.Sleep(200 * time.Millisecond)
	if got := extSink.Counts(); got[egIP.String()] != 5 || len(got) != 1 {
		t.Errorf("selected pod's datagrams seen by source %v, want 5 from %s", got, egIP)
	}
	if got := seenAs(t, tp.pod1a, ext); got != egIP.String() {
		t.Errorf("selected pod on node1 seen as %s", got)
	}
	if got := seenAs(t, tp.pod2a, ext); got != egIP.String() {
		t.Errorf("selected pod on node2 seen as %s", got)
	}
}

// TestHeldIPsExpireWithoutRenewal: held egress IPs carry a lifetime that
// only a live helper renews. Renewed every second they stay; left alone
// (the helper died) the kernel removes them within the lifetime plus its
// one-second check, and so stops answering ARP for them.
func TestHeldIPsExpireWithoutRenewal(t *testing.T) {
	tp := newTopo(t)
	d2 := newDatapath(t, tp.node2, "192.0.2.12", -1)
	apply(t, tp.node2, d2, desiredFor(true, 1))
	held := func() bool {
		return strings.Contains(tp.node2.MustRun(t, "ip", "-o", "addr", "show", "dev", "eth0"), egIP.String()+"/32")
	}
	out := tp.node2.MustRun(t, "ip", "-o", "addr", "show", "dev", "eth0", "label", "eth0:sl")
	if !strings.Contains(out, "valid_lft 4sec") {
		t.Fatalf("held address without the 4 s lifetime: %s", out)
	}
	if out, err := tp.ext.Run("ping", "-c", "1", "-W", "1", egIP.String()); err != nil {
		t.Fatalf("the held egress IP does not answer: %v %s", err, out)
	}
	// A live helper: RenewHeld every second for longer than the lifetime.
	for range 7 {
		time.Sleep(time.Second)
		if err := tp.node2.Do(func() error { return d2.RenewHeld(context.Background()) }); err != nil {
			t.Fatal(err)
		}
		if !held() {
			t.Fatal("a renewed address expired")
		}
	}
	// Renewals are not writes: an Apply after them writes nothing.
	if n := apply(t, tp.node2, d2, desiredFor(true, 1)); n != 0 {
		t.Errorf("Apply after renewals wrote %d times", n)
	}
	start := time.Now()
	for held() {
		if time.Since(start) > 8*time.Second {
			t.Fatal("the address outlived its lifetime by far")
		}
		time.Sleep(50 * time.Millisecond)
	}
	gone := time.Since(start)
	t.Logf("address gone %v after the last renewal", gone.Round(10*time.Millisecond))
	if gone > 5*time.Second {
		t.Errorf("address gone after %v, want ≤ 5 s", gone)
	}
	// The ext server's ARP for the egress IP is no longer answered.
	tp.ext.MustRun(t, "ip", "neigh", "flush", "dev", "eth0")
	if _, err := tp.ext.Run("ping", "-c", "1", "-W", "1", egIP.String()); err == nil {
		t.Error("the egress IP still answers after it expired")
	}
}
