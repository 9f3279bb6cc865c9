package ipam

import (
	"errors"
	"math"
	"net/netip"
	"strings"
	"testing"

	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
)

func cidr(s string) v1alpha1.IPRange    { return v1alpha1.IPRange{CIDR: s} }
func span(a, b string) v1alpha1.IPRange { return v1alpha1.IPRange{Start: a, End: b} }
func addr(s string) netip.Addr          { return netip.MustParseAddr(s) }
func rng(a, b string) Range             { return Range{First: addr(a), Last: addr(b)} }
func mustPool(t testing.TB, rs ...v1alpha1.IPRange) *Pool {
	t.Helper()
	p, err := ParseRanges(rs)
	if err != nil {
		t.Fatalf("ParseRanges(%v): %v", rs, err)
	}
	return p
}

func TestParseRanges(t *testing.T) {
	tests := []struct {
		name  string
		in    []v1alpha1.IPRange
		want  []Range
		total int64
	}{
		{"seed example", []v1alpha1.IPRange{span("10.10.0.2", "10.10.0.10"), cidr("10.10.1.0/28")},
			[]Range{rng("10.10.0.2", "10.10.0.10"), rng("10.10.1.1", "10.10.1.14")}, 9 + 14},
		{"ipv4 /24 skips network and broadcast", []v1alpha1.IPRange{cidr("192.0.2.0/24")},
			[]Range{rng("192.0.2.1", "192.0.2.254")}, 254},
		{"ipv4 /30", []v1alpha1.IPRange{cidr("192.0.2.4/30")}, []Range{rng("192.0.2.5", "192.0.2.6")}, 2},
		{"ipv4 /31 both usable (RFC 3021)", []v1alpha1.IPRange{cidr("192.0.2.4/31")}, []Range{rng("192.0.2.4", "192.0.2.5")}, 2},
		{"ipv4 /32 one", []v1alpha1.IPRange{cidr("192.0.2.7/32")}, []Range{rng("192.0.2.7", "192.0.2.7")}, 1},
		{"ipv4 /0", []v1alpha1.IPRange{cidr("0.0.0.0/0")}, []Range{rng("0.0.0.1", "255.255.255.254")}, 1<<32 - 2},
		{"ipv6 /120 skips only network", []v1alpha1.IPRange{cidr("2001:db8::/120")}, []Range{rng("2001:db8::1", "2001:db8::ff")}, 255},
		{"ipv6 /127 both usable (RFC 6164)", []v1alpha1.IPRange{cidr("2001:db8::/127")}, []Range{rng("2001:db8::", "2001:db8::1")}, 2},
		{"ipv6 /128 one", []v1alpha1.IPRange{cidr("2001:db8::5/128")}, []Range{rng("2001:db8::5", "2001:db8::5")}, 1},
		{"ipv6 /64 saturates to 2^64-1 > MaxInt64", []v1alpha1.IPRange{cidr("2001:db8::/64")},
			[]Range{rng("2001:db8::1", "2001:db8::ffff:ffff:ffff:ffff")}, math.MaxInt64},
		{"ipv6 /65 fits", []v1alpha1.IPRange{cidr("2001:db8::/65")},
			[]Range{rng("2001:db8::1", "2001:db8::7fff:ffff:ffff:ffff")}, 1<<63 - 1},
		{"ipv6 ::/0 saturates", []v1alpha1.IPRange{cidr("::/0")},
			[]Range{rng("::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")}, math.MaxInt64},
		{"single start=end", []v1alpha1.IPRange{span("203.0.113.9", "203.0.113.9")}, []Range{rng("203.0.113.9", "203.0.113.9")}, 1},
		{"overlap counted once", []v1alpha1.IPRange{span("192.0.2.1", "192.0.2.10"), span("192.0.2.5", "192.0.2.20"), cidr("192.0.2.0/29")},
			[]Range{rng("192.0.2.1", "192.0.2.20")}, 20},
		{"adjacent merged", []v1alpha1.IPRange{span("192.0.2.11", "192.0.2.20"), span("192.0.2.1", "192.0.2.10")},
			[]Range{rng("192.0.2.1", "192.0.2.20")}, 20},
		{"contained range", []v1alpha1.IPRange{span("192.0.2.1", "192.0.2.100"), span("192.0.2.5", "192.0.2.6")},
			[]Range{rng("192.0.2.1", "192.0.2.100")}, 100},
		{"top of ipv4 space", []v1alpha1.IPRange{span("255.255.255.250", "255.255.255.255"), span("255.255.255.255", "255.255.255.255")},
			[]Range{rng("255.255.255.250", "255.255.255.255")}, 6},
		{"families kept apart, v4 first", []v1alpha1.IPRange{cidr("2001:db8::/126"), span("255.255.255.255", "255.255.255.255"), span("::", "::")},
			[]Range{rng("255.255.255.255", "255.255.255.255"), rng("::", "::"), rng("2001:db8::1", "2001:db8::3")}, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustPool(t, tt.in...)
			got := p.Ranges()
			if len(got) != len(tt.want) {
				t.Fatalf("ranges = %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("ranges = %v, want %v", got, tt.want)
				}
			}
			if p.Total() != tt.total {
				t.Errorf("Total = %d, want %d", p.Total(), tt.total)
			}
		})
	}
}

func TestParseRangesErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []v1alpha1.IPRange
		want string // prefix of the error
	}{
		{"empty", nil, "ipRanges: must not be empty"},
		{"nothing set", []v1alpha1.IPRange{{}}, "ipRanges[0].start: must be set"},
		{"cidr and start", []v1alpha1.IPRange{{CIDR: "192.0.2.0/24", Start: "192.0.2.1"}}, "ipRanges[0]: exactly one of cidr or start and end"},
		{"start only", []v1alpha1.IPRange{cidr("192.0.2.0/24"), {Start: "192.0.2.1"}}, "ipRanges[1].end: must be set"},
		{"end only", []v1alpha1.IPRange{{End: "192.0.2.1"}}, "ipRanges[0].start: must be set"},
		{"bad cidr", []v1alpha1.IPRange{cidr("192.0.2.0/33")}, "ipRanges[0].cidr: must be a valid CIDR"},
		{"cidr with host bits", []v1alpha1.IPRange{cidr("192.0.2.5/24")}, "ipRanges[0].cidr: must be a network address: use 192.0.2.0/24"},
		{"ipv6 cidr with host bits", []v1alpha1.IPRange{cidr("2001:db8::1/64")}, "ipRanges[0].cidr: must be a network address: use 2001:db8::/64"},
		{"mapped cidr", []v1alpha1.IPRange{cidr("::ffff:192.0.2.0/120")}, "ipRanges[0].cidr: must not be an IPv4-mapped"},
		{"bad start", []v1alpha1.IPRange{span("192.0.2.300", "192.0.2.1")}, "ipRanges[0].start: must be a valid"},
		{"bad end", []v1alpha1.IPRange{span("192.0.2.1", "x")}, "ipRanges[0].end: must be a valid"},
		{"zone", []v1alpha1.IPRange{span("fe80::1%eth0", "fe80::2")}, "ipRanges[0].start: must not have a zone"},
		{"mapped start", []v1alpha1.IPRange{span("::ffff:192.0.2.1", "::ffff:192.0.2.2")}, "ipRanges[0].start: must not be an IPv4-mapped"},
		{"mixed families", []v1alpha1.IPRange{span("192.0.2.1", "2001:db8::1")}, "ipRanges[0].end: 2001:db8::1 is not of the same IP family"},
		{"ipv4 start > end", []v1alpha1.IPRange{span("192.0.2.9", "192.0.2.1")}, "ipRanges[0].start: 192.0.2.9 must not be greater than end"},
		{"ipv6 start > end", []v1alpha1.IPRange{cidr("2001:db8::/64"), span("2001:db8::10", "2001:db8::f")}, "ipRanges[1].start: 2001:db8::10 must not be greater than end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParseRanges(tt.in)
			if err == nil {
				t.Fatalf("ParseRanges(%v) = %v, want error %q", tt.in, p.Ranges(), tt.want)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error = %q, want prefix %q", err, tt.want)
			}
			if !errors.Is(err, ErrInvalidRange) {
				t.Errorf("error %q does not wrap ErrInvalidRange", err)
			}
		})
	}
}

func TestContains(t *testing.T) {
	p := mustPool(t, cidr("192.0.2.0/29"), span("198.51.100.10", "198.51.100.12"), cidr("2001:db8::/64"))
	tests := []struct {
		ip   string
		want bool
	}{
		{"192.0.2.0", false}, // network
		{"192.0.2.1", true},
		{"192.0.2.6", true},
		{"192.0.2.7", false}, // broadcast
		{"198.51.100.9", false},
		{"198.51.100.10", true},
		{"198.51.100.12", true},
		{"198.51.100.13", false},
		{"2001:db8::", false}, // subnet-router anycast
		{"2001:db8::1", true},
		{"2001:db8::ffff:ffff:ffff:ffff", true},
		{"2001:db8:0:1::", false},
		{"::ffff:192.0.2.1", true}, // mapped form of a pool IP is the same IP
		{"::c000:201", false},      // 192.0.2.1's bits as IPv6 are not the IPv4 IP
		{"203.0.113.1", false},
	}
	for _, tt := range tests {
		if got := p.Contains(addr(tt.ip)); got != tt.want {
			t.Errorf("Contains(%s) = %v, want %v", tt.ip, got, tt.want)
		}
	}
	if p.Contains(netip.Addr{}) {
		t.Error("Contains(zero Addr) = true")
	}
}
