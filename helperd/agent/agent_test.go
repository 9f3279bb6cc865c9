package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicenet/sluice/helperd/hint"
	"github.com/sluicenet/sluice/helperd/placement/placementtest"
	"github.com/sluicenet/sluice/helperd/registry"
	"github.com/sluicenet/sluice/helperd/view"
	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	sluicefake "github.com/sluicenet/sluice/pkg/client/clientset/versioned/fake"
	"github.com/sluicenet/sluice/pkg/cniproto"
	"github.com/sluicenet/sluice/pkg/datapath"
	"github.com/sluicenet/sluice/pkg/gossip"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

var (
	eg, pod, snapshot = placementtest.Egress, placementtest.Pod, placementtest.Snapshot
	ipA, ipB          = placementtest.IPA, placementtest.IPB
)

type fakeDatapath struct {
	mu      sync.Mutex
	applies int
	last    datapath.Desired
}

func (f *fakeDatapath) Apply(_ context.Context, d datapath.Desired) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applies++
	f.last = d
	return nil
}

// podIPs are the local Pod IPs the last Apply redirected or SNATed.
func (f *fakeDatapath) podIPs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, e := range f.last.Egresses {
		for _, ip := range e.LocalPodIPs {
			out = append(out, ip.String())
		}
	}
	return out
}

func (f *fakeDatapath) Stats(context.Context) (datapath.Stats, error) { return datapath.Stats{}, nil }

// awaitNil fails the test unless errc yields nil within 5 s; late says
// what it means when nothing comes.
func awaitNil(t *testing.T, errc <-chan error, late string) {
	t.Helper()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal(late)
	}
}

// testAgent is New(cfg) with what a test leaves out: a quiet log, an
// empty cache (not started), a fake datapath and, with a grace, a kernel
// probe that finds nobody answering.
func testAgent(t *testing.T, cfg Config) *Agent {
	t.Helper()
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Cache == nil {
		cfg.Cache = view.New(kubefake.NewSimpleClientset(), sluicefake.NewSimpleClientset())
	}
	if cfg.Datapath == nil {
		cfg.Datapath = &fakeDatapath{}
	}
	if cfg.Grace > 0 && cfg.KernelProbe == nil {
		cfg.KernelProbe = func(context.Context, []netip.Addr) (map[netip.Addr]string, error) { return nil, nil }
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// The registry replays tagged veths through OnCNIAdd at start, possibly
// before Run's goroutine has begun: that once crashed on a nil map.
// emptyAgent is node-a's agent over an empty API and a fake datapath,
// not yet running; ctx bounds its cache.
func emptyAgent(t *testing.T, ctx context.Context) (*Agent, *fakeDatapath) {
	t.Helper()
	cache := view.New(kubefake.NewSimpleClientset(), sluicefake.NewSimpleClientset())
	if err := cache.Start(ctx); err != nil {
		t.Fatal(err)
	}
	dp := &fakeDatapath{}
	return testAgent(t, Config{Self: "node-a", Log: slog.New(slog.DiscardHandler), Cache: cache, Datapath: dp, Resync: time.Hour}), dp
}

func TestCNIAddBeforeRunWaitsForTheFirstReconcile(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, dp := emptyAgent(t, ctx)
	done := make(chan error, 1)
	go func() {
		done <- a.OnCNIAdd(ctx, cniproto.Attachment{Key: cniproto.Key{ContainerID: "c1", IfName: "eth0"},
			PodNamespace: "prod", PodName: "web", PodIPs: []string{"10.244.1.5"}})
	}()
	time.Sleep(50 * time.Millisecond) // the ADD arrives first
	go a.Run(ctx)
	awaitNil(t, done, "the ADD was never acknowledged")
	dp.mu.Lock()
	defer dp.mu.Unlock()
	if dp.applies == 0 {
		t.Fatal("acknowledged before any Apply")
	}
}

// A hint counts only for a Pod the API puts on the sending Node, with an IP
// in that Node's Pod CIDRs: read from the API server when the informer lags.
func TestCheckHint(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nodeC := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-c"}, Spec: corev1.NodeSpec{PodCIDRs: []string{"10.244.3.0/24"}}}
	newPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "web-new"}, Spec: corev1.PodSpec{NodeName: "node-c"}}
	oldPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "web-old"}, Spec: corev1.PodSpec{NodeName: "node-c"},
		Status: corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: "10.244.3.5"}}}}
	kube := kubefake.NewSimpleClientset(nodeC, oldPod)
	cache := view.New(kube, sluicefake.NewSimpleClientset())
	if err := cache.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// Created after the informers synced: a Pod the informer may lag on.
	if _, err := kube.CoreV1().Pods("prod").Create(ctx, newPod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	a := testAgent(t, Config{Self: "node-a", Log: slog.New(slog.DiscardHandler), Cache: cache, Datapath: &fakeDatapath{}})
	h := func(pod, ip, sender string) hint.Hint {
		return hint.Hint{Namespace: "prod", Pod: pod, PodIP: netip.MustParseAddr(ip), Sender: sender}
	}
	for _, c := range []struct {
		h    hint.Hint
		want string // "" accepted
	}{
		{h("web-new", "10.244.3.77", "node-c"), ""},
		{h("web-old", "10.244.3.5", "node-c"), ""},
		{h("web-new", "10.244.3.77", "node-b"), `scheduled to "node-c", not to the sender "node-b"`},
		{h("web-old", "10.244.3.6", "node-c"), ""}, // a recreated sandbox's new IP
		{h("web-new", "10.244.1.77", "node-c"), "outside node node-c's podCIDRs"},
		{h("web-gone", "10.244.3.79", "node-c"), "not found"},
	} {
		_, err := a.checkHint(ctx, c.h)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s %v from %s: got %v, want %q", c.h.Pod, c.h.PodIP, c.h.Sender, err, c.want)
		}
	}
}

// failingDatapath fails every Apply, as a broken iptables or a bad object
// elsewhere would.
type failingDatapath struct{ fakeDatapath }

func (f *failingDatapath) Apply(ctx context.Context, d datapath.Desired) error {
	_ = f.fakeDatapath.Apply(ctx, d)
	return errBroken
}

var errBroken = errors.New("iptables-restore: broken")

// A failing Apply refuses the ADD of a Pod an Egress selects, but not of a
// Pod no Egress selects; the registry keeps no refused or timed-out ADD,
// and the next Apply has nothing of it.
func TestCNIAddFailuresContained(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod", Labels: map[string]string{"kubernetes.io/metadata.name": "prod"}}}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}, Status: corev1.NodeStatus{
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.11"}}}}
	selected := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "web", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: "node-a"}}
	other := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "db", Labels: map[string]string{"app": "db"}},
		Spec: corev1.PodSpec{NodeName: "node-a"}}
	e := eg("web", "192.0.2.50", "", "prod")
	e.Spec.AppliedTo.PodSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	cache := view.New(kubefake.NewSimpleClientset(ns, node, selected, other), sluicefake.NewSimpleClientset(e))
	if err := cache.Start(ctx); err != nil {
		t.Fatal(err)
	}
	dp := &failingDatapath{}
	a := testAgent(t, Config{Self: "node-a", Log: slog.New(slog.DiscardHandler), Cache: cache, Datapath: dp, Resync: time.Hour})
	go a.Run(ctx)
	attachment := func(name, ip string) cniproto.Attachment {
		return cniproto.Attachment{Key: cniproto.Key{ContainerID: name, IfName: "eth0"}, Netns: "/proc/1/ns/net",
			PodNamespace: "prod", PodName: name, PodIPs: []string{ip}}
	}
	listed := func(r *registry.Registry) []string {
		var out []string
		for _, att := range r.List(ctx) {
			out = append(out, att.ContainerID)
		}
		return out
	}
	if err := a.Registry.Add(ctx, attachment("db", "10.244.1.6")); err != nil {
		t.Errorf("ADD of a Pod no Egress selects: %v, want it acked despite the failing Apply", err)
	}
	if err := a.Registry.Add(ctx, attachment("web", "10.244.1.5")); err == nil || !strings.Contains(err.Error(), "broken") {
		t.Errorf("ADD of a selected Pod: %v, want the Apply error", err)
	}
	if got := listed(a.Registry); !slices.Equal(got, []string{"db"}) {
		t.Errorf("registry lists %v after a refused ADD, want [db]", got)
	}
	// The refused ADD's reconcile programmed web; the one its removal
	// asks for takes it out again.
	deadline := time.Now().Add(2 * time.Second)
	for slices.Contains(dp.podIPs(), "10.244.1.5") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := dp.podIPs(); slices.Contains(got, "10.244.1.5") {
		t.Errorf("the Apply after a refused ADD still has its Pod IP: %v", got)
	}
	// An ADD that times out leaves nothing either.
	stuck := testAgent(t, Config{Self: "node-a", Log: slog.New(slog.DiscardHandler), Cache: cache, Datapath: &fakeDatapath{}, Resync: time.Hour})
	tctx, tcancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer tcancel()
	if err := stuck.Registry.Add(tctx, attachment("late", "10.244.1.7")); err == nil {
		t.Fatal("an ADD with no reconcile loop returned nil")
	}
	if got := listed(stuck.Registry); len(got) != 0 {
		t.Errorf("a timed-out ADD left %v in the registry", got)
	}
}

// blockingDatapath holds the first Apply that takes ip until release is
// closed, and records whether its context had ended by then.
type blockingDatapath struct {
	ip       netip.Addr
	entered  chan struct{}
	release  chan struct{}
	once     sync.Once
	canceled bool
}

func (b *blockingDatapath) Apply(ctx context.Context, want datapath.Desired) error {
	if !slices.Contains(want.HeldIPs, b.ip) {
		return nil
	}
	b.once.Do(func() {
		close(b.entered)
		<-b.release
		b.canceled = ctx.Err() != nil
	})
	return ctx.Err()
}

func (b *blockingDatapath) Stats(context.Context) (datapath.Stats, error) {
	return datapath.Stats{}, nil
}

// A helper told to stop while it is taking an IP over in a planned move,
// before its claim is written, finishes the Apply under way, then writes
// the claim and announces the IP before Run returns: its kernel keeps the
// IP through the restart, and the old holder must let go of it rather
// than go on holding it too while the LAN's replies come here. Two ways
// to be caught: the API refusing the claim until the stop, and the stop
// arriving in the middle of the Apply (an Apply cut short took the IP and
// announced it without its SNAT rules, and claimed nothing).
func TestStopClaimsAHandoffInFlight(t *testing.T) {
	for _, midApply := range []bool{false, true} {
		name := "claim refused until the stop"
		if midApply {
			name = "stop in the middle of the Apply"
		}
		t.Run(name, func(t *testing.T) { testStopClaims(t, midApply) })
	}
}

// handoffFixture is a planned move about to begin: pooled Egress "prod"
// with ip held by node-a, which is cordoned, so placement gives it to
// node-b. It returns the Egress and the two API clients holding it all.
func handoffFixture(ip netip.Addr) (*v1alpha1.Egress, *sluicefake.Clientset, *kubefake.Clientset) {
	node := func(name string, ip netip.Addr, cordoned bool) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"egress": "yes"}},
			Spec:   corev1.NodeSpec{Unschedulable: cordoned},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip.String()}}}}
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod", Labels: map[string]string{"kubernetes.io/metadata.name": "prod"}}}
	pool := &v1alpha1.ExternalIPPool{ObjectMeta: metav1.ObjectMeta{Name: "pool"},
		Spec: v1alpha1.ExternalIPPoolSpec{IPRanges: []v1alpha1.IPRange{{CIDR: "198.51.100.0/28"}},
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"egress": "yes"}}}}
	e := eg("prod", ip.String(), "pool", "prod")
	e.Status.EgressIP, e.Status.EgressNode = ip.String(), "node-a"
	return e, sluicefake.NewSimpleClientset(pool, e), kubefake.NewSimpleClientset(ns, node("node-a", ipA, true), node("node-b", ipB, false))
}

func testStopClaims(t *testing.T, midApply bool) {
	ip := netip.MustParseAddr("198.51.100.5")
	e, client, kube := handoffFixture(ip)
	var mu sync.Mutex
	refuse, claims := !midApply, 0
	client.PrependReactor("patch", "egresses", func(act k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		if !strings.Contains(string(act.(k8stesting.PatchAction).GetPatch()), `"egressNode":"node-b"`) {
			return true, nil, errors.New("unexpected status write")
		}
		if refuse {
			return true, nil, errors.New("the API server is slow today")
		}
		claims++
		return true, e, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cache := view.New(kube, client)
	if err := cache.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var announced []netip.Addr
	var dp Datapath = &fakeDatapath{}
	blocking := &blockingDatapath{ip: ip, entered: make(chan struct{}), release: make(chan struct{})}
	if midApply {
		dp = blocking
	}
	a := testAgent(t, Config{Self: "node-b", Log: slog.New(slog.DiscardHandler), Cache: cache, Datapath: dp, Resync: time.Hour,
		Members: staticMembers{{Name: "node-a", State: gossip.StateAlive}, {Name: "node-b", State: gossip.StateAlive}},
		Status:  &StatusWriter{Self: "node-b", Client: client, Cache: cache},
		Grace:   30 * time.Second,
		Announce: func(_ context.Context, ip netip.Addr) {
			mu.Lock()
			defer mu.Unlock()
			announced = append(announced, ip)
		}})
	stopped := make(chan error, 1)
	go func() { stopped <- a.Run(ctx) }()
	if midApply {
		select {
		case <-blocking.entered:
		case <-time.After(5 * time.Second):
			t.Fatal("no Apply took the IP over")
		}
		cancel()
		close(blocking.release)
	} else {
		deadline := time.Now().Add(5 * time.Second)
		for !a.Ready() || len(a.LastPlan().Egresses) == 0 || a.LastPlan().Egresses[0].HandoffFrom != "node-a" {
			if time.Now().After(deadline) {
				t.Fatalf("no handoff from node-a planned: %+v", a.LastPlan().Egresses)
			}
			time.Sleep(10 * time.Millisecond)
		}
		mu.Lock()
		refuse, announced = false, nil
		mu.Unlock()
		cancel()
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if blocking.canceled {
		t.Fatal("the stop cut the Apply short")
	}
	if claims == 0 {
		t.Fatal("Run returned without writing node-b's claim")
	}
	if !slices.Contains(announced, ip) {
		t.Fatalf("announced %v at the stop, want %v", announced, ip)
	}
}

// recordingDatapath records the IPs each Apply holds.
type recordingDatapath struct {
	mu   sync.Mutex
	held [][]netip.Addr
}

func (r *recordingDatapath) Apply(_ context.Context, want datapath.Desired) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.held = append(r.held, slices.Clone(want.HeldIPs))
	return nil
}

func (r *recordingDatapath) Stats(context.Context) (datapath.Stats, error) {
	return datapath.Stats{}, nil
}

// The old holder of a planned move, told to stop before the new holder's
// claim arrived, waits for the claim and lets go of the IP before Run
// returns: frozen through its restart holding the IP, its own Pods would
// leave from here while the LAN's replies go to the new holder.
func TestStopEndsAHandoffItGivesAway(t *testing.T) {
	ip := netip.MustParseAddr("198.51.100.5")
	e, client, kube := handoffFixture(ip)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	informers, stopInformers := context.WithCancel(context.Background())
	defer stopInformers()
	cache := view.New(kube, client)
	if err := cache.Start(informers); err != nil {
		t.Fatal(err)
	}
	dp := &recordingDatapath{}
	a := testAgent(t, Config{Self: "node-a", Log: slog.New(slog.DiscardHandler), Cache: cache, Datapath: dp, Resync: time.Hour,
		Members: staticMembers{{Name: "node-a", State: gossip.StateAlive}, {Name: "node-b", State: gossip.StateAlive}},
		Grace:   30 * time.Second})
	stopped := make(chan error, 1)
	go func() { stopped <- a.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for !a.Ready() || len(a.LastPlan().Egresses) == 0 || a.LastPlan().Egresses[0].HandoffTo != "node-b" {
		if time.Now().After(deadline) {
			t.Fatalf("no handoff to node-b planned: %+v", a.LastPlan().Egresses)
		}
		time.Sleep(10 * time.Millisecond)
	}
	dp.mu.Lock()
	holding := slices.Contains(dp.held[len(dp.held)-1], ip)
	dp.mu.Unlock()
	if !holding {
		t.Fatal("the old holder let go before the claim")
	}
	cancel()
	time.Sleep(100 * time.Millisecond) // the claim comes after the stop
	claimed := e.DeepCopy()
	claimed.Status.EgressNode = "node-b"
	if _, err := client.SluiceV1alpha1().Egresses().UpdateStatus(informers, claimed, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	awaitNil(t, stopped, "Run did not return")
	dp.mu.Lock()
	defer dp.mu.Unlock()
	if last := dp.held[len(dp.held)-1]; slices.Contains(last, ip) {
		t.Fatalf("the last Apply before the stop still holds %v (%v): the handoff was left half done", ip, last)
	}
}

// A Pod's ADD costs one reconcile: the one its ack waits for, in which
// the registry already lists the attachment. Its recording afterwards
// changes nothing in the plan and asks for none, and neither does a
// repeated ADD with other IPs, whose record stood in for the old one in
// that reconcile.
func TestOneReconcilePerADD(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, dp := emptyAgent(t, ctx)
	go a.Run(ctx)
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	applies := func() int {
		time.Sleep(100 * time.Millisecond) // room for a second reconcile, were one asked for
		dp.mu.Lock()
		defer dp.mu.Unlock()
		return dp.applies
	}
	before := applies()
	att := cniproto.Attachment{Key: cniproto.Key{ContainerID: "c1", IfName: "eth0"}, Netns: "/proc/1/ns/net",
		PodNamespace: "prod", PodName: "web", PodIPs: []string{"10.244.1.5"}}
	if err := a.Registry.Add(ctx, att); err != nil {
		t.Fatal(err)
	}
	if n := applies() - before; n != 1 {
		t.Fatalf("%d reconciles for one ADD, want 1", n)
	}
	att.PodIPs = []string{"10.244.1.6"}
	before = applies()
	if err := a.Registry.Add(ctx, att); err != nil {
		t.Fatal(err)
	}
	if n := applies() - before; n != 1 {
		t.Fatalf("%d reconciles for a repeated ADD with another IP, want 1", n)
	}
}

// New names the part that is missing.
func TestNewRefusesAMissingPart(t *testing.T) {
	cache := view.New(kubefake.NewSimpleClientset(), sluicefake.NewSimpleClientset())
	full := Config{Self: "node-a", Log: slog.New(slog.DiscardHandler), Cache: cache, Datapath: &fakeDatapath{}}
	for _, tc := range []struct {
		name string
		cut  func(*Config)
		want string
	}{
		{"no name", func(c *Config) { c.Self = "" }, "Self"},
		{"no cache", func(c *Config) { c.Cache = nil }, "Cache"},
		{"no datapath", func(c *Config) { c.Datapath = nil }, "Datapath"},
		{"a grace without a probe", func(c *Config) { c.Grace = time.Second }, "KernelProbe"},
	} {
		cfg := full
		tc.cut(&cfg)
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
	if _, err := New(full); err != nil {
		t.Fatal(err)
	}
}
