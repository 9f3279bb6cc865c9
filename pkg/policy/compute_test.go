package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
)

func pod(ns, name, node string, ip string, kv ...string) PodInfo {
	l := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		l[kv[i]] = kv[i+1]
	}
	p := PodInfo{Namespace: ns, Name: name, Node: node, Labels: l, Phase: corev1.PodRunning}
	if ip != "" {
		p.IPs = []netip.Addr{netip.MustParseAddr(ip)}
	}
	return p
}

func keys(ks []PodKey) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = k.String()
	}
	return strings.Join(s, ",")
}

func TestCompute(t *testing.T) {
	nss := map[string]map[string]string{
		"prod":    {"env": "prod"}, // name label added by Compute
		"staging": {"kubernetes.io/metadata.name": "staging", "env": "staging"},
	}
	done := pod("prod", "done", "node-a", "10.244.1.9", "app", "web")
	done.Phase = corev1.PodSucceeded
	failed := pod("prod", "failed", "node-a", "10.244.1.8", "app", "web")
	failed.Phase = corev1.PodFailed
	hostNet := pod("prod", "hostnet", "node-a", "192.0.2.11", "app", "web")
	hostNet.HostNetwork = true
	dual := pod("staging", "web-1", "node-b", "10.244.2.5", "app", "web")
	dual.IPs = append(dual.IPs, netip.MustParseAddr("fd00::5"))
	pending := pod("staging", "web-2", "node-a", "10.244.1.20", "app", "web")
	pending.Phase = corev1.PodPending // CNI reported its IP already: selected
	bad := egress("bad", 0, nil, expr("app", "Near", "web"))
	view := View{
		Namespaces: nss,
		Egresses: []*v1alpha1.Egress{
			egress("staging-web", 30, ml("kubernetes.io/metadata.name", "staging"), ml("app", "web")),
			egress("prod-all", 20, ml("kubernetes.io/metadata.name", "prod"), nil),
			egress("all-web", 10, nil, ml("app", "web")), // oldest: wins every web Pod
			egress("empty", 0, nil, nil),
			bad,
			nil, // ignored
		},
		Pods: []PodInfo{
			pod("prod", "web-1", "node-a", "10.244.1.5", "app", "web"),
			pod("prod", "db-1", "node-b", "10.244.2.7", "app", "db"),
			pod("prod", "noip", "node-a", "", "app", "web"),
			done, failed, hostNet, dual, pending,
			pod("staging", "db-1", "node-a", "10.244.1.30", "app", "db"),
			pod("ghost", "web-1", "node-a", "10.244.1.40", "app", "web"), // Namespace unknown
			pod("ghost", "db-1", "node-a", "10.244.1.41", "app", "db"),
		},
	}
	res := Compute(view)
	wantPods := map[string]string{
		"prod/web-1":    "all-web|prod-all",
		"prod/db-1":     "prod-all|",
		"staging/web-1": "all-web|staging-web",
		"staging/web-2": "all-web|staging-web",
		"ghost/web-1":   "all-web|",
	}
	if len(res.Pods) != len(wantPods) {
		t.Errorf("%d Pods selected, want %d: %v", len(res.Pods), len(wantPods), res.Pods)
	}
	for k, a := range res.Pods {
		got := a.Egress + "|" + strings.Join(a.Losers, ",")
		if wantPods[k.String()] != got {
			t.Errorf("%s: %s, want %s", k, got, wantPods[k.String()])
		}
	}
	type eres struct{ pods, ips, shadowed string }
	wantEg := map[string]eres{
		"all-web":     {"ghost/web-1,prod/web-1,staging/web-1,staging/web-2", "10.244.1.5,10.244.1.20,10.244.1.40,10.244.2.5,fd00::5", ""},
		"prod-all":    {"prod/db-1", "10.244.2.7", "prod/web-1"},
		"staging-web": {"", "", "staging/web-1,staging/web-2"},
		"empty":       {"", "", ""},
		"bad":         {"", "", ""},
	}
	if len(res.Egresses) != len(wantEg) {
		t.Errorf("%d Egress results, want %d", len(res.Egresses), len(wantEg))
	}
	for name, w := range wantEg {
		er := res.Egresses[name]
		if er == nil {
			t.Fatalf("no result for %s", name)
		}
		ips := make([]string, len(er.PodIPs))
		for i, ip := range er.PodIPs {
			ips[i] = ip.String()
		}
		got := eres{keys(er.Pods), strings.Join(ips, ","), keys(er.Shadowed)}
		if got != w {
			t.Errorf("%s: %+v, want %+v", name, got, w)
		}
		if (er.Err != nil) != (name == "bad") {
			t.Errorf("%s: Err = %v", name, er.Err)
		}
	}
	local := res.LocalIPs("node-a")
	if fmt.Sprint(local) != "map[all-web:[10.244.1.5 10.244.1.20 10.244.1.40]]" {
		t.Errorf("LocalIPs(node-a) = %v", local)
	}
}

func TestPodInfoFromPod(t *testing.T) {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "web-1", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{NodeName: "node-a", HostNetwork: false},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.1.5",
			PodIPs: []corev1.PodIP{{IP: "10.244.1.5"}, {IP: "fd00::5"}, {IP: "junk"}}},
	}
	got := PodInfoFromPod(p)
	if got.Namespace != "prod" || got.Name != "web-1" || got.Node != "node-a" || got.Labels["app"] != "web" ||
		fmt.Sprint(got.IPs) != "[10.244.1.5 fd00::5]" || got.Phase != corev1.PodRunning {
		t.Errorf("PodInfoFromPod = %+v", got)
	}
	p.Status.PodIPs = nil
	if got := PodInfoFromPod(p); fmt.Sprint(got.IPs) != "[10.244.1.5]" {
		t.Errorf("PodIP fallback: IPs = %v", got.IPs)
	}
}

// randomView builds a cluster with label values from small sets, so that
// selectors of every kind hit, miss and overlap.
func randomView(rng *rand.Rand, nNS, nPods, nEg int) View {
	vals := func(k string, n int) string { return fmt.Sprintf("%s%d", k, rng.IntN(n)) }
	maybe := func(l map[string]string, k string, n int) {
		if rng.IntN(3) > 0 {
			l[k] = vals(k, n)
		}
	}
	v := View{Namespaces: map[string]map[string]string{}}
	for i := range nNS {
		l := map[string]string{}
		maybe(l, "team", 4)
		maybe(l, "env", 3)
		v.Namespaces[fmt.Sprintf("ns-%d", i)] = l
	}
	for i := range nPods {
		ns := fmt.Sprintf("ns-%d", rng.IntN(nNS+1)) // ns-nNS is unknown
		p := pod(ns, fmt.Sprintf("p-%d", i), fmt.Sprintf("node-%d", rng.IntN(5)),
			fmt.Sprintf("10.244.%d.%d", i/250, i%250+1))
		maybe(p.Labels, "app", 6)
		maybe(p.Labels, "tier", 3)
		switch rng.IntN(20) {
		case 0:
			p.HostNetwork = true
		case 1:
			p.Phase = corev1.PodSucceeded
		case 2:
			p.IPs = nil
		}
		v.Pods = append(v.Pods, p)
	}
	sel := func(keys ...string) *metav1.LabelSelector {
		if rng.IntN(4) == 0 {
			return nil
		}
		s := &metav1.LabelSelector{}
		for _, k := range keys {
			switch rng.IntN(7) {
			case 0:
				s.MatchLabels = map[string]string{k: vals(k, 6)}
			case 1:
				s.MatchExpressions = append(s.MatchExpressions, metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpIn, Values: []string{vals(k, 6), vals(k, 6)}})
			case 2:
				s.MatchExpressions = append(s.MatchExpressions, metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpNotIn, Values: []string{vals(k, 6)}})
			case 3:
				s.MatchExpressions = append(s.MatchExpressions, metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpExists})
			case 4:
				s.MatchExpressions = append(s.MatchExpressions, metav1.LabelSelectorRequirement{Key: k, Operator: metav1.LabelSelectorOpDoesNotExist})
			}
		}
		return s
	}
	for i := range nEg {
		// Few distinct timestamps, so name tie-breaks are exercised.
		v.Egresses = append(v.Egresses, egress(fmt.Sprintf("eg-%d", i), rng.IntN(5),
			sel("team", "env", "kubernetes.io/metadata.name"), sel("app", "tier")))
	}
	return v
}

// TestComputeMatchesBruteForce checks the indexed Compute against the
// definition: every Pod against every Egress with Selects, then Resolve.
func TestComputeMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for round := range 12 {
		v := randomView(rng, 1+rng.IntN(8), 200, 1+rng.IntN(60))
		res := Compute(v)
		selected := 0
		for _, p := range v.Pods {
			var sel []*v1alpha1.Egress
			if p.eligible() {
				for _, eg := range v.Egresses {
					nsL, known := v.Namespaces[p.Namespace]
					if !known && eg.Spec.AppliedTo.NamespaceSelector != nil {
						continue
					}
					if ok, _ := Selects(eg, p.Labels, nsLabelSet(p.Namespace, nsL)); ok {
						sel = append(sel, eg)
					}
				}
			}
			key := PodKey{p.Namespace, p.Name}
			a, got := res.Pods[key]
			if len(sel) == 0 {
				if got {
					t.Fatalf("round %d: %s selected by %s, brute force says none", round, key, a.Egress)
				}
				continue
			}
			selected++
			w, l := Resolve(sel)
			var ln []string
			for _, e := range l {
				ln = append(ln, e.Name)
			}
			if !got || a.Egress != w.Name || !slices.Equal(a.Losers, ln) {
				t.Fatalf("round %d: %s: got %q losers %v, brute force %q losers %v", round, key, a.Egress, a.Losers, w.Name, ln)
			}
		}
		if round == 0 && selected == 0 {
			t.Fatal("random view selected nothing: the test is vacuous")
		}
	}
}

// benchView is 10,000 Pods in 100 Namespaces and 1,000 Egresses of four
// shapes: Namespace+Pod labels, Pod expressions cluster-wide, Namespace
// only, and Namespace + NotIn (unindexable) Pod expressions.
func benchView() View {
	v := View{Namespaces: map[string]map[string]string{}}
	for i := range 100 {
		name := fmt.Sprintf("ns-%d", i)
		v.Namespaces[name] = map[string]string{"kubernetes.io/metadata.name": name, "team": fmt.Sprintf("t%d", i%10)}
	}
	for i := range 10000 {
		v.Pods = append(v.Pods, pod(fmt.Sprintf("ns-%d", i%100), fmt.Sprintf("p-%d", i), fmt.Sprintf("node-%d", i%50),
			fmt.Sprintf("10.244.%d.%d", i/250, i%250+1),
			"app", fmt.Sprintf("app-%d", i%200), "tier", []string{"web", "db"}[i%2], "pod-template-hash", fmt.Sprintf("h%d", i)))
	}
	for i := range 1000 {
		var ns, p *metav1.LabelSelector
		switch i % 4 {
		case 0:
			ns, p = ml("kubernetes.io/metadata.name", fmt.Sprintf("ns-%d", i%100)), ml("app", fmt.Sprintf("app-%d", i%200))
		case 1:
			p = &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "web"}, MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{fmt.Sprintf("app-%d", i%200), fmt.Sprintf("app-%d", (i+1)%200)}}}}
		case 2:
			ns = ml("team", fmt.Sprintf("t%d", i%10))
		case 3:
			ns, p = ml("kubernetes.io/metadata.name", fmt.Sprintf("ns-%d", i%100)), expr("tier", metav1.LabelSelectorOpNotIn, "db")
		}
		v.Egresses = append(v.Egresses, egress(fmt.Sprintf("eg-%d", i), i%17, ns, p))
	}
	return v
}

func BenchmarkCompute10kPods1kEgresses(b *testing.B) {
	v := benchView()
	var res Result
	for b.Loop() {
		res = Compute(v)
	}
	b.ReportMetric(float64(len(res.Pods)), "selected-pods")
}
