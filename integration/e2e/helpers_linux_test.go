package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/helperd/inspect"
	"github.com/sluicenet/sluice/integration/cluster"
	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluicenet/sluice/pkg/nstest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// eventually retries fn until it succeeds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = fn(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// expectSource waits until the external server sees want as the Pod's source.
func expectSource(t *testing.T, c *cluster.Cluster, p *cluster.Pod, want netip.Addr, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("%s leaves as %s", p, want), func() error {
		got, err := c.Whoami(context.Background(), p)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("external server saw %s", got)
		}
		return nil
	})
}

func mustPod(t *testing.T, c *cluster.Cluster, node, ns, name string, labels map[string]string) *cluster.Pod {
	t.Helper()
	p, err := c.AddPod(context.Background(), node, ns, name, labels)
	if err != nil {
		t.Fatalf("add pod %s/%s on %s: %v", ns, name, node, err)
	}
	return p
}

func staticEgress(name, ip, ns string, podLabels map[string]string) *v1alpha1.Egress {
	eg := &v1alpha1.Egress{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.EgressSpec{EgressIP: ip,
		AppliedTo: v1alpha1.AppliedTo{NamespaceSelector: &metav1.LabelSelector{
			MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}}}}}
	if podLabels != nil {
		eg.Spec.AppliedTo.PodSelector = &metav1.LabelSelector{MatchLabels: podLabels}
	}
	return eg
}

func createEgress(t *testing.T, c *cluster.Cluster, eg *v1alpha1.Egress) {
	t.Helper()
	if _, err := c.SluiceClient().SluiceV1alpha1().Egresses().Create(context.Background(), eg, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create egress %s: %v", eg.Name, err)
	}
}

func deleteEgress(t *testing.T, c *cluster.Cluster, name string) {
	t.Helper()
	if err := c.SluiceClient().SluiceV1alpha1().Egresses().Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete egress %s: %v", name, err)
	}
}

func getEgress(t *testing.T, c *cluster.Cluster, name string) *v1alpha1.Egress {
	t.Helper()
	eg, err := c.SluiceClient().SluiceV1alpha1().Egresses().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get egress %s: %v", name, err)
	}
	return eg
}

// updateEgress changes an Egress's spec, reading it afresh and retrying
// when the helpers' status writes got in between (409 Conflict).
func updateEgress(t *testing.T, c *cluster.Cluster, name string, change func(*v1alpha1.Egress)) {
	t.Helper()
	egs := c.SluiceClient().SluiceV1alpha1().Egresses()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		eg, err := egs.Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		change(eg)
		_, err = egs.Update(context.Background(), eg, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("update egress %s: %v", name, err)
	}
}

// cli runs `sluice-helperd <args> -o json` on a Node against its helper.
func cli(t *testing.T, c *cluster.Cluster, node string, v any, args ...string) {
	t.Helper()
	n := c.Node(node)
	full := append(append([]string{}, args...), "--status-socket="+n.Paths.StatusSock, "-o", "json")
	out, err := n.Exec(context.Background(), c.Opts.HelperBinary, full...)
	if err != nil {
		t.Fatalf("sluice-helperd %s on %s: %v\n%s", strings.Join(args, " "), node, err, out)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("sluice-helperd %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// rulePackets sums the counters of table's rules that name ip on node. The
// mangle mark rule counts every packet of a flow; a nat rule only counts a
// connection's first.
func rulePackets(t *testing.T, c *cluster.Cluster, node, table string, ip netip.Addr) uint64 {
	t.Helper()
	var rep inspect.DatapathReport
	cli(t, c, node, &rep, "datapath")
	var n uint64
	for _, ctr := range rep.Counters {
		if strings.HasPrefix(ctr.Object, table+"/") && strings.Contains(ctr.Detail, ip.String()) {
			n += ctr.Packets
		}
	}
	return n
}

// listenInPod serves one line, the caller's address, on port inside the Pod.
func listenInPod(t *testing.T, p *cluster.Pod, port int) {
	t.Helper()
	var l net.Listener
	if err := p.NS.Do(func() error {
		var err error
		l, err = net.Listen("tcp", net.JoinHostPort(p.IP.String(), fmt.Sprint(port)))
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", p, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(conn.RemoteAddr().String())
			fmt.Fprintln(conn, host)
			conn.Close()
		}
	}()
}

// podToPod returns the source address pod b saw from pod a.
func podToPod(ctx context.Context, a, b *cluster.Pod, port int) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := a.Dial(ctx, net.JoinHostPort(b.IP.String(), fmt.Sprint(port)))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

func startHelpers(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	if err := c.StartHelpers(context.Background(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// Serving its sockets is not yet answering on them.
	for _, n := range c.Nodes {
		eventually(t, 30*time.Second, "helper on "+n.Name+" answers", func() error {
			_, err := n.Exec(context.Background(), c.Opts.HelperBinary, "egresses", "--status-socket="+n.Paths.StatusSock)
			return err
		})
	}
}

func dumpOnFailure(t *testing.T, c *cluster.Cluster) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("helper logs:\n%s", c.LogTails(40))
		}
	})
}

// sluiceCluster starts a cluster of nodes Nodes and ext external servers
// with every helper running and answering, dumps its logs if the test
// fails, and keeps its directory when SLUICE_KEEP is set.
func sluiceCluster(t *testing.T, nodes, ext int) *cluster.Cluster {
	t.Helper()
	nstest.RequireRoot(t)
	c := cluster.New(t, cluster.Options{Nodes: nodes, ExtServers: ext, Sluice: true, KeepDir: os.Getenv("SLUICE_KEEP") != ""})
	dumpOnFailure(t, c)
	startHelpers(t, c)
	return c
}
