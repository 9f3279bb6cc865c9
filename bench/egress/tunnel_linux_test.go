package egressbench

import (
	"context"
	"fmt"
	"testing"

	"github.com/sluicenet/sluice/bench"
	"github.com/sluicenet/sluice/integration/attack"
	"github.com/sluicenet/sluice/integration/cluster"
)

// TestTunnelInjection runs the tunnel-injection attack of integration/attack
// (seven forged-VXLAN flows from a LAN host that is not a Node, an
// unselected Pod and a selected Pod) at SLUICE_INJECT_PER_VECTOR frames per
// flow, and reports every injected datagram that the external server or the
// victim Pod received.
//
//	SLUICE_BENCH=1 SLUICE_BENCH_RECORD=1 go test -run TestTunnelInjection -timeout 30m ./bench/egress/
func TestTunnelInjection(t *testing.T) {
	bench.Require(t)
	perVector := bench.EnvInt(t, "SLUICE_INJECT_PER_VECTOR", 1500, 1, 100000)
	c := cluster.New(t, cluster.Options{Nodes: 3, ExtServers: 1, Sluice: true})
	dumpOnFailure(t, c)
	startHelpers(t, c)
	res, err := attack.Tunnel(context.Background(), c, perVector)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range res.Vectors {
		t.Log("vector ", v)
	}
	t.Logf("sent %d; delivered at the server %v, at the Pod %v; legitimate traffic afterwards %v", res.Sent, res.AtServer, res.AtPod, res.Legit)
	if res.Sent < 10000 {
		t.Logf("only %d frames sent; the figure asks for at least 10,000", res.Sent)
	}
	cmd := "SLUICE_BENCH=1 SLUICE_BENCH_RECORD=1 go test -run TestTunnelInjection -timeout 30m ./bench/egress/"
	note := fmt.Sprintf("%d forged VXLAN frames (%d flows × %d), spoofing selected Pods, at Node IPs and at a held egress IP, "+
		"towards the external server and a Pod; counted by UDP sinks on the server and in the Pod. On the code before "+
		"SLUICE-GUARD the same scenario delivered 1,400 of 1,400 frames of the e2e test's size.", res.Sent, len(res.Vectors), perVector)
	bench.Report(t, bench.Figure{Name: "tunnel_injected_leaks", Value: float64(res.Leaks()), Unit: "packets", Target: "== 0", Command: cmd, Note: note})
}
