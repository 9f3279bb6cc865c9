package egstatus

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	k8stesting "k8s.io/client-go/testing"

	v1alpha1 "github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluicenet/sluice/pkg/client/clientset/versioned/fake"
)

func TestConditionKeepsTransitionTimeWhileStatusHolds(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	first := Condition(nil, "IPAssigned", true, "Assigned", "on node-a", 1, t0.Add(500*time.Millisecond))
	if first.Status != metav1.ConditionTrue || !first.LastTransitionTime.Time.Equal(t0) {
		t.Fatalf("first %+v: want True at %v (whole seconds)", first, t0)
	}
	same := Condition([]metav1.Condition{first}, "IPAssigned", true, "Assigned", "on node-b", 2, t0.Add(time.Minute))
	if !same.LastTransitionTime.Equal(&first.LastTransitionTime) || same.Message != "on node-b" || same.ObservedGeneration != 2 {
		t.Fatalf("status held: %+v, want the first transition time with the new message", same)
	}
	flipped := Condition([]metav1.Condition{first}, "IPAssigned", false, "NoEligibleNode", "", 2, t0.Add(time.Minute))
	if flipped.Status != metav1.ConditionFalse || !flipped.LastTransitionTime.Time.Equal(t0.Add(time.Minute)) {
		t.Fatalf("status flipped: %+v, want False at the new time", flipped)
	}
	other := Condition([]metav1.Condition{first}, "IPAllocated", true, "Allocated", "", 1, t0.Add(time.Minute))
	if !other.LastTransitionTime.Time.Equal(t0.Add(time.Minute)) {
		t.Fatalf("another type kept IPAssigned's time: %+v", other)
	}
}

func TestFindAndSame(t *testing.T) {
	a := metav1.Condition{Type: "IPAssigned", Status: metav1.ConditionTrue, Reason: "Assigned", ObservedGeneration: 1}
	conds := []metav1.Condition{{Type: "IPAllocated"}, a}
	if got, ok := Find(conds, "IPAssigned"); !ok || !Same(got, a) {
		t.Fatalf("Find = %+v, %v", got, ok)
	}
	if _, ok := Find(conds, "Missing"); ok {
		t.Fatal("found a missing condition")
	}
	b := a
	b.LastTransitionTime = metav1.Now()
	if !Same(a, b) {
		t.Fatal("a transition time alone made two conditions differ")
	}
	for _, change := range []func(*metav1.Condition){
		func(c *metav1.Condition) { c.Status = metav1.ConditionFalse },
		func(c *metav1.Condition) { c.Reason = "Other" },
		func(c *metav1.Condition) { c.Message = "x" },
		func(c *metav1.Condition) { c.ObservedGeneration = 2 },
	} {
		c := a
		change(&c)
		if Same(a, c) {
			t.Errorf("Same(%+v, %+v) = true", a, c)
		}
	}
}

// patch is one status apply the fake clientset received.
type patch struct {
	name, subresource string
	pt                types.PatchType
	opts              metav1.PatchOptions
	body              map[string]any
}

func recordPatches(t *testing.T, fail error) (*fake.Clientset, *[]patch) {
	t.Helper()
	c := fake.NewSimpleClientset()
	var got []patch
	c.PrependReactor("patch", "egresses", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pa := a.(k8stesting.PatchActionImpl)
		var body map[string]any
		if err := json.Unmarshal(pa.GetPatch(), &body); err != nil {
			t.Errorf("apply body is not JSON: %v", err)
		}
		got = append(got, patch{name: pa.GetName(), subresource: pa.GetSubresource(), pt: pa.GetPatchType(), opts: pa.PatchOptions, body: body})
		return true, nil, fail
	})
	return c, &got
}

func TestApplyAssignment(t *testing.T) {
	c, got := recordPatches(t, nil)
	cond := metav1.Condition{Type: "IPAssigned", Status: metav1.ConditionTrue, Reason: "Assigned"}
	if err := ApplyAssignment(context.Background(), c, "eg1", "42", Assignment{EgressNode: "node-a", EgressIP: "192.0.2.10", Assigned: cond}); err != nil {
		t.Fatal(err)
	}
	// A Node giving the IP up applies no node and no IP, unconditionally.
	if err := ApplyAssignment(context.Background(), c, "eg1", "", Assignment{Assigned: cond}); err != nil {
		t.Fatal(err)
	}
	if len(*got) != 2 {
		t.Fatalf("%d applies, want 2", len(*got))
	}
	first := (*got)[0]
	if first.name != "eg1" || first.subresource != "status" || first.pt != types.ApplyPatchType {
		t.Fatalf("apply %+v: want a server-side apply of eg1's status", first)
	}
	if first.opts.FieldManager != ManagerAssignment || first.opts.Force == nil || !*first.opts.Force {
		t.Fatalf("apply options %+v: want forced, as %s", first.opts, ManagerAssignment)
	}
	if first.body["kind"] != "Egress" || first.body["apiVersion"] != v1alpha1.SchemeGroupVersion.String() {
		t.Fatalf("apply body %v: want kind and apiVersion", first.body)
	}
	meta := first.body["metadata"].(map[string]any)
	st := first.body["status"].(map[string]any)
	if meta["resourceVersion"] != "42" || st["egressNode"] != "node-a" || st["egressIP"] != "192.0.2.10" || len(st["conditions"].([]any)) != 1 {
		t.Fatalf("apply body %v", first.body)
	}
	second := (*got)[1]
	meta, st = second.body["metadata"].(map[string]any), second.body["status"].(map[string]any)
	if _, ok := meta["resourceVersion"]; ok {
		t.Fatalf("unconditional apply carries a resourceVersion: %v", second.body)
	}
	if _, ok := st["egressNode"]; ok {
		t.Fatalf("empty egressNode applied: %v", second.body)
	}
	if _, ok := st["egressIP"]; ok {
		t.Fatalf("empty egressIP applied: %v", second.body)
	}
}

func TestApplyAllocationNamesItsManagerInErrors(t *testing.T) {
	c, got := recordPatches(t, errors.New("conflict"))
	err := ApplyAllocation(context.Background(), c, "eg2", metav1.Condition{Type: "IPAllocated", Status: metav1.ConditionTrue})
	if err == nil || len(*got) != 1 {
		t.Fatalf("err %v after %d applies", err, len(*got))
	}
	for _, want := range []string{"eg2", ManagerAllocation, "conflict"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if (*got)[0].opts.FieldManager != ManagerAllocation {
		t.Fatalf("applied as %q, want %q", (*got)[0].opts.FieldManager, ManagerAllocation)
	}
	if st := (*got)[0].body["status"].(map[string]any); len(st) != 1 || st["conditions"] == nil {
		t.Fatalf("allocation applied %v: want only the conditions", st)
	}
}
