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
	got := AssignBounded(reqs(2, "node-a", "node-b", "node-c"), false)
	if got["192.0.2.211"] == got["192.0.2.212"] {
		t.Fatalf("both IPs on %s", got["192.0.2.211"])
	}
}

func TestBoundedLoadNeverExceedsFairShare(t *testing.T) {
	for _, n := range []int{1, 3, 7, 10, 31} {
		got := AssignBounded(reqs(n, "node-a", "node-b", "node-c"), false)
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
	a := AssignBounded(r, false)
	rev := slices.Clone(r)
	slices.Reverse(rev)
	if b := AssignBounded(rev, false); !maps.Equal(a, b) {
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
	before := AssignBounded(reqs(6, "node-a", "node-b", "node-c"), false)
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
	after := AssignBounded(reqs(6, alive...), false)
	for ip, o := range before {
		if o != dead && after[ip] != o {
			t.Errorf("%s moved from live %s to %s when %s died", ip, o, after[ip], dead)
		}
		if after[ip] == dead {
			t.Errorf("%s still on dead %s", ip, dead)
		}
	}
}

// withCurrent is reqs with each IP's current owner from prev.
func withCurrent(r []Request, prev map[string]string) []Request {
	out := slices.Clone(r)
	for i := range out {
		out[i].Current = prev[out[i].IP]
	}
	return out
}

// A departure moves only the departed member's IPs, whatever the number of
// IPs and members, and whichever member leaves.
func TestBoundedDepartureMovesOnlyItsIPs(t *testing.T) {
	for _, members := range [][]string{{"node-a", "node-b", "node-c"}, {"node-a", "node-b", "node-c", "node-d"}} {
		for n := 1; n <= 12; n++ {
			before := AssignBounded(reqs(n, members...), false)
			for _, dead := range members {
				alive := slices.DeleteFunc(slices.Clone(members), func(m string) bool { return m == dead })
				after := AssignBounded(withCurrent(reqs(n, alive...), before), false)
				for ip, o := range before {
					if o != dead && after[ip] != o {
						t.Errorf("%d IPs on %v: %s moved from live %s to %s when %s left", n, members, ip, o, after[ip], dead)
					}
				}
			}
		}
	}
}

// A returning member: with stay, nothing moves; with failback, only as many
// IPs move as the fair share requires, and all of them to members under it.
func TestBoundedReturn(t *testing.T) {
	members := []string{"node-a", "node-b", "node-c"}
	for n := 1; n <= 12; n++ {
		for _, gone := range members {
			alive := slices.DeleteFunc(slices.Clone(members), func(m string) bool { return m == gone })
			during := AssignBounded(reqs(n, alive...), false)
			stay := AssignBounded(withCurrent(reqs(n, members...), during), true)
			if !maps.Equal(stay, during) {
				t.Errorf("%d IPs, %s back, stay: %v → %v", n, gone, during, stay)
			}
			back := AssignBounded(withCurrent(reqs(n, members...), during), false)
			capacity := (n + len(members) - 1) / len(members)
			over := 0
			for _, l := range loads(during) {
				over += max(0, l-capacity)
			}
			moved := 0
			for ip, o := range during {
				if back[ip] != o {
					moved++
				}
			}
			if moved != over {
				t.Errorf("%d IPs, %s back, failback: %d moved, the fair share needs %d (%v → %v)", n, gone, moved, over, during, back)
			}
			for m, l := range loads(back) {
				if l > capacity {
					t.Errorf("%d IPs, failback: %s holds %d > %d", n, m, l, capacity)
				}
			}
		}
	}
}
