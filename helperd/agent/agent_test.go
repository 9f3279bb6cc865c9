package agent

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	sluicefake "github.com/sluicenet/sluice/pkg/client/clientset/versioned/fake"
	"github.com/sluicenet/sluice/pkg/cniproto"
	"github.com/sluicenet/sluice/pkg/datapath"
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
