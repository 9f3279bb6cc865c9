package habench

import (
	"context"
	"fmt"
	"maps"
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

// Soak settings: 10 minutes at 2% loss on every uplink.
const (
	soakEgresses = 5
	soakLoss     = 0.02
	soakSample   = 200 * time.Millisecond
)

// TestSoak is the false-failover soak: SLUICE_BENCH_SOAK (default 10m) with random
// loss on every Node's uplink, all Nodes alive; any Egress moving, or any
// change of who holds an egress IP, is a false failover.
func TestSoak(t *testing.T) {
	bench.Require(t)
	dur := bench.EnvDuration(t, "SLUICE_BENCH_SOAK", 10*time.Minute, 10*time.Second, 2*time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), dur+15*time.Minute)
	defer cancel()
	c := startCluster(t)
	var pods []*cluster.Pod
	for i := range soakEgresses {
		ns := fmt.Sprintf("soak-%d", i)
		if err := c.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
		p, err := c.AddPod(ctx, c.Nodes[i%len(c.Nodes)].Name, ns, "web", web)
		if err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
		if _, err := c.SluiceClient().SluiceV1alpha1().Egresses().Create(ctx, pooledEgress(ns, ns), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ips := map[string]netip.Addr{}
	for i := range soakEgresses {
		st, err := settle(ctx, c, fmt.Sprintf("soak-%d", i), settleStable, settleLimit)
		if err != nil {
			t.Fatal(err)
		}
		ips[pods[i].Namespace] = st.IP
	}
	status0, held0, err := snapshot(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("settled: status %v, holders %v", status0, held0)

	w, err := watchStatus(ctx, c, status0)
	if err != nil {
		t.Fatal(err)
	}
	pids, ticks0, err := helperTicks(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if err := c.Loss(ctx, n.Name, soakLoss); err != nil {
			t.Fatal(err)
		}
	}
	lossOff := func() {
		for _, n := range c.Nodes {
			if err := c.Loss(context.WithoutCancel(ctx), n.Name, 0); err != nil {
				t.Errorf("remove loss on %s: %v", n.Name, err)
			}
		}
	}
	defer lossOff()
	start := time.Now()
	r := SoakResult{Duration: dur, Loss: soakLoss, Egresses: soakEgresses, Nodes: len(c.Nodes)}
	var pollStatus int
	status, held := status0, held0
	probed := make(chan [2]int)
	go func() { probed <- soakProbe(ctx, c, pods, ips, start.Add(dur)) }()
	tick := time.NewTicker(soakSample)
	defer tick.Stop()
	for time.Since(start) < dur {
		<-tick.C
		st, h, err := snapshot(ctx, c)
		if err != nil {
			// The apiserver is reached through lossy uplinks too: a failed
			// poll is not a failover, only a missed sample.
			t.Logf("sample: %v", err)
			continue
		}
		r.Samples++
		if n := ChangeCount(status, st); n > 0 {
			t.Logf("%s: status changed %v -> %v", time.Since(start).Round(time.Millisecond), status, st)
			pollStatus += n
		}
		if n := ChangeCount(held, h); n > 0 {
			t.Logf("%s: holders changed %v -> %v", time.Since(start).Round(time.Millisecond), held, h)
			r.HolderChanges += n
		}
		status, held = st, h
	}
	wall := time.Since(start)
	pr := <-probed
	r.ProbeOK, r.ProbeFailed = pr[0], pr[1]
	pids1, ticks1, err := helperTicks(c)
	if err != nil {
		t.Fatal(err)
	}
	r.Dropped = lossDrops(ctx, t, c)
	lossOff()
	watched := w.stop()
	// The watch and the polls see the same status changes; the larger
	// count is the number of changes (the polls can miss a quick flip, the
	// watch a change during a reconnect).
	r.StatusChanges = max(watched, pollStatus)
	var sum float64
	for i, n := range c.Nodes {
		if pids1[i] != pids[i] {
			r.HelperRestarts++
			t.Errorf("helper on %s restarted during the soak (pid %d -> %d)", n.Name, pids[i], pids1[i])
			continue
		}
		pct := CPUPercent(ticks0[i].ticks, ticks1[i].ticks, wall)
		sum += pct
		r.CPUMax = max(r.CPUMax, pct)
		r.RSSMiB = max(r.RSSMiB, float64(ticks1[i].hwmKiB)/1024)
		t.Logf("helper on %s: cpu %.2f%% of one core, VmHWM %d KiB", n.Name, pct, ticks1[i].hwmKiB)
	}
	r.CPUPercent = sum / float64(len(c.Nodes))
	figs := SoakFigures(r)
	t.Logf("soak %s: status changes %d (watch %d, polls %d), holder changes %d, %d samples, probes ok %d failed %d",
		wall.Round(time.Second), r.StatusChanges, watched, pollStatus, r.HolderChanges, r.Samples, r.ProbeOK, r.ProbeFailed)
	bench.Log(t, figs...)
	if r.HelperRestarts > 0 || t.Failed() {
		t.Fatal("soak broken: nothing recorded")
	}
	bench.RecordIfAsked(t, figs...)
}

// soakProbe asks the external server, once a second from every soak Pod,
// which source it saw, until `until`; it returns how many answers carried
// the Pod's egress IP and how many did not (errors included). It runs
// beside the sampler so a slow answer (a lost SYN waits 1 s for its
// retransmit) never delays a sample.
func soakProbe(ctx context.Context, c *cluster.Cluster, pods []*cluster.Pod, ips map[string]netip.Addr, until time.Time) [2]int {
	var ok, failed int
	for time.Now().Before(until) && ctx.Err() == nil {
		next := time.Now().Add(time.Second)
		for _, p := range pods {
			actx, cancel := context.WithTimeout(ctx, 3*time.Second)
			src, err := c.Whoami(actx, p)
			cancel()
			if err == nil && src == ips[p.Namespace] {
				ok++
			} else {
				failed++
			}
		}
		time.Sleep(time.Until(next))
	}
	return [2]int{ok, failed}
}

// lossDrops sums the packets the loss rules dropped on every Node, to show
// the loss really acted. The chain names are integration/cluster's
// (faults_linux.go): raw TESTCL-LOSS-IN for what arrives on the uplink,
// mangle TESTCL-LOSS-OUT for what leaves it.
func lossDrops(ctx context.Context, t *testing.T, c *cluster.Cluster) int {
	total := 0
	for _, n := range c.Nodes {
		for _, tc := range [][2]string{{"raw", "TESTCL-LOSS-IN"}, {"mangle", "TESTCL-LOSS-OUT"}} {
			out, err := n.Exec(ctx, "iptables", "-w", "-t", tc[0], "-nvxL", tc[1])
			if err != nil {
				t.Errorf("loss counters on %s: %v", n.Name, err)
				continue
			}
			for _, line := range strings.Split(out, "\n") {
				f := strings.Fields(line)
				if len(f) > 2 && f[2] == "DROP" {
					var pk int
					fmt.Sscan(f[0], &pk)
					total += pk
					t.Logf("%s %s/%s dropped %d packets", n.Name, tc[0], tc[1], pk)
				}
			}
		}
	}
	return total
}

// snapshot is Egress name → status.egressNode, and egress IP → the Nodes
// holding it (comma-joined).
func snapshot(ctx context.Context, c *cluster.Cluster) (map[string]string, map[string]string, error) {
	list, err := c.SluiceClient().SluiceV1alpha1().Egresses().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("list egresses: %w", err)
	}
	status := map[string]string{}
	for _, eg := range list.Items {
		status[eg.Name] = eg.Status.EgressNode
	}
	h, err := holders(c)
	if err != nil {
		return nil, nil, err
	}
	held := map[string]string{}
	for ip, nodes := range h {
		held[ip.String()] = strings.Join(nodes, ",")
	}
	return status, held, nil
}

type ticks struct {
	ticks, hwmKiB uint64
}

// helperTicks reads every helper's pid, CPU ticks and VmHWM.
func helperTicks(c *cluster.Cluster) ([]int, []ticks, error) {
	var pids []int
	var out []ticks
	for _, n := range c.Nodes {
		pid := c.HelperPID(n.Name)
		if pid == 0 {
			return nil, nil, fmt.Errorf("no helper on %s", n.Name)
		}
		tk, hwm, err := helperStat(pid)
		if err != nil {
			return nil, nil, fmt.Errorf("helper on %s: %w", n.Name, err)
		}
		pids = append(pids, pid)
		out = append(out, ticks{tk, hwm})
	}
	return pids, out, nil
}

// statusWatch counts status.egressNode changes from a watch on all
// Egresses, re-watching (a bounded number of times) when the server ends
// the watch.
type statusWatch struct {
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	changes int
}

func watchStatus(ctx context.Context, c *cluster.Cluster, initial map[string]string) (*statusWatch, error) {
	eg := c.SluiceClient().SluiceV1alpha1().Egresses()
	list, err := eg.List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	sw := &statusWatch{cancel: cancel, done: make(chan struct{})}
	last := maps.Clone(initial)
	rv := list.ResourceVersion
	go func() {
		defer close(sw.done)
		for range 1000 {
			w, err := eg.Watch(ctx, metav1.ListOptions{ResourceVersion: rv})
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				time.Sleep(time.Second)
				continue
			}
			for ev := range w.ResultChan() {
				if ev.Type == watch.Error {
					// Typically 410 Gone: start again from the current
					// state; its synthetic ADDED events count only real
					// differences from what was last seen.
					rv = ""
					continue
				}
				obj, ok := ev.Object.(*v1alpha1.Egress)
				if !ok || (ev.Type != watch.Added && ev.Type != watch.Modified) {
					continue
				}
				rv = obj.ResourceVersion
				if prev, seen := last[obj.Name]; !seen || prev != obj.Status.EgressNode {
					sw.mu.Lock()
					sw.changes++
					sw.mu.Unlock()
					last[obj.Name] = obj.Status.EgressNode
				}
			}
			w.Stop()
			if ctx.Err() != nil {
				return
			}
		}
	}()
	return sw, nil
}

// stop ends the watch and returns the number of changes it saw.
func (sw *statusWatch) stop() int {
	sw.cancel()
	<-sw.done
	sw.mu.Lock()
	defer sw.mu.Unlock()
	return sw.changes
}
