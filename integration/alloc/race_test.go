package alloc_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/sluicenet/sluice/helperd/alloc"
	v1alpha1 "github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	racers   = 3   // allocators running at once, as helpers during a leader change
	egresses = 120 // Egresses created while they race
	creators = 4   // goroutines creating the first half

	// createEvery paces the second half: 60 × 50 ms spreads it over several
	// Syncs (one takes seconds while it writes 120 Egresses).
	createEvery = 50 * time.Millisecond
)

// raceCreate creates the first half of the Egresses while the allocators
// are held back, until every cache holds it, so that their first Syncs plan
// from one pool version and must collide; then it opens the gate and
// creates the second half one by one while they run, spread over several
// Syncs so that the allocators plan from different views.
func raceCreate(t *testing.T, ctx context.Context, rs []*runner, gate chan struct{}, prefix, pool string) {
	t.Helper()
	createMany(t, ctx, prefix, pool, 0, egresses/2)
	for _, r := range rs {
		for r.cached() != egresses/2 && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
	}
	close(gate)
	cs := newClient(t)
	tick := time.NewTicker(createEvery)
	defer tick.Stop()
	// In shuffled name order: the allocators serve the oldest first, then
	// by name, so views that differ by more than a tail lead to different
	// plans.
	for _, i := range rand.Perm(egresses - egresses/2) {
		i += egresses / 2
		<-tick.C
		if err := newEgress(ctx, cs, fmt.Sprintf("%s-%03d", prefix, i), pool, ""); err != nil {
			t.Fatal(err)
		}
	}
}

// createMany creates pool-only Egresses prefix-from … prefix-(to-1) from
// several goroutines.
func createMany(t *testing.T, ctx context.Context, prefix, pool string, from, to int) {
	t.Helper()
	cs := newClient(t)
	errs := make(chan error, to-from)
	var wg sync.WaitGroup
	for c := range creators {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := from + c; i < to; i += creators {
				if err := newEgress(ctx, cs, fmt.Sprintf("%s-%03d", prefix, i), pool, ""); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// Three allocators, each with its own informers, race while 120 Egresses
// are created against one big pool: every Egress gets an IP of the pool, no
// IP is ever held twice, and usage is exact.
func TestRaceBigPool(t *testing.T) {
	ctx, cs := setup(t, 4*time.Minute)
	const pool = "race-big"
	ranges := []v1alpha1.IPRange{{CIDR: "198.51.100.0/24"}, {CIDR: "203.0.113.0/24"}}
	const total = 2 * (256 - 2) // two /24s without network and broadcast
	newPool(t, ctx, cs, pool, ranges...)
	dups := watchDuplicates(t, ctx)
	gate := make(chan struct{})
	rs := startRacers(t, ctx, gate)

	conflictsBefore, err := poolConflicts(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	raceCreate(t, ctx, rs, gate, "race", pool)
	created := time.Since(start)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	s := waitFor(t, wctx, cs, "every egress to get an IP", func(s state) string {
		n := 0
		for _, eg := range s.egs {
			if eg.Spec.EgressIP != "" {
				n++
			}
		}
		if n != egresses {
			return fmt.Sprintf("%d of %d egresses carry an IP", n, egresses)
		}
		if u := s.pools[pool].Status.Usage; u.Used != egresses {
			return fmt.Sprintf("usage %+v", u)
		}
		return ""
	})
	took := time.Since(start)
	conds := waitFor(t, ctx, cs, "every egress IPAllocated=True", func(s state) string {
		for _, eg := range s.egs {
			if why := hasCond(eg, metav1.ConditionTrue, v1alpha1.ReasonAllocated); why != "" {
				return why
			}
		}
		return ""
	})
	tookConds := time.Since(start)
	var syncs, failed int64
	for _, r := range rs {
		r.stop()
		syncs += r.syncs.Load()
		failed += r.failed.Load()
	}
	conflicts, err := poolConflicts(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	conflicts -= conflictsBefore
	t.Logf("%d egresses, %d allocators: created in %v, all IPs in %v, all conditions in %v (%d syncs, %d with errors, %d pool writes refused with 409)",
		egresses, racers, created.Round(time.Millisecond), took.Round(time.Millisecond), tookConds.Round(time.Millisecond), syncs, failed, conflicts)
	if conflicts == 0 {
		t.Error("no pool write was refused with a conflict: the allocators did not race")
	}

	for _, st := range []state{s, conds} {
		for _, p := range consistent(st, pool) {
			t.Error(p)
		}
		if u := st.pools[pool].Status.Usage; u != (v1alpha1.IPPoolUsage{Total: total, Used: egresses}) {
			t.Errorf("usage = %+v, want total %d used %d", u, total, egresses)
		}
		for _, eg := range st.egs {
			if !inRanges(ranges, eg.Spec.EgressIP) {
				t.Errorf("egress %s carries %q, outside the pool", eg.Name, eg.Spec.EgressIP)
			}
			if from := eg.Annotations[alloc.AllocatedFromAnnotation]; from != pool {
				t.Errorf("egress %s: %s = %q, want %q", eg.Name, alloc.AllocatedFromAnnotation, from, pool)
			}
		}
	}
	for _, d := range dups.duplicates() {
		t.Error(d)
	}
}

// The same race against a pool of 50 IPs: exactly 50 Egresses get one, the
// other 70 wait with PoolExhausted; deleting 10 holders hands their IPs to
// 10 waiting Egresses.
func TestRaceExhaustedPool(t *testing.T) {
	ctx, cs := setup(t, 4*time.Minute)
	const pool = "race-small"
	ranges := []v1alpha1.IPRange{{Start: "198.51.100.10", End: "198.51.100.59"}}
	const size = 50
	newPool(t, ctx, cs, pool, ranges...)
	dups := watchDuplicates(t, ctx)
	gate := make(chan struct{})
	rs := startRacers(t, ctx, gate)

	start := time.Now()
	raceCreate(t, ctx, rs, gate, "small", pool)
	settled := func(want int) func(state) string {
		return func(s state) string {
			var held, waiting int
			for _, eg := range s.egs {
				if eg.Spec.EgressIP != "" {
					held++
					if why := hasCond(eg, metav1.ConditionTrue, v1alpha1.ReasonAllocated); why != "" {
						return why
					}
					continue
				}
				if why := hasCond(eg, metav1.ConditionFalse, v1alpha1.ReasonPoolExhausted); why != "" {
					return why
				}
				waiting++
			}
			if held != size || waiting != want-size {
				return fmt.Sprintf("%d egresses hold an IP and %d wait, want %d and %d", held, waiting, size, want-size)
			}
			if u := s.pools[pool].Status.Usage; u != (v1alpha1.IPPoolUsage{Total: size, Used: size}) {
				return fmt.Sprintf("usage %+v", u)
			}
			if bad := consistent(s, pool); bad != nil {
				return bad[0]
			}
			return ""
		}
	}
	s := waitFor(t, ctx, cs, "50 allocations and 70 PoolExhausted", settled(egresses))
	t.Logf("exhausted pool settled in %v", time.Since(start).Round(time.Millisecond))

	// Free 10 IPs at once.
	var freed []string
	for _, eg := range s.egs {
		if eg.Spec.EgressIP != "" && len(freed) < 10 {
			freed = append(freed, eg.Spec.EgressIP)
			if err := cs.SluiceV1alpha1().Egresses().Delete(ctx, eg.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	start = time.Now()
	s = waitFor(t, ctx, cs, "10 waiting egresses to take the freed IPs", settled(egresses-10))
	t.Logf("10 freed IPs handed out again in %v", time.Since(start).Round(time.Millisecond))
	holders := map[string]bool{}
	for _, eg := range s.egs {
		holders[eg.Spec.EgressIP] = true
	}
	for _, ip := range freed {
		if !holders[ip] {
			t.Errorf("freed IP %s was not handed out again", ip)
		}
	}
	for _, d := range dups.duplicates() {
		t.Error(d)
	}
}
