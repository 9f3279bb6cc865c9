package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicenet/sluice/helperd/hint"
	sluicefake "github.com/sluicenet/sluice/pkg/client/clientset/versioned/fake"
	"github.com/sluicenet/sluice/pkg/cniproto"
	"github.com/sluicenet/sluice/pkg/datapath"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubefake "k8s.io/client-go/kubernetes/fake"
)

type fakeDatapath struct {
	mu      sync.Mutex
	applies int
}

func (f *fakeDatapath) Apply(context.Context, datapath.Desired) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applies++
	return nil
}

func (f *fakeDatapath) Stats(context.Context) (datapath.Stats, error) { return datapath.Stats{}, nil }

// The registry replays tagged veths through OnCNIAdd at start, possibly
// before Run's goroutine has begun: that once crashed on a nil map.
func TestCNIAddBeforeRunWaitsForTheFirstReconcile(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cache := NewCache(kubefake.NewSimpleClientset(), sluicefake.NewSimpleClientset())
	if err := cache.Start(ctx); err != nil {
		t.Fatal(err)
	}
	dp := &fakeDatapath{}
	a := &Agent{Self: "node-a", Log: slog.New(slog.DiscardHandler), Cache: cache, Datapath: dp, Resync: time.Hour}
	done := make(chan error, 1)
	go func() {
		done <- a.OnCNIAdd(ctx, cniproto.Attachment{Key: cniproto.Key{ContainerID: "c1", IfName: "eth0"},
			PodNamespace: "prod", PodName: "web", PodIPs: []string{"10.244.1.5"}})
	}()
	time.Sleep(50 * time.Millisecond) // the ADD arrives first
	go a.Run(ctx)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the ADD was never acknowledged")
	}
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
	cache := NewCache(kube, sluicefake.NewSimpleClientset())
	if err := cache.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// Created after the informers synced: a Pod the informer may lag on.
	if _, err := kube.CoreV1().Pods("prod").Create(ctx, newPod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	a := &Agent{Self: "node-a", Log: slog.New(slog.DiscardHandler), Cache: cache, Datapath: &fakeDatapath{}}
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
// Pod no Egress selects; a refused or timed-out ADD leaves no pending
// attachment behind.
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
	cache := NewCache(kubefake.NewSimpleClientset(ns, node, selected, other), sluicefake.NewSimpleClientset(e))
	if err := cache.Start(ctx); err != nil {
		t.Fatal(err)
	}
	a := &Agent{Self: "node-a", Log: slog.New(slog.DiscardHandler), Cache: cache, Datapath: &failingDatapath{}, Resync: time.Hour}
	go a.Run(ctx)
	add := func(ctx context.Context, name, ip string) error {
		return a.OnCNIAdd(ctx, cniproto.Attachment{Key: cniproto.Key{ContainerID: name, IfName: "eth0"},
			PodNamespace: "prod", PodName: name, PodIPs: []string{ip}})
	}
	if err := add(ctx, "db", "10.244.1.6"); err != nil {
		t.Errorf("ADD of a Pod no Egress selects: %v, want it acked despite the failing Apply", err)
	}
	if err := add(ctx, "web", "10.244.1.5"); err == nil || !strings.Contains(err.Error(), "broken") {
		t.Errorf("ADD of a selected Pod: %v, want the Apply error", err)
	}
	a.mu.Lock()
	n := len(a.pending)
	a.mu.Unlock()
	if n != 1 { // db's stays until the registry records it; web's is gone
		t.Errorf("%d pending attachments, want 1 (db's)", n)
	}
	// An ADD that times out leaves nothing either.
	stuck := &Agent{Self: "node-a", Log: slog.New(slog.DiscardHandler), Cache: cache, Datapath: &fakeDatapath{}, Resync: time.Hour}
	tctx, tcancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer tcancel()
	if err := stuck.OnCNIAdd(tctx, cniproto.Attachment{Key: cniproto.Key{ContainerID: "late", IfName: "eth0"},
		PodNamespace: "prod", PodName: "web", PodIPs: []string{"10.244.1.7"}}); err == nil {
		t.Fatal("an ADD with no reconcile loop returned nil")
	}
	stuck.mu.Lock()
	defer stuck.mu.Unlock()
	if len(stuck.pending) != 0 {
		t.Errorf("a timed-out ADD left %d pending attachments", len(stuck.pending))
	}
}
