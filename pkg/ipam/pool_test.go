package ipam

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
)

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = addr(s)
	}
	return out
}

func TestNext(t *testing.T) {
	seed := []v1alpha1.IPRange{span("10.10.0.2", "10.10.0.4"), cidr("10.10.1.0/30")}
	tests := []struct {
		name   string
		ranges []v1alpha1.IPRange
		used   []netip.Addr
		want   string // "" means ErrPoolExhausted
	}{
		{"empty pool use gives lowest", seed, nil, "10.10.0.2"},
		{"skips used run", seed, addrs("10.10.0.2", "10.10.0.3"), "10.10.0.4"},
		{"hole is reused", seed, addrs("10.10.0.2", "10.10.0.4"), "10.10.0.3"},
		{"next range after full one", seed, addrs("10.10.0.4", "10.10.0.3", "10.10.0.2"), "10.10.1.1"},
		{"duplicates and outsiders ignored", seed, addrs("10.10.0.2", "10.10.0.2", "10.10.1.0", "203.0.113.1", "10.10.0.3", "10.10.0.4", "10.10.1.1"), "10.10.1.2"},
		{"exhausted", seed, addrs("10.10.0.2", "10.10.0.3", "10.10.0.4", "10.10.1.1", "10.10.1.2"), ""},
		{"mapped used IP counts", seed, addrs("::ffff:10.10.0.2"), "10.10.0.3"},
		{"top of ipv4 space", []v1alpha1.IPRange{span("255.255.255.254", "255.255.255.255")}, addrs("255.255.255.254"), "255.255.255.255"},
		{"top of ipv4 space exhausted", []v1alpha1.IPRange{span("255.255.255.254", "255.255.255.255")}, addrs("255.255.255.255", "255.255.255.254"), ""},
		{"ipv4 before ipv6", []v1alpha1.IPRange{cidr("2001:db8::/64"), cidr("192.0.2.0/30")}, addrs("192.0.2.1"), "192.0.2.2"},
		{"falls through to ipv6", []v1alpha1.IPRange{cidr("2001:db8::/64"), cidr("192.0.2.0/30")}, addrs("192.0.2.1", "192.0.2.2", "2001:db8::1"), "2001:db8::2"},
		{"huge ipv6 never materialised", []v1alpha1.IPRange{cidr("2001:db8::/32")}, addrs("2001:db8::1", "2001:db8::2"), "2001:db8::3"},
		{"/8 with a used run", []v1alpha1.IPRange{cidr("10.0.0.0/8")}, addrs("10.0.0.1", "10.0.0.2", "10.0.0.3"), "10.0.0.4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustPool(t, tt.ranges...)
			got, err := p.Next(tt.used)
			if tt.want == "" {
				if !errors.Is(err, ErrPoolExhausted) {
					t.Fatalf("Next = %v, %v; want ErrPoolExhausted", got, err)
				}
				return
			}
			if err != nil || got != addr(tt.want) {
				t.Fatalf("Next = %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}

// TestNextFillsPool allocates a whole pool one IP at a time: every IP is
// handed out once, in ascending order, and then the pool is exhausted.
func TestNextFillsPool(t *testing.T) {
	p := mustPool(t, cidr("192.0.2.0/28"), span("192.0.2.10", "192.0.2.20"), cidr("2001:db8::/125"))
	var used []netip.Addr
	for i := int64(0); i < p.Total(); i++ {
		ip, err := p.Next(used)
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		if !p.Contains(ip) {
			t.Fatalf("allocation %d: %s not in pool", i, ip)
		}
		if n := len(used); n > 0 && ip.Compare(used[n-1]) <= 0 {
			t.Fatalf("allocation %d: %s not above previous %s", i, ip, used[n-1])
		}
		used = append(used, ip)
	}
	if p.Used(used) != p.Total() {
		t.Errorf("Used = %d, want Total %d", p.Used(used), p.Total())
	}
	if ip, err := p.Next(used); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("Next on full pool = %v, %v", ip, err)
	}
	// Releasing one IP makes exactly that IP the next one.
	freed := used[5]
	rest := append(append([]netip.Addr{}, used[:5]...), used[6:]...)
	if ip, err := p.Next(rest); err != nil || ip != freed {
		t.Fatalf("Next after release = %v, %v; want %s", ip, err, freed)
	}
}

func TestUsed(t *testing.T) {
	p := mustPool(t, cidr("192.0.2.0/29"))
	got := p.Used(addrs("192.0.2.1", "192.0.2.1", "192.0.2.0", "192.0.2.7", "198.51.100.1", "192.0.2.6"))
	if got != 2 {
		t.Errorf("Used = %d, want 2", got)
	}
	u := p.Usage(addrs("192.0.2.1", "192.0.2.1", "203.0.113.1"))
	if u != (v1alpha1.IPPoolUsage{Total: 6, Used: 1}) {
		t.Errorf("Usage = %+v, want total 6 used 1", u)
	}
}

func BenchmarkNext1000UsedInSlash8(b *testing.B) {
	p := mustPool(b, cidr("10.0.0.0/8"))
	used := make([]netip.Addr, 0, 1000)
	ip := addr("10.0.0.1")
	for range 1000 {
		used = append(used, ip)
		ip = ip.Next()
	}
	for b.Loop() {
		if _, err := p.Next(used); err != nil {
			b.Fatal(err)
		}
	}
}
