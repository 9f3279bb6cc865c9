package ipam

import (
	"errors"
	"math"
	"net/netip"
	"testing"

	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
)

// FuzzParseRanges feeds two arbitrary ranges to ParseRanges and checks the
// invariants every parsed pool must keep.
func FuzzParseRanges(f *testing.F) {
	f.Add("10.10.1.0/28", "", "", "", "10.10.0.2", "10.10.0.10")
	f.Add("192.0.2.4/31", "", "", "192.0.2.0/32", "", "")
	f.Add("2001:db8::/64", "", "", "", "2001:db8::10", "2001:db8::f")
	f.Add("", "255.255.255.255", "255.255.255.255", "0.0.0.0/0", "", "")
	f.Add("::/0", "", "", "", "::", "::1")
	f.Add("192.0.2.5/24", "", "", "", "fe80::1%eth0", "fe80::2")
	f.Add("", "::ffff:192.0.2.1", "::ffff:192.0.2.9", "", "192.0.2.1", "2001:db8::1")
	f.Add("x", "1.2.3", "", "2001:db8::/127", "192.0.2.9", "192.0.2.1")
	f.Fuzz(func(t *testing.T, c1, s1, e1, c2, s2, e2 string) {
		p, err := ParseRanges([]v1alpha1.IPRange{{CIDR: c1, Start: s1, End: e1}, {CIDR: c2, Start: s2, End: e2}})
		if err != nil {
			if !errors.Is(err, ErrInvalidRange) {
				t.Fatalf("error %q does not wrap ErrInvalidRange", err)
			}
			return
		}
		rs := p.Ranges()
		if len(rs) == 0 || len(rs) > 2 {
			t.Fatalf("%d ranges from 2 specs", len(rs))
		}
		var sum int64
		for i, r := range rs {
			if !r.First.IsValid() || r.First.Compare(r.Last) > 0 || r.First.BitLen() != r.Last.BitLen() {
				t.Fatalf("bad range %v", r)
			}
			if r.First.Zone() != "" || r.First.Is4In6() || r.Last.Is4In6() {
				t.Fatalf("unnormalised range %v", r)
			}
			if i > 0 && touches(rs[i-1], r) {
				t.Fatalf("ranges %v and %v not merged", rs[i-1], r)
			}
			if !p.Contains(r.First) || !p.Contains(r.Last) {
				t.Fatalf("pool does not contain the ends of %v", r)
			}
			if prev := r.First.Prev(); prev.IsValid() && p.Contains(prev) && (i == 0 || prev != rs[i-1].Last) {
				t.Fatalf("pool contains %s just below %v", prev, r)
			}
			if sum > math.MaxInt64-r.Size() {
				sum = math.MaxInt64
			} else {
				sum += r.Size()
			}
		}
		if p.Total() != sum || sum <= 0 {
			t.Fatalf("Total = %d, sum of sizes %d", p.Total(), sum)
		}
		first, err := p.Next(nil)
		if err != nil || first != rs[0].First {
			t.Fatalf("Next(nil) = %v, %v; want %v", first, err, rs[0].First)
		}
		second, err := p.Next([]netip.Addr{first})
		if p.Total() == 1 {
			if !errors.Is(err, ErrPoolExhausted) {
				t.Fatalf("one-IP pool: Next = %v, %v", second, err)
			}
		} else if err != nil || second.Compare(first) <= 0 || !p.Contains(second) {
			t.Fatalf("Next after %v = %v, %v", first, second, err)
		}
	})
}
