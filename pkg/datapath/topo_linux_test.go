package datapath

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/pkg/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// topo is two nodes and an external server on one L2 segment (a bridge in
// "lan"), with Pods behind each node's cni0 bridge, host-gw routes between
// the Pod CIDRs and a primary-CNI-style MASQUERADE on each node.
//
//	pod1a 10.244.1.2 (selected)   ┐            ┌ pod2a 10.244.2.2 (selected)
//	pod1b 10.244.1.3 (unselected) ┴ node1 .11 ─ lan ─ node2 .12 (holds 203.0.113.10)
//	                                    ext 192.0.2.100
type topo struct {
	lan, node1, node2, ext, pod1a, pod1b, pod2a *nstest.NS
}

const (
	extAddr  = "192.0.2.100"
	extPort  = 8080
	clusterA = "10.244.0.0/16"
	svcCIDR  = "10.96.0.0/12"
)

func newTopo(t *testing.T) *topo {
	t.Helper()
	nstest.RequireRoot(t)
	lan := nstest.NewLAN(t, "lan")
	tp := &topo{
		lan: lan.NS, node1: nstest.New(t, "node1"), node2: nstest.New(t, "node2"),
		ext: nstest.New(t, "ext"), pod1a: nstest.New(t, "pod1a"), pod1b: nstest.New(t, "pod1b"), pod2a: nstest.New(t, "pod2a"),
	}
	for _, m := range []struct {
		n    *nstest.NS
		addr string
	}{{tp.node1, "192.0.2.11/24"}, {tp.node2, "192.0.2.12/24"}, {tp.ext, extAddr + "/24"}} {
		// rp_filter=1 everywhere in the nodes, before any interface exists,
		// so every interface (the tunnel too) inherits it from default.
		if m.n != tp.ext {
			for _, k := range []string{"net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf.default.rp_filter=1", "net.ipv4.ip_forward=1"} {
				m.n.MustRun(t, "sysctl", "-qw", k)
			}
		}
		lan.Plug(t, m.n, "eth0", m.addr)
	}
	// Egress IPs are answered by whichever node holds them (ARP on the lan).
	tp.ext.MustRun(t, "ip", "route", "add", "203.0.113.0/24", "dev", "eth0")
	addPods(t, tp.node1, "10.244.1", tp.pod1a, tp.pod1b)
	addPods(t, tp.node2, "10.244.2", tp.pod2a)
	tp.node1.MustRun(t, "ip", "route", "add", "10.244.2.0/24", "via", "192.0.2.12")
	tp.node2.MustRun(t, "ip", "route", "add", "10.244.1.0/24", "via", "192.0.2.11")
	for _, n := range []*nstest.NS{tp.node1, tp.node2} {
		for _, ifc := range links(t, n) {
			n.MustRun(t, "sysctl", "-qw", "net.ipv4.conf."+strings.ReplaceAll(ifc, ".", "/")+".rp_filter=1")
		}
	}
	return tp
}

// addPods gives node a cni0 bridge at <prefix>.1/24 and one veth per Pod,
// and masquerades Pod traffic leaving the cluster, as bridge+host-local do.
func addPods(t *testing.T, node *nstest.NS, prefix string, pods ...*nstest.NS) {
	node.MustRun(t, "ip", "link", "add", "cni0", "type", "bridge")
	node.MustRun(t, "ip", "addr", "add", prefix+".1/24", "dev", "cni0")
	node.MustRun(t, "ip", "link", "set", "cni0", "up")
	for i, p := range pods {
		host := fmt.Sprintf("veth%d", i)
		nstest.Veth(t, node, host, p, "eth0")
		node.MustRun(t, "ip", "link", "set", host, "master", "cni0")
		p.MustRun(t, "ip", "addr", "add", fmt.Sprintf("%s.%d/24", prefix, i+2), "dev", "eth0")
		p.MustRun(t, "ip", "route", "add", "default", "via", prefix+".1")
	}
	node.MustRun(t, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", prefix+".0/24", "!", "-d", clusterA, "-j", "MASQUERADE")
}

var linkLine = regexp.MustCompile(`^\d+: ([^:@ ]+)[@:]`)

// links lists n's interface names.
func links(t *testing.T, n *nstest.NS) []string {
	var out []string
	for _, l := range strings.Split(n.MustRun(t, "ip", "-o", "link", "show"), "\n") {
		if m := linkLine.FindStringSubmatch(l); m != nil {
			out = append(out, m[1])
		}
	}
	return out
}

// serveSource listens on addr inside n and answers every line it reads
// with the remote address it saw. The socket stays in n.
func serveSource(t *testing.T, n *nstest.NS, addr string) {
	t.Helper()
	var ln net.Listener
	if err := n.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
				r := bufio.NewReader(c)
				for {
					if _, err := r.ReadString('\n'); err != nil {
						return
					}
					if _, err := fmt.Fprintln(c, host); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// sourceConn is a client connection made from inside a namespace.
type sourceConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialFrom(n *nstest.NS, addr string) (*sourceConn, error) {
	var c net.Conn
	err := n.Do(func() (err error) { c, err = net.DialTimeout("tcp", addr, 3*time.Second); return err })
	if err != nil {
		return nil, err
	}
	return &sourceConn{c: c, r: bufio.NewReader(c)}, nil
}

// ask returns the source address the server saw for this connection.
func (s *sourceConn) ask() (string, error) {
	_ = s.c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintln(s.c, "who"); err != nil {
		return "", err
	}
	line, err := s.r.ReadString('\n')
	return strings.TrimSpace(line), err
}

// seenAs opens a new connection from n to addr and returns the source the
// server saw.
func seenAs(t *testing.T, n *nstest.NS, addr string) string {
	t.Helper()
	c, err := dialFrom(n, addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, n.Name, err)
	}
	defer c.c.Close()
	src, err := c.ask()
	if err != nil {
		t.Fatalf("ask %s from %s: %v", addr, n.Name, err)
	}
	return src
}

// apply runs Apply in node's namespace and returns how many kernel writes
// it made.
func apply(t *testing.T, n *nstest.NS, d *Datapath, want Desired) int {
	t.Helper()
	var writes int
	err := n.Do(func() error {
		before := d.writes
		err := d.Apply(context.Background(), want)
		writes = d.writes - before
		return err
	})
	if err != nil {
		t.Fatalf("apply in %s: %v", n.Name, err)
	}
	return writes
}

// newDatapath makes a Datapath for n. resync is Config.ResyncPeriod; most
// tests use -1 so that every Apply reads the kernel back in full.
func newDatapath(t *testing.T, n *nstest.NS, nodeIP string, resync time.Duration) *Datapath {
	t.Helper()
	var d *Datapath
	err := n.Do(func() (err error) {
		d, err = New(Config{Uplink: "eth0", NodeIP: netip.MustParseAddr(nodeIP),
			ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix(clusterA), netip.MustParsePrefix(svcCIDR)},
			ResyncPeriod: resync}, nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}
