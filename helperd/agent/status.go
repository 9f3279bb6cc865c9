package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/sluicenet/sluice/helperd/egstatus"
	"github.com/sluicenet/sluice/helperd/placement"
	"github.com/sluicenet/sluice/helperd/view"
	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluicenet/sluice/pkg/client/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
)

// StatusWriter writes egressNode, egressIP and IPAssigned.
//
// Who writes what:
//   - the Node that holds an IP writes itself as egressNode, IPAssigned=True;
//     during a planned move (placement.Egress.HandoffTo) only the new holder
//     writes, after it has programmed and announced the IP;
//   - a Node that stops holding an IP while status still names it writes the
//     unassigned status, conditional on the object not having changed (so it
//     never overwrites the new holder's claim);
//   - the leader writes IPAssigned=False for Egresses that no Node holds;
//   - the Node that found another host answering for the IP writes
//     IPAssigned=False, reason IPConflict, with a Warning Event.
type StatusWriter struct {
	Self     string
	Client   versioned.Interface
	Cache    *view.Cache
	Recorder record.EventRecorder // may be nil
	Metrics  *Metrics
	Now      func() time.Time

	lastOverlap map[string]string // Egress → last Overlap message sent
}

// Write brings the status of every Egress in the plan up to date.
func (w *StatusWriter) Write(ctx context.Context, plan placement.Plan, leader bool) error {
	var errs []error
	for _, ep := range plan.Egresses {
		eg := w.Cache.Egress(ep.Name)
		if eg == nil || !ep.IP.IsValid() {
			continue
		}
		if err := w.writeOne(ctx, eg, ep, leader); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (w *StatusWriter) writeOne(ctx context.Context, eg *v1alpha1.Egress, ep placement.Egress, leader bool) error {
	if ep.HandoffTo != "" {
		// A planned move in progress: the new holder writes its claim; the
		// old holder, which still holds the IP, must not write itself back
		// over it from a plan made before the claim arrived.
		return nil
	}
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	var want egstatus.Assignment
	rv := ""
	switch {
	case ep.Owner == w.Self:
		msg := fmt.Sprintf("egress IP %s is held by Node %s", ep.IP, w.Self)
		want = egstatus.Assignment{EgressNode: w.Self, EgressIP: ep.IP.String(),
			Assigned: egstatus.Condition(eg.Status.Conditions, v1alpha1.IPAssigned, true, v1alpha1.ReasonAssigned, msg, eg.Generation, now())}
	// The Node that found another host on the IP reports it: no other
	// Node knows.
	case ep.Owner == "" && (eg.Status.EgressNode == w.Self || leader || ep.Reason == v1alpha1.ReasonIPConflict):
		if eg.Status.EgressNode == w.Self {
			rv = eg.ResourceVersion // give up only what is still ours
		}
		reason := ep.Reason
		if reason == "" {
			reason = v1alpha1.ReasonNoEligibleNode
		}
		fallback := "; its Pods leave with their Node's IP"
		if reason == v1alpha1.ReasonNoQuorum || reason == v1alpha1.ReasonIPConflict {
			fallback = "; its Pods get no egress until a Node holds it (never their Node's IP)"
		}
		want = egstatus.Assignment{EgressIP: ep.IP.String(),
			Assigned: egstatus.Condition(eg.Status.Conditions, v1alpha1.IPAssigned, false, reason,
				ep.Message+fallback, eg.Generation, now())}
	default:
		return nil // another Node holds it and writes its own status
	}
	if current, ok := egstatus.Find(eg.Status.Conditions, v1alpha1.IPAssigned); ok &&
		egstatus.Same(current, want.Assigned) && eg.Status.EgressNode == want.EgressNode && eg.Status.EgressIP == want.EgressIP {
		return nil
	}
	if err := egstatus.ApplyAssignment(ctx, w.Client, eg.Name, rv, want); err != nil {
		return err
	}
	w.event(eg, want)
	return nil
}

func (w *StatusWriter) event(eg *v1alpha1.Egress, want egstatus.Assignment) {
	prev := eg.Status.EgressNode
	switch {
	case want.Assigned.Reason == v1alpha1.ReasonIPConflict:
		w.record(eg, corev1.EventTypeWarning, v1alpha1.ReasonIPConflict, "%s", want.Assigned.Message)
	case want.EgressNode != "" && prev == want.EgressNode:
		return
	case want.EgressNode != "" && prev != "":
		w.Metrics.failover()
		w.record(eg, corev1.EventTypeNormal, "FailedOver", "egress IP %s moved from Node %s to Node %s", want.EgressIP, prev, want.EgressNode)
	case want.EgressNode != "":
		w.Metrics.takeover()
		w.record(eg, corev1.EventTypeNormal, "Assigned", "egress IP %s assigned to Node %s", want.EgressIP, want.EgressNode)
	case prev != "" || eg.Status.EgressIP == "":
		w.record(eg, corev1.EventTypeWarning, "Unassigned", "egress IP %s is held by no Node: %s", want.EgressIP, want.Assigned.Message)
	}
}

// Overlaps emits a Warning Event on each Egress that selects Pods another,
// older Egress applies to, once per change of that set. The leader alone
// calls it, so the cluster gets one Event, not one per Node.
func (w *StatusWriter) Overlaps(plan placement.Plan) {
	if w.lastOverlap == nil {
		w.lastOverlap = map[string]string{}
	}
	seen := map[string]bool{}
	for _, ep := range plan.Egresses {
		if len(ep.Shadowed) == 0 {
			continue
		}
		seen[ep.Name] = true
		winners := map[string][]string{}
		for _, k := range ep.Shadowed {
			if a, ok := plan.Policy.Pods[k]; ok {
				winners[a.Egress] = append(winners[a.Egress], k.String())
			}
		}
		var parts []string
		for _, win := range slices.Sorted(maps.Keys(winners)) {
			pods := winners[win]
			parts = append(parts, fmt.Sprintf("%d Pod(s) to %s (%s)", len(pods), win, strings.Join(first(pods, 3), ", ")))
		}
		msg := "selects Pods that older Egresses apply to: " + strings.Join(parts, "; ") +
			" (the oldest Egress wins, then by name)"
		if w.lastOverlap[ep.Name] == msg {
			continue
		}
		w.lastOverlap[ep.Name] = msg
		if eg := w.Cache.Egress(ep.Name); eg != nil {
			w.record(eg, corev1.EventTypeWarning, "Overlap", "%s", msg)
		}
	}
	for name := range w.lastOverlap {
		if !seen[name] {
			delete(w.lastOverlap, name)
		}
	}
}

func first(xs []string, n int) []string {
	if len(xs) > n {
		return append(slices.Clone(xs[:n]), "…")
	}
	return xs
}

func (w *StatusWriter) record(eg *v1alpha1.Egress, typ, reason, format string, args ...any) {
	if w.Recorder != nil {
		w.Recorder.Eventf(eg, typ, reason, format, args...)
	}
}
