package egressbench

import (
	"context"
	"net/netip"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicenet/sluice/integration/cluster"
	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluicenet/sluice/pkg/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// startHelpers starts the helper on every Node and waits for its sockets.
func startHelpers(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	if err := c.StartHelpers(context.Background(), 60*time.Second); err != nil {
		t.Fatal(err)
	}
}

// dumpOnFailure logs the helpers' log tails when the test fails.
func dumpOnFailure(t *testing.T, c *cluster.Cluster) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("helper logs:\n%s", c.LogTails(60))
		}
	})
}

// nodeRun runs a command inside node's namespace and fails the test on error.
func nodeRun(t *testing.T, c *cluster.Cluster, node string, name string, args ...string) string {
	t.Helper()
	out, err := c.Exec(context.Background(), node, name, args...)
	if err != nil {
		t.Fatalf("%s %v on %s: %v\n%s", name, args, node, err, out)
	}
	return out
}

var createOpts = metav1.CreateOptions{}

// staticEgress selects every Pod of namespace ns onto ip.
func staticEgress(name string, ip netip.Addr, ns string) *v1alpha1.Egress {
	return &v1alpha1.Egress{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.EgressSpec{EgressIP: ip.String(),
		AppliedTo: v1alpha1.AppliedTo{NamespaceSelector: &metav1.LabelSelector{
			MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}}}}}
}
