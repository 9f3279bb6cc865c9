package election

import (
	"hash/crc32"
	"net/netip"
	"slices"
	"sort"
)

// Request is one egress IP to place, with the members its pool allows.
type Request struct {
	IP       string
	Eligible []string // alive members matching the pool's nodeSelector
	Current  string   // the IP's owner now (status.egressNode), "" if none
}

// AssignBounded places every IP with consistent hashing with bounded loads.
// First each IP whose current owner is still eligible stays with it, within
// the fair share (without limit when stay); the rest are placed as follows.
// each IP walks the ring of all eligible members from its own hash, as in
// Owner, but skips members that already hold their fair share,
// ceil(#IPs / #members). Plain consistent hashing can stack two IPs on one
// Node while others hold none (Antrea's HA example shows two Egresses on
// two Nodes); the bound spreads them and keeps the ring's other properties:
// the answer depends only on the inputs, so every helper computes the same,
// and a member leaving or joining moves few IPs. IPs are placed in address
// order so the result does not depend on input order. When every eligible
// member is full (a restrictive nodeSelector), the least-loaded one takes
// the IP. IPs with no eligible member map to "".
func AssignBounded(reqs []Request, stay bool) map[string]string {
	reqs = slices.Clone(reqs)
	slices.SortFunc(reqs, func(a, b Request) int { return compareIP(a.IP, b.IP) })
	all := map[string]bool{}
	for _, r := range reqs {
		for _, m := range r.Eligible {
			if m != "" {
				all[m] = true
			}
		}
	}
	out := make(map[string]string, len(reqs))
	if len(all) == 0 {
		for _, r := range reqs {
			out[r.IP] = ""
		}
		return out
	}
	members := make([]string, 0, len(all))
	for m := range all {
		members = append(members, m)
	}
	ring := NewRing(members)
	capacity := (len(reqs) + len(members) - 1) / len(members)
	load := map[string]int{}
	// An IP stays with its current owner while the owner is eligible and,
	// unless stay, within the fair share: a member leaving moves only its
	// own IPs, and one joining takes only what the share gives it.
	placed := map[string]bool{}
	for _, r := range reqs {
		if r.Current != "" && slices.Contains(r.Eligible, r.Current) && (stay || load[r.Current] < capacity) {
			out[r.IP] = r.Current
			load[r.Current]++
			placed[r.IP] = true
		}
	}
	for _, r := range reqs {
		if placed[r.IP] {
			continue
		}
		owner := ring.walk(r.IP, r.Eligible, func(m string) bool { return load[m] < capacity })
		if owner == "" {
			owner = leastLoaded(r.Eligible, load)
		}
		out[r.IP] = owner
		if owner != "" {
			load[owner]++
		}
	}
	return out
}

// walk returns the first member on the ring from ip's hash that is in
// eligible and passes ok, or "".
func (r *Ring) walk(ip string, eligible []string, ok func(string) bool) string {
	if len(r.points) == 0 {
		return ""
	}
	want := map[string]bool{}
	for _, m := range eligible {
		want[m] = true
	}
	h := crc32.ChecksumIEEE([]byte(ip))
	start := sort.Search(len(r.points), func(i int) bool { return r.points[i].hash >= h })
	seen := map[string]bool{}
	for k := range len(r.points) {
		m := r.points[(start+k)%len(r.points)].member
		if seen[m] {
			continue
		}
		seen[m] = true
		if want[m] && ok(m) {
			return m
		}
	}
	return ""
}

func leastLoaded(eligible []string, load map[string]int) string {
	best := ""
	for _, m := range eligible {
		if m == "" {
			continue
		}
		if best == "" || load[m] < load[best] || load[m] == load[best] && m < best {
			best = m
		}
	}
	return best
}

func compareIP(a, b string) int {
	x, errA := netip.ParseAddr(a)
	y, errB := netip.ParseAddr(b)
	if errA == nil && errB == nil {
		return x.Compare(y)
	}
	if a < b {
		return -1
	}
	if a > b {
		return 1
	}
	return 0
}
