package alloc_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sluicenet/sluice/helperd/alloc"
	v1alpha1 "github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Three allocators Sync at once, each from the same pool version but a
// different stale view of the Egresses (each misses another third), so
// their plans give the same IPs to different Egresses. Only the pool's
// resourceVersion precondition keeps them apart: the losers must re-plan,
// and no IP may ever be carried by two Egresses. This is the timing-free
// form of TestRaceBigPool.
func TestRaceStaleSnapshots(t *testing.T) {
	ctx, cs := setup(t, 2*time.Minute)
	const pool, n = "stale", 30
	newPool(t, ctx, cs, pool, v1alpha1.IPRange{CIDR: "198.51.100.0/24"})
	for i := range n {
		mustEgress(t, ctx, cs, fmt.Sprintf("s-%02d", i), pool, "")
	}
	s, err := read(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	dups := watchDuplicates(t, ctx)

	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range racers {
		var view []*v1alpha1.Egress
		for j := range n {
			if j%racers != i {
				view = append(view, s.egs[fmt.Sprintf("s-%02d", j)])
			}
		}
		a := &alloc.Allocator{Client: newClient(t)}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := a.Sync(ctx, []*v1alpha1.ExternalIPPool{s.pools[pool]}, view); err != nil {
				t.Logf("allocator %d: %v", i, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	time.Sleep(200 * time.Millisecond) // let the watch deliver the last events
	for _, d := range dups.duplicates() {
		t.Error("after the racing round: " + d)
	}

	// Whatever the first round left, an allocator with a full view
	// finishes it.
	startAllocator(t, ctx, "finisher")
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	final := waitFor(t, wctx, cs, "every egress allocated", func(s state) string {
		if why := used(s, pool, n); why != "" {
			return why
		}
		for _, eg := range s.egs {
			if why := hasCond(eg, metav1.ConditionTrue, v1alpha1.ReasonAllocated); why != "" {
				return why
			}
		}
		return ""
	})
	for _, p := range consistent(final, pool) {
		t.Error(p)
	}
	time.Sleep(200 * time.Millisecond)
	if d := dups.duplicates(); len(d) > 0 {
		t.Errorf("%d times an IP was carried twice", len(d))
	}
}
