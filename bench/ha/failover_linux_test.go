package habench

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/sluicenet/sluice/bench"
	"github.com/sluicenet/sluice/integration/cluster"
	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
)

// Bounds of one trial. trialWindow caps how long the probe watches one
// failure; tail is how long it keeps going after both the probe recovered
// and the status moved, so a hiccup at the takeover shows in MaxGap.
const (
	egressName   = "egress-prod-web"
	trialWindow  = 20 * time.Second
	trialTail    = time.Second
	settleStable = 5 * time.Second
	settleLimit  = 90 * time.Second
)

// failureKind is one way to fail the owner, and how to repair it.
type failureKind struct {
	name         string
	fail, repair func(ctx context.Context, node string) error
	// fenced: the owner's helper stops, so its kernel must drop the IP
	// within the held-IP lifetime (stale_holder_fence_s).
	fenced bool
}

func failureKinds(c *cluster.Cluster) []failureKind {
	return []failureKind{
		{"helper_kill", func(_ context.Context, n string) error { return c.KillHelper(n) },
			func(ctx context.Context, n string) error {
				if err := c.StartHelper(n); err != nil {
					return err
				}
				return c.WaitHelper(ctx, n, 30*time.Second)
			}, true},
		{"uplink_down", c.UplinkDown, c.UplinkUp, false},
		{"node_freeze", func(_ context.Context, n string) error { return c.FreezeNode(n) },
			func(_ context.Context, n string) error { return c.ThawNode(n) }, true},
		{"node_halt", c.HaltNode, c.ResumeNode, true},
	}
}

// TestFailover is the failover benchmark: SLUICE_BENCH_TRIALS trials
// (default 20) of each failure kind, interleaved round by round so machine
// noise hits every kind alike, with --restart-grace=0 (every kind moves
// the IP at once).
func TestFailover(t *testing.T) {
	bench.Require(t)
	trials := bench.EnvInt(t, "SLUICE_BENCH_TRIALS", 20, 1, 200)
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Minute)
	defer cancel()
	// Immediate takeover: with the default restart grace a killed helper
	// or a frozen Node moves nothing (TestRestart measures that).
	c := startCluster(t, "--restart-grace=0")
	pods := webOnEveryNode(ctx, t, c)
	var results []Trial
	for round := range trials {
		for _, k := range failureKinds(c) {
			tr, err := runTrial(ctx, t, c, k, pods)
			if err != nil {
				t.Fatalf("round %d, %s: %v", round+1, k.name, err)
			}
			t.Logf("round %d %-11s failover %6.3fs maxgap %6.3fs takeover %6.3fs (moved %v) fence %6.3fs (%v) sent %d lost %d wrong-source %d",
				round+1, k.name, tr.Failover.Seconds(), tr.MaxGap.Seconds(), tr.Takeover.Seconds(), tr.TookOver, tr.Fence.Seconds(), tr.Fenced, tr.Sent, tr.Lost, tr.Wrong)
			results = append(results, tr)
		}
	}
	figs := FailoverFigures(results, probeNote)
	bench.Log(t, figs...)
	for _, tr := range results {
		if !tr.Recovered {
			t.Fatalf("a %s trial never saw the egress IP again within %s: the benchmark is broken, nothing recorded", tr.Kind, trialWindow)
		}
	}
	bench.RecordIfAsked(t, figs...)
}

// runTrial settles the cluster, probes from a Pod off the owner, fails the
// owner, watches until the probe recovered and the status moved, repairs.
func runTrial(ctx context.Context, t *testing.T, c *cluster.Cluster, k failureKind, pods []*cluster.Pod) (Trial, error) {
	st, err := settle(ctx, c, egressName, settleStable, settleLimit)
	if err != nil {
		return Trial{}, err
	}
	var p *cluster.Pod
	for _, q := range pods {
		if q.Node.Name != st.Node {
			p = q
			break
		}
	}
	mv, err := watchMove(ctx, c, st.Node)
	if err != nil {
		return Trial{}, err
	}
	defer mv.stop()
	pr := startProbe(ctx, p, c.Ext[0].Addr())
	defer pr.stop()
	time.Sleep(500 * time.Millisecond)
	if !okBefore(pr.snapshot(), st) {
		return Trial{}, fmt.Errorf("probe from %s does not see %s before the failure", p, st.IP)
	}

	failStart := time.Now()
	if err := k.fail(ctx, st.Node); err != nil {
		_ = k.repair(ctx, st.Node)
		return Trial{}, fmt.Errorf("fail %s: %w", st.Node, err)
	}
	failEnd := time.Now()
	var fence <-chan time.Duration
	if k.fenced {
		fence = watchFence(ctx, c, st.Node, st.IP, failStart)
	}
	var doneAt time.Time
	for time.Since(failStart) < trialWindow {
		tr := Analyze(k.name, pr.snapshot(), st.IP, failStart, failEnd)
		if _, moved := mv.when(); tr.Recovered && moved && doneAt.IsZero() {
			doneAt = time.Now()
		}
		if !doneAt.IsZero() && time.Since(doneAt) >= trialTail {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	samples := pr.stop()
	tr := Analyze(k.name, samples, st.IP, failStart, failEnd)
	logWrong(t, samples, st.IP, failStart, mv)
	if at, moved := mv.when(); moved {
		tr.Takeover, tr.TookOver = at.Sub(failStart), true
	}
	if fence != nil {
		select {
		case d := <-fence:
			tr.Fence, tr.Fenced = d, d > 0
		case <-time.After(trialWindow):
		}
	}
	if err := k.repair(ctx, st.Node); err != nil {
		return tr, fmt.Errorf("repair %s: %w", st.Node, err)
	}
	t.Logf("%s on %s (probe from %s): failure call took %s", k.name, st.Node, p.Node.Name, failEnd.Sub(failStart).Round(time.Millisecond))
	return tr, nil
}

// watchFence polls node's uplink until it no longer holds ip, and sends
// the time since start (0 when it still held it after the trial window).
func watchFence(ctx context.Context, c *cluster.Cluster, node string, ip netip.Addr, start time.Time) <-chan time.Duration {
	out := make(chan time.Duration, 1)
	go func() {
		for time.Since(start) < trialWindow && ctx.Err() == nil {
			addrs, err := c.Exec(ctx, node, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
			if err == nil && !strings.Contains(addrs, " "+ip.String()+"/") {
				out <- time.Since(start)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		out <- 0
	}()
	return out
}

// logWrong lists the answers that came with another source than the
// egress IP (a leak with the Node IP, say), relative to the failure and to
// the status move.
func logWrong(t *testing.T, samples []Sample, ip netip.Addr, failStart time.Time, mv *mover) {
	moved, _ := mv.when()
	for _, s := range samples {
		if s.Src.IsValid() && s.Src != ip {
			t.Logf("  wrong source %s: sent at %+.3fs (status moved at %+.3fs)", s.Src, s.Sent.Sub(failStart).Seconds(), moved.Sub(failStart).Seconds())
		}
	}
}

// okBefore says whether the probe already got an answer with the IP.
func okBefore(samples []Sample, st egressState) bool {
	for _, s := range samples {
		if s.Src == st.IP {
			return true
		}
	}
	return false
}

// mover watches the Egress and notes when status.egressNode first names
// a Node other than the owner.
type mover struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	at     time.Time
}

func watchMove(ctx context.Context, c *cluster.Cluster, owner string) (*mover, error) {
	eg := c.SluiceClient().SluiceV1alpha1().Egresses()
	cur, err := eg.Get(ctx, egressName, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	w, err := eg.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + egressName, ResourceVersion: cur.ResourceVersion})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watch egress: %w", err)
	}
	m := &mover{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		defer w.Stop()
		for ev := range w.ResultChan() {
			if ev.Type != watch.Modified && ev.Type != watch.Added {
				continue
			}
			obj, ok := ev.Object.(*v1alpha1.Egress)
			if !ok {
				continue
			}
			if n := obj.Status.EgressNode; n != "" && n != owner {
				m.mu.Lock()
				if m.at.IsZero() {
					m.at = time.Now()
				}
				m.mu.Unlock()
			}
		}
	}()
	return m, nil
}

func (m *mover) when() (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.at, !m.at.IsZero()
}

func (m *mover) stop() {
	m.cancel()
	<-m.done
}
