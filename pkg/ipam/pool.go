package ipam

import (
	"errors"
	"math"
	"net/netip"
	"slices"
	"sort"

	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
)

// ErrPoolExhausted means every IP of the pool is in use.
var ErrPoolExhausted = errors.New("ip pool exhausted")

// Ranges returns the merged ranges, sorted by address.
func (p *Pool) Ranges() []Range { return slices.Clone(p.ranges) }

// Total is the number of distinct usable IPs, saturated at math.MaxInt64
// (an IPv6 /64 alone is 2^64-1 IPs).
func (p *Pool) Total() int64 {
	var total int64
	for _, r := range p.ranges {
		n := r.Size()
		if total > math.MaxInt64-n {
			return math.MaxInt64
		}
		total += n
	}
	return total
}

// Contains reports whether ip is a usable IP of the pool.
func (p *Pool) Contains(ip netip.Addr) bool {
	ip = ip.WithZone("")
	if ip.Is4In6() {
		ip = ip.Unmap()
	}
	// The first range whose Last is >= ip is the only candidate.
	i := sort.Search(len(p.ranges), func(i int) bool { return p.ranges[i].Last.Compare(ip) >= 0 })
	return i < len(p.ranges) && p.ranges[i].First.Compare(ip) <= 0 &&
		p.ranges[i].First.BitLen() == ip.BitLen()
}

// Used counts the distinct IPs of used that lie in the pool: the
// status.usage.used figure.
func (p *Pool) Used(used []netip.Addr) int64 {
	return int64(len(p.inPool(used)))
}

// Usage is the pool's status.usage for the IPs in use.
func (p *Pool) Usage(used []netip.Addr) v1alpha1.IPPoolUsage {
	return v1alpha1.IPPoolUsage{Total: p.Total(), Used: p.Used(used)}
}

// Next returns the lowest IP of the pool that is not in used, or
// ErrPoolExhausted. IPs in used outside the pool are ignored. It costs
// O(U log U + R) for U used IPs and R ranges, whatever the pool's size.
func (p *Pool) Next(used []netip.Addr) (netip.Addr, error) {
	u := p.inPool(used)
	j := 0
	for _, r := range p.ranges {
		cand := r.First
		// Skip used IPs below this range.
		for j < len(u) && u[j].Compare(cand) < 0 {
			j++
		}
		// Walk the run of used IPs starting at cand.
		for j < len(u) && u[j] == cand {
			j++
			if cand == r.Last {
				cand = netip.Addr{}
				break
			}
			cand = cand.Next()
		}
		if cand.IsValid() {
			return cand, nil
		}
	}
	return netip.Addr{}, ErrPoolExhausted
}

// inPool returns the distinct IPs of used that lie in the pool, sorted.
func (p *Pool) inPool(used []netip.Addr) []netip.Addr {
	u := make([]netip.Addr, 0, len(used))
	for _, a := range used {
		a = a.WithZone("")
		if a.Is4In6() {
			a = a.Unmap()
		}
		if p.Contains(a) {
			u = append(u, a)
		}
	}
	slices.SortFunc(u, netip.Addr.Compare)
	return slices.Compact(u)
}
