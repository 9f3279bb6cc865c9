package datapath

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sluicenet/sluice/pkg/nstest"
)

// udpSink counts, by source address, the UDP packets that reach addr
// inside n: what the external server (or a Pod) saw.
type udpSink struct {
	mu   sync.Mutex
	from map[string]int
}

func newUDPSink(t *testing.T, n *nstest.NS, addr string) *udpSink {
	t.Helper()
	var pc net.PacketConn
	if err := n.Do(func() (err error) { pc, err = net.ListenPacket("udp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	s := &udpSink{from: map[string]int{}}
	go func() {
		buf := make([]byte, 2048)
		for {
			_, src, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(src.String())
			s.mu.Lock()
			s.from[host]++
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *udpSink) snapshot() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.from))
	for k, v := range s.from {
		out[k] = v
	}
	return out
}

// sendUDP sends count datagrams from src (an address of n) to dst.
func sendUDP(t *testing.T, n *nstest.NS, src, dst string, count int) {
	t.Helper()
	err := n.Do(func() error {
		c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(src)), net.UDPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
		if err != nil {
			return err
		}
		defer c.Close()
		for range count {
			if _, err := c.Write([]byte("injected")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send %s→%s in %s: %v", src, dst, n.Name, err)
	}
}

// injector gives n a VXLAN device of the cluster's VNI and port, with no
// remote of its own: spoofed is added as its address, and inject sends
// inner packets from it to a chosen Node's tunnel MAC at a chosen outer
// address. This is what any host with a UDP socket can do.
type injector struct {
	n       *nstest.NS
	spoofed string
}

func newInjector(t *testing.T, n *nstest.NS, spoofed string) *injector {
	t.Helper()
	n.MustRun(t, "ip", "link", "add", "inj0", "type", "vxlan", "id", "4096", "dstport", "8477", "nolearning")
	n.MustRun(t, "ip", "link", "set", "inj0", "address", "02:66:66:66:66:66", "up")
	n.MustRun(t, "ip", "addr", "add", spoofed+"/32", "dev", "inj0")
	return &injector{n: n, spoofed: spoofed}
}

// inject sends count inner datagrams spoofed → innerDst:9999, carried to
// the tunnel MAC of node at outer address outerDst.
func (j *injector) inject(t *testing.T, node netip.Addr, outerDst, innerDst string, count int) {
	t.Helper()
	mac := TunnelMAC(node).String()
	j.n.MustRun(t, "bridge", "fdb", "replace", mac, "dev", "inj0", "dst", outerDst)
	j.n.MustRun(t, "ip", "route", "replace", innerDst+"/32", "dev", "inj0", "src", j.spoofed)
	j.n.MustRun(t, "ip", "neigh", "replace", innerDst, "lladdr", mac, "dev", "inj0", "nud", "permanent")
	sendUDP(t, j.n, j.spoofed+":0", innerDst+":9999", count)
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
	extSink := newUDPSink(t, tp.ext, extAddr+":9999")
	podSink := newUDPSink(t, tp.pod2a, "10.244.2.2:9999")
	d1, d2 := newDatapath(t, tp.node1, "192.0.2.11", -1), newDatapath(t, tp.node2, "192.0.2.12", -1)
	apply(t, tp.node2, d2, desiredFor(true, 1))
	apply(t, tp.node1, d1, desiredFor(false, 1))
	if got := seenAs(t, tp.pod1a, ext); got != egIP.String() {
		t.Fatalf("selected pod seen as %s before any attack", got)
	}

	const n = 300
	// A LAN host, spoofing the selected pod1a, at node2's IP and at the
	// egress IP node2 holds; towards the server and towards pod2a.
	lanInj := newInjector(t, rogue, "10.244.1.2")
	for _, outer := range []string{"192.0.2.12", egIP.String()} {
		lanInj.inject(t, node2, outer, extAddr, n)
		lanInj.inject(t, node2, outer, "10.244.2.2", n)
	}
	// The unselected pod1b, spoofing pod1a: at node2 (forwarded by node1,
	// masqueraded to node1's IP by the primary CNI) and at its own node1.
	podInj := newInjector(t, tp.pod1b, "10.244.1.2")
	podInj.inject(t, node2, "192.0.2.12", extAddr, n)
	podInj.inject(t, node2, "192.0.2.12", "10.244.2.2", n)
	podInj.inject(t, node1, "192.0.2.11", "10.244.2.2", n)

	time.Sleep(300 * time.Millisecond)
	if got := extSink.snapshot(); len(got) != 0 {
		t.Errorf("the external server received injected packets, by source: %v", got)
	}
	if got := podSink.snapshot(); len(got) != 0 {
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
	if got := extSink.snapshot(); len(got) != 0 {
		t.Errorf("the external server received a Pod the holder does not select, by source: %v", got)
	}
	if got := dropsBy(t, tp.node2, d2)[DropNotSelected]; got < n {
		t.Errorf("node2 counted %d %s drops, want ≥ %d", got, DropNotSelected, n)
	}

	// What the tunnel is for still works, both ways.
	apply(t, tp.node1, d1, desiredFor(false, 1))
	sendUDP(t, tp.pod1a, "10.244.1.2:0", extAddr+":9999", 5)
	time.Sleep(200 * time.Millisecond)
	if got := extSink.snapshot(); got[egIP.String()] != 5 || len(got) != 1 {
		t.Errorf("selected pod's datagrams seen by source %v, want 5 from %s", got, egIP)
	}
	if got := seenAs(t, tp.pod1a, ext); got != egIP.String() {
		t.Errorf("selected pod on node1 seen as %s", got)
	}
	if got := seenAs(t, tp.pod2a, ext); got != egIP.String() {
		t.Errorf("selected pod on node2 seen as %s", got)
	}
}
