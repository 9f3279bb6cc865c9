package datapath

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/sluicenet/sluice/pkg/nstest"
)

// iperf runs an iperf3 client from n to the external server and returns
// the received rate in bit/s.
func iperf(t *testing.T, n *nstest.NS, seconds int) float64 {
	t.Helper()
	out, err := n.Cmd("iperf3", "-c", extAddr, "-t", fmt.Sprint(seconds), "-J").Output()
	if err != nil {
		t.Fatalf("iperf3 from %s: %v: %s", n.Name, err, out)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			SumSent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("parse iperf3 output: %v", err)
	}
	t.Logf("%s: %.2f Gbit/s, %d retransmits", n.Name, res.End.SumReceived.BitsPerSecond/1e9, res.End.SumSent.Retransmits)
	return res.End.SumReceived.BitsPerSecond
}

// TestThroughput measures Pod→external through a remote egress node
// against node→external directly, in the same run. The target (a ratio
// of at least 0.8) is the benchmark's (make bench BENCH_ONLY=throughput);
// this test only catches a datapath that wrecks throughput (a ratio below
// 0.25: an MTU or offload mistake costs far more). Under make test other
// packages share the two cores, and the same commit measured 0.37 and 0.64
// in back-to-back runs, so 0.5 failed healthy code.
func TestThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("throughput in -short mode")
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("no iperf3")
	}
	tp := newTopo(t)
	d1, d2 := newDatapath(t, tp.node1, "192.0.2.11", -1), newDatapath(t, tp.node2, "192.0.2.12", -1)
	apply(t, tp.node2, d2, desiredFor(true, 1))
	apply(t, tp.node1, d1, desiredFor(false, 1))
	srv := tp.ext.Cmd("iperf3", "-s", "-B", extAddr)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	time.Sleep(300 * time.Millisecond)
	// The egress path is proven by TestEgressDatapath; here check the
	// traffic really took the tunnel.
	if got := seenAsIperfPath(t, tp); got != "203.0.113.10" {
		t.Fatalf("pod1a seen as %s", got)
	}
	// Interleaved rounds, median of each, so load from other work on the
	// machine hits both sides alike.
	const secs, rounds = 3, 3
	var direct, tunneled []float64
	for range rounds {
		direct = append(direct, iperf(t, tp.node1, secs))
		tunneled = append(tunneled, iperf(t, tp.pod1a, secs))
	}
	ratio := median(tunneled) / median(direct)
	t.Logf("throughput ratio (pod via remote egress node / node direct): %.2f", ratio)
	if ratio < 0.25 {
		t.Errorf("ratio %.2f below 0.25", ratio)
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func seenAsIperfPath(t *testing.T, tp *topo) string {
	serveSource(t, tp.ext, extAddr+":8081")
	return seenAs(t, tp.pod1a, extAddr+":8081")
}
