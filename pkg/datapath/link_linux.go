package datapath

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// vxlanOverhead is outer IPv4 + UDP + VXLAN + inner Ethernet.
const vxlanOverhead = 50

// ensureTunnel makes the tunnel device exist as configured, up, with the
// node-derived MAC, and returns it. A device of the same name with other
// parameters is replaced: the name is Sluice's.
func (d *Datapath) ensureTunnel() (netlink.Link, error) {
	up, err := linkByName(d.cfg.Uplink)
	if err != nil {
		return nil, fmt.Errorf("find uplink %s: %w", d.cfg.Uplink, err)
	}
	mtu := d.cfg.TunnelMTU
	if mtu == 0 {
		mtu = up.Attrs().MTU - vxlanOverhead
	}
	want := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: d.cfg.TunnelDev, MTU: mtu, HardwareAddr: TunnelMAC(d.cfg.NodeIP)},
		VxlanId:   d.cfg.VNI, VtepDevIndex: up.Attrs().Index, SrcAddr: d.cfg.NodeIP.AsSlice(),
		Port: d.cfg.TunnelPort, Learning: false,
	}
	l, err := linkByName(d.cfg.TunnelDev)
	if err == nil && !tunnelMatches(l, want) {
		d.writes++
		if err := netlink.LinkDel(l); err != nil {
			return nil, fmt.Errorf("replace tunnel %s: %w", d.cfg.TunnelDev, err)
		}
		err = netlink.LinkNotFoundError{}
	}
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		d.writes++
		if err := netlink.LinkAdd(want); err != nil {
			return nil, fmt.Errorf("add tunnel %s: %w", d.cfg.TunnelDev, err)
		}
		if l, err = linkByName(d.cfg.TunnelDev); err != nil {
			return nil, fmt.Errorf("find new tunnel %s: %w", d.cfg.TunnelDev, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("find tunnel %s: %w", d.cfg.TunnelDev, err)
	}
	if l.Attrs().MTU != mtu {
		d.writes++
		if err := netlink.LinkSetMTU(l, mtu); err != nil {
			return nil, fmt.Errorf("set tunnel mtu %d: %w", mtu, err)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		d.writes++
		if err := netlink.LinkSetUp(l); err != nil {
			return nil, fmt.Errorf("set tunnel up: %w", err)
		}
	}
	// src_valid_mark on our device only: the reverse-path lookup of packets
	// arriving from the tunnel then sees MarkTunnel and rule 9900.
	err = d.ensureSysctl(filepath.Join("/proc/sys/net/ipv4/conf", d.cfg.TunnelDev, "src_valid_mark"), "1")
	// IPv4 only: no link-local address, router or listener solicitations
	// that have no FDB entry to go to and count as TX drops.
	v6 := filepath.Join("/proc/sys/net/ipv6/conf", d.cfg.TunnelDev, "disable_ipv6")
	if _, statErr := os.Stat(v6); statErr == nil {
		err = errors.Join(err, d.ensureSysctl(v6, "1"))
	}
	return l, err
}

func tunnelMatches(l netlink.Link, want *netlink.Vxlan) bool {
	v, ok := l.(*netlink.Vxlan)
	return ok && v.VxlanId == want.VxlanId && v.VtepDevIndex == want.VtepDevIndex &&
		v.SrcAddr.Equal(want.SrcAddr) && v.Port == want.Port && !v.Learning && !v.FlowBased &&
		bytes.Equal(v.HardwareAddr, want.HardwareAddr)
}

// ensureSysctl writes value to a /proc/sys file of the current network
// namespace unless it already holds it.
func (d *Datapath) ensureSysctl(path, value string) error {
	cur, err := os.ReadFile(path)
	if err == nil && string(bytes.TrimSpace(cur)) == value {
		return nil
	}
	d.writes++
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("set %s=%s: %w", path, value, err)
	}
	return nil
}

// syncPeers adds the FDB entry and permanent neighbor of every peer and,
// when prune is set, removes the others. Every entry on the tunnel device
// is Sluice's.
func (d *Datapath) syncPeers(tun netlink.Link, peers []Peer, prune bool) error {
	var errs []error
	idx := tun.Attrs().Index
	fdb, err := neighList(idx, unix.AF_BRIDGE)
	if err != nil {
		return fmt.Errorf("list tunnel fdb: %w", err)
	}
	neigh, err := neighList(idx, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list tunnel neighbors: %w", err)
	}
	want := map[string]bool{}
	for _, p := range peers {
		ip := p.IP.AsSlice()
		want[p.MAC.String()+"|"+p.IP.String()] = true
		if !hasNeigh(fdb, p.MAC, ip, 0) {
			d.writes++
			e := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
				Flags: netlink.NTF_SELF, IP: ip, HardwareAddr: p.MAC}
			if err := netlink.NeighSet(e); err != nil {
				errs = append(errs, fmt.Errorf("add fdb %s dst %s: %w", p.MAC, p.IP, err))
			}
		}
		if !hasNeigh(neigh, p.MAC, ip, netlink.NUD_PERMANENT) {
			d.writes++
			e := &netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: ip, HardwareAddr: p.MAC}
			if err := netlink.NeighSet(e); err != nil {
				errs = append(errs, fmt.Errorf("add neighbor %s: %w", p.IP, err))
			}
		}
	}
	if !prune {
		return errors.Join(errs...)
	}
	for _, list := range [][]netlink.Neigh{fdb, neigh} {
		for _, n := range list {
			if n.IP == nil || want[n.HardwareAddr.String()+"|"+n.IP.String()] {
				continue
			}
			d.writes++
			if err := netlink.NeighDel(&n); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("delete stale neighbor %s: %w", n.IP, err))
			}
		}
	}
	return errors.Join(errs...)
}

func hasNeigh(list []netlink.Neigh, mac net.HardwareAddr, ip net.IP, state int) bool {
	for _, n := range list {
		if bytes.Equal(n.HardwareAddr, mac) && n.IP.Equal(ip) && (state == 0 || n.State == state) {
			return true
		}
	}
	return false
}

// syncHeldIPs puts every held IP on the uplink as a /32 labelled
// "<uplink>:sl", with the lifetime of Config.HeldLifetime, renews the
// lifetime of those already there when half of it is gone, and, when prune
// is set, removes labelled addresses that are no longer held. An address
// already there without the label is left as it is: someone else
// configured it (a static egress IP).
func (d *Datapath) syncHeldIPs(held []netip.Addr, prune bool) error {
	up, present, err := d.heldAddrs()
	if err != nil {
		return err
	}
	label := d.cfg.Label()
	want := map[netip.Addr]bool{}
	var errs []error
	for _, ip := range held {
		want[ip] = true
		if a, ok := present[ip]; ok {
			if a.Label == label {
				errs = append(errs, d.renew(up, a))
			}
			continue
		}
		d.writes++
		a := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)}, Label: label}
		d.stampLifetime(a)
		if err := netlink.AddrAdd(up, a); err != nil {
			errs = append(errs, fmt.Errorf("hold %s on %s: %w", ip, d.cfg.Uplink, err))
		}
	}
	if !prune {
		return errors.Join(errs...)
	}
	for ip, a := range present {
		if a.Label != label || want[ip] {
			continue
		}
		d.writes++
		if err := netlink.AddrDel(up, &a); err != nil {
			errs = append(errs, fmt.Errorf("release %s from %s: %w", ip, d.cfg.Uplink, err))
		}
	}
	return errors.Join(errs...)
}

// HeldIPs are the egress IPs Sluice holds on the uplink now (by label).
func (d *Datapath) HeldIPs() ([]netip.Addr, error) {
	_, present, err := d.heldAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for ip, a := range present {
		if a.Label == d.cfg.Label() {
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

func (d *Datapath) heldAddrs() (netlink.Link, map[netip.Addr]netlink.Addr, error) {
	up, err := linkByName(d.cfg.Uplink)
	if err != nil {
		return nil, nil, fmt.Errorf("find uplink %s: %w", d.cfg.Uplink, err)
	}
	addrs, err := addrList(up)
	if err != nil {
		return nil, nil, fmt.Errorf("list uplink addresses: %w", err)
	}
	present := map[netip.Addr]netlink.Addr{}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			present[ip.Unmap()] = a
		}
	}
	return up, present, nil
}

// foreverLft is the kernel's "forever" address lifetime.
const foreverLft = 0xffffffff

// stampLifetime sets a's valid and preferred lifetimes to HeldLifetime
// (whole seconds), or leaves them forever when it is negative.
func (d *Datapath) stampLifetime(a *netlink.Addr) {
	if lft := d.cfg.heldLifetime(); lft > 0 {
		a.ValidLft, a.PreferedLft = int(lft/time.Second), int(lft/time.Second)
	} else {
		a.ValidLft, a.PreferedLft = foreverLft, foreverLft
	}
}

// renew restamps a held address whose lifetime is half gone (or which
// has another lifetime than the configured one, e.g. forever from an older
// helper). Renewals are not counted as writes: they are the heartbeat.
func (d *Datapath) renew(up netlink.Link, a netlink.Addr) error {
	lft := d.cfg.heldLifetime()
	secs := int(lft / time.Second)
	if lft <= 0 {
		if a.ValidLft == foreverLft {
			return nil
		}
	} else if a.ValidLft > secs/2 && a.ValidLft <= secs {
		return nil
	}
	d.stampLifetime(&a)
	if err := netlink.AddrReplace(up, &a); err != nil {
		return fmt.Errorf("renew %s on %s: %w", a.IP, d.cfg.Uplink, err)
	}
	return nil
}

// RenewHeld renews the lifetime of every egress IP this Node holds (the
// labelled addresses on the uplink). The agent calls it every second, so a
// live helper keeps its addresses, and a dead or stuck one loses them
// within HeldLifetime: the kernel removes an expired address, and with it
// the ARP answers for it.
func (d *Datapath) RenewHeld(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	up, present, err := d.heldAddrs()
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range present {
		if a.Label == d.cfg.Label() {
			errs = append(errs, d.renew(up, a))
		}
	}
	return errors.Join(append(errs, ctx.Err())...)
}
