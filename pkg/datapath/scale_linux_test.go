package datapath

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/pkg/nstest"
)

// scaleDesired is 1,000 Egresses of 10 Pods each (10,000 Pods), owned by
// ten other nodes, as node 192.0.2.11 sees them.
func scaleDesired() Desired {
	var d Desired
	for i := range 1000 {
		e := EgressState{
			Name:        fmt.Sprintf("eg-%04d", i),
			EgressIP:    netip.AddrFrom4([4]byte{203, 0, 113, 0}).Next(), // replaced below
			ID:          uint16(i + 1),
			OwnerNodeIP: netip.AddrFrom4([4]byte{192, 0, 2, byte(20 + i%10)}),
		}
		e.EgressIP = netip.AddrFrom4([4]byte{198, 51, byte(100 + i/250), byte(i % 250)})
		for j := range 10 {
			e.AllPodIPs = append(e.AllPodIPs, netip.AddrFrom4([4]byte{10, 244, byte(i / 25), byte((i%25)*10 + j)}))
		}
		d.Egresses = append(d.Egresses, e)
	}
	for i := range 13 {
		d.NodeIPs = append(d.NodeIPs, netip.AddrFrom4([4]byte{192, 0, 2, byte(11 + i)}))
	}
	return d
}

// TestScale reports how long Apply takes for 1,000 Egresses and 10,000
// Pods: from nothing, with nothing to do, and for one Pod more.
func TestScale(t *testing.T) {
	if testing.Short() {
		t.Skip("scale in -short mode")
	}
	node, peer := nstest.New(t, "scale"), nstest.New(t, "scalepeer")
	nstest.Veth(t, node, "eth0", peer, "eth0")
	node.MustRun(t, "ip", "addr", "add", "192.0.2.11/24", "dev", "eth0")
	d := newDatapath(t, node, "192.0.2.11", time.Hour)
	full := newDatapath(t, node, "192.0.2.11", -1)
	want := scaleDesired()

	start := time.Now()
	first := apply(t, node, d, want)
	t.Logf("converge from empty: %v, %d writes", time.Since(start), first)

	// The exit guard's sets hold every Pod (10,000 elements take several
	// netlink messages).
	var holds bool
	if err := node.Do(func() (err error) { holds, err = exitGuardHolds(BuildExitGuard(d.cfg, want)); return err }); err != nil || !holds {
		t.Errorf("exit guard holds the desired sets: %v (%v)", holds, err)
	}
	start = time.Now()
	if n := apply(t, node, full, want); n != 0 {
		t.Errorf("no-op apply with full read-back made %d writes", n)
	}
	t.Logf("no-op apply, full read-back: %v", time.Since(start))
	start = time.Now()
	if n := apply(t, node, d, want); n != 0 {
		t.Errorf("no-op apply made %d writes", n)
	}
	t.Logf("no-op apply from the record: %v", time.Since(start))

	want.Egresses[500].AllPodIPs = append(want.Egresses[500].AllPodIPs, netip.MustParseAddr("10.244.250.1"))
	start = time.Now()
	if n := apply(t, node, d, want); n != 2 {
		t.Errorf("one new Pod made %d writes, want 2 (one ipset restore, one exit guard transaction)", n)
	}
	t.Logf("one Pod added: %v", time.Since(start))

	for _, c := range [][]string{{"iptables-save", "-t", "mangle"}, {"iptables-save", "-t", "nat"}, {"ipset", "save"}, {"ip", "rule"}, {"ip", "route", "show", "table", "all"}} {
		s := time.Now()
		node.MustRun(t, c[0], c[1:]...)
		t.Logf("%v: %v", c, time.Since(s))
	}
	rules := 0
	for _, table := range []string{"mangle", "nat"} {
		rules += strings.Count(node.MustRun(t, "iptables-save", "-t", table), "\n-A ")
	}
	ipRules := strings.Count(node.MustRun(t, "ip", "rule"), "\n")
	t.Logf("iptables rules: %d, ip rules: %d", rules, ipRules)
	if rules > 1000+20 {
		t.Errorf("%d iptables rules for 1000 Egresses: not O(#Egress)", rules)
	}
}
