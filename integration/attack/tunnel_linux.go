package attack

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicenet/sluice/integration/cluster"
	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluicenet/sluice/pkg/nstest"
)

// Addresses of the tunnel scenario. The egress IPs are held by hand, as in
// the static e2e test, so no election is involved.
var (
	ProdIP    = netip.MustParseAddr("192.0.2.201") // held on node-a
	StagingIP = netip.MustParseAddr("192.0.2.202") // held on node-b
	RogueIP   = netip.MustParseAddr("192.0.2.66")  // a LAN host that is not a Node
)

// SinkPort is where the external server and the victim Pod count what
// reaches them.
const SinkPort = 9999

// TunnelResult is what the wire showed.
type TunnelResult struct {
	Vectors []string // one line per injection flow
	Sent    int      // frames sent, all vectors together
	// AtServer and AtPod count, by source address, the injected datagrams
	// the external server and the victim Pod (prod/web-a on node-a)
	// received. Both must stay empty.
	AtServer, AtPod map[string]int
	// Legit counts, by source, datagrams the selected Pods sent afterwards
	// through the same Nodes: they must all arrive, with their egress IP.
	Legit map[string]int
}

// Leaks is every injected datagram that was delivered anywhere.
func (r TunnelResult) Leaks() int {
	n := 0
	for _, v := range r.AtServer {
		n += v
	}
	for _, v := range r.AtPod {
		n += v
	}
	return n
}

// Tunnel injects forged VXLAN frames into a cluster whose helpers run:
// from a LAN host that is not a Node (at a Node IP and at a held egress
// IP, towards the server and towards a Pod), from an unselected Pod
// spoofing a selected one (at the egress Node, at an egress IP through
// its own Node, and at its own Node), and from a selected Pod spoofing a
// Pod of another Egress. perVector frames go into each flow. The cluster
// needs three Nodes and one external server.
func Tunnel(ctx context.Context, c *cluster.Cluster, perVector int) (TunnelResult, error) {
	var res TunnelResult
	for node, ip := range map[string]netip.Addr{"node-a": ProdIP, "node-b": StagingIP} {
		if out, err := c.Exec(ctx, node, "ip", "addr", "add", ip.String()+"/32", "dev", "eth0"); err != nil {
			return res, fmt.Errorf("hold %s on %s: %w: %s", ip, node, err, out)
		}
	}
	for _, ns := range []string{"prod", "staging", "other"} {
		if err := c.CreateNamespace(ctx, ns, nil); err != nil {
			return res, err
		}
	}
	pods := map[string]*cluster.Pod{}
	for _, p := range []struct{ key, node, ns string }{
		{"prodA", "node-a", "prod"}, {"prodC", "node-c", "prod"},
		{"stagingC", "node-c", "staging"}, {"otherC", "node-c", "other"},
	} {
		pod, err := c.AddPod(ctx, p.node, p.ns, "web-"+strings.ToLower(p.key), map[string]string{"app": "web"})
		if err != nil {
			return res, fmt.Errorf("add pod %s: %w", p.key, err)
		}
		pods[p.key] = pod
	}
	for name, eg := range map[string]struct {
		ip netip.Addr
		ns string
	}{"egress-prod": {ProdIP, "prod"}, "egress-staging": {StagingIP, "staging"}} {
		obj := &v1alpha1.Egress{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.EgressSpec{EgressIP: eg.ip.String(),
			AppliedTo: v1alpha1.AppliedTo{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{"kubernetes.io/metadata.name": eg.ns}}}}}
		if _, err := c.SluiceClient().SluiceV1alpha1().Egresses().Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			return res, fmt.Errorf("create egress %s: %w", name, err)
		}
	}
	for key, want := range map[string]netip.Addr{"prodC": ProdIP, "stagingC": StagingIP, "otherC": c.Node("node-c").IP} {
		if err := waitSource(ctx, c, pods[key], want); err != nil {
			return res, err
		}
	}
	rogue, err := c.AddHost("rogue", RogueIP)
	if err != nil {
		return res, err
	}
	ext := c.Ext[0]
	atServer, err := nstest.ListenUDP(ext.NS, netip.AddrPortFrom(ext.IP, SinkPort).String())
	if err != nil {
		return res, err
	}
	defer atServer.Close()
	victim := pods["prodA"]
	atPod, err := nstest.ListenUDP(victim.NS, netip.AddrPortFrom(victim.IP, SinkPort).String())
	if err != nil {
		return res, err
	}
	defer atPod.Close()

	nodeA, nodeB, nodeC := c.Node("node-a"), c.Node("node-b"), c.Node("node-c")
	server, pod := netip.AddrPortFrom(ext.IP, SinkPort), netip.AddrPortFrom(victim.IP, SinkPort)
	prodC, stagingC, otherC := pods["prodC"], pods["stagingC"], pods["otherC"]
	vectors := []cluster.Injection{
		{From: rogue, Spoof: prodC.IP, Node: nodeA, Outer: nodeA.IP, Inner: server},
		{From: rogue, Spoof: prodC.IP, Node: nodeA, Outer: ProdIP, Inner: server},
		{From: rogue, Spoof: prodC.IP, Node: nodeA, Outer: nodeA.IP, Inner: pod},
		{From: otherC.NS, Spoof: prodC.IP, Node: nodeA, Outer: nodeA.IP, Inner: server},
		{From: otherC.NS, Spoof: prodC.IP, Node: nodeA, Outer: ProdIP, Inner: server},
		{From: otherC.NS, Spoof: prodC.IP, Node: nodeC, Outer: nodeC.IP, Inner: pod},
		{From: prodC.NS, Spoof: stagingC.IP, Node: nodeB, Outer: nodeB.IP, Inner: server},
	}
	for _, v := range vectors {
		res.Vectors = append(res.Vectors, v.String())
	}
	injectErr := cluster.Inject(vectors, perVector)
	res.Sent = len(vectors) * perVector
	time.Sleep(500 * time.Millisecond) // let the last frames land
	res.AtServer, res.AtPod = atServer.Counts(), atPod.Counts()
	if injectErr != nil {
		return res, injectErr
	}

	// The tunnel still carries what it is for, through the same Nodes.
	atServer.Reset()
	for _, p := range []*cluster.Pod{prodC, stagingC} {
		if err := nstest.SendUDP(p.NS, netip.AddrPortFrom(p.IP, 0), server, 5); err != nil {
			return res, err
		}
	}
	time.Sleep(300 * time.Millisecond)
	res.Legit = maps.Clone(atServer.Counts())
	return res, nil
}

// waitSource waits until the external server sees p's traffic from want.
func waitSource(ctx context.Context, c *cluster.Cluster, p *cluster.Pod, want netip.Addr) error {
	deadline := time.Now().Add(30 * time.Second)
	var got netip.Addr
	var err error
	for time.Now().Before(deadline) {
		if got, err = c.Whoami(ctx, p); err == nil && got == want {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.Join(fmt.Errorf("%s: the server saw %v, want %v", p, got, want), err)
}
