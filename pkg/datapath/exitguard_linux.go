package datapath

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The guard's nftables objects (see exitguard.go). Registers: a 4-byte
// value goes in NFT_REG_1; the Pod . source concatenation takes two 32-bit
// registers, as nft(8) lays it out.
const (
	exitSetSelected = "selected"
	exitSetAllowed  = "allowed"
	exitSetExcept   = "except"
	exitSetLinger   = "lingering"
	exitSetHeld     = "held"
	regConcat       = unix.NFT_REG32_00
	ctDirOriginal   = 0 // IP_CT_DIR_ORIGINAL
	// elementsPerMessage keeps a NEWSETELEM message's element list well
	// under 64 KiB (an element of two IPv4 addresses takes about 20 bytes).
	elementsPerMessage = 1024
	ipSrcOffset        = 12
	ipDstOffset        = 16
)

func exitTable() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyIPv4, Name: ExitGuardTable}
}

// guardSets are the guard's sets.
type guardSets struct{ sel, allowed, except, linger, held *nftables.Set }

func exitSets(t *nftables.Table) guardSets {
	return guardSets{
		sel: &nftables.Set{Table: t, Name: exitSetSelected, KeyType: nftables.TypeIPAddr},
		allowed: &nftables.Set{Table: t, Name: exitSetAllowed, Concatenation: true,
			KeyType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr)},
		except: &nftables.Set{Table: t, Name: exitSetExcept, KeyType: nftables.TypeIPAddr, Interval: true},
		linger: &nftables.Set{Table: t, Name: exitSetLinger, KeyType: nftables.TypeIPAddr},
		held:   &nftables.Set{Table: t, Name: exitSetHeld, KeyType: nftables.TypeIPAddr},
	}
}

// contents pairs each set with g's elements for it.
func (s guardSets) contents(g ExitGuard) []setContent {
	return []setContent{
		{s.sel, addrElements(g.Selected)},
		{s.allowed, sourceElements(g.Allowed)},
		{s.except, intervalElements(g.Except)},
		{s.linger, addrElements(g.Lingering)},
		{s.held, addrElements(g.Held)},
	}
}

type setContent struct {
	set   *nftables.Set
	elems []nftables.SetElement
}

// linger fills g.Lingering: the Pods selected at the last Apply and not
// now, for ExitLinger.
func (d *Datapath) linger(g *ExitGuard, now time.Time) {
	if d.lingering == nil {
		d.lingering = map[netip.Addr]time.Time{}
	}
	for _, ip := range d.selected {
		if _, still := slices.BinarySearchFunc(g.Selected, ip, netip.Addr.Compare); !still {
			d.lingering[ip] = now.Add(ExitLinger)
		}
	}
	for ip, until := range d.lingering {
		if _, back := slices.BinarySearchFunc(g.Selected, ip, netip.Addr.Compare); back || !now.Before(until) {
			delete(d.lingering, ip)
		}
	}
	d.selected = g.Selected
	g.Lingering = slices.SortedFunc(maps.Keys(d.lingering), netip.Addr.Compare)
}

// ensureExitGuard programs g unless the guard already holds it. With
// verify (a full read-back of the datapath) it also checks that the chain
// is still in the kernel: another agent's "nft flush ruleset" removes it.
func (d *Datapath) ensureExitGuard(g ExitGuard, verify bool) error {
	switch {
	case d.guard != nil && d.guard.Equal(g) && !verify:
		return nil
	case d.guard != nil && d.guard.Equal(g):
		if ok, err := exitGuardPresent(); err != nil || ok {
			return err
		}
	case d.guard == nil:
		// A restarted helper: keep what the kernel already holds.
		if ok, err := exitGuardHolds(g); err != nil || ok {
			if ok {
				d.guard = &g
			}
			return err
		}
	}
	d.guard = nil
	if err := d.syncExitGuard(g); err != nil {
		return err
	}
	d.guard = &g
	return nil
}

// exitGuardPresent reports whether the guard's chains are in the kernel.
// (Its rules cannot be read back: this nftables library decodes the ct
// expression's one-byte direction attribute as four bytes and fails.)
func exitGuardPresent() (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("exit guard: %w", err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return false, fmt.Errorf("exit guard: list chains: %w", err)
	}
	found := 0
	for _, ch := range chains {
		if ch.Table.Name == ExitGuardTable && (ch.Name == ExitGuardChain || ch.Name == ExitInputChain) {
			found++
		}
	}
	return found == 2, nil
}

// exitGuardHolds reports whether the guard's chain is in the kernel and
// its sets hold exactly g's elements.
func exitGuardHolds(g ExitGuard) (bool, error) {
	if ok, err := exitGuardPresent(); err != nil || !ok {
		return false, err
	}
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("exit guard: %w", err)
	}
	for _, s := range exitSets(exitTable()).contents(g) {
		have, err := c.GetSetElements(s.set)
		if err != nil {
			return false, fmt.Errorf("exit guard: read set %s: %w", s.set.Name, err)
		}
		if !sameElements(have, s.elems) {
			return false, nil
		}
	}
	return true, nil
}

// kernelSelected reads the Pods the guard protects as the kernel holds
// them, selected or still lingering (nil when there is no guard), sorted.
// A restarted helper lingers them all anew: the kernel keeps no deadline,
// and forgetting the lingering ones cut their protection short.
func kernelSelected() ([]netip.Addr, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("exit guard: %w", err)
	}
	if ok, err := exitTablePresent(c); err != nil || !ok {
		return nil, err
	}
	sets := exitSets(exitTable())
	var out []netip.Addr
	for _, set := range []*nftables.Set{sets.sel, sets.linger} {
		elems, err := c.GetSetElements(set)
		if err != nil {
			return nil, fmt.Errorf("exit guard: read set %s: %w", set.Name, err)
		}
		for _, e := range elems {
			if ip, ok := netip.AddrFromSlice(e.Key); ok && ip.Is4() {
				out = append(out, ip)
			}
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), nil
}

func sameElements(a, b []nftables.SetElement) bool {
	key := func(e nftables.SetElement) string { return fmt.Sprintf("%x/%v", e.Key, e.IntervalEnd) }
	ka, kb := make([]string, 0, len(a)), make([]string, 0, len(b))
	for _, e := range a {
		ka = append(ka, key(e))
	}
	for _, e := range b {
		kb = append(kb, key(e))
	}
	slices.Sort(ka)
	slices.Sort(kb)
	return slices.Equal(ka, kb)
}

// exitTablePresent reports whether the guard's table is in the kernel.
func exitTablePresent(c *nftables.Conn) (bool, error) {
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return false, fmt.Errorf("exit guard: list tables: %w", err)
	}
	return slices.ContainsFunc(ts, func(t *nftables.Table) bool { return t.Name == ExitGuardTable }), nil
}

// syncExitGuard replaces the guard's chain and set contents in one
// netlink transaction, so no packet ever meets a half-written guard. The
// table, the sets and the named counters are created once and kept, so the
// counters only grow.
func (d *Datapath) syncExitGuard(g ExitGuard) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("exit guard: %w", err)
	}
	d.writes++
	t := c.AddTable(exitTable())
	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{Name: ExitGuardChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityRef(ExitGuardPriority), Policy: &accept})
	c.FlushChain(ch)
	in := c.AddChain(&nftables.Chain{Name: ExitInputChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	c.FlushChain(in)
	sets := exitSets(t)
	for _, s := range sets.contents(g) {
		if err := c.AddSet(s.set, nil); err != nil {
			return fmt.Errorf("exit guard: set %s: %w", s.set.Name, err)
		}
		c.FlushSet(s.set)
		// A netlink attribute's length is 16 bits: one message of 10,000
		// elements would be cut short, so they go in chunks.
		for chunk := range slices.Chunk(s.elems, elementsPerMessage) {
			if err := c.SetAddElements(s.set, chunk); err != nil {
				return fmt.Errorf("exit guard: set %s: %w", s.set.Name, err)
			}
		}
	}
	for _, name := range ExitDropReasons {
		c.AddObj(&nftables.NamedObj{Table: t, Name: name, Type: nftables.ObjTypeCounter, Obj: &expr.Counter{}})
	}
	for _, r := range exitRules(g.Uplink, sets) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r})
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: noConnectionRule(sets.held)})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("exit guard: write table %s: %w", ExitGuardTable, err)
	}
	return nil
}

// exitRules are the guard's three drop rules:
//
//	oifname <uplink> ct state & (invalid|untracked) != 0 ip saddr @selected ip daddr != @except counter name invalid drop
//	oifname <uplink> ct original ip saddr @selected ip daddr != @except
//	    ct original ip saddr . ip saddr != @allowed counter name wrong-source drop
//	oifname <uplink> ip saddr @lingering ip daddr != @except counter name un-nated drop
//
// At postrouting ip daddr is the destination after any DNAT, the one the
// SNAT rule tested. The second rule needs no "ct direction original": a
// reply to a connection a selected Pod opened goes to the Pod, inside the
// cluster CIDRs (SLUICE-EXCEPT).
func exitRules(uplink string, s guardSets) [][]expr.Any {
	sel, allowed, except, linger := s.sel, s.allowed, s.except, s.linger
	oif := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(uplink)},
	}
	toOutside := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: ipDstOffset, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: except.Name, SetID: except.ID, Invert: true},
	}
	drop := func(counter string) []expr.Any {
		return []expr.Any{&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: counter}, &expr.Verdict{Kind: expr.VerdictDrop}}
	}
	invalid := slices.Concat(oif, []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitINVALID | expr.CtStateBitUNTRACKED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: ipSrcOffset, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: sel.Name, SetID: sel.ID},
	}, toOutside, drop(ExitDropInvalid))
	wrong := slices.Concat(oif, []expr.Any{
		&expr.Ct{Key: expr.CtKeySRC, Register: 1, Direction: ctDirOriginal},
		&expr.Lookup{SourceRegister: 1, SetName: sel.Name, SetID: sel.ID},
	}, toOutside, []expr.Any{
		&expr.Ct{Key: expr.CtKeySRC, Register: regConcat, Direction: ctDirOriginal},
		&expr.Payload{DestRegister: regConcat + 1, Base: expr.PayloadBaseNetworkHeader, Offset: ipSrcOffset, Len: 4},
		&expr.Lookup{SourceRegister: regConcat, SetName: allowed.Name, SetID: allowed.ID, Invert: true},
	}, drop(ExitDropWrongSource))
	unnated := slices.Concat(oif, []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: ipSrcOffset, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: linger.Name, SetID: linger.ID},
	}, toOutside, drop(ExitDropUnNATed))
	return [][]expr.Any{invalid, wrong, unnated}
}

// noConnectionRule is the input chain's rule:
//
//	ip daddr @held ct state new meta l4proto tcp tcp flags & (syn|ack) != syn counter name no-connection drop
//
// A SYN passes (it opens a connection, and nothing listens on an egress
// IP: the kernel's reset is the right answer); a SYN-ACK, an ACK or data
// that conntrack saw no connection for is dropped.
func noConnectionRule(held *nftables.Set) []expr.Any {
	const tcpFlagsOffset, syn, ack = 13, 0x02, 0x10
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: ipDstOffset, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: held.Name, SetID: held.ID},
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: tcpFlagsOffset, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{syn | ack}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{syn}},
		&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: ExitDropNoConnection},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

// ifname is an interface name as the kernel compares it: IFNAMSIZ bytes,
// NUL padded.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func addrElements(ips []netip.Addr) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(ips))
	for _, ip := range ips {
		b := ip.As4()
		out = append(out, nftables.SetElement{Key: b[:]})
	}
	return out
}

func sourceElements(srcs []ExitSource) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(srcs))
	for _, s := range srcs {
		p, e := s.Pod.As4(), s.EgressIP.As4()
		out = append(out, nftables.SetElement{Key: append(p[:], e[:]...)})
	}
	return out
}

// intervalElements encodes disjoint prefixes as nftables intervals: the
// first address, then the address past the last one as an interval end
// (none for a range that runs to 255.255.255.255).
func intervalElements(ps []netip.Prefix) []nftables.SetElement {
	var out []nftables.SetElement
	for _, p := range ps {
		first := p.Masked().Addr().As4()
		out = append(out, nftables.SetElement{Key: first[:]})
		last := lastAddr(p)
		if next := last.Next(); next.IsValid() {
			b := next.As4()
			out = append(out, nftables.SetElement{Key: b[:], IntervalEnd: true})
		}
	}
	return out
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	if p.Bits() == 0 {
		host = ^uint32(0)
	}
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// removeExitGuard deletes the guard's table; a missing table is no error.
func (d *Datapath) removeExitGuard() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("exit guard: %w", err)
	}
	if ok, err := exitTablePresent(c); err != nil || !ok {
		return err
	}
	d.writes++
	c.DelTable(exitTable())
	if err := c.Flush(); err != nil {
		return fmt.Errorf("exit guard: delete table %s: %w", ExitGuardTable, err)
	}
	return nil
}

// exitDrops reads the guard's counters by reason; no table, no drops.
func exitDrops() (map[string]uint64, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("exit guard: %w", err)
	}
	out := map[string]uint64{}
	if ok, err := exitTablePresent(c); err != nil || !ok {
		return out, err
	}
	objs, err := c.GetNamedObjects(exitTable())
	if err != nil {
		return nil, fmt.Errorf("exit guard: read counters: %w", err)
	}
	for _, o := range objs {
		if n, ok := o.(*nftables.NamedObj); ok {
			if ctr, ok := n.Obj.(*expr.Counter); ok {
				out[n.Name] = ctr.Packets
			}
		}
	}
	return out, nil
}
