package election

import (
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func nodes(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("node-%d", i)
	}
	return out
}

func ips(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("203.0.%d.%d", 113+i/256, i%256)
	}
	return out
}

func without(ms []string, drop string) []string {
	return slices.DeleteFunc(slices.Clone(ms), func(m string) bool { return m == drop })
}

func TestOwnerTable(t *testing.T) {
	three := []string{"node-a", "node-b", "node-c"}
	ip := "203.0.113.10"
	ringOwner := Owner(ip, three, "", Rebalance)
	other := three[(slices.Index(three, ringOwner)+1)%3]
	tests := []struct {
		name     string
		eligible []string
		current  string
		p        Policy
		want     string
	}{
		{"no eligible, rebalance", nil, "", Rebalance, ""},
		{"no eligible, sticky keeps nothing", nil, "node-a", Sticky, ""},
		{"only empty names", []string{"", ""}, "", Rebalance, ""},
		{"single member", []string{"node-b"}, "", Rebalance, "node-b"},
		{"single member sticky with gone current", []string{"node-b"}, "node-a", Sticky, "node-b"},
		{"rebalance ignores current", three, other, Rebalance, ringOwner},
		{"sticky keeps eligible current", three, other, Sticky, other},
		{"sticky with ineligible current uses ring", three, "node-z", Sticky, ringOwner},
		{"sticky with no current uses ring", three, "", Sticky, ringOwner},
		{"order and duplicates don't matter", []string{"node-c", "node-a", "node-b", "node-a"}, "", Rebalance, ringOwner},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Owner(ip, tt.eligible, tt.current, tt.p); got != tt.want {
				t.Errorf("Owner = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestAntreaRing checks the ring against a brute-force reading of Antrea's
// definition (crc32 IEEE of strconv.Itoa(i)+member; the owner is the first
// point at or after crc32(ip), wrapping; ties to the smaller name), so a
// change of hash, key format or search fails here.
func TestAntreaRing(t *testing.T) {
	r := NewRing([]string{"node-a", "node-b", "node-c"})
	if len(r.points) != 3*VirtualNodes {
		t.Fatalf("%d ring points, want %d", len(r.points), 3*VirtualNodes)
	}
	for i := 1; i < len(r.points); i++ {
		if r.points[i-1].hash >= r.points[i].hash {
			t.Fatalf("ring not strictly sorted at %d", i)
		}
	}
	// Recompute ownership by brute force: the first point clockwise.
	for _, ip := range ips(200) {
		want := bruteOwner(ip, []string{"node-a", "node-b", "node-c"})
		if got := r.Owner(ip, "", Rebalance); got != want {
			t.Fatalf("Owner(%s) = %s, brute force %s", ip, got, want)
		}
	}
}

func bruteOwner(ip string, members []string) string {
	h := crcIEEE(ip)
	best, bestHash, wrap, wrapHash := "", uint32(0), "", uint32(0)
	first, firstW := true, true
	for _, m := range members {
		for i := range VirtualNodes {
			v := crcIEEE(fmt.Sprint(i) + m)
			if v >= h && (first || v < bestHash || v == bestHash && m < best) {
				best, bestHash, first = m, v, false
			}
			if firstW || v < wrapHash || v == wrapHash && m < wrap {
				wrap, wrapHash, firstW = m, v, false
			}
		}
	}
	if first {
		return wrap
	}
	return best
}

func TestMinimalMovementOnLeave(t *testing.T) {
	for _, n := range []int{2, 3, 5, 10} {
		members, all := nodes(n), ips(1000)
		before := Assign(all, members, nil, Rebalance)
		for _, gone := range members {
			after := Assign(all, without(members, gone), nil, Rebalance)
			for _, ip := range all {
				if before[ip] != gone && after[ip] != before[ip] {
					t.Fatalf("n=%d, %s left: %s moved %s→%s", n, gone, ip, before[ip], after[ip])
				}
				if after[ip] == gone || after[ip] == "" {
					t.Fatalf("n=%d, %s left: %s still on %q", n, gone, ip, after[ip])
				}
			}
		}
	}
}

func TestMinimalMovementOnJoin(t *testing.T) {
	for _, n := range []int{2, 3, 5, 10} {
		members, all := nodes(n+1), ips(1000)
		joiner := members[n]
		before := Assign(all, members[:n], nil, Rebalance)
		after := Assign(all, members, nil, Rebalance)
		moved := 0
		for _, ip := range all {
			if after[ip] != before[ip] {
				moved++
				if after[ip] != joiner {
					t.Fatalf("n=%d: %s moved %s→%s, not to the joiner", n, ip, before[ip], after[ip])
				}
			}
		}
		fair := 1000 / (n + 1)
		if moved < fair/3 || moved > fair*2 {
			t.Errorf("n=%d: %d IPs moved to the joiner, want about %d", n, moved, fair)
		}
		t.Logf("n=%d: %d of 1000 IPs moved to the joiner (fair share %d)", n, moved, fair)
	}
}

// TestSpread checks no member is starved or swamped: 50 virtual nodes give
// a rough balance, not a perfect one.
func TestSpread(t *testing.T) {
	members, all := nodes(5), ips(1000)
	count := map[string]int{}
	for _, o := range Assign(all, members, nil, Rebalance) {
		count[o]++
	}
	for _, m := range members {
		if count[m] < 100 || count[m] > 350 {
			t.Errorf("%s owns %d of 1000 IPs: %v", m, count[m], count)
		}
	}
}

// TestNodeComesBack plays the issue-5 scenario: the owner dies, then comes
// back. Rebalance moves each IP back exactly once; Sticky leaves it put.
// Neither changes an owner while the eligible set is unchanged.
func TestNodeComesBack(t *testing.T) {
	members, all := nodes(4), ips(300)
	for _, p := range []Policy{Rebalance, Sticky} {
		t.Run(p.String(), func(t *testing.T) {
			owner := Assign(all, members, nil, p)
			victim := owner[all[0]]
			history := map[string][]string{}
			steps := [][]string{members, without(members, victim), without(members, victim), members, members}
			for _, eligible := range steps {
				owner = Assign(all, eligible, owner, p)
				for _, ip := range all {
					h := history[ip]
					if len(h) == 0 || h[len(h)-1] != owner[ip] {
						history[ip] = append(h, owner[ip])
					}
				}
			}
			for _, ip := range all {
				h := history[ip]
				switch {
				case h[0] != victim && len(h) != 1:
					t.Fatalf("%s was not on %s but moved: %v", ip, victim, h)
				case h[0] == victim && p == Rebalance && strings.Join(h, ",") != victim+","+h[1]+","+victim:
					t.Fatalf("rebalance: %s should move away and back once: %v", ip, h)
				case h[0] == victim && p == Sticky && (len(h) != 2 || h[1] == victim):
					t.Fatalf("sticky: %s should move away once and stay: %v", ip, h)
				}
			}
		})
	}
}

func TestDeterministicAcrossInputOrder(t *testing.T) {
	members, all := nodes(7), ips(500)
	want := Assign(all, members, nil, Rebalance)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		shuffled := slices.Clone(members)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		got := Assign(all, shuffled, nil, Rebalance)
		for _, ip := range all {
			if got[ip] != want[ip] {
				t.Fatalf("order %v: %s owner %s, want %s", shuffled, ip, got[ip], want[ip])
			}
		}
	}
}

func TestEligible(t *testing.T) {
	nodeLabels := map[string]map[string]string{
		"node-a": {"network-role": "egress-gateway", "zone": "z1"},
		"node-b": {"zone": "z2"},
		"node-c": {"network-role": "egress-gateway", "zone": "z2"},
		"node-d": {},
	}
	gw := metav1.LabelSelector{MatchLabels: map[string]string{"network-role": "egress-gateway"}}
	tests := []struct {
		name    string
		alive   []string
		sel     metav1.LabelSelector
		want    []string
		wantErr bool
	}{
		{"empty selector: every known alive node, sorted", []string{"node-d", "node-b", "node-a", "node-b"}, metav1.LabelSelector{}, []string{"node-a", "node-b", "node-d"}, false},
		{"matchLabels", []string{"node-a", "node-b", "node-c"}, gw, []string{"node-a", "node-c"}, false},
		{"dead nodes are not eligible", []string{"node-c"}, gw, []string{"node-c"}, false},
		{"unknown node is not eligible", []string{"node-x", "node-a"}, metav1.LabelSelector{}, []string{"node-a"}, false},
		{"matchExpressions NotIn", []string{"node-a", "node-b", "node-c", "node-d"},
			metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "zone", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"z2"}}}},
			[]string{"node-a", "node-d"}, false},
		{"matchLabels and matchExpressions both apply", []string{"node-a", "node-b", "node-c"},
			metav1.LabelSelector{MatchLabels: gw.MatchLabels, MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "zone", Operator: metav1.LabelSelectorOpIn, Values: []string{"z2"}}}},
			[]string{"node-c"}, false},
		{"nobody alive", nil, metav1.LabelSelector{}, []string{}, false},
		{"invalid selector", []string{"node-a"},
			metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "zone", Operator: "Near"}}}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Eligible(tt.alive, nodeLabels, tt.sel)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Eligible = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParsePolicy(t *testing.T) {
	for in, want := range map[string]Policy{"": Rebalance, "rebalance": Rebalance, "sticky": Sticky} {
		if got, err := ParsePolicy(in); err != nil || got != want {
			t.Errorf("ParsePolicy(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParsePolicy("random"); err == nil {
		t.Error("ParsePolicy(random) accepted")
	}
}

func BenchmarkAssign1000IPs10Nodes(b *testing.B) {
	members, all := nodes(10), ips(1000)
	for b.Loop() {
		Assign(all, members, nil, Rebalance)
	}
}

func crcIEEE(s string) uint32 { return crc32.ChecksumIEEE([]byte(s)) }
