package ipam

import (
	"net/netip"
	"slices"
)

// Reserved is a block of addresses that is never an egress IP, and why.
// A pool may contain such addresses (a range that spans a Node's IP, say);
// they are simply never handed out, and an Egress that names one is told
// Why.
type Reserved struct {
	Prefix netip.Prefix
	Why    string // completes "<ip> is ..."
}

// special are the blocks no egress IP may come from whatever the cluster:
// holding one on an uplink would break the Node or never reach the wire.
var special = []Reserved{
	{netip.MustParsePrefix("0.0.0.0/8"), `in 0.0.0.0/8 ("this network", RFC 791)`},
	{netip.MustParsePrefix("127.0.0.0/8"), "a loopback address"},
	{netip.MustParsePrefix("169.254.0.0/16"), "a link-local address"},
	{netip.MustParsePrefix("224.0.0.0/4"), "a multicast address"},
	{netip.MustParsePrefix("240.0.0.0/4"), "in the reserved block 240.0.0.0/4 (which holds the broadcast address)"},
	{netip.MustParsePrefix("::/128"), "the unspecified address"},
	{netip.MustParsePrefix("::1/128"), "a loopback address"},
	{netip.MustParsePrefix("::ffff:0:0/96"), "an IPv4-mapped IPv6 address"},
	{netip.MustParsePrefix("fe80::/10"), "a link-local address"},
	{netip.MustParsePrefix("ff00::/8"), "a multicast address"},
}

// Special returns the blocks that are reserved in every cluster: this
// network, loopback, link-local, multicast and 240.0.0.0/4 for IPv4, and
// their IPv6 counterparts.
func Special() []Reserved { return slices.Clone(special) }

// Why returns why ip is reserved ("" when it is not): the Why of the first
// block of rs that contains it.
func Why(rs []Reserved, ip netip.Addr) string {
	ip = ip.WithZone("")
	for _, r := range rs {
		if r.Prefix.Contains(ip) {
			return r.Why
		}
	}
	if ip.Is4In6() {
		return Why(rs, ip.Unmap())
	}
	return ""
}

// Without returns the pool less every address of the reserved blocks. It
// works on ranges, so a pool of an IPv4 /8 less a /16 still costs a few
// addresses of memory; the result may be empty.
func (p *Pool) Without(rs []Reserved) *Pool {
	out := slices.Clone(p.ranges)
	for _, r := range rs {
		if !r.Prefix.IsValid() {
			continue
		}
		cut := Range{First: r.Prefix.Masked().Addr(), Last: lastAddr(r.Prefix)}
		next := out[:0:0]
		for _, have := range out {
			next = append(next, subtract(have, cut)...)
		}
		out = next
	}
	return &Pool{ranges: out}
}

// subtract returns a less b: zero, one or two ranges.
func subtract(a, b Range) []Range {
	if a.First.BitLen() != b.First.BitLen() || b.Last.Less(a.First) || a.Last.Less(b.First) {
		return []Range{a}
	}
	var out []Range
	if a.First.Less(b.First) {
		out = append(out, Range{First: a.First, Last: b.First.Prev()})
	}
	if b.Last.Less(a.Last) {
		out = append(out, Range{First: b.Last.Next(), Last: a.Last})
	}
	return out
}
