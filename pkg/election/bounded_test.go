package election

import (
	"fmt"
	"maps"
	"slices"
	"testing"
)

func reqs(n int, eligible ...string) []Request {
	var out []Request
	for i := range n {
		out = append(out, Request{IP: fmt.Sprintf("192.0.2.%d", 211+i), Eligible: eligible})
	}
	return out
}

func loads(m map[string]string) map[string]int {
	l := map[string]int{}
	for _, o := range m {
		l[o]++
	}
	return l
}

func TestBoundedSpreadsTheSeedsTwoEgresses(t *testing.T) {
	// With the plain ring, 192.0.2.211 and .212 both land on one of three
	// Nodes; bounded, each gets its own.
	got := AssignBounded(reqs(2, "node-a", "node-b", "node-c"))
	if got["192.0.2.211"] == got["192.0.2.212"] {
		t.Fatalf("both IPs on %s", got["192.0.2.211"])
	}
}

func TestBoundedLoadNeverExceedsFairShare(t *testing.T) {
	for _, n := range []int{1, 3, 7, 10, 31} {
		got := AssignBounded(reqs(n, "node-a", "node-b", "node-c"))
		for m, l := range loads(got) {
			if l > (n+2)/3 {
				t.Errorf("%d IPs: %s holds %d, fair share %d", n, m, l, (n+2)/3)
			}
		}
	}
}

func TestBoundedIsDeterministicAndRespectsEligibility(t *testing.T) {
	r := append(reqs(4, "node-a", "node-b", "node-c"), Request{IP: "198.51.100.1", Eligible: []string{"node-b"}},
		Request{IP: "198.51.100.2", Eligible: nil})
	a := AssignBounded(r)
	rev := slices.Clone(r)
	slices.Reverse(rev)
	if b := AssignBounded(rev); !maps.Equal(a, b) {
		t.Fatalf("input order changed the result: %v vs %v", a, b)
	}
	if a["198.51.100.1"] != "node-b" {
		t.Fatalf("restricted IP on %s, want node-b (its only eligible member, even when full)", a["198.51.100.1"])
	}
	if a["198.51.100.2"] != "" {
		t.Fatalf("IP with no eligible member got %q", a["198.51.100.2"])
	}
}

func TestBoundedFailoverMovesOnlyTheDeadNodesIPs(t *testing.T) {
	before := AssignBounded(reqs(6, "node-a", "node-b", "node-c"))
	var dead string
	for _, o := range before {
		dead = o
		break
	}
	var alive []string
	for _, m := range []string{"node-a", "node-b", "node-c"} {
		if m != dead {
			alive = append(alive, m)
		}
	}
	after := AssignBounded(reqs(6, alive...))
	for ip, o := range before {
		if o != dead && after[ip] != o {
			t.Errorf("%s moved from live %s to %s when %s died", ip, o, after[ip], dead)
		}
		if after[ip] == dead {
			t.Errorf("%s still on dead %s", ip, dead)
		}
	}
}
