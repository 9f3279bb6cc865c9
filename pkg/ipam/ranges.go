// Package ipam decides which IPs an ExternalIPPool holds and which one it
// hands out next. It is pure: no client, no clock. The truth about which IPs
// are used lives in the Egress objects; callers pass that set in.
//
// Range rules (decided here, documented once):
//   - start/end: every IP from start to end, both included.
//   - IPv4 CIDR up to /30: the network and broadcast addresses are left out.
//   - IPv4 /31: both addresses are usable (RFC 3021 point-to-point).
//   - IPv4 /32 and IPv6 /128: the single address.
//   - IPv6 CIDR up to /126: only the network (subnet-router anycast, RFC 4291
//     §2.6.1) address is left out; IPv6 has no broadcast. This is Antrea's rule.
//   - IPv6 /127: both addresses are usable (RFC 6164 point-to-point), by
//     symmetry with IPv4 /31.
//   - Ranges that overlap or touch are merged, so each IP counts once.
//
// Ranges are kept as [first, last] intervals and never expanded, so an IPv4
// /8 or an IPv6 /64 costs two addresses of memory.
package ipam

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"slices"
	"strings"

	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
)

// ErrInvalidRange is wrapped by every error ParseRanges returns, so callers
// can set the InvalidPool reason with errors.Is.
var ErrInvalidRange = errors.New("invalid ip range")

// Range is an inclusive interval of IPs of one family.
type Range struct {
	First, Last netip.Addr
}

// String prints "first-last", or just "first" for a one-IP range.
func (r Range) String() string {
	if r.First == r.Last {
		return r.First.String()
	}
	return r.First.String() + "-" + r.Last.String()
}

// Size is the number of IPs in r, saturated at math.MaxInt64.
func (r Range) Size() int64 {
	hi, lo := sub128(r.Last, r.First)
	if hi != 0 || lo >= math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(lo) + 1
}

// Pool is the parsed, merged IP set of an ExternalIPPool: disjoint,
// non-adjacent ranges sorted by address (IPv4 before IPv6).
type Pool struct {
	ranges []Range
}

// ParseRanges parses an ExternalIPPool's spec.ipRanges. Errors name the
// offending field, e.g. "ipRanges[1].end: ...", and wrap ErrInvalidRange.
func ParseRanges(specs []v1alpha1.IPRange) (*Pool, error) {
	if len(specs) == 0 {
		return nil, fmt.Errorf("ipRanges: must not be empty: %w", ErrInvalidRange)
	}
	rs := make([]Range, 0, len(specs))
	for i, s := range specs {
		r, err := parseRange(s)
		if err != nil {
			return nil, fmt.Errorf("ipRanges[%d]%w", i, err)
		}
		rs = append(rs, r)
	}
	return &Pool{ranges: merge(rs)}, nil
}

// fieldError is returned by parseRange; its text starts with the field
// suffix (".cidr: ...") so ParseRanges can prefix the index.
type fieldError struct {
	field, msg string
}

func (e *fieldError) Error() string { return e.field + ": " + e.msg }
func (e *fieldError) Unwrap() error { return ErrInvalidRange }

func parseRange(s v1alpha1.IPRange) (Range, error) {
	hasCIDR := s.CIDR != ""
	hasSE := s.Start != "" || s.End != ""
	switch {
	case hasCIDR && hasSE:
		return Range{}, &fieldError{"", "exactly one of cidr or start and end must be set"}
	case hasCIDR:
		return parseCIDR(s.CIDR)
	case s.Start == "":
		return Range{}, &fieldError{".start", "must be set with end"}
	case s.End == "":
		return Range{}, &fieldError{".end", "must be set with start"}
	}
	first, err := parseAddr(s.Start)
	if err != nil {
		return Range{}, &fieldError{".start", err.Error()}
	}
	last, err := parseAddr(s.End)
	if err != nil {
		return Range{}, &fieldError{".end", err.Error()}
	}
	if first.BitLen() != last.BitLen() {
		return Range{}, &fieldError{".end", fmt.Sprintf("%s is not of the same IP family as start %s", last, first)}
	}
	if first.Compare(last) > 0 {
		return Range{}, &fieldError{".start", fmt.Sprintf("%s must not be greater than end %s", first, last)}
	}
	return Range{First: first, Last: last}, nil
}

// parseAddr accepts plain IPv4 and IPv6 addresses only: zones and
// IPv4-mapped IPv6 forms would make one IP compare unequal to itself.
func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("must be a valid IPv4 or IPv6 address: %q", s)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("must not have a zone: %q", s)
	}
	if a.Is4In6() {
		return netip.Addr{}, fmt.Errorf("must not be an IPv4-mapped IPv6 address: %q", s)
	}
	return a, nil
}

func parseCIDR(s string) (Range, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || strings.Contains(s, "%") {
		return Range{}, &fieldError{".cidr", fmt.Sprintf("must be a valid CIDR such as 192.0.2.0/28: %q", s)}
	}
	if p.Addr().Is4In6() {
		return Range{}, &fieldError{".cidr", fmt.Sprintf("must not be an IPv4-mapped IPv6 prefix: %q", s)}
	}
	if p.Masked() != p {
		return Range{}, &fieldError{".cidr", fmt.Sprintf("must be a network address: use %s", p.Masked())}
	}
	first, last := p.Addr(), lastAddr(p)
	hostBits := p.Addr().BitLen() - p.Bits()
	switch {
	case hostBits <= 1: // /32, /31, /128, /127: every address is usable.
	case p.Addr().Is4():
		first, last = first.Next(), last.Prev()
	default:
		first = first.Next()
	}
	return Range{First: first, Last: last}, nil
}

// lastAddr is the highest address of p (the IPv4 broadcast address).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As16()
	host := p.Addr().BitLen() - p.Bits()
	off := 16 - p.Addr().BitLen()/8 // IPv4 lives in the last 4 bytes
	for i := 15; i >= off && host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	a := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		return a.Unmap()
	}
	return a
}

// merge sorts ranges and joins those that overlap or touch.
func merge(rs []Range) []Range {
	slices.SortFunc(rs, func(a, b Range) int { return a.First.Compare(b.First) })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && touches(out[n-1], r) {
			if r.Last.Compare(out[n-1].Last) > 0 {
				out[n-1].Last = r.Last
			}
			continue
		}
		out = append(out, r)
	}
	return slices.Clip(out)
}

// touches reports whether b (sorted after a) overlaps a or starts right
// after it. Different families never touch.
func touches(a, b Range) bool {
	if a.First.BitLen() != b.First.BitLen() {
		return false
	}
	next := a.Last.Next()
	return !next.IsValid() || b.First.Compare(next) <= 0
}

// sub128 returns a-b as a 128-bit number (a >= b, same family).
func sub128(a, b netip.Addr) (hi, lo uint64) {
	ah, al := split(a)
	bh, bl := split(b)
	lo, borrow := bits.Sub64(al, bl, 0)
	hi, _ = bits.Sub64(ah, bh, borrow)
	return hi, lo
}

func split(a netip.Addr) (hi, lo uint64) {
	b := a.As16()
	for i := range 8 {
		hi = hi<<8 | uint64(b[i])
		lo = lo<<8 | uint64(b[8+i])
	}
	return hi, lo
}
