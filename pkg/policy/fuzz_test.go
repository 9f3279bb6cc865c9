package policy

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
)

// FuzzSelects feeds arbitrary selector fields (as a user could write them in
// an Egress) and labels. An invalid selector must select nothing and report
// an error; Compute must agree with Selects for the one Pod.
func FuzzSelects(f *testing.F) {
	f.Add("app", "web", "tier", "In", "front", "app", "web", "tier", "front", true)
	f.Add("env", "prod", "zone", "NotIn", "a", "app", "db", "zone", "b", false)
	f.Add("", "", "k", "Exists", "", "k", "", "", "", true)
	f.Add("bad key!", "v", "k", "DoesNotExist", "x", "k", "v", "", "", false)
	f.Add("k", "bad value!", "k", "Near", "v", "k", "v", "k", "v", true)
	f.Fuzz(func(t *testing.T, mlKey, mlVal, exKey, exOp, exVal, pk, pv, nk, nv string, nsHalf bool) {
		sel := &metav1.LabelSelector{MatchLabels: map[string]string{mlKey: mlVal}}
		if exKey != "" {
			req := metav1.LabelSelectorRequirement{Key: exKey, Operator: metav1.LabelSelectorOperator(exOp)}
			if exVal != "" {
				req.Values = []string{exVal}
			}
			sel.MatchExpressions = []metav1.LabelSelectorRequirement{req}
		}
		eg := egress("eg", 0, nil, sel)
		if nsHalf {
			eg = egress("eg", 0, sel, nil)
		}
		podL, nsL := map[string]string{pk: pv}, map[string]string{nk: nv}
		got, err := Selects(eg, podL, nsL)
		if err != nil && got {
			t.Fatalf("invalid selector (%v) selected a Pod", err)
		}
		res := Compute(View{
			Egresses:   []*v1alpha1.Egress{eg},
			Pods:       []PodInfo{{Namespace: "ns", Name: "p", Labels: podL, IPs: []netip.Addr{netip.MustParseAddr("10.244.0.1")}, Phase: corev1.PodRunning}},
			Namespaces: map[string]map[string]string{"ns": nsLabelSet("ns", nsL)},
		})
		if _, sel := res.Pods[PodKey{"ns", "p"}]; sel != got {
			t.Fatalf("Compute selected=%v, Selects=%v", sel, got)
		}
		if (res.Egresses["eg"].Err != nil) != (err != nil) {
			t.Fatalf("Compute err %v, Selects err %v", res.Egresses["eg"].Err, err)
		}
	})
}
