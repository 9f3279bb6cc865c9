package ipam

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
)

func TestWhy(t *testing.T) {
	rs := append(Special(), Reserved{netip.MustParsePrefix("192.0.2.13/32"), "the address of Node node-c"},
		Reserved{netip.MustParsePrefix("10.244.0.0/16"), "inside the cluster CIDR 10.244.0.0/16"})
	for _, tc := range []struct{ ip, want string }{
		{"192.0.2.13", "Node node-c"},
		{"192.0.2.14", ""},
		{"10.244.3.7", "cluster CIDR"},
		{"127.0.0.1", "loopback"},
		{"127.255.255.254", "loopback"},
		{"169.254.169.254", "link-local"},
		{"224.0.0.251", "multicast"},
		{"239.1.1.1", "multicast"},
		{"255.255.255.255", "broadcast"},
		{"0.0.0.0", "this network"},
		{"::1", "loopback"},
		{"fe80::1", "link-local"},
		{"ff02::1", "multicast"},
		{"::", "unspecified"},
		{"2001:db8::1", ""},
		{"203.0.113.9", ""},
	} {
		got := Why(rs, netip.MustParseAddr(tc.ip))
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("Why(%s) = %q, want it to say %q", tc.ip, got, tc.want)
		}
	}
}

func TestWithout(t *testing.T) {
	res := func(ps ...string) []Reserved {
		var out []Reserved
		for _, p := range ps {
			out = append(out, Reserved{Prefix: netip.MustParsePrefix(p), Why: "x"})
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		ranges []v1alpha1.IPRange
		cut    []Reserved
		want   string // Ranges, joined by " "
	}{
		{"node IP in the middle splits the range", []v1alpha1.IPRange{span("192.0.2.10", "192.0.2.20")}, res("192.0.2.13/32"), "192.0.2.10-192.0.2.12 192.0.2.14-192.0.2.20"},
		{"first and last cut", []v1alpha1.IPRange{span("192.0.2.10", "192.0.2.20")}, res("192.0.2.10/32", "192.0.2.20/32"), "192.0.2.11-192.0.2.19"},
		{"a block that covers the pool empties it", []v1alpha1.IPRange{span("10.244.1.1", "10.244.1.9")}, res("10.244.0.0/16"), ""},
		{"outsiders and other families change nothing", []v1alpha1.IPRange{cidr("192.0.2.0/30")}, res("198.51.100.0/24", "2001:db8::/32"), "192.0.2.1-192.0.2.2"},
		{"a /8 less a /16 stays two ranges", []v1alpha1.IPRange{cidr("10.0.0.0/8")}, res("10.1.0.0/16"), "10.0.0.1-10.0.255.255 10.2.0.0-10.255.255.254"},
		{"ipv6 less link-local", []v1alpha1.IPRange{span("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:fffe", "fe80::5")}, Special(), "fe7f:ffff:ffff:ffff:ffff:ffff:ffff:fffe-fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
	} {
		p, err := ParseRanges(tc.ranges)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range p.Without(tc.cut).Ranges() {
			got = append(got, r.String())
		}
		if s := strings.Join(got, " "); s != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, s, tc.want)
		}
		if len(p.Ranges()) == 0 {
			t.Errorf("%s: Without changed the pool it was called on", tc.name)
		}
	}
}

func TestWithoutNext(t *testing.T) {
	p, _ := ParseRanges([]v1alpha1.IPRange{span("192.0.2.11", "192.0.2.13")})
	q := p.Without([]Reserved{{netip.MustParsePrefix("192.0.2.11/32"), "node"}})
	if ip, err := q.Next(nil); err != nil || ip.String() != "192.0.2.12" {
		t.Fatalf("Next = %v, %v; want 192.0.2.12 (the Node IP .11 skipped)", ip, err)
	}
	if _, err := q.Next(addrs("192.0.2.12", "192.0.2.13")); err != ErrPoolExhausted {
		t.Fatalf("Next with the rest used = %v; want ErrPoolExhausted", err)
	}
}
