// Package policy decides which Egress applies to which Pod. It is pure: the
// helper passes in what its informers (and the CNI plugin's reports) hold,
// and gets back plain data to build the datapath, the CLI and Events from.
//
// Selection follows the appliedTo semantics of Antrea's Egress:
//   - podSelector alone selects matching Pods cluster-wide;
//   - namespaceSelector alone selects every Pod of the matching Namespaces;
//   - both select the matching Pods of the matching Namespaces;
//   - neither (an empty appliedTo) selects nothing.
//
// As everywhere in Kubernetes, an absent selector (nil) and an empty one
// ({}) differ: {} matches everything, so `podSelector: {}` alone selects
// every Pod of the cluster, while an absent podSelector next to a
// namespaceSelector just means "don't filter Pods". An invalid selector
// selects nothing and is reported as an error.
//
// When several Egresses select one Pod, the oldest (creationTimestamp, then
// name) wins, unlike Antrea's documented random choice; the others are the losers.
package policy

import (
	"cmp"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
)

// Selector is a compiled appliedTo. The zero value selects nothing.
type Selector struct {
	// active is false for an empty appliedTo or an invalid one.
	active bool
	// ns and pod are nil when that half of appliedTo is absent: no filter.
	ns, pod labels.Selector
}

// Compile turns an appliedTo into a Selector once, so matching many Pods
// doesn't re-parse it. On error the returned Selector selects nothing.
func Compile(at v1alpha1.AppliedTo) (Selector, error) {
	if at.NamespaceSelector == nil && at.PodSelector == nil {
		return Selector{}, nil
	}
	s := Selector{active: true}
	var err error
	if at.NamespaceSelector != nil {
		if s.ns, err = metav1.LabelSelectorAsSelector(at.NamespaceSelector); err != nil {
			return Selector{}, fmt.Errorf("appliedTo.namespaceSelector: %w", err)
		}
	}
	if at.PodSelector != nil {
		if s.pod, err = metav1.LabelSelectorAsSelector(at.PodSelector); err != nil {
			return Selector{}, fmt.Errorf("appliedTo.podSelector: %w", err)
		}
	}
	return s, nil
}

// Matches reports whether a Pod with podLabels in a Namespace with nsLabels
// is selected.
func (s Selector) Matches(podLabels, nsLabels labels.Labels) bool {
	if !s.active {
		return false
	}
	if s.ns != nil && !s.ns.Matches(nsLabels) {
		return false
	}
	return s.pod == nil || s.pod.Matches(podLabels)
}

// Selects reports whether eg applies to a Pod with podLabels in a Namespace
// with nsLabels. An invalid selector selects nothing and returns the error.
func Selects(eg *v1alpha1.Egress, podLabels, nsLabels map[string]string) (bool, error) {
	s, err := Compile(eg.Spec.AppliedTo)
	if err != nil {
		return false, fmt.Errorf("egress %s: %w", eg.Name, err)
	}
	return s.Matches(labels.Set(podLabels), labels.Set(nsLabels)), nil
}

// Compare orders Egresses by precedence: older creationTimestamp first, then
// name. Names are unique (Egress is cluster-scoped), so the order is total.
func Compare(a, b *v1alpha1.Egress) int {
	ta, tb := a.CreationTimestamp.Time, b.CreationTimestamp.Time
	return cmp.Or(ta.Compare(tb), cmp.Compare(a.Name, b.Name))
}

// Resolve picks the Egress that applies when all of egs select one Pod: the
// first by Compare. losers are the rest, in precedence order. winner is nil
// when egs is empty. egs is not modified.
func Resolve(egs []*v1alpha1.Egress) (winner *v1alpha1.Egress, losers []*v1alpha1.Egress) {
	if len(egs) == 0 {
		return nil, nil
	}
	sorted := sortedEgresses(egs)
	return sorted[0], sorted[1:]
}
