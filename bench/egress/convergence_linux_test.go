package egressbench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicenet/sluice/bench"
	"github.com/sluicenet/sluice/integration/cluster"
	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
)

// convergeLimit bounds one wait; beyond it the datapath is broken, not slow.
const convergeLimit = 20 * time.Second

// attemptTimeout bounds one whoami: connect and answer on an idle lan take
// a few ms.
const attemptTimeout = 300 * time.Millisecond

// TestConvergence times, on three Nodes with the egress IP held by hand
// on node-a and two selected Pods per Node, how long an Egress create and
// a Namespace label change that moves the Pods into an Egress take to show
// at the external server for every selected Pod. Each trial is undone
// (delete, unlabel) and waited out before the next. SLUICE_BENCH_TRIALS
// sets the trials per kind (default 20).
//
//	SLUICE_BENCH=1 SLUICE_BENCH_RECORD=1 go test -run TestConvergence -timeout 30m ./bench/egress/
func TestConvergence(t *testing.T) {
	bench.Require(t)
	trials := bench.EnvInt(t, "SLUICE_BENCH_TRIALS", 20, 1, 500)
	ctx := context.Background()
	c := cluster.New(t, cluster.Options{Nodes: 3, Sluice: true, Masquerade: cluster.MasqueradeNode, KeepDir: os.Getenv("SLUICE_KEEP") != ""})
	dumpOnFailure(t, c)
	startHelpers(t, c)
	egressIP := netip.MustParseAddr("192.0.2.201")
	nodeRun(t, c, "node-a", "ip", "addr", "add", egressIP.String()+"/32", "dev", "eth0")
	const ns = "conv"
	if err := c.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	var pods []*cluster.Pod
	for _, n := range c.Nodes {
		for k := range 2 {
			p, err := c.AddPod(ctx, n.Name, ns, fmt.Sprintf("web-%s-%d", n.Name, k), map[string]string{"app": "web"})
			if err != nil {
				t.Fatal(err)
			}
			pods = append(pods, p)
		}
	}
	nodeIP := func(p *cluster.Pod) netip.Addr { return p.Node.IP }
	toEgress := func(*cluster.Pod) netip.Addr { return egressIP }
	if _, err := waitAll(ctx, c, pods, nodeIP); err != nil {
		t.Fatalf("before any Egress: %v", err)
	}
	egs := c.SluiceClient().SluiceV1alpha1().Egresses()
	// The relabel kind's Egress stays; it selects the Namespace only while
	// it carries team=conv.
	if _, err := egs.Create(ctx, &v1alpha1.Egress{ObjectMeta: metav1.ObjectMeta{Name: "conv-team"},
		Spec: v1alpha1.EgressSpec{EgressIP: egressIP.String(), AppliedTo: v1alpha1.AppliedTo{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "conv"}}}}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	create := func() error {
		_, err := egs.Create(ctx, &v1alpha1.Egress{ObjectMeta: metav1.ObjectMeta{Name: "conv-create"},
			Spec: v1alpha1.EgressSpec{EgressIP: egressIP.String(), AppliedTo: v1alpha1.AppliedTo{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}},
				PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}},
			metav1.CreateOptions{})
		return err
	}
	undoCreate := func() error { return egs.Delete(ctx, "conv-create", metav1.DeleteOptions{}) }
	relabel := func() error { return c.LabelNamespace(ctx, ns, map[string]string{"team": "conv"}) }
	undoRelabel := func() error { return c.LabelNamespace(ctx, ns, nil) }

	var creates, relabels []float64
	for i := range trials {
		for _, k := range []struct {
			name     string
			do, undo func() error
			out      *[]float64
		}{{"create", create, undoCreate, &creates}, {"relabel", relabel, undoRelabel, &relabels}} {
			t0 := time.Now()
			if err := k.do(); err != nil {
				t.Fatalf("%s trial %d: %v", k.name, i, err)
			}
			if _, err := waitAll(ctx, c, pods, toEgress); err != nil {
				t.Fatalf("%s trial %d: %v", k.name, i, err)
			}
			*k.out = append(*k.out, ms(time.Since(t0)))
			t.Logf("%s trial %d started %s: %.0f ms", k.name, i, t0.UTC().Format("15:04:05.000"), ms(time.Since(t0)))
			if err := k.undo(); err != nil {
				t.Fatalf("undo %s trial %d: %v", k.name, i, err)
			}
			if _, err := waitAll(ctx, c, pods, nodeIP); err != nil {
				t.Fatalf("undo %s trial %d: %v", k.name, i, err)
			}
		}
	}
	all := append(append([]float64{}, creates...), relabels...)
	p99, med := bench.Quantile(all, 0.99), bench.Median(all)
	note := fmt.Sprintf("%d trials each of an Egress create and of a Namespace relabel moving %d Pods (2 per Node, 3 Nodes, "+
		"egress IP held by hand on node-a) into an Egress, timed until the external server saw the egress IP from every Pod "+
		"(per-Pod whoami polls in parallel, 300 ms attempt timeout); p99 by nearest rank (max below 100 samples). create p99 %.0f / median %.0f ms; "+
		"relabel p99 %.0f / median %.0f ms. 2 shared, busy cores.",
		trials, len(pods), bench.Quantile(creates, 0.99), bench.Median(creates), bench.Quantile(relabels, 0.99), bench.Median(relabels))
	t.Logf("create ms: %s", fmtMs(creates))
	t.Logf("relabel ms: %s", fmtMs(relabels))
	cmd := "SLUICE_BENCH=1 SLUICE_BENCH_RECORD=1 go test -run TestConvergence -timeout 30m ./bench/egress/"
	bench.Report(t,
		bench.Figure{Name: "convergence_p99_ms", Value: p99, Unit: "ms", Target: "<= 500", Command: cmd, Note: note},
		bench.Figure{Name: "convergence_median_ms", Value: med, Unit: "ms", Command: cmd, Note: "Context for convergence_p99_ms, same run. " + note},
	)
}

// waitAll polls every Pod's whoami in parallel, each Pod in its own loop
// of short attempts, until each has seen want(pod) once, and returns how
// long the slowest took. A short attempt timeout keeps a SYN lost while the
// Nodes switch over (a Pod's Node tunnels before the holder SNATs) from
// adding a full SYN retransmission to the figure.
func waitAll(ctx context.Context, c *cluster.Cluster, pods []*cluster.Pod, want func(*cluster.Pod) netip.Addr) (time.Duration, error) {
	t0 := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	late := map[string]string{}
	for _, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := "no answer"
			for time.Since(t0) < convergeLimit {
				qctx, cancel := context.WithTimeout(ctx, attemptTimeout)
				got, err := c.Whoami(qctx, p)
				cancel()
				if err == nil && got == want(p) {
					return
				}
				if err == nil {
					last = got.String()
				}
				time.Sleep(5 * time.Millisecond)
			}
			mu.Lock()
			late[p.String()] = last
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(late) > 0 {
		return 0, fmt.Errorf("after %s, %d Pods still not seen with their expected source (last seen: %v)", convergeLimit, len(late), late)
	}
	return time.Since(t0), nil
}
