package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	sluicefake "github.com/sluicenet/sluice/pkg/client/clientset/versioned/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
)

func TestOverlapEventOncePerChange(t *testing.T) {
	older := eg("a-older", "198.51.100.5", "pool", "prod")
	newer := eg("b-newer", "198.51.100.6", "pool", "prod")
	newer.CreationTimestamp.Time = older.CreationTimestamp.Add(time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cache := NewCache(kubefake.NewSimpleClientset(), sluicefake.NewSimpleClientset(older, newer))
	if err := cache.Start(ctx); err != nil {
		t.Fatal(err)
	}
	rec := record.NewFakeRecorder(10)
	w := &StatusWriter{Self: "node-c", Cache: cache, Recorder: rec}
	plan := Compute(snapshot("node-c", older, newer))
	w.Overlaps(plan)
	w.Overlaps(plan) // unchanged: no second Event
	if len(rec.Events) != 1 {
		t.Fatalf("%d Events, want 1", len(rec.Events))
	}
	ev := <-rec.Events
	if !strings.Contains(ev, "Overlap") || !strings.Contains(ev, "a-older") || !strings.Contains(ev, "prod/web-a") {
		t.Fatalf("event %q", ev)
	}
}
