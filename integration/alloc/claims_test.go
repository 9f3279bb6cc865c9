package alloc_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/helperd/alloc"
	v1alpha1 "github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Against the real API server, with two allocators racing: a pool that
// spans a Node's IP, two overlapping pools, a pool inside the Pod CIDR, and
// a static and a pooled Egress naming one IP. No Node IP and no cluster
// address is ever handed out, no IP is ever carried by two pooled
// Egresses, and the losers are told why.
func TestNeverHijacks(t *testing.T) {
	ctx, cs := setup(t, 2*time.Minute)
	nodeIP := netip.MustParseAddr("198.51.100.1")
	cluster := func(a *alloc.Allocator) {
		a.NodeIPs = func() map[string]netip.Addr { return map[string]netip.Addr{"node-a": nodeIP} }
		a.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
	}
	dups := watchDuplicates(t, ctx)
	// left has .2-.5 to give (.1 is the Node's); right can take at most
	// two of them, .4 and .5, so both pools have room whichever plans first.
	newPool(t, ctx, cs, "left", v1alpha1.IPRange{Start: "198.51.100.1", End: "198.51.100.5"})
	newPool(t, ctx, cs, "right", v1alpha1.IPRange{Start: "198.51.100.4", End: "198.51.100.7"})
	newPool(t, ctx, cs, "pods", v1alpha1.IPRange{CIDR: "10.244.5.0/30"})
	newPool(t, ctx, cs, "doc", v1alpha1.IPRange{CIDR: "203.0.113.0/29"})
	mustEgress(t, ctx, cs, "static", "", "203.0.113.5")
	// twin is created after static, or in the same second and sorting after
	// it: static keeps the IP either way.
	for _, e := range [][3]string{{"l1", "left", ""}, {"l2", "left", ""}, {"r1", "right", ""}, {"r2", "right", ""},
		{"in-pods", "pods", ""}, {"twin", "doc", "203.0.113.5"}, {"node", "left", "198.51.100.1"}} {
		mustEgress(t, ctx, cs, e[0], e[1], e[2])
	}
	startAllocator(t, ctx, "one", cluster)
	startAllocator(t, ctx, "two", cluster)

	s := waitFor(t, ctx, cs, "every Egress decided", func(s state) string {
		for name, want := range map[string]string{
			"l1": v1alpha1.ReasonAllocated, "l2": v1alpha1.ReasonAllocated,
			"r1": v1alpha1.ReasonAllocated, "r2": v1alpha1.ReasonAllocated,
			"in-pods": v1alpha1.ReasonPoolExhausted, "twin": alloc.ReasonIPInUse,
			"node": alloc.ReasonIPReserved, "static": v1alpha1.ReasonStatic,
		} {
			st := metav1.ConditionFalse
			if want == v1alpha1.ReasonAllocated || want == v1alpha1.ReasonStatic {
				st = metav1.ConditionTrue
			}
			if why := hasCond(s.egs[name], st, want); why != "" {
				return why
			}
		}
		seen := map[string]string{}
		for _, name := range []string{"l1", "l2", "r1", "r2"} {
			ip := s.egs[name].Spec.EgressIP
			if ip == "" {
				return name + " carries no IP yet"
			}
			if other, ok := seen[ip]; ok {
				return fmt.Sprintf("%s and %s both carry %s", other, name, ip)
			}
			seen[ip] = name
		}
		return ""
	})
	for _, name := range []string{"l1", "l2", "r1", "r2", "in-pods"} {
		if ip := s.egs[name].Spec.EgressIP; ip == nodeIP.String() || strings.HasPrefix(ip, "10.244.") {
			t.Errorf("egress %s was given %s", name, ip)
		}
	}
	for name, want := range map[string]string{"node": "Node node-a", "twin": "Egress static"} {
		if c, _ := allocated(s.egs[name]); !strings.Contains(c.Message, want) {
			t.Errorf("egress %s: message %q does not say %q", name, c.Message, want)
		}
	}
	if ip := s.egs["twin"].Spec.EgressIP; ip != "203.0.113.5" {
		t.Errorf("the user's egressIP of twin was rewritten to %q", ip)
	}
	if got := recorded(s.pools["doc"], "203.0.113.5"); got != "" {
		t.Errorf("pool doc records the static Egress's IP for %q", got)
	}
	// Every moment of the history, not only the end: no IP was ever carried
	// by two Egresses but the user's own twin.
	time.Sleep(time.Second)
	for _, d := range dups.duplicates() {
		if !strings.Contains(d, "twin") && !strings.Contains(d, "static") {
			t.Errorf("duplicate: %s", d)
		}
	}
}
