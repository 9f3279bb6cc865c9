package datapath

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/pkg/nstest"
	"github.com/vishvananda/netlink"
)

var (
	ip1a  = netip.MustParseAddr("10.244.1.2")
	ip2a  = netip.MustParseAddr("10.244.2.2")
	node1 = netip.MustParseAddr("192.0.2.11")
	node2 = netip.MustParseAddr("192.0.2.12")
	egIP  = netip.MustParseAddr("203.0.113.10")
)

// desiredFor is the state of Egress "eg-a" (203.0.113.10, held by node2,
// selecting pod1a and pod2a) as node1 or node2 sees it.
func desiredFor(onNode2 bool, id uint16) Desired {
	e := EgressState{Name: "eg-a", EgressIP: egIP, ID: id, AllPodIPs: []netip.Addr{ip1a, ip2a}, OwnerNodeIP: node2}
	d := Desired{NodeIPs: []netip.Addr{node1, node2}}
	if onNode2 {
		e.Local, e.LocalPodIPs = true, []netip.Addr{ip2a}
		d.HeldIPs = []netip.Addr{egIP}
		d.RemotePods = []RemotePod{{IP: ip1a, NodeIP: node1}}
	} else {
		e.LocalPodIPs = []netip.Addr{ip1a}
	}
	d.Egresses = []EgressState{e}
	return d
}

func TestEgressDatapath(t *testing.T) {
	tp := newTopo(t)
	ext := extAddr + ":8080"
	serveSource(t, tp.ext, ext)
	serveSource(t, tp.pod2a, "10.244.2.2:8080")
	d1, d2 := newDatapath(t, tp.node1, "192.0.2.11", -1), newDatapath(t, tp.node2, "192.0.2.12", -1)

	if got := seenAs(t, tp.pod1a, ext); got != "192.0.2.11" {
		t.Fatalf("before Apply pod1a seen as %s, want node IP", got)
	}
	// Objects of others that Sluice must leave alone, including a
	// kube-proxy-style mark in low bits on every packet.
	foreign := [][]string{
		{"ip", "rule", "add", "prio", "9800", "fwmark", "0x1", "lookup", "100"},
		{"ip", "route", "add", "198.51.100.0/24", "dev", "eth0", "table", "100"},
		{"ipset", "create", "KUBE-TEST", "hash:ip"},
		{"iptables", "-t", "mangle", "-A", "PREROUTING", "-j", "MARK", "--set-xmark", "0x4000/0x4000"},
		{"ip", "addr", "add", "198.51.100.7/32", "dev", "eth0", "label", "eth0:x"},
	}
	for _, c := range foreign {
		tp.node1.MustRun(t, c[0], c[1:]...)
	}
	apply(t, tp.node2, d2, desiredFor(true, 1))
	apply(t, tp.node1, d1, desiredFor(false, 1))

	checkPaths := func(t *testing.T) {
		t.Helper()
		for _, c := range []struct {
			name string
			from *nstest.NS
			to   string
			want string
		}{
			{"pod on node1 via egress node2", tp.pod1a, ext, "203.0.113.10"},
			{"pod on egress node", tp.pod2a, ext, "203.0.113.10"},
			{"unselected pod keeps node IP", tp.pod1b, ext, "192.0.2.11"},
			{"pod to pod across nodes untouched", tp.pod1a, "10.244.2.2:8080", "10.244.1.2"},
			{"node's own traffic untouched", tp.node1, ext, "192.0.2.11"},
		} {
			if got := seenAs(t, c.from, c.to); got != c.want {
				t.Errorf("%s: seen as %s, want %s", c.name, got, c.want)
			}
		}
	}
	t.Run("paths", checkPaths)

	t.Run("rp_filter stays 1 everywhere", func(t *testing.T) {
		for _, n := range []*nstest.NS{tp.node1, tp.node2} {
			ifcs := append(links(t, n), "all", "default")
			if !strings.Contains(strings.Join(ifcs, " "), "sluice.vxlan") {
				t.Fatalf("%s has no tunnel device: %v", n.Name, ifcs)
			}
			for _, ifc := range ifcs {
				key := "net.ipv4.conf." + strings.ReplaceAll(ifc, ".", "/") + ".rp_filter"
				if v := strings.TrimSpace(n.MustRun(t, "sysctl", "-n", key)); v != "1" {
					t.Errorf("%s %s=%s", n.Name, key, v)
				}
			}
		}
	})

	t.Run("no routing loop", func(t *testing.T) {
		for _, n := range []*nstest.NS{tp.node1, tp.node2} {
			var st *netlink.LinkStatistics
			if err := n.Do(func() error {
				l, err := netlink.LinkByName(DefaultTunnelDev)
				if err == nil {
					st = l.Attrs().Statistics
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if st.TxErrors != 0 || st.Collisions != 0 || st.TxPackets == 0 {
				t.Errorf("%s tunnel tx packets %d errors %d collisions %d", n.Name, st.TxPackets, st.TxErrors, st.Collisions)
			}
		}
	})

	t.Run("second Apply writes nothing", func(t *testing.T) {
		start := time.Now()
		if n := apply(t, tp.node1, d1, desiredFor(false, 1)); n != 0 {
			t.Errorf("node1: %d writes", n)
		}
		t.Logf("no-op Apply took %v", time.Since(start))
		if n := apply(t, tp.node2, d2, desiredFor(true, 1)); n != 0 {
			t.Errorf("node2: %d writes", n)
		}
	})

	t.Run("drift is repaired", func(t *testing.T) {
		tp.node2.MustRun(t, "iptables", "-t", "nat", "-D", ChainPostrouting, "2")
		tp.node1.MustRun(t, "ip", "rule", "del", "prio", "9930")
		tp.node1.MustRun(t, "ip", "route", "flush", "table", "10001")
		// A primary CNI rule inserted above our jump.
		tp.node2.MustRun(t, "iptables", "-t", "nat", "-I", "POSTROUTING", "1", "-s", "10.244.2.0/24", "!", "-d", clusterA, "-j", "MASQUERADE")
		tp.node2.MustRun(t, "ipset", "del", EgressSetName("eg-a"), "10.244.1.2")
		// Broken, the path fails closed: the exit guard drops what the
		// MASQUERADE rewrote, so the connection times out.
		if c, err := dialFrom(tp.pod1a, ext); err == nil {
			src, err := c.ask()
			c.c.Close()
			t.Fatalf("drift did not break the path (seen as %q, %v); test proves nothing", src, err)
		}
		if n := apply(t, tp.node1, d1, desiredFor(false, 1)); n == 0 {
			t.Error("node1: no writes to repair drift")
		}
		if n := apply(t, tp.node2, d2, desiredFor(true, 1)); n == 0 {
			t.Error("node2: no writes to repair drift")
		}
		first := strings.Split(tp.node2.MustRun(t, "iptables", "-t", "nat", "-S", "POSTROUTING"), "\n")[1]
		if first != "-A POSTROUTING -j "+ChainPostrouting {
			t.Errorf("jump not first again: %q", first)
		}
		checkPaths(t)
	})

	t.Run("record skips read-back until resync", func(t *testing.T) {
		const period = 1500 * time.Millisecond
		r := newDatapath(t, tp.node1, "192.0.2.11", period)
		apply(t, tp.node1, r, desiredFor(false, 1)) // no record yet: full read
		expires := r.applied.verified.Add(period)
		tp.node1.MustRun(t, "ip", "rule", "del", "prio", "9930")
		n := apply(t, tp.node1, r, desiredFor(false, 1))
		repaired := !time.Now().Before(expires) // a slow machine got past the period
		if !repaired && n != 0 {
			t.Errorf("within the period Apply read back and wrote %d", n)
		}
		time.Sleep(time.Until(expires))
		if n := apply(t, tp.node1, r, desiredFor(false, 1)); !repaired && n != 1 {
			t.Errorf("after the period Apply made %d writes, want 1 (the rule)", n)
		}
		if got := seenAs(t, tp.pod1a, ext); got != "203.0.113.10" {
			t.Errorf("seen as %s", got)
		}
	})

	t.Run("restart converges without flushing", func(t *testing.T) {
		conn, err := dialFrom(tp.pod1a, ext)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.c.Close()
		if src, err := conn.ask(); err != nil || src != "203.0.113.10" {
			t.Fatalf("before restart: %s %v", src, err)
		}
		r1 := newDatapath(t, tp.node1, "192.0.2.11", -1)
		var ids map[netip.Addr]uint16
		if err := tp.node1.Do(func() (err error) { ids, err = r1.CurrentIDs(context.Background()); return err }); err != nil {
			t.Fatal(err)
		}
		// A fresh assignment would pick 1 as well; ask for another IP
		// first to prove the kernel's assignment wins.
		got := AssignIDs(ids, []netip.Addr{netip.MustParseAddr("203.0.113.1"), egIP})
		if got[egIP] != 1 {
			t.Fatalf("ids after restart %v (read back %v), want %v→1", got, ids, egIP)
		}
		if n := apply(t, tp.node1, r1, desiredFor(false, got[egIP])); n != 0 {
			t.Errorf("restart Apply made %d writes", n)
		}
		if src, err := conn.ask(); err != nil || src != "203.0.113.10" {
			t.Errorf("established connection after restart: %s %v", src, err)
		}
	})

	t.Run("stats count traffic", func(t *testing.T) {
		var st Stats
		if err := tp.node1.Do(func() (err error) { st, err = d1.Stats(context.Background()); return err }); err != nil {
			t.Fatal(err)
		}
		var marked uint64
		for _, r := range st.Rules {
			if r.EgressIP == egIP && r.Set == EgressSetName("eg-a") {
				marked += r.Packets
			}
		}
		if marked == 0 || len(st.Sets) != 3 {
			t.Errorf("stats: marked packets %d, sets %+v", marked, st.Sets)
		}
	})

	t.Run("owner gone falls back to node IP", func(t *testing.T) {
		want := desiredFor(false, 1)
		want.Egresses[0].OwnerNodeIP = netip.Addr{}
		apply(t, tp.node1, d1, want)
		if got := seenAs(t, tp.pod1a, ext); got != "192.0.2.11" {
			t.Errorf("seen as %s, want node IP", got)
		}
		apply(t, tp.node1, d1, desiredFor(false, 1))
	})

	t.Run("owner moves to node1 without restart", func(t *testing.T) {
		// node1 now holds the IP; node2 redirects pod2a to node1.
		on1, on2 := desiredFor(false, 1), desiredFor(true, 1)
		on1.Egresses[0].OwnerNodeIP, on1.Egresses[0].Local = node1, true
		on1.HeldIPs, on1.RemotePods = []netip.Addr{egIP}, []RemotePod{{IP: ip2a, NodeIP: node2}}
		on2.Egresses[0].OwnerNodeIP, on2.Egresses[0].Local = node1, false
		on2.HeldIPs, on2.RemotePods = nil, nil
		apply(t, tp.node2, d2, on2)
		apply(t, tp.node1, d1, on1)
		tp.ext.MustRun(t, "ip", "neigh", "flush", "dev", "eth0") // what pkg/garp's announcement achieves
		for _, p := range []*nstest.NS{tp.pod1a, tp.pod2a} {
			if got := seenAs(t, p, ext); got != "203.0.113.10" {
				t.Errorf("%s after move seen as %s", p.Name, got)
			}
		}
		if out := tp.node2.MustRun(t, "ip", "addr", "show", "dev", "eth0"); strings.Contains(out, "203.0.113.10") {
			t.Errorf("node2 still holds the egress IP: %s", out)
		}
		apply(t, tp.node1, d1, desiredFor(false, 1))
		apply(t, tp.node2, d2, desiredFor(true, 1))
		tp.ext.MustRun(t, "ip", "neigh", "flush", "dev", "eth0")
		t.Run("and back", checkPaths)
	})

	t.Run("uninstall leaves nothing", func(t *testing.T) {
		for _, c := range []struct {
			n *nstest.NS
			d *Datapath
		}{{tp.node1, d1}, {tp.node2, d2}} {
			if err := c.n.Do(func() error { return c.d.Uninstall(context.Background()) }); err != nil {
				t.Fatal(err)
			}
			for _, cmd := range [][]string{
				{"iptables-save"}, {"ipset", "list", "-n"}, {"ip", "rule"}, {"ip", "route", "show", "table", "all"},
				{"ip", "addr"}, {"ip", "link"}, {"ip", "neigh"},
			} {
				out := c.n.MustRun(t, cmd[0], cmd[1:]...)
				for _, bad := range []string{"SLUICE", "sluice", "eth0:sl", "99", "table 1000", "203.0.113.10"} {
					for _, line := range strings.Split(out, "\n") {
						if strings.Contains(line, bad) && !(bad == "99" && !strings.HasPrefix(line, "99")) {
							t.Errorf("%s: %v still shows %q: %s", c.n.Name, cmd, bad, line)
						}
					}
				}
			}
		}
		if got := seenAs(t, tp.pod1a, ext); got != "192.0.2.11" {
			t.Errorf("after uninstall seen as %s, want node IP", got)
		}
		for probe, cmd := range map[string][]string{
			"9800:":                     {"ip", "rule"},
			"198.51.100.0/24":           {"ip", "route", "show", "table", "100"},
			"KUBE-TEST":                 {"ipset", "list", "-n"},
			"--set-xmark 0x4000/0x4000": {"iptables-save", "-t", "mangle"},
			"-s 10.244.1.0/24 ! -d 10.244.0.0/16 -j MASQUERADE": {"iptables-save", "-t", "nat"},
			"198.51.100.7/32": {"ip", "addr", "show", "dev", "eth0"},
		} {
			if out := tp.node1.MustRun(t, cmd[0], cmd[1:]...); !strings.Contains(out, probe) {
				t.Errorf("foreign object %q gone after Apply/Uninstall: %s", probe, out)
			}
		}
		before := d1.writes
		if err := tp.node1.Do(func() error { return d1.Uninstall(context.Background()) }); err != nil || d1.writes != before {
			t.Errorf("second Uninstall: %v, %d writes", err, d1.writes-before)
		}
	})
}
