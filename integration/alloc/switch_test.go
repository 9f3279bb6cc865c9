package alloc_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluicenet/sluice/helperd/alloc"
	v1alpha1 "github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// syncOrdered runs one Sync over a fresh read of the cluster, with the
// pools in the given order: Sync walks them in the order it gets them, and
// an informer's lister returns them in map order, so a helper meets every
// order sooner or later.
func syncOrdered(t *testing.T, ctx context.Context, a *alloc.Allocator, order ...string) {
	t.Helper()
	s, err := read(ctx, a.Client)
	if err != nil {
		t.Fatal(err)
	}
	var pools []*v1alpha1.ExternalIPPool
	for _, n := range order {
		pools = append(pools, s.pools[n])
	}
	var egs []*v1alpha1.Egress
	for _, eg := range s.egs {
		egs = append(egs, eg)
	}
	if err := a.Sync(ctx, pools, egs); err != nil {
		t.Logf("sync: %v", err)
	}
}

// An Egress that moves to another pool gives its old IP back, but the IP
// must not reach another Egress while the mover still carries it: for that
// moment two Nodes could SNAT with one IP.
func TestSwitchPoolNeverDoubles(t *testing.T) {
	ctx, cs := setup(t, time.Minute)
	const only = "198.51.100.20"
	newPool(t, ctx, cs, "a", v1alpha1.IPRange{Start: only, End: only})
	newPool(t, ctx, cs, "b", v1alpha1.IPRange{CIDR: "203.0.113.16/29"})
	mustEgress(t, ctx, cs, "mover", "a", "")
	a := &alloc.Allocator{Client: newClient(t)}
	syncOrdered(t, ctx, a, "a", "b")
	syncOrdered(t, ctx, a, "a", "b")
	mustEgress(t, ctx, cs, "waiter", "a", "")
	syncOrdered(t, ctx, a, "a", "b")
	waitFor(t, ctx, cs, "mover to hold the only IP, waiter to wait", func(s state) string {
		if why := holds(s, "a", "mover", only); why != "" {
			return why
		}
		return hasCond(s.egs["waiter"], metav1.ConditionFalse, v1alpha1.ReasonPoolExhausted)
	})

	dups := watchDuplicates(t, ctx)
	updateEgress(t, ctx, cs, "mover", func(eg *v1alpha1.Egress) { eg.Spec.ExternalIPPool = "b" })
	for range 3 {
		syncOrdered(t, ctx, a, "a", "b") // the old pool first
	}
	waitFor(t, ctx, cs, "mover in b, waiter with the freed IP", func(s state) string {
		if why := holds(s, "a", "waiter", only); why != "" {
			return why
		}
		if !inRanges(s.pools["b"].Spec.IPRanges, s.egs["mover"].Spec.EgressIP) {
			return "mover carries " + s.egs["mover"].Spec.EgressIP
		}
		return ""
	})
	time.Sleep(200 * time.Millisecond) // let the watch deliver the last events
	for _, d := range dups.duplicates() {
		t.Error(d)
	}
}
