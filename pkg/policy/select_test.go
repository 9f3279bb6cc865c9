package policy

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func egress(name string, age int, ns, pod *metav1.LabelSelector) *v1alpha1.Egress {
	return &v1alpha1.Egress{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(age) * time.Second))},
		Spec:       v1alpha1.EgressSpec{AppliedTo: v1alpha1.AppliedTo{NamespaceSelector: ns, PodSelector: pod}, EgressIP: "203.0.113.1"},
	}
}

func ml(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

func expr(key string, op metav1.LabelSelectorOperator, vals ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: vals}}}
}

func TestSelects(t *testing.T) {
	prod := map[string]string{"kubernetes.io/metadata.name": "prod", "env": "prod"}
	staging := map[string]string{"kubernetes.io/metadata.name": "staging", "env": "staging"}
	web := map[string]string{"app": "web", "tier": "front"}
	db := map[string]string{"app": "db"}
	empty := &metav1.LabelSelector{}
	tests := []struct {
		name      string
		ns, pod   *metav1.LabelSelector
		podL, nsL map[string]string
		want      bool
		wantErr   string
	}{
		{"empty appliedTo selects nothing", nil, nil, web, prod, false, ""},
		{"podSelector alone: cluster-wide, match", nil, ml("app", "web"), web, staging, true, ""},
		{"podSelector alone: no match", nil, ml("app", "web"), db, prod, false, ""},
		{"namespaceSelector alone: every Pod of the Namespace", ml("env", "prod"), nil, db, prod, true, ""},
		{"namespaceSelector alone: other Namespace", ml("env", "prod"), nil, db, staging, false, ""},
		{"both: matching Pod in matching Namespace", ml("env", "prod"), ml("app", "web"), web, prod, true, ""},
		{"both: matching Pod in other Namespace", ml("env", "prod"), ml("app", "web"), web, staging, false, ""},
		{"both: other Pod in matching Namespace", ml("env", "prod"), ml("app", "web"), db, prod, false, ""},
		{"empty podSelector {} alone selects every Pod", nil, empty, db, staging, true, ""},
		{"empty podSelector {} selects unlabelled Pod", nil, empty, nil, nil, true, ""},
		{"empty namespaceSelector {} alone selects every Pod", empty, nil, db, staging, true, ""},
		{"{} namespaces with a podSelector", empty, ml("app", "db"), db, staging, true, ""},
		{"seed name label", ml("kubernetes.io/metadata.name", "prod"), ml("app", "web"), web, prod, true, ""},
		{"matchExpressions In", nil, expr("app", metav1.LabelSelectorOpIn, "web", "api"), web, prod, true, ""},
		{"matchExpressions NotIn", nil, expr("app", metav1.LabelSelectorOpNotIn, "web"), db, prod, true, ""},
		{"matchExpressions NotIn matches missing key", nil, expr("app", metav1.LabelSelectorOpNotIn, "web"), nil, prod, true, ""},
		{"matchExpressions Exists", nil, expr("tier", metav1.LabelSelectorOpExists), web, prod, true, ""},
		{"matchExpressions DoesNotExist", nil, expr("tier", metav1.LabelSelectorOpDoesNotExist), web, prod, false, ""},
		{"matchLabels and matchExpressions both honoured", nil,
			&metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}, MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"back"}}}},
			web, prod, false, ""},
		{"namespace expression", expr("env", metav1.LabelSelectorOpNotIn, "prod"), nil, web, staging, true, ""},
		{"invalid operator selects nothing", nil, expr("app", "Near", "web"), web, prod, false, "appliedTo.podSelector"},
		{"invalid label value selects nothing", ml("env", "not a value!"), nil, web, prod, false, "appliedTo.namespaceSelector"},
		{"In without values is invalid", nil, expr("app", metav1.LabelSelectorOpIn), web, prod, false, "appliedTo.podSelector"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Selects(egress("eg", 0, tt.ns, tt.pod), tt.podL, tt.nsL)
			if got != tt.want {
				t.Errorf("Selects = %v, want %v", got, tt.want)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("unexpected error %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error = %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	a := egress("a", 10, nil, ml("app", "web"))
	b := egress("b", 5, nil, ml("app", "web"))
	c := egress("c", 5, nil, ml("app", "web"))
	d := egress("d", 20, nil, ml("app", "web"))
	tests := []struct {
		name   string
		in     []*v1alpha1.Egress
		win    string
		losers []string
	}{
		{"none", nil, "", nil},
		{"one", []*v1alpha1.Egress{a}, "a", []string{}},
		{"oldest wins", []*v1alpha1.Egress{d, a}, "a", []string{"d"}},
		{"same age: name", []*v1alpha1.Egress{c, b}, "b", []string{"c"}},
		{"full order", []*v1alpha1.Egress{d, c, a, b}, "b", []string{"c", "a", "d"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]*v1alpha1.Egress{}, tt.in...)
			w, l := Resolve(in)
			if tt.win == "" {
				if w != nil || l != nil {
					t.Fatalf("Resolve = %v, %v", w, l)
				}
				return
			}
			if w.Name != tt.win {
				t.Errorf("winner = %s, want %s", w.Name, tt.win)
			}
			var names []string
			for _, e := range l {
				names = append(names, e.Name)
			}
			if strings.Join(names, ",") != strings.Join(tt.losers, ",") {
				t.Errorf("losers = %v, want %v", names, tt.losers)
			}
			for i := range in {
				if in[i] != tt.in[i] {
					t.Fatal("Resolve reordered its input")
				}
			}
		})
	}
}
