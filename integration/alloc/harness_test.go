package alloc_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicenet/sluice/helperd/alloc"
	"github.com/sluicenet/sluice/helperd/egstatus"
	v1alpha1 "github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluicenet/sluice/pkg/client/clientset/versioned"
	"github.com/sluicenet/sluice/pkg/client/informers/externalversions"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
)

// syncEvery is how often a running allocator re-plans from its cache. An
// idle Sync writes nothing, so a short period costs only CPU.
const syncEvery = 50 * time.Millisecond

// staleFor bounds how old the snapshot an allocator plans from may be.
const staleFor = 2 * time.Second

// runner is one allocator as a helper runs it: its own client, its own
// informers, Sync over the lister snapshot in a loop.
type runner struct {
	syncs, failed atomic.Int64
	stop          func()
	cached        func() int // Egresses in its cache
}

// startAllocator runs an allocator until the returned runner is stopped or
// the test ends.
func startAllocator(t *testing.T, ctx context.Context, name string, opts ...func(*alloc.Allocator)) *runner {
	t.Helper()
	return startGated(t, ctx, name, nil, opts...)
}

// startRacers starts the racers allocators, all gated on gate.
func startRacers(t *testing.T, ctx context.Context, gate <-chan struct{}) []*runner {
	t.Helper()
	var rs []*runner
	for i := range racers {
		rs = append(rs, startGated(t, ctx, fmt.Sprintf("allocator-%d", i), gate))
	}
	return rs
}

// startGated is startAllocator whose first Sync waits until gate closes
// (nil: no wait), so that several allocators can be made to plan from the
// same pool version and collide for sure.
func startGated(t *testing.T, ctx context.Context, name string, gate <-chan struct{}, opts ...func(*alloc.Allocator)) *runner {
	t.Helper()
	cs := newClient(t)
	ctx, cancel := context.WithCancel(ctx)
	factory := externalversions.NewSharedInformerFactory(cs, 0)
	pools := factory.Sluice().V1alpha1().ExternalIPPools()
	egs := factory.Sluice().V1alpha1().Egresses()
	pools.Informer()
	egs.Informer()
	factory.Start(ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			cancel()
			t.Fatalf("%s: cache of %v did not sync", name, typ)
		}
	}
	a := &alloc.Allocator{Client: cs}
	for _, o := range opts {
		o(a)
	}
	r := &runner{cached: func() int {
		es, _ := egs.Lister().List(labels.Everything())
		return len(es)
	}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if gate != nil {
			select {
			case <-ctx.Done():
				return
			case <-gate:
			}
		}
		tick := time.NewTicker(syncEvery)
		defer tick.Stop()
		var logged int
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			ps, err1 := pools.Lister().List(labels.Everything())
			es, err2 := egs.Lister().List(labels.Everything())
			if err1 != nil || err2 != nil {
				continue
			}
			// Act on a snapshot up to staleFor old, as a helper whose
			// watch lags does: the writes must not trust it.
			select {
			case <-ctx.Done():
				return
			case <-time.After(rand.N(staleFor)):
			}
			r.syncs.Add(1)
			if err := a.Sync(ctx, ps, es); err != nil && ctx.Err() == nil {
				// Conflicts are expected while allocators race; the next
				// round re-plans. Log a few so a systematic error shows.
				r.failed.Add(1)
				if logged < 3 {
					logged++
					t.Logf("%s: sync: %v", name, err)
				}
			}
		}
	}()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			factory.Shutdown()
		})
	}
	t.Cleanup(r.stop)
	return r
}

// newPool creates a pool.
func newPool(t *testing.T, ctx context.Context, cs versioned.Interface, name string, ranges ...v1alpha1.IPRange) {
	t.Helper()
	_, err := cs.SluiceV1alpha1().ExternalIPPools().Create(ctx, &v1alpha1.ExternalIPPool{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1alpha1.ExternalIPPoolSpec{IPRanges: ranges},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pool %s: %v", name, err)
	}
}

// newEgress creates an Egress naming pool and, when ip is set, an egressIP.
func newEgress(ctx context.Context, cs versioned.Interface, name, pool, ip string) error {
	_, err := cs.SluiceV1alpha1().Egresses().Create(ctx, &v1alpha1.Egress{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.EgressSpec{ExternalIPPool: pool, EgressIP: ip,
			AppliedTo: v1alpha1.AppliedTo{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create egress %s: %w", name, err)
	}
	return nil
}

func mustEgress(t *testing.T, ctx context.Context, cs versioned.Interface, name, pool, ip string) {
	t.Helper()
	if err := newEgress(ctx, cs, name, pool, ip); err != nil {
		t.Fatal(err)
	}
}

// state is one read of every pool and Egress.
type state struct {
	pools map[string]*v1alpha1.ExternalIPPool
	egs   map[string]*v1alpha1.Egress
}

func read(ctx context.Context, cs versioned.Interface) (state, error) {
	s := state{pools: map[string]*v1alpha1.ExternalIPPool{}, egs: map[string]*v1alpha1.Egress{}}
	ps, err := cs.SluiceV1alpha1().ExternalIPPools().List(ctx, metav1.ListOptions{})
	if err != nil {
		return s, fmt.Errorf("list pools: %w", err)
	}
	es, err := cs.SluiceV1alpha1().Egresses().List(ctx, metav1.ListOptions{})
	if err != nil {
		return s, fmt.Errorf("list egresses: %w", err)
	}
	for i := range ps.Items {
		s.pools[ps.Items[i].Name] = &ps.Items[i]
	}
	for i := range es.Items {
		s.egs[es.Items[i].Name] = &es.Items[i]
	}
	return s, nil
}

// waitFor polls the cluster until ok accepts it or ctx ends; then it fails
// the test with the last reason ok gave.
func waitFor(t *testing.T, ctx context.Context, cs versioned.Interface, what string, ok func(state) string) state {
	t.Helper()
	why := "nothing read yet"
	for {
		s, err := read(ctx, cs)
		if err == nil {
			if why = ok(s); why == "" {
				return s
			}
		} else if ctx.Err() == nil {
			why = err.Error()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %s", what, why)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// allocated reports the IPAllocated condition of an Egress.
func allocated(eg *v1alpha1.Egress) (metav1.Condition, bool) {
	return egstatus.Find(eg.Status.Conditions, v1alpha1.IPAllocated)
}

// hasCond says why eg does not carry IPAllocated with status and reason,
// or "" when it does.
func hasCond(eg *v1alpha1.Egress, status metav1.ConditionStatus, reason string) string {
	c, ok := allocated(eg)
	if !ok {
		return fmt.Sprintf("egress %s has no IPAllocated condition", eg.Name)
	}
	if c.Status != status || c.Reason != reason {
		return fmt.Sprintf("egress %s: IPAllocated=%s %s (%s), want %s %s", eg.Name, c.Status, c.Reason, c.Message, status, reason)
	}
	return ""
}

// inRanges tells whether ip lies in the usable part of ranges, computed here
// rather than through pkg/ipam so the test checks the allocator against an
// independent reading of the spec: a CIDR without its network address and,
// for IPv4, its broadcast address; start–end inclusive.
func inRanges(ranges []v1alpha1.IPRange, s string) bool {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return false
	}
	for _, r := range ranges {
		if r.CIDR != "" {
			p := netip.MustParsePrefix(r.CIDR)
			if !p.Contains(ip) || ip == p.Addr() {
				continue
			}
			if ip.Is4() && ip == lastOf(p) {
				continue
			}
			return true
		}
		if ip.Compare(netip.MustParseAddr(r.Start)) >= 0 && ip.Compare(netip.MustParseAddr(r.End)) <= 0 {
			return true
		}
	}
	return false
}

func lastOf(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	host := 32 - p.Bits()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= 1<<host - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// consistent checks one pool against its Egresses and returns the problems:
// every record names an existing Egress of the pool that carries its IP,
// every IP it hands out lies in the pool and is held once, each Sluice-
// allocated Egress is recorded, and usage counts the records.
func consistent(s state, pool string) []string {
	p := s.pools[pool]
	if p == nil {
		return []string{"pool " + pool + " is gone"}
	}
	var bad []string
	seen := map[string]string{}
	for _, a := range p.Status.Allocations {
		if other, dup := seen[a.IP]; dup {
			bad = append(bad, fmt.Sprintf("pool records %s twice (%s, %s)", a.IP, other, a.Egress))
		}
		seen[a.IP] = a.Egress
		if !inRanges(p.Spec.IPRanges, a.IP) {
			bad = append(bad, fmt.Sprintf("pool records %s, outside its ranges", a.IP))
		}
		eg := s.egs[a.Egress]
		switch {
		case eg == nil:
			bad = append(bad, fmt.Sprintf("pool records %s for missing egress %s", a.IP, a.Egress))
		case eg.Spec.ExternalIPPool != pool:
			bad = append(bad, fmt.Sprintf("pool records %s for egress %s of pool %q", a.IP, a.Egress, eg.Spec.ExternalIPPool))
		case eg.Spec.EgressIP != a.IP:
			bad = append(bad, fmt.Sprintf("pool records %s for egress %s, which carries %q", a.IP, a.Egress, eg.Spec.EgressIP))
		}
	}
	if int64(len(p.Status.Allocations)) != p.Status.Usage.Used {
		bad = append(bad, fmt.Sprintf("usage.used = %d, pool records %d", p.Status.Usage.Used, len(p.Status.Allocations)))
	}
	holders := map[string]string{}
	for _, eg := range s.egs {
		if eg.Spec.EgressIP == "" {
			continue
		}
		if other, dup := holders[eg.Spec.EgressIP]; dup {
			bad = append(bad, fmt.Sprintf("egresses %s and %s both carry %s", other, eg.Name, eg.Spec.EgressIP))
		}
		holders[eg.Spec.EgressIP] = eg.Name
		if eg.Annotations[alloc.AllocatedFromAnnotation] == pool && seen[eg.Spec.EgressIP] != eg.Name {
			bad = append(bad, fmt.Sprintf("egress %s carries %s from the pool, which does not record it", eg.Name, eg.Spec.EgressIP))
		}
	}
	return bad
}

// dupWatch follows every Egress through a watch of its own and records any
// moment at which two Egresses carried the same spec.egressIP. The watch
// delivers the changes in resourceVersion order, so its view is a true
// history of the server, not a merge of stale reads.
type dupWatch struct {
	mu      sync.Mutex
	holders map[string]string // ip → egress
	ips     map[string]string // egress → ip
	dups    []string
}

func watchDuplicates(t *testing.T, ctx context.Context) *dupWatch {
	t.Helper()
	d := &dupWatch{holders: map[string]string{}, ips: map[string]string{}}
	factory := externalversions.NewSharedInformerFactory(newClient(t), 0)
	inf := factory.Sluice().V1alpha1().Egresses().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { d.set(o.(*v1alpha1.Egress)) },
		UpdateFunc: func(_, o any) { d.set(o.(*v1alpha1.Egress)) },
		DeleteFunc: func(o any) {
			if u, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = u.Obj
			}
			d.drop(o.(*v1alpha1.Egress).Name)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("duplicate watch did not sync")
	}
	t.Cleanup(func() { cancel(); factory.Shutdown() })
	return d
}

func (d *dupWatch) set(eg *v1alpha1.Egress) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dropLocked(eg.Name)
	ip := eg.Spec.EgressIP
	if ip == "" {
		return
	}
	if other, ok := d.holders[ip]; ok {
		d.dups = append(d.dups, fmt.Sprintf("%s given to %s while %s held it (rv %s)", ip, eg.Name, other, eg.ResourceVersion))
	}
	d.holders[ip], d.ips[eg.Name] = eg.Name, ip
}

func (d *dupWatch) drop(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dropLocked(name)
}

func (d *dupWatch) dropLocked(name string) {
	if ip, ok := d.ips[name]; ok {
		delete(d.ips, name)
		if d.holders[ip] == name {
			delete(d.holders, ip)
		}
	}
}

func (d *dupWatch) duplicates() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.dups...)
}

// poolConflicts reads from the apiserver's metrics how many requests on
// pools it refused with 409 Conflict: proof that allocators did race.
func poolConflicts(ctx context.Context, cs versioned.Interface) (int, error) {
	raw, err := cs.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, fmt.Errorf("read apiserver metrics: %w", err)
	}
	n := 0
	for _, l := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(l, "apiserver_request_total{") || !strings.Contains(l, `resource="externalippools"`) ||
			!strings.Contains(l, `code="409"`) {
			continue
		}
		f := strings.Fields(l)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("parse metric %q: %w", l, err)
		}
		n += int(v)
	}
	return n, nil
}
