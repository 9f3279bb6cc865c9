package api_test

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	v1alpha1 "github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluicenet/sluice/pkg/client/informers/externalversions"
)

// event is what the informer's handler saw.
type event struct {
	kind string // add, update, delete
	eg   *v1alpha1.Egress
}

// The generated clientset, informers and listers against the real server:
// create, watch through an informer, update status, delete.
func TestTypedClientAndInformer(t *testing.T) {
	needServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs := clientset(t)
	factory := externalversions.NewSharedInformerFactory(cs, 0)
	inf := factory.Sluice().V1alpha1().Egresses()
	events := make(chan event, 16)
	const name = "informer-egress"
	_, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) {
			if eg := o.(*v1alpha1.Egress); eg.Name == name {
				events <- event{"add", eg}
			}
		},
		UpdateFunc: func(_, o any) {
			if eg := o.(*v1alpha1.Egress); eg.Name == name {
				events <- event{"update", eg}
			}
		},
		DeleteFunc: func(o any) {
			if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			if eg := o.(*v1alpha1.Egress); eg.Name == name {
				events <- event{"delete", eg}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	defer cancel() // stop the informers before Shutdown waits for them
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			t.Fatalf("cache of %v did not sync", typ)
		}
	}
	next := func(kind string) *v1alpha1.Egress {
		t.Helper()
		select {
		case e := <-events:
			if e.kind != kind {
				t.Fatalf("informer event %s, want %s", e.kind, kind)
			}
			return e.eg
		case <-ctx.Done():
			t.Fatalf("no %s event", kind)
		}
		return nil
	}

	created, err := cs.SluiceV1alpha1().Egresses().Create(ctx, &v1alpha1.Egress{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.EgressSpec{
			AppliedTo: v1alpha1.AppliedTo{NamespaceSelector: &metav1.LabelSelector{
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: metav1.LabelSelectorOpIn, Values: []string{"a", "b"}}},
			}},
			ExternalIPPool: "some-pool",
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := next("add"); got.Spec.ExternalIPPool != "some-pool" || got.UID != created.UID {
		t.Errorf("informer saw %+v, want the created Egress", got.Spec)
	}

	created.Status = v1alpha1.EgressStatus{
		EgressIP:   "198.51.100.7",
		EgressNode: "node-2",
		Conditions: []metav1.Condition{{
			Type: v1alpha1.IPAllocated, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonAllocated,
			Message: "allocated from some-pool", LastTransitionTime: metav1.Now(),
		}},
	}
	updated, err := cs.SluiceV1alpha1().Egresses().UpdateStatus(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("update status: %v", err)
	}
	if got := next("update"); got.Status.EgressIP != "198.51.100.7" || got.Status.EgressNode != "node-2" ||
		len(got.Status.Conditions) != 1 || got.Status.Conditions[0].Reason != v1alpha1.ReasonAllocated {
		t.Errorf("informer saw status %+v", got.Status)
	}
	fromLister, err := inf.Lister().Get(name)
	if err != nil {
		t.Fatal(err)
	}
	if fromLister.ResourceVersion != updated.ResourceVersion {
		t.Errorf("lister has resourceVersion %s, want %s", fromLister.ResourceVersion, updated.ResourceVersion)
	}

	// A status update must not change spec: the status subresource ignores it.
	updated.Spec.ExternalIPPool = "other-pool"
	updated.Status.EgressNode = "node-3"
	again, err := cs.SluiceV1alpha1().Egresses().UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if again.Spec.ExternalIPPool != "some-pool" || again.Status.EgressNode != "node-3" {
		t.Errorf("after UpdateStatus spec.externalIPPool=%q status.egressNode=%q, want some-pool, node-3",
			again.Spec.ExternalIPPool, again.Status.EgressNode)
	}
	next("update")

	if err := cs.SluiceV1alpha1().Egresses().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	next("delete")
}
