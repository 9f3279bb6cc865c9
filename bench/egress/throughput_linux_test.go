package egressbench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/bench"
	"github.com/sluicenet/sluice/integration/cluster"
	"github.com/sluicenet/sluice/pkg/datapath"
	"github.com/sluicenet/sluice/pkg/nstest"
)

const iperfPort = "5201"

// TestThroughput compares iperf3 from a Pod on node-c through its egress
// IP held on node-a (VXLAN to node-a, SNAT there) against two baselines,
// all interleaved in one run:
//   - node-c itself straight to the external server (the ratio to direct,
//     which includes what any remote leg costs on this machine, where both
//     "Nodes'" forwarding runs on the sender's two cores);
//   - a bare tunnel: the same remote leg built by hand in the same
//     cluster (a second VXLAN device, one rule and route each way, one SNAT
//     rule, no Sluice rules) from a Pod on node-c that no Egress selects.
//     Sluice ÷ bare is what Sluice itself costs.
//
// A fourth series, a Pod on node-a under the same Egress, leaves through
// its own Node (marked and SNATed, no tunnel). Sluice, bare and direct are
// also run with two parallel streams (iperf3 -P 2).
// SLUICE_BENCH_ROUNDS (default 5) and SLUICE_BENCH_SECONDS (default 5)
// set the rounds and each run's length.
//
//	SLUICE_BENCH=1 SLUICE_BENCH_RECORD=1 go test -run TestThroughput -timeout 30m ./bench/egress/
func TestThroughput(t *testing.T) {
	bench.Require(t)
	rounds := bench.EnvInt(t, "SLUICE_BENCH_ROUNDS", 5, 1, 50)
	secs := bench.EnvInt(t, "SLUICE_BENCH_SECONDS", 5, 1, 60)
	ctx := context.Background()
	c := cluster.New(t, cluster.Options{Nodes: 3, Sluice: true, Masquerade: cluster.MasqueradeNode})
	dumpOnFailure(t, c)
	startHelpers(t, c)
	egressIP := netip.MustParseAddr("192.0.2.201")
	nodeRun(t, c, "node-a", "ip", "addr", "add", egressIP.String()+"/32", "dev", "eth0")
	const ns = "tput"
	if err := c.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	remote, err := c.AddPod(ctx, "node-c", ns, "client", map[string]string{"app": "iperf"})
	if err != nil {
		t.Fatal(err)
	}
	local, err := c.AddPod(ctx, "node-a", ns, "local", map[string]string{"app": "iperf"})
	if err != nil {
		t.Fatal(err)
	}
	pods := []*cluster.Pod{remote, local}
	bareNS := "tput-bare" // selected by no Egress
	if err := c.CreateNamespace(ctx, bareNS, nil); err != nil {
		t.Fatal(err)
	}
	barePod, err := c.AddPod(ctx, "node-c", bareNS, "client", map[string]string{"app": "iperf"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SluiceClient().SluiceV1alpha1().Egresses().Create(ctx, staticEgress("tput", egressIP, ns), createOpts); err != nil {
		t.Fatal(err)
	}
	if _, err := waitAll(ctx, c, pods, func(*cluster.Pod) netip.Addr { return egressIP }); err != nil {
		t.Fatal(err)
	}
	bareIP := netip.MustParseAddr("192.0.2.202")
	bareTunnel(t, c, barePod, "node-a", bareIP)
	if os.Getenv("SLUICE_BENCH_DIAG") != "" {
		logLinks(t, c, remote)
	}
	ext := c.Ext[0]
	srv := ext.NS.Cmd("iperf3", "-s", "-B", ext.IP.String(), "-p", iperfPort)
	if err := srv.Start(); err != nil {
		t.Fatalf("iperf3 server: %v", err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	time.Sleep(300 * time.Millisecond) // let the server listen

	series := []struct {
		name    string
		from    *nstest.NS
		streams int
		gbps    []float64
	}{
		{"pod via remote egress Node", remote.NS, 1, nil},
		{"bare tunnel", barePod.NS, 1, nil},
		{"node direct", c.Node("node-c").NS, 1, nil},
		{"pod via its own egress Node", local.NS, 1, nil},
		{"pod via remote egress Node, 2 streams", remote.NS, 2, nil},
		{"bare tunnel, 2 streams", barePod.NS, 2, nil},
		{"node direct, 2 streams", c.Node("node-c").NS, 2, nil},
	}
	for i := range rounds {
		// Rotate which goes first, so none always runs on a warm or
		// a cold machine.
		for k := range series {
			s := &series[(i+k)%len(series)]
			bps, err := iperf(ctx, s.from, ext.IP.String(), secs, s.streams)
			if err != nil {
				t.Fatalf("round %d (%s): %v", i, s.name, err)
			}
			s.gbps = append(s.gbps, bps/1e9)
		}
	}
	// The bare leg really crossed its tunnel: only node-a's hand-built
	// SNAT rule gives bareIP.
	if got, err := c.Whoami(ctx, barePod); err != nil || got != bareIP {
		t.Fatalf("after the runs the bare-tunnel Pod leaves as %s (%v), want %s", got, err, bareIP)
	}
	// The Pods' traffic really took the egress path.
	for _, p := range pods {
		if got, err := c.Whoami(ctx, p); err != nil || got != egressIP {
			t.Fatalf("after the runs %s leaves as %s (%v), want %s", p.Name, got, err, egressIP)
		}
	}
	for _, s := range series {
		t.Logf("%s Gbit/s: %.2f", s.name, s.gbps)
	}
	med := make([]float64, len(series))
	for i, s := range series {
		med[i] = bench.Median(s.gbps)
	}
	podMed, bareMed, nodeMed, localMed, pod2, bare2, node2 := med[0], med[1], med[2], med[3], med[4], med[5], med[6]
	cmd := "SLUICE_BENCH=1 SLUICE_BENCH_RECORD=1 go test -run TestThroughput -timeout 30m ./bench/egress/"
	method := fmt.Sprintf("iperf3 TCP, %d rounds of %d s, seven series interleaved; ratios of medians. Sluice: a Pod on node-c "+
		"through its egress IP on node-a (VXLAN, MSS clamp, SNAT). Bare tunnel: a Pod on node-c that no Egress selects, "+
		"through a second VXLAN device to node-a built by hand (one rule and route each way, one SNAT rule, no Sluice rules). "+
		"Direct: node-c straight to the external server. veth/bridge in namespaces on 2 shared, busy cores.", rounds, secs)
	ratioNote := fmt.Sprintf("Sluice / direct, one stream (%.2f / %.2f Gbit/s). How every figure of this section is measured: %s", podMed, nodeMed, method)
	bareNote := fmt.Sprintf("Sluice / bare tunnel, one stream (%.2f / %.2f Gbit/s): what Sluice itself costs on the remote leg.", podMed, bareMed)
	bare2Note := fmt.Sprintf("Sluice / bare tunnel, two streams (iperf3 -P 2; %.2f / %.2f Gbit/s).", pod2, bare2)
	two2Note := fmt.Sprintf("Sluice / direct, two streams (iperf3 -P 2; %.2f / %.2f Gbit/s).", pod2, node2)
	localNote := fmt.Sprintf("A Pod on node-a, the Node holding the egress IP (marked and SNATed there, no tunnel), "+
		"vs node-c straight to the external server, one stream (%.2f / %.2f Gbit/s): the rest of throughput_ratio's gap is the remote leg.",
		localMed, nodeMed)
	const seriesNote = "Median of one series, one stream; the ratios are made of these."
	bench.Report(t,
		bench.Figure{Name: "throughput_ratio", Value: podMed / nodeMed, Unit: "ratio", Target: ">= 0.8", Command: cmd, Note: ratioNote},
		bench.Figure{Name: "throughput_vs_bare_tunnel_ratio", Value: podMed / bareMed, Unit: "ratio", Target: ">= 0.95", Command: cmd, Note: bareNote},
		bench.Figure{Name: "throughput_two_stream_vs_bare_tunnel_ratio", Value: pod2 / bare2, Unit: "ratio", Target: ">= 0.95", Command: cmd, Note: bare2Note},
		bench.Figure{Name: "throughput_two_stream_ratio", Value: pod2 / node2, Unit: "ratio", Command: cmd, Note: two2Note},
		bench.Figure{Name: "throughput_pod_gbps", Value: podMed, Unit: "Gbit/s", Command: cmd, Note: seriesNote},
		bench.Figure{Name: "throughput_bare_tunnel_gbps", Value: bareMed, Unit: "Gbit/s", Command: cmd, Note: seriesNote},
		bench.Figure{Name: "throughput_node_gbps", Value: nodeMed, Unit: "Gbit/s", Command: cmd, Note: seriesNote},
		bench.Figure{Name: "throughput_local_egress_ratio", Value: localMed / nodeMed, Unit: "ratio", Command: cmd, Note: localNote},
	)
}

// bareTunnel builds by hand, for pod alone, the remote leg Sluice builds:
// pod's Node sends pod's packets through a VXLAN device of its own (VNI
// and port apart from Sluice's, the same kernel defaults otherwise) to
// holder, which SNATs them to egressIP on its uplink; the de-SNATed
// replies come back through the tunnel, which strict rp_filter needs on
// both ends. Nothing of Sluice's is involved: no mark, ipset or chain.
func bareTunnel(t *testing.T, c *cluster.Cluster, pod *cluster.Pod, holder string, egressIP netip.Addr) {
	t.Helper()
	const (
		dev   = "bare.vxlan"
		vni   = "4097"
		port  = "8478"
		table = "4097"
	)
	src, dst := pod.Node, c.Node(holder)
	// Sluice's own tunnel device sets the MTU (uplink less the VXLAN
	// overhead), so both legs carry the same segments.
	mtu := strings.TrimSpace(nodeRun(t, c, src.Name, "cat", "/sys/class/net/"+datapath.DefaultTunnelDev+"/mtu"))
	macs := map[string]string{src.Name: "02:00:00:00:0b:01", dst.Name: "02:00:00:00:0b:02"}
	for _, end := range []struct{ n, peer *cluster.Node }{{src, dst}, {dst, src}} {
		nodeRun(t, c, end.n.Name, "ip", "link", "add", dev, "address", macs[end.n.Name], "type", "vxlan", "id", vni,
			"dstport", port, "local", end.n.IP.String(), "remote", end.peer.IP.String(), "dev", "eth0", "nolearning")
		nodeRun(t, c, end.n.Name, "ip", "link", "set", dev, "mtu", mtu, "up")
		nodeRun(t, c, end.n.Name, "ip", "neigh", "replace", end.peer.IP.String(), "lladdr", macs[end.peer.Name],
			"dev", dev, "nud", "permanent")
	}
	// node-c: the Pod's packets (and the reverse-path check of the
	// replies) use the tunnel, unmasqueraded.
	nodeRun(t, c, src.Name, "ip", "rule", "add", "from", pod.IP.String(), "lookup", table, "priority", "100")
	nodeRun(t, c, src.Name, "ip", "route", "add", "default", "via", dst.IP.String(), "dev", dev, "onlink", "table", table)
	nodeRun(t, c, src.Name, "iptables", "-t", "nat", "-I", "POSTROUTING", "1", "-o", dev, "-j", "ACCEPT")
	// holder: SNAT out of the uplink; the way back to the Pod is the tunnel.
	nodeRun(t, c, dst.Name, "ip", "addr", "add", egressIP.String()+"/32", "dev", "eth0")
	nodeRun(t, c, dst.Name, "ip", "route", "add", pod.IP.String()+"/32", "via", src.IP.String(), "dev", dev, "onlink")
	nodeRun(t, c, dst.Name, "iptables", "-t", "nat", "-I", "POSTROUTING", "1", "-s", pod.IP.String(), "-o", "eth0",
		"-j", "SNAT", "--to-source", egressIP.String())
	if os.Getenv("SLUICE_BENCH_DIAG") != "" {
		for _, n := range []*cluster.Node{src, dst} {
			t.Logf("tunnels on %s:\n%s", n.Name, nodeRun(t, c, n.Name, "ip", "-d", "link", "show", "type", "vxlan"))
		}
	}
}

// iperf runs an iperf3 client with streams parallel streams inside from
// for secs seconds and returns
// the received rate in bit/s.
func iperf(ctx context.Context, from *nstest.NS, server string, secs, streams int) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs+30)*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", from.Name, "iperf3", "-c", server, "-p", iperfPort,
		"-t", strconv.Itoa(secs), "-P", strconv.Itoa(streams), "-J")
	out, err := cmd.Output()
	if bps, perr := iperfBits(out); perr == nil {
		return bps, nil
	} else if err != nil {
		return 0, fmt.Errorf("iperf3 from %s: %w: %s", from.Name, err, out)
	} else {
		return 0, perr
	}
}

// logLinks logs the links on the Pod's path with their GSO/GRO limits and,
// when ethtool is installed, their offload features (diagnosis only).
func logLinks(t *testing.T, c *cluster.Cluster, p *cluster.Pod) {
	t.Helper()
	for _, ns := range []*nstest.NS{p.NS, c.Node("node-c").NS, c.Node("node-a").NS, c.Ext[0].NS} {
		out, _ := ns.Run("ip", "-d", "link", "show")
		t.Logf("links in %s:\n%s", ns.Name, out)
		if _, err := exec.LookPath("ethtool"); err == nil {
			for _, dev := range []string{"eth0", "cni0", "sluice.vxlan"} {
				if out, err := ns.Run("ethtool", "-k", dev); err == nil {
					t.Logf("ethtool -k %s in %s:\n%s", dev, ns.Name, out)
				}
			}
		}
	}
}
