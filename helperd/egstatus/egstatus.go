// Package egstatus writes Egress status with server-side apply.
//
// Two concerns write an Egress's status, each as its own field manager, so
// neither clobbers the other's fields:
//   - ManagerAllocation owns the IPAllocated condition (the allocator);
//   - ManagerAssignment owns egressNode, egressIP and IPAssigned (the Node
//     that holds the IP, or the allocator when no Node may).
//
// Every helper applies as the same manager for a concern, so a new owner's
// apply replaces the old owner's fields wholesale.
package egstatus

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	v1alpha1 "github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluicenet/sluice/pkg/client/clientset/versioned"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Field managers.
const (
	ManagerAllocation = "sluice-allocation"
	ManagerAssignment = "sluice-assignment"
)

// Condition builds a condition of type typ, keeping the transition time of
// the existing one when the status did not change.
func Condition(existing []metav1.Condition, typ string, ok bool, reason, msg string, gen int64, now time.Time) metav1.Condition {
	st := metav1.ConditionFalse
	if ok {
		st = metav1.ConditionTrue
	}
	c := metav1.Condition{Type: typ, Status: st, Reason: reason, Message: msg,
		ObservedGeneration: gen, LastTransitionTime: metav1.NewTime(now.UTC().Truncate(time.Second))}
	for _, e := range existing {
		if e.Type == typ && e.Status == st {
			c.LastTransitionTime = e.LastTransitionTime
		}
	}
	return c
}

// Find returns the condition of type typ, if any.
func Find(conds []metav1.Condition, typ string) (metav1.Condition, bool) {
	for _, c := range conds {
		if c.Type == typ {
			return c, true
		}
	}
	return metav1.Condition{}, false
}

// Same reports whether two conditions say the same thing (transition time
// aside), so that unchanged status is never written again.
func Same(a, b metav1.Condition) bool {
	return a.Type == b.Type && a.Status == b.Status && a.Reason == b.Reason &&
		a.Message == b.Message && a.ObservedGeneration == b.ObservedGeneration
}

// Assignment is what ManagerAssignment owns.
type Assignment struct {
	EgressNode string
	EgressIP   string
	Assigned   metav1.Condition
}

// ApplyAllocation applies the IPAllocated condition.
func ApplyAllocation(ctx context.Context, c versioned.Interface, name string, cond metav1.Condition) error {
	return apply(ctx, c, name, ManagerAllocation, "", map[string]any{"conditions": []metav1.Condition{cond}})
}

// ApplyAssignment applies egressNode, egressIP and IPAssigned. A non-empty
// resourceVersion makes the apply conditional on the object being unchanged,
// for writers that must not act on a stale view (a Node giving up an IP).
func ApplyAssignment(ctx context.Context, c versioned.Interface, name, resourceVersion string, a Assignment) error {
	st := map[string]any{"conditions": []metav1.Condition{a.Assigned}}
	if a.EgressNode != "" {
		st["egressNode"] = a.EgressNode
	}
	if a.EgressIP != "" {
		st["egressIP"] = a.EgressIP
	}
	return apply(ctx, c, name, ManagerAssignment, resourceVersion, st)
}

func apply(ctx context.Context, c versioned.Interface, name, manager, rv string, status map[string]any) error {
	meta := map[string]any{"name": name}
	if rv != "" {
		meta["resourceVersion"] = rv
	}
	body, err := json.Marshal(map[string]any{
		"apiVersion": v1alpha1.SchemeGroupVersion.String(),
		"kind":       "Egress",
		"metadata":   meta,
		"status":     status,
	})
	if err != nil {
		return fmt.Errorf("encode status of egress %s: %w", name, err)
	}
	force := true
	_, err = c.SluiceV1alpha1().Egresses().Patch(ctx, name, types.ApplyPatchType, body,
		metav1.PatchOptions{FieldManager: manager, Force: &force}, "status")
	if err != nil {
		return fmt.Errorf("apply status of egress %s as %s: %w", name, manager, err)
	}
	return nil
}
