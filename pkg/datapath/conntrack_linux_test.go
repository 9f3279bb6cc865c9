package datapath

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sluicenet/sluice/pkg/nstest"
)

// TestConntrackHygiene: when an egress IP moves, established flows are
// decided afresh and go on with the egress IP through the new holder,
// instead of being dropped by the exit guard (or, without it, leaving with
// a Pod's or a Node's address). The transitions: a takeover under a flow
// that went through the tunnel, the move back under a flow SNATed locally,
// a Pod unselected under a flow, and a restarted helper, which must remove
// nothing.
func TestConntrackHygiene(t *testing.T) {
	tp := newTopo(t)
	wire := newWireCounter(t, tp.ext, "10.244.0.0/16", "192.0.2.11", "192.0.2.12", egIP.String())
	sink(t, tp.ext, extAddr+":9999")
	d1, d2 := newDatapath(t, tp.node1, "192.0.2.11", -1), newDatapath(t, tp.node2, "192.0.2.12", -1)
	onNode1 := func() {
		apply(t, tp.node1, d1, desiredOn1(1))
		d := desiredFor(false, 1)
		d.Egresses[0].OwnerNodeIP, d.Egresses[0].LocalPodIPs = node1, []netip.Addr{ip2a}
		apply(t, tp.node2, d2, d)
	}
	onNode2 := func() {
		apply(t, tp.node2, d2, desiredFor(true, 1))
		apply(t, tp.node1, d1, desiredFor(false, 1))
	}
	const n = 10
	total := map[string]uint64{}
	send := func(step, from string, want string) {
		t.Helper()
		ns := map[string]*nstest.NS{"10.244.1.2": tp.pod1a, "10.244.2.2": tp.pod2a}[from]
		sendUDP(t, ns, from+":41000", extAddr+":9999", n)
		time.Sleep(100 * time.Millisecond)
		total[want] += n
		got := wire.seen()
		for src, c := range got {
			if c != total[src] {
				t.Errorf("%s: the server saw %v, want %v", step, got, total)
				return
			}
		}
	}
	onNode2()
	send("pod1a through the tunnel", "10.244.1.2", egIP.String())
	send("pod2a on the holder", "10.244.2.2", egIP.String())
	onNode1()
	send("takeover: pod1a's flow, now local", "10.244.1.2", egIP.String())
	send("takeover: pod2a's flow, now through the tunnel", "10.244.2.2", egIP.String())
	onNode2()
	send("move back: pod1a's flow", "10.244.1.2", egIP.String())
	send("move back: pod2a's flow", "10.244.2.2", egIP.String())

	// A restarted helper (a new Datapath) with the same state removes
	// nothing: the flows go on as they were.
	before := d2.writes
	r2 := newDatapath(t, tp.node2, "192.0.2.12", -1)
	if w := apply(t, tp.node2, r2, desiredFor(true, 1)); w != 0 {
		t.Errorf("a restarted helper's first Apply wrote %d times (before: %d)", w, before)
	}
	send("after a restart: pod2a's flow", "10.244.2.2", egIP.String())

	// pod2a is no longer selected: its flow leaves with node2's IP (the
	// primary CNI's masquerade), not with the egress IP.
	unsel := desiredFor(true, 1)
	unsel.Egresses[0].AllPodIPs, unsel.Egresses[0].LocalPodIPs = []netip.Addr{ip1a}, nil
	apply(t, tp.node2, r2, unsel)
	send("unselected: pod2a's flow", "10.244.2.2", "192.0.2.12")
	if got := exitDropsIn(t, tp.node1, d1)[ExitDropWrongSource] + exitDropsIn(t, tp.node2, r2)[ExitDropWrongSource]; got != 0 {
		t.Errorf("the exit guards dropped %d packets: hygiene left a stale entry", got)
	}
}
