// Package alloc_test drives helperd/alloc against a real kube-apiserver and
// etcd: allocators racing, restarts, release, pool deletion and the pool's
// printer columns. Every test starts from an empty cluster (no Egresses, no
// pools) because an Allocator's Sync covers every Egress it is given.
package alloc_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/sluicenet/sluice/integration/controlplane"
	"github.com/sluicenet/sluice/pkg/client/clientset/versioned"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// cp is shared by every test of the package: starting one costs seconds.
var cp *controlplane.ControlPlane

// TestMain starts etcd and kube-apiserver once and installs the CRDs. This
// package makes no network namespaces. With -short nothing is started and
// every test skips.
func TestMain(m *testing.M) {
	os.Exit(controlplane.RunShared(m, "alloc", func(shared *controlplane.ControlPlane) { cp = shared }))
}

// setup skips under -short, empties the cluster before and after the test,
// and returns a fresh clientset and a context bounded by limit.
func setup(t *testing.T, limit time.Duration) (context.Context, *versioned.Clientset) {
	t.Helper()
	if cp == nil {
		t.Skip("-short: no control plane")
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	t.Cleanup(cancel)
	cs := newClient(t)
	empty(t, cs)
	t.Cleanup(func() { empty(t, cs) })
	return ctx, cs
}

// newClient makes a clientset of its own, as a separate helper would have.
func newClient(t *testing.T) *versioned.Clientset {
	t.Helper()
	cfg := *cp.Config
	cfg.QPS, cfg.Burst = 200, 400 // the default 5 QPS would measure the limiter, not the allocator
	cs, err := versioned.NewForConfig(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// empty deletes every Egress and pool and waits until they are gone.
func empty(t *testing.T, cs *versioned.Clientset) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	api := cs.SluiceV1alpha1()
	if err := api.Egresses().DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		t.Fatalf("delete egresses: %v", err)
	}
	if err := api.ExternalIPPools().DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		t.Fatalf("delete pools: %v", err)
	}
	for ctx.Err() == nil {
		egs, err1 := api.Egresses().List(ctx, metav1.ListOptions{})
		pools, err2 := api.ExternalIPPools().List(ctx, metav1.ListOptions{})
		if err1 == nil && err2 == nil && len(egs.Items) == 0 && len(pools.Items) == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("cluster not empty after a minute")
}
