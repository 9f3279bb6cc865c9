package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/helperd/placement"
	"github.com/sluicenet/sluice/helperd/view"
	sluicefake "github.com/sluicenet/sluice/pkg/client/clientset/versioned/fake"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
)

func TestOverlapEventOncePerChange(t *testing.T) {
	older := eg("a-older", "198.51.100.5", "pool", "prod")
	newer := eg("b-newer", "198.51.100.6", "pool", "prod")
	newer.CreationTimestamp.Time = older.CreationTimestamp.Add(time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cache := view.New(kubefake.NewSimpleClientset(), sluicefake.NewSimpleClientset(older, newer))
	if err := cache.Start(ctx); err != nil {
		t.Fatal(err)
	}
	rec := record.NewFakeRecorder(10)
	w := &StatusWriter{Self: "node-c", Cache: cache, Recorder: rec}
	plan := placement.Decide(snapshot("node-c", older, newer))
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

// During a planned move the old holder writes no status, not even from a
// plan made before the new holder's claim: the claim must stand.
func TestHandoffWritesOnlyTheNewHoldersClaim(t *testing.T) {
	e := eg("prod", "198.51.100.5", "pool", "prod")
	e.Status.EgressIP, e.Status.EgressNode = "198.51.100.5", "node-a"
	claimed := e.DeepCopy()
	claimed.Status.EgressNode = "node-b"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := sluicefake.NewSimpleClientset(claimed)
	cache := view.New(kubefake.NewSimpleClientset(), client)
	if err := cache.Start(ctx); err != nil {
		t.Fatal(err)
	}
	s := snapshot("node-a", e) // node-a's plan from before the claim
	n := s.Nodes["node-a"]
	n.Unschedulable = true
	s.Nodes["node-a"] = n
	plan := placement.Decide(s)
	if plan.Egresses[0].Owner != "node-a" || plan.Egresses[0].HandoffTo != "node-b" {
		t.Fatalf("plan %+v, want node-a handing over to node-b", plan.Egresses[0])
	}
	w := &StatusWriter{Self: "node-a", Client: client, Cache: cache}
	if err := w.Write(ctx, plan, true); err != nil {
		t.Fatal(err)
	}
	got, err := client.SluiceV1alpha1().Egresses().Get(ctx, "prod", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.EgressNode != "node-b" {
		t.Fatalf("status.egressNode = %q after the old holder's write, want node-b's claim", got.Status.EgressNode)
	}
}
