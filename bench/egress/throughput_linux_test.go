package egressbench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/sluicenet/sluice/bench"
	"github.com/sluicenet/sluice/integration/cluster"
	"github.com/sluicenet/sluice/pkg/nstest"
)

const iperfPort = "5201"

// TestThroughput compares iperf3 from a Pod on node-c through its egress
// IP held on node-a (VXLAN to node-a, SNAT there) against iperf3 from
// node-c itself straight to the external server, interleaved in one run.
// A third series, a Pod on node-a under the same Egress, leaves through
// its own Node (marked and SNATed, no tunnel): it separates what the
// remote leg costs from what Sluice's marking and SNAT cost.
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
	if _, err := c.SluiceClient().SluiceV1alpha1().Egresses().Create(ctx, staticEgress("tput", egressIP, ns), createOpts); err != nil {
		t.Fatal(err)
	}
	if _, err := waitAll(ctx, c, pods, func(*cluster.Pod) netip.Addr { return egressIP }); err != nil {
		t.Fatal(err)
	}
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
		name string
		from *nstest.NS
		gbps []float64
	}{
		{"pod via remote egress Node", remote.NS, nil},
		{"node direct", c.Node("node-c").NS, nil},
		{"pod via its own egress Node", local.NS, nil},
	}
	for i := range rounds {
		// Rotate which goes first, so none always runs on a warm or
		// a cold machine.
		for k := range series {
			s := &series[(i+k)%len(series)]
			bps, err := iperf(ctx, s.from, ext.IP.String(), secs)
			if err != nil {
				t.Fatalf("round %d (%s): %v", i, s.name, err)
			}
			s.gbps = append(s.gbps, bps/1e9)
		}
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
	podMed, nodeMed, localMed := bench.Median(series[0].gbps), bench.Median(series[1].gbps), bench.Median(series[2].gbps)
	ratio := podMed / nodeMed
	cmd := "SLUICE_BENCH=1 SLUICE_BENCH_RECORD=1 go test -run TestThroughput -timeout 30m ./bench/egress/"
	note := fmt.Sprintf("iperf3 TCP, %d rounds of %d s, three series interleaved: a Pod on node-c through its egress IP on node-a "+
		"(VXLAN, MSS clamp, SNAT) vs node-c straight to the external server; ratio of medians "+
		"(%.2f / %.2f Gbit/s). veth/bridge in namespaces on 2 shared, busy cores.", rounds, secs, podMed, nodeMed)
	localNote := fmt.Sprintf("Same run: a Pod on node-a, the Node holding the egress IP (marked and SNATed there, no tunnel), "+
		"vs node-c straight to the external server; ratio of medians (%.2f / %.2f Gbit/s). Context for throughput_ratio: "+
		"the rest of the gap is the remote leg.", localMed, nodeMed)
	bench.Report(t,
		bench.Figure{Name: "throughput_ratio", Value: ratio, Unit: "ratio", Target: ">= 0.8", Command: cmd, Note: note},
		bench.Figure{Name: "throughput_pod_gbps", Value: podMed, Unit: "Gbit/s", Command: cmd, Note: "Context for throughput_ratio. " + note},
		bench.Figure{Name: "throughput_node_gbps", Value: nodeMed, Unit: "Gbit/s", Command: cmd, Note: "Context for throughput_ratio. " + note},
		bench.Figure{Name: "throughput_local_egress_ratio", Value: localMed / nodeMed, Unit: "ratio", Command: cmd, Note: localNote},
	)
}

// iperf runs an iperf3 client inside from for secs seconds and returns
// the received rate in bit/s.
func iperf(ctx context.Context, from *nstest.NS, server string, secs int) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs+30)*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", from.Name, "iperf3", "-c", server, "-p", iperfPort,
		"-t", strconv.Itoa(secs), "-J")
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
