package alloc_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/helperd/alloc"
	v1alpha1 "github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluicenet/sluice/pkg/client/clientset/versioned"
	"github.com/sluicenet/sluice/pkg/client/informers/externalversions"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// recorded returns the Egress a pool records for ip, or "".
func recorded(p *v1alpha1.ExternalIPPool, ip string) string {
	for _, a := range p.Status.Allocations {
		if a.IP == ip {
			return a.Egress
		}
	}
	return ""
}

// converged: every Egress's IPAllocated observed its latest generation, so
// the allocator has nothing left to write.
func converged(s state) string {
	for _, eg := range s.egs {
		c, ok := allocated(eg)
		if !ok || c.ObservedGeneration != eg.Generation {
			return fmt.Sprintf("egress %s: IPAllocated %+v at generation %d", eg.Name, c, eg.Generation)
		}
	}
	return ""
}

func versions(s state) map[string]string {
	m := map[string]string{}
	for n, p := range s.pools {
		m["pool/"+n] = p.ResourceVersion
	}
	for n, eg := range s.egs {
		m["egress/"+n] = eg.ResourceVersion
	}
	return m
}

// Allocations live in the API objects: a brand-new allocator with a fresh
// cache, as after a helper restart, finds every decision made and writes
// nothing.
func TestRestartChangesNothing(t *testing.T) {
	ctx, cs := setup(t, 2*time.Minute)
	newPool(t, ctx, cs, "restart", v1alpha1.IPRange{Start: "198.51.100.10", End: "198.51.100.12"})
	mustEgress(t, ctx, cs, "r-user", "restart", "198.51.100.12")
	for i := range 3 {
		mustEgress(t, ctx, cs, fmt.Sprintf("r-%d", i), "restart", "")
	}
	mustEgress(t, ctx, cs, "r-outside", "restart", "192.0.2.9")
	mustEgress(t, ctx, cs, "r-orphan", "missing", "")
	first := startAllocator(t, ctx, "before-restart")
	waitFor(t, ctx, cs, "the first allocator to settle", func(s state) string {
		if u := s.pools["restart"].Status.Usage; u.Used != 3 {
			return fmt.Sprintf("usage %+v", u)
		}
		return converged(s)
	})
	first.stop()
	// Read again after the stop: a Sync in flight may have written more.
	before, err := read(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	if bad := consistent(before, "restart"); bad != nil {
		t.Fatalf("before the restart: %v", bad)
	}

	after := restartSync(t, before)
	if b, a := versions(before), versions(after); !maps(b, a) {
		t.Errorf("the restarted allocator wrote:\nbefore %v\nafter  %v", b, a)
	}
	if u := after.pools["restart"].Status.Usage; u != (v1alpha1.IPPoolUsage{Total: 3, Used: 3}) {
		t.Errorf("usage after restart = %+v, want total 3 used 3", u)
	}
	for name, eg := range before.egs {
		if got := after.egs[name].Spec.EgressIP; got != eg.Spec.EgressIP {
			t.Errorf("egress %s: egressIP %q after restart, was %q", name, got, eg.Spec.EgressIP)
		}
	}
}

// restartSync runs one Sync of a new allocator over a new informer cache
// and returns the cluster afterwards.
func restartSync(t *testing.T, want state) state {
	t.Helper()
	ctx, cs := setupless(t)
	fresh := newClient(t)
	factory := externalversions.NewSharedInformerFactory(fresh, 0)
	pools := factory.Sluice().V1alpha1().ExternalIPPools()
	egs := factory.Sluice().V1alpha1().Egresses()
	pools.Informer()
	egs.Informer()
	ictx, stop := context.WithCancel(ctx)
	factory.Start(ictx.Done())
	defer factory.Shutdown()
	defer stop() // the informers must stop before Shutdown waits for them
	factory.WaitForCacheSync(ictx.Done())
	ps, _ := pools.Lister().List(labels.Everything())
	es, _ := egs.Lister().List(labels.Everything())
	if len(ps) != len(want.pools) || len(es) != len(want.egs) {
		t.Fatalf("fresh cache holds %d pools and %d egresses, want %d and %d", len(ps), len(es), len(want.pools), len(want.egs))
	}
	if err := (&alloc.Allocator{Client: fresh}).Sync(ctx, ps, es); err != nil {
		t.Errorf("sync after restart: %v", err)
	}
	s, err := read(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// setupless is a bounded context and a client without emptying the cluster.
func setupless(t *testing.T) (context.Context, *versioned.Clientset) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx, newClient(t)
}

func maps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// egressIP and a pool: an IP inside is recorded as held, one outside is
// refused with IPNotInPool, and neither spec is rewritten.
func TestEgressIPWithPool(t *testing.T) {
	ctx, cs := setup(t, 2*time.Minute)
	newPool(t, ctx, cs, "given", v1alpha1.IPRange{CIDR: "198.51.100.64/28"})
	mustEgress(t, ctx, cs, "inside", "given", "198.51.100.70")
	mustEgress(t, ctx, cs, "outside", "given", "203.0.113.70")
	mustEgress(t, ctx, cs, "network", "given", "198.51.100.64") // the CIDR's network address
	startAllocator(t, ctx, "allocator")
	s := waitFor(t, ctx, cs, "conditions", func(s state) string {
		for name, want := range map[string]string{"inside": v1alpha1.ReasonAllocated,
			"outside": v1alpha1.ReasonIPNotInPool, "network": v1alpha1.ReasonIPNotInPool} {
			st := metav1.ConditionFalse
			if want == v1alpha1.ReasonAllocated {
				st = metav1.ConditionTrue
			}
			if why := hasCond(s.egs[name], st, want); why != "" {
				return why
			}
		}
		return ""
	})
	p := s.pools["given"]
	if got := recorded(p, "198.51.100.70"); got != "inside" {
		t.Errorf("pool records 198.51.100.70 for %q, want inside", got)
	}
	if len(p.Status.Allocations) != 1 || p.Status.Usage != (v1alpha1.IPPoolUsage{Total: 14, Used: 1}) {
		t.Errorf("pool status = %+v, want only inside's IP and usage 14/1", p.Status)
	}
	for name, ip := range map[string]string{"inside": "198.51.100.70", "outside": "203.0.113.70", "network": "198.51.100.64"} {
		eg := s.egs[name]
		if eg.Spec.EgressIP != ip || eg.Annotations[alloc.AllocatedFromAnnotation] != "" {
			t.Errorf("egress %s: egressIP %q annotations %v, want the user's %s untouched", name, eg.Spec.EgressIP, eg.Annotations, ip)
		}
	}
	if c, _ := allocated(s.egs["outside"]); !strings.Contains(c.Message, "203.0.113.70") {
		t.Errorf("IPNotInPool message %q does not name the IP", c.Message)
	}
}

// updateEgress re-reads an Egress, changes it and writes it back.
func updateEgress(t *testing.T, ctx context.Context, cs versioned.Interface, name string, change func(*v1alpha1.Egress)) {
	t.Helper()
	for range 5 {
		eg, err := cs.SluiceV1alpha1().Egresses().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		change(eg)
		if _, err = cs.SluiceV1alpha1().Egresses().Update(ctx, eg, metav1.UpdateOptions{}); err == nil {
			return
		}
		t.Logf("update egress %s: %v", name, err)
	}
	t.Fatalf("could not update egress %s", name)
}

// holds: the Egress carries ip, the pool records it, and IPAllocated=True.
func holds(s state, pool, eg, ip string) string {
	e := s.egs[eg]
	if e == nil {
		return "egress " + eg + " is gone"
	}
	if e.Spec.EgressIP != ip {
		return fmt.Sprintf("egress %s carries %q, want %s", eg, e.Spec.EgressIP, ip)
	}
	if got := recorded(s.pools[pool], ip); got != eg {
		return fmt.Sprintf("pool %s records %s for %q, want %s", pool, ip, got, eg)
	}
	if bad := consistent(s, pool); bad != nil {
		return bad[0]
	}
	return hasCond(e, metav1.ConditionTrue, v1alpha1.ReasonAllocated)
}

func used(s state, pool string, n int64) string {
	if u := s.pools[pool].Status.Usage; u.Used != n || int64(len(s.pools[pool].Status.Allocations)) != n {
		return fmt.Sprintf("pool %s: usage %+v with %d records, want %d used", pool, u, len(s.pools[pool].Status.Allocations), n)
	}
	return ""
}

// Release: deleting an Egress, moving it to another pool, or changing its
// egressIP gives the old IP back.
func TestRelease(t *testing.T) {
	ctx, cs := setup(t, 2*time.Minute)
	const one = "198.51.100.10"
	newPool(t, ctx, cs, "one", v1alpha1.IPRange{Start: one, End: one})
	newPool(t, ctx, cs, "other", v1alpha1.IPRange{CIDR: "203.0.113.0/29"})
	startAllocator(t, ctx, "allocator")

	mustEgress(t, ctx, cs, "first", "one", "")
	waitFor(t, ctx, cs, "first to take the only IP", func(s state) string { return holds(s, "one", "first", one) })
	mustEgress(t, ctx, cs, "second", "one", "")
	waitFor(t, ctx, cs, "second to wait", func(s state) string {
		return hasCond(s.egs["second"], metav1.ConditionFalse, v1alpha1.ReasonPoolExhausted)
	})

	t.Run("delete", func(t *testing.T) {
		if err := cs.SluiceV1alpha1().Egresses().Delete(ctx, "first", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, ctx, cs, "second to take the freed IP", func(s state) string {
			if why := holds(s, "one", "second", one); why != "" {
				return why
			}
			return used(s, "one", 1)
		})
	})

	t.Run("switch pool", func(t *testing.T) {
		mustEgress(t, ctx, cs, "third", "one", "")
		updateEgress(t, ctx, cs, "second", func(eg *v1alpha1.Egress) { eg.Spec.ExternalIPPool = "other" })
		s := waitFor(t, ctx, cs, "second in the other pool, third in one", func(s state) string {
			eg := s.egs["second"]
			if !inRanges(s.pools["other"].Spec.IPRanges, eg.Spec.EgressIP) {
				return fmt.Sprintf("second carries %q", eg.Spec.EgressIP)
			}
			if why := holds(s, "other", "second", eg.Spec.EgressIP); why != "" {
				return why
			}
			if why := holds(s, "one", "third", one); why != "" {
				return why
			}
			return used(s, "other", 1) + used(s, "one", 1)
		})
		if from := s.egs["second"].Annotations[alloc.AllocatedFromAnnotation]; from != "other" {
			t.Errorf("second: %s = %q, want other", alloc.AllocatedFromAnnotation, from)
		}
	})

	t.Run("switch user IP", func(t *testing.T) {
		mustEgress(t, ctx, cs, "fixed", "other", "203.0.113.5")
		waitFor(t, ctx, cs, "fixed to hold .5", func(s state) string { return holds(s, "other", "fixed", "203.0.113.5") })
		updateEgress(t, ctx, cs, "fixed", func(eg *v1alpha1.Egress) { eg.Spec.EgressIP = "203.0.113.6" })
		waitFor(t, ctx, cs, "fixed to hold .6 only", func(s state) string {
			if why := holds(s, "other", "fixed", "203.0.113.6"); why != "" {
				return why
			}
			if got := recorded(s.pools["other"], "203.0.113.5"); got != "" {
				return "the pool still records 203.0.113.5 for " + got
			}
			return used(s, "other", 2)
		})
		// The released IP is free for the next user-given Egress.
		mustEgress(t, ctx, cs, "reuse", "other", "203.0.113.5")
		waitFor(t, ctx, cs, "reuse to hold .5", func(s state) string { return holds(s, "other", "reuse", "203.0.113.5") })
	})

	t.Run("switch allocated IP", func(t *testing.T) {
		// A user overrides the IP Sluice allocated to "second" with another
		// free IP of the same pool: the new one is held, the old released.
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		s, err := read(ctx, cs)
		if err != nil {
			t.Fatal(err)
		}
		old := s.egs["second"].Spec.EgressIP
		var want string
		for _, c := range []string{"203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"} {
			if c != old && recorded(s.pools["other"], c) == "" {
				want = c
				break
			}
		}
		updateEgress(t, ctx, cs, "second", func(eg *v1alpha1.Egress) { eg.Spec.EgressIP = want })
		waitFor(t, ctx, cs, "second to hold "+want, func(s state) string {
			if why := holds(s, "other", "second", want); why != "" {
				return why
			}
			if got := recorded(s.pools["other"], old); got != "" {
				return "the pool still records " + old + " for " + got
			}
			return ""
		})
	})
}

// A deleted pool releases its Egresses: PoolNotFound, and the IPs Sluice
// wrote are cleared so traffic falls back to the Node IP; a user-given
// egressIP stays.
func TestPoolDeleted(t *testing.T) {
	ctx, cs := setup(t, 2*time.Minute)
	newPool(t, ctx, cs, "doomed", v1alpha1.IPRange{CIDR: "198.51.100.0/29"})
	mustEgress(t, ctx, cs, "d-0", "doomed", "")
	mustEgress(t, ctx, cs, "d-1", "doomed", "")
	mustEgress(t, ctx, cs, "d-user", "doomed", "198.51.100.6")
	startAllocator(t, ctx, "allocator")
	waitFor(t, ctx, cs, "three allocations", func(s state) string { return used(s, "doomed", 3) + converged(s) })

	if err := cs.SluiceV1alpha1().ExternalIPPools().Delete(ctx, "doomed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	s := waitFor(t, ctx, cs, "PoolNotFound and cleared IPs", func(s state) string {
		for _, name := range []string{"d-0", "d-1", "d-user"} {
			if why := hasCond(s.egs[name], metav1.ConditionFalse, v1alpha1.ReasonPoolNotFound); why != "" {
				return why
			}
		}
		for _, name := range []string{"d-0", "d-1"} {
			if eg := s.egs[name]; eg.Spec.EgressIP != "" || eg.Annotations[alloc.AllocatedFromAnnotation] != "" {
				return fmt.Sprintf("egress %s still carries %q from %q", name, eg.Spec.EgressIP, eg.Annotations[alloc.AllocatedFromAnnotation])
			}
		}
		return ""
	})
	if ip := s.egs["d-user"].Spec.EgressIP; ip != "198.51.100.6" {
		t.Errorf("the user's egressIP became %q", ip)
	}

	// Re-creating the pool allocates again.
	newPool(t, ctx, cs, "doomed", v1alpha1.IPRange{CIDR: "198.51.100.0/29"})
	waitFor(t, ctx, cs, "allocations in the re-created pool", func(s state) string {
		return used(s, "doomed", 3) + strings.Join(consistent(s, "doomed"), "; ")
	})
}

// kubectl get eip shows TOTAL and USED as the allocator keeps them.
func TestKubectlUsage(t *testing.T) {
	ctx, cs := setup(t, 2*time.Minute)
	// 14 usable in the /28 (no network, no broadcast) plus 10 in the range.
	newPool(t, ctx, cs, "shown", v1alpha1.IPRange{CIDR: "198.51.100.16/28"},
		v1alpha1.IPRange{Start: "203.0.113.10", End: "203.0.113.19"})
	startAllocator(t, ctx, "allocator")
	for i := range 5 {
		mustEgress(t, ctx, cs, fmt.Sprintf("k-%d", i), "shown", "")
	}
	check := func(want []int64) {
		t.Helper()
		var row []string
		for ctx.Err() == nil {
			out, err := cp.Kubectl("get", "eip", "shown")
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 2 || !slices.Equal(strings.Fields(lines[0])[:3], []string{"NAME", "TOTAL", "USED"}) {
				t.Fatalf("kubectl get eip printed:\n%s", out)
			}
			row = strings.Fields(lines[1])
			if num(row[1]) == want[0] && num(row[2]) == want[1] {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("kubectl get eip row %q, want TOTAL %d USED %d", row, want[0], want[1])
	}
	check([]int64{24, 5})
	for _, n := range []string{"k-0", "k-3"} {
		if err := cs.SluiceV1alpha1().Egresses().Delete(ctx, n, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	check([]int64{24, 3})
}

func num(s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return -1
	}
	return n
}
