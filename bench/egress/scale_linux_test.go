package egressbench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/sluicenet/sluice/bench"
	"github.com/sluicenet/sluice/integration/cluster"
	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	sluiceclient "github.com/sluicenet/sluice/pkg/client/clientset/versioned"
)

// Scale shape: 100 Namespaces of 100 Pods in 10 label groups; Egress k
// selects group k%10 of Namespace k/10, so Pod i is in Egress i/10.
const (
	scalePods      = 10000
	scaleEgresses  = 1000
	scaleNS        = 100
	scaleFakeNodes = 10
	scaleWorkers   = 32
	setPrefix      = "SLUICE-EG-"
	returnTable    = "9999"
)

func scaleNSName(k int) string    { return fmt.Sprintf("sc-%03d", k) }
func scalePodName(i int) string   { return fmt.Sprintf("p-%05d", i) }
func scaleNodeName(j int) string  { return fmt.Sprintf("fake-%02d", j) }
func scaleGroup(i int) string     { return fmt.Sprint((i % 100) / 10) }
func fakeNodeIP(j int) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, byte(30 + j)}) }

// TestScale loads 10,000 Pods (on 10 Node objects that exist only in the
// API) and 1,000 static Egresses over 500 egress IPs, all held by hand on
// the one real Node, node-a, then starts node-a's helper and measures:
// helper start → converged datapath (the SLUICE-EG-* ipsets hold 10,000
// members and table 9999 holds a return route per remote Pod), one Pod
// relabel → the Pod in its new Egress's ipset, iptables rules, and RSS.
//
//	SLUICE_BENCH=1 SLUICE_BENCH_RECORD=1 go test -run TestScale -timeout 30m ./bench/egress/
func TestScale(t *testing.T) {
	bench.Require(t)
	changes := bench.EnvInt(t, "SLUICE_BENCH_CHANGES", 10, 1, 100)
	ctx := context.Background()
	c := cluster.New(t, cluster.Options{Nodes: 1, Sluice: true, Masquerade: cluster.MasqueradeNode, KeepDir: os.Getenv("SLUICE_KEEP") != "",
		// Diagnosis: SLUICE_BENCH_HELPER tries another helper build.
		HelperBinary: os.Getenv("SLUICE_BENCH_HELPER")})
	dumpOnFailure(t, c)
	cfg := c.RESTConfig()
	cfg.QPS, cfg.Burst = 2000, 4000
	kc := kubernetes.NewForConfigOrDie(cfg)
	sc := sluiceclient.NewForConfigOrDie(cfg)

	t0 := time.Now()
	loadScale(t, ctx, kc, sc)
	t.Logf("loaded %d Pods, %d Egresses, %d Node objects in %s", scalePods, scaleEgresses, scaleFakeNodes, time.Since(t0).Round(time.Millisecond))
	var batch strings.Builder
	held := map[netip.Addr]bool{}
	for k := range scaleEgresses {
		if ip := scaleEgressIP(k); !held[ip] {
			held[ip] = true
			fmt.Fprintf(&batch, "addr add %s/32 dev eth0\n", ip)
		}
	}
	ipb := c.Node("node-a").NS.Cmd("ip", "-batch", "-")
	ipb.Stdin = strings.NewReader(batch.String())
	if out, err := ipb.CombinedOutput(); err != nil {
		t.Fatalf("add egress IPs: %v\n%s", err, out)
	}

	// The API-only Nodes' addresses answer on the external server's
	// interface, so the helper's gossip join to them is refused at once as
	// it would be answered at once by live helpers; unreachable, each would
	// hold the helper's start-up for memberlist's TCP timeout (3 s).
	var fakeAddrs strings.Builder
	for j := range scaleFakeNodes {
		fmt.Fprintf(&fakeAddrs, "addr add %s/32 dev eth0\n", fakeNodeIP(j))
	}
	extb := c.Ext[0].NS.Cmd("ip", "-batch", "-")
	extb.Stdin = strings.NewReader(fakeAddrs.String())
	if out, err := extb.CombinedOutput(); err != nil {
		t.Fatalf("add fake Node addresses: %v\n%s", err, out)
	}

	start := time.Now()
	if err := c.StartHelper("node-a"); err != nil {
		t.Fatal(err)
	}
	var setsAt, routesAt, snatAt time.Duration
	var lastSets, lastRoutes, lastSNAT int
	for setsAt == 0 || routesAt == 0 || snatAt == 0 {
		if time.Since(start) > 5*time.Minute {
			t.Fatalf("not converged after 5 min: ipset members %d/%d, return routes %d/%d, SNAT rules %d/%d",
				lastSets, scalePods, lastRoutes, scalePods, lastSNAT, scaleEgresses)
		}
		if c.HelperPID("node-a") == 0 {
			t.Fatal("helper exited")
		}
		if setsAt == 0 {
			lastSets = ipsetMembers(t, c)
			if lastSets == scalePods {
				setsAt = time.Since(start)
			}
		}
		if routesAt == 0 {
			// The table does not exist until the first route is added.
			out, _ := c.Exec(ctx, "node-a", "ip", "route", "show", "table", returnTable)
			lastRoutes = strings.Count(out, " via ")
			if lastRoutes == scalePods {
				routesAt = time.Since(start)
			}
		}
		if snatAt == 0 {
			lastSNAT = snatRules(nodeRun(t, c, "node-a", "iptables-save", "-t", "nat"))
			if lastSNAT == scaleEgresses {
				snatAt = time.Since(start)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	converged := max(setsAt, routesAt, snatAt)
	t.Logf("converged %s after helper start (ipsets %s, return routes %s, SNAT rules %s)", converged, setsAt, routesAt, snatAt)
	all, own := countRules(nodeRun(t, c, "node-a", "iptables-save"), "SLUICE-")
	t.Logf("iptables rules in node-a: %d (%d in SLUICE-* chains)", all, own)
	rssConv, hwmConv := helperMem(t, c)
	logReconciles(t, c, "at convergence")
	if out := os.Getenv("SLUICE_BENCH_PERF"); out != "" {
		// Diagnosis only: a CPU profile of the helper over the relabels.
		perf := exec.Command("perf", "record", "-F", "499", "-g", "-o", out, "-p", fmt.Sprint(c.HelperPID("node-a")))
		if err := perf.Start(); err != nil {
			t.Fatalf("perf: %v", err)
		}
		defer func() { _ = perf.Process.Signal(os.Interrupt); _ = perf.Wait(); t.Logf("perf profile in %s", out) }()
	}

	// Measure changes once the helper has written every Egress's status
	// (1,000 writes at its client's 50 QPS, each echoed back as an Egress
	// event that triggers a reconcile): the steady state.
	t2 := time.Now()
	for {
		list, err := sc.SluiceV1alpha1().Egresses().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, eg := range list.Items {
			if eg.Status.EgressNode == "node-a" {
				n++
			}
		}
		if n == scaleEgresses {
			break
		}
		if time.Since(t2) > 3*time.Minute {
			t.Fatalf("only %d of %d Egresses show egressNode node-a after 3 min", n, scaleEgresses)
		}
		time.Sleep(time.Second)
	}
	statusDone := time.Since(start)
	t.Logf("all Egress statuses written %s after helper start", statusDone)

	// One label change at a time: Pod 0 goes back and forth between
	// Egress 0 (group 0) and Egress 1 (group 1, same Namespace).
	sets := memberSets(t, c)
	pod := scalePodIP(0)
	setOf := map[string]string{"0": sets[scalePodIP(0)], "1": sets[scalePodIP(10)]}
	if setOf["0"] == "" || setOf["1"] == "" || setOf["0"] == setOf["1"] {
		t.Fatalf("sets of groups 0 and 1: %v", setOf)
	}
	var changeMs []float64
	group := "0"
	for i := range changes {
		group = map[string]string{"0": "1", "1": "0"}[group]
		time.Sleep(time.Second)
		p, err := kc.CoreV1().Pods(scaleNSName(0)).Get(ctx, scalePodName(0), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Labels["grp"] = group
		t1 := time.Now()
		if _, err := kc.CoreV1().Pods(p.Namespace).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := c.Exec(ctx, "node-a", "ipset", "test", setOf[group], pod.String()); err == nil {
				break
			}
			if time.Since(t1) > 60*time.Second {
				t.Fatalf("change %d: %s not in %s after 60 s", i, pod, setOf[group])
			}
			time.Sleep(5 * time.Millisecond)
		}
		changeMs = append(changeMs, ms(time.Since(t1)))
	}
	t.Logf("one change ms: %s", fmtMs(changeMs))
	logReconciles(t, c, "after the relabels")
	rss, hwm := helperMem(t, c)
	t.Logf("helper VmRSS %.1f MiB, VmHWM %.1f MiB at convergence; %.1f / %.1f MiB after the changes", rssConv, hwmConv, rss, hwm)

	cmd := "SLUICE_BENCH=1 SLUICE_BENCH_RECORD=1 go test -run TestScale -timeout 30m ./bench/egress/"
	shape := fmt.Sprintf("%d Pods (10 per Egress, on %d Node objects that exist only in the API, status.podIPs set) and %d static "+
		"Egresses over 500 egress IPs, all held on node-a, the one real Node running the helper; 2 shared, busy cores.",
		scalePods, scaleFakeNodes, scaleEgresses)
	changeMed := bench.Median(append([]float64{}, changeMs...))
	bench.Report(t,
		bench.Figure{Name: "scale_converge_s", Value: converged.Seconds(), Unit: "s", Target: "<= 5", Command: cmd,
			Note: fmt.Sprintf("Helper start (all objects already in the API) until the SLUICE-EG-* ipsets hold all %d members (%.2f s), "+
				"table 9999 holds a return route per remote Pod (%.2f s) and SLUICE-POSTROUTING one SNAT rule per Egress (%.2f s), "+
				"each polled every 50 ms. %s",
				scalePods, setsAt.Seconds(), routesAt.Seconds(), snatAt.Seconds(), shape)},
		bench.Figure{Name: "scale_one_change_ms", Value: changeMed, Unit: "ms", Target: "<= 200", Command: cmd,
			Note: fmt.Sprintf("Median of %d Pod relabels moving one Pod between two Egresses, from the API update to `ipset test` "+
				"finding it in the new Egress's set (polled every ~5 ms plus exec time), 1 s apart, after the helper had written all Egress "+
				"statuses (%.0f s after its start); all: %s ms. %s", changes, statusDone.Seconds(), fmtMs(changeMs), shape)},
		bench.Figure{Name: "scale_iptables_rules", Value: float64(all), Unit: "rules", Target: "<= 3000", Command: cmd,
			Note: fmt.Sprintf("`iptables-save | grep -c '^-A'` in node-a, all tables, after convergence (%d of them in SLUICE-* chains): "+
				"O(#Egress IPs), Pods are ipset members. %s", own, shape)},
		bench.Figure{Name: "scale_rss_mib", Value: max(rss, rssConv), Unit: "MiB", Target: "<= 150", Command: cmd,
			Note: fmt.Sprintf("Helper VmRSS (larger of at convergence %.1f and after the relabels %.1f MiB); peak VmHWM %.1f MiB. %s",
				rssConv, rss, max(hwm, hwmConv), shape)},
	)
}

// loadScale creates the Node objects, Namespaces, Egresses and Pods with a
// bounded pool of workers.
func loadScale(t *testing.T, ctx context.Context, kc kubernetes.Interface, sc sluiceclient.Interface) {
	t.Helper()
	run := func(what string, n int, fn func(i int) error) {
		t.Helper()
		var next atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, scaleWorkers)
		for range scaleWorkers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1) - 1)
					if i >= n {
						return
					}
					if err := fn(i); err != nil {
						errs <- fmt.Errorf("%s %d: %w", what, i, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	run("node", scaleFakeNodes, func(j int) error {
		obj, err := kc.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: scaleNodeName(j),
			Labels: map[string]string{"kubernetes.io/hostname": scaleNodeName(j), "kubernetes.io/os": "linux"}}}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		obj.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP,
			Address: fakeNodeIP(j).String()}}
		obj.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
			Reason: "Bench", LastHeartbeatTime: now, LastTransitionTime: now}}
		_, err = kc.CoreV1().Nodes().UpdateStatus(ctx, obj, metav1.UpdateOptions{})
		return err
	})
	run("namespace", scaleNS, func(k int) error {
		if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: scaleNSName(k)}},
			metav1.CreateOptions{}); err != nil {
			return err
		}
		_, err := kc.CoreV1().ServiceAccounts(scaleNSName(k)).Create(ctx, &corev1.ServiceAccount{
			ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: scaleNSName(k)}}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			err = nil
		}
		return err
	})
	run("egress", scaleEgresses, func(k int) error {
		_, err := sc.SluiceV1alpha1().Egresses().Create(ctx, &v1alpha1.Egress{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("sc-eg-%04d", k)},
			Spec: v1alpha1.EgressSpec{EgressIP: scaleEgressIP(k).String(), AppliedTo: v1alpha1.AppliedTo{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": scaleNSName(k / 10)}},
				PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"grp": fmt.Sprint(k % 10)}}}}}, metav1.CreateOptions{})
		return err
	})
	run("pod", scalePods, func(i int) error {
		pod, err := kc.CoreV1().Pods(scaleNSName(i/100)).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: scalePodName(i), Labels: map[string]string{"grp": scaleGroup(i)}},
			Spec: corev1.PodSpec{NodeName: scaleNodeName(i % scaleFakeNodes),
				Containers: []corev1.Container{{Name: "c", Image: "sluice.test/none"}}}}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		ip := scalePodIP(i).String()
		pod.Status.Phase = corev1.PodRunning
		pod.Status.PodIP, pod.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
		_, err = kc.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
}

// ipsetMembers is the total member count of node-a's SLUICE-EG-* sets.
func ipsetMembers(t *testing.T, c *cluster.Cluster) int {
	t.Helper()
	counts, err := setCounts(nodeRun(t, c, "node-a", "ipset", "list", "-t"), setPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return sum(counts)
}

// memberSets maps each member of node-a's SLUICE-EG-* sets to its set.
func memberSets(t *testing.T, c *cluster.Cluster) map[netip.Addr]string {
	t.Helper()
	out := map[netip.Addr]string{}
	for _, line := range strings.Split(nodeRun(t, c, "node-a", "ipset", "save"), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "add" || !strings.HasPrefix(f[1], setPrefix) {
			continue
		}
		if ip, err := netip.ParseAddr(f[2]); err == nil {
			out[ip] = f[1]
		}
	}
	return out
}

// helperMem is node-a's helper VmRSS and VmHWM in MiB.
func helperMem(t *testing.T, c *cluster.Cluster) (rss, hwm float64) {
	t.Helper()
	pid := c.HelperPID("node-a")
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	r, err := vmKiB(string(st), "VmRSS")
	if err != nil {
		t.Fatal(err)
	}
	h, err := vmKiB(string(st), "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	return float64(r) / 1024, float64(h) / 1024
}

// logReconciles logs the helper's reconcile count and mean duration from
// its metrics endpoint (diagnosis for the figures, not a figure).
func logReconciles(t *testing.T, c *cluster.Cluster, when string) {
	t.Helper()
	out, err := c.Exec(context.Background(), "node-a", "curl", "-s", "--max-time", "5", "http://127.0.0.1:9779/metrics")
	if err != nil {
		t.Logf("metrics %s: %v", when, err)
		return
	}
	var sum, count string
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "sluice_reconcile_duration_seconds_sum "); ok {
			sum = v
		}
		if v, ok := strings.CutPrefix(line, "sluice_reconcile_duration_seconds_count "); ok {
			count = v
		}
	}
	t.Logf("helper reconciles %s: count %s, total %s s", when, count, sum)
}
