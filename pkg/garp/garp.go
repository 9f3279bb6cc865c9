// Package garp announces that an IP now lives at this Node's MAC, so that
// neighbours (the router, other hosts on the segment) repoint their ARP
// cache at once after an egress-IP takeover instead of waiting for the old
// entry to go stale (Antrea measured ~15 s without it, antrea#5117).
//
// Each round sends two gratuitous ARPs to the Ethernet broadcast address,
// because implementations differ in which they trust:
//
//   - request-style (RFC 5227 "ARP Announcement"): op=request,
//     SPA = TPA = ip, SHA = our MAC, THA = 00:00:00:00:00:00;
//   - reply-style: op=reply, SPA = TPA = ip, SHA = THA = our MAC. Linux only
//     treats a reply as gratuitous (and so overrides a recently updated
//     entry) when THA equals SHA (arp_is_garp in net/ipv4/arp.c).
//
// Linux updates an existing neighbour entry from either; it creates a new
// entry only with net.ipv4.conf.*.arp_accept=1. That is fine for failover:
// the hosts that matter already have an entry pointing at the old Node.
//
// For IPv6, each round sends one unsolicited Neighbor Advertisement
// (RFC 4861 §7.2.6) with mdlayher/ndp: to all-nodes (ff02::1), Override
// set, Solicited clear, with our MAC as the Target Link-Layer Address, and
// from the announced address itself. Linux updates an existing neighbour
// entry from it (to STALE, with the new MAC). The address must not be
// tentative: add an IPv6 egress address with IFA_F_NODAD (`nodad`), which
// a failover wants anyway (DAD would delay it by a second or more).
package garp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
)

// Packets returns the two gratuitous ARP packets that announce ip at mac:
// request-style first, then reply-style (see the package doc).
func Packets(mac net.HardwareAddr, ip netip.Addr) ([]*arp.Packet, error) {
	if !ip.Is4() {
		return nil, fmt.Errorf("gratuitous arp for %v: not an IPv4 address", ip)
	}
	zero := make(net.HardwareAddr, len(mac))
	req, err := arp.NewPacket(arp.OperationRequest, mac, ip, zero, ip)
	if err != nil {
		return nil, fmt.Errorf("build gratuitous arp request for %v: %w", ip, err)
	}
	rep, err := arp.NewPacket(arp.OperationReply, mac, ip, mac, ip)
	if err != nil {
		return nil, fmt.Errorf("build gratuitous arp reply for %v: %w", ip, err)
	}
	return []*arp.Packet{req, rep}, nil
}

// Advertisement returns the unsolicited Neighbor Advertisement that
// announces the IPv6 address ip at mac (see the package doc).
func Advertisement(mac net.HardwareAddr, ip netip.Addr) (*ndp.NeighborAdvertisement, error) {
	if !ip.Is6() || ip.Is4In6() {
		return nil, fmt.Errorf("neighbor advertisement for %v: not an IPv6 address", ip)
	}
	return &ndp.NeighborAdvertisement{
		Override:      true, // replace the old Node's MAC in existing entries
		TargetAddress: ip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}},
	}, nil
}

// Announce sends count rounds of gratuitous ARP (IPv4) or unsolicited
// Neighbor Advertisement (IPv6) for ip from ifaceName's MAC, interval apart
// (the first round at once). Spacing the rounds covers a lost frame and a
// switch or neighbour that was busy. The interface must already carry ip
// (mdlayher/arp requires an IPv4 address on it; for IPv6 ip is the source
// address). It returns early with ctx's error if ctx ends.
func Announce(ctx context.Context, ifaceName string, ip netip.Addr, count int, interval time.Duration) error {
	ifi, err := net.InterfaceByName(ifaceName)
	if err != nil {
		return fmt.Errorf("announce %v: interface %q: %w", ip, ifaceName, err)
	}
	if ip.Is6() && !ip.Is4In6() {
		return announceIPv6(ctx, ifi, ip, count, interval)
	}
	pkts, err := Packets(ifi.HardwareAddr, ip)
	if err != nil {
		return err
	}
	c, err := arp.Dial(ifi)
	if err != nil {
		return fmt.Errorf("gratuitous arp: open %s: %w", ifaceName, err)
	}
	defer c.Close()
	return send(ctx, count, interval, func() error {
		for _, p := range pkts {
			if err := c.WriteTo(p, ethernet.Broadcast); err != nil {
				return fmt.Errorf("gratuitous arp %v for %v: %w", p.Operation, p.SenderIP, err)
			}
		}
		return nil
	})
}

func announceIPv6(ctx context.Context, ifi *net.Interface, ip netip.Addr, count int, interval time.Duration) error {
	na, err := Advertisement(ifi.HardwareAddr, ip)
	if err != nil {
		return err
	}
	c, _, err := ndp.Listen(ifi, ndp.Addr(ip.String()))
	if err != nil {
		return fmt.Errorf("neighbor advertisement: open %s from %v: %w", ifi.Name, ip, err)
	}
	defer c.Close()
	allNodes := netip.IPv6LinkLocalAllNodes().WithZone(ifi.Name)
	return send(ctx, count, interval, func() error {
		if err := c.WriteTo(na, nil, allNodes); err != nil {
			return fmt.Errorf("neighbor advertisement for %v: %w", ip, err)
		}
		return nil
	})
}

// send calls writeRound count times, interval apart, the first at once.
func send(ctx context.Context, count int, interval time.Duration, writeRound func() error) error {
	if count < 1 {
		return fmt.Errorf("announce: count %d < 1", count)
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for i := range count {
		if i > 0 {
			t.Reset(interval)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("announce: round %d of %d: %w", i+1, count, ctx.Err())
		case <-t.C:
		}
		if err := writeRound(); err != nil {
			return err
		}
	}
	return nil
}

// ProbePacket is an RFC 5227 ARP Probe for ip from mac: a request with the
// sender IP all zeros, so that it updates no one's ARP cache, asking who
// has ip.
func ProbePacket(mac net.HardwareAddr, ip netip.Addr) (*arp.Packet, error) {
	if !ip.Is4() {
		return nil, fmt.Errorf("arp probe for %v: not an IPv4 address", ip)
	}
	p, err := arp.NewPacket(arp.OperationRequest, mac, netip.IPv4Unspecified(), make(net.HardwareAddr, len(mac)), ip)
	if err != nil {
		return nil, fmt.Errorf("build arp probe for %v: %w", ip, err)
	}
	return p, nil
}

// ProbeWait is how long Probe listens. RFC 5227 waits seconds (PROBE_WAIT
// 1 s, three probes 1–2 s apart), made for a host that configures an
// address at boot; an egress-IP takeover cannot wait that long, and an
// owner on the same link answers within milliseconds.
const ProbeWait = 60 * time.Millisecond

// Probe asks ifaceName's link whether some host already answers for ips
// (RFC 5227 ARP Probes, two per IP, ProbeWait/2 apart) and listens for
// ProbeWait. It returns, for each IP that got an answer, the answering MAC.
// Answers from this interface's MAC and from MACs that known accepts (other
// Nodes, which a stale holder may still be until it is fenced) do not
// count. A host that claims ip in an ARP of its own (a reply, an
// announcement, or a request from ip) counts as an answer.
func Probe(ctx context.Context, ifaceName string, ips []netip.Addr, known func(net.HardwareAddr) bool) (map[netip.Addr]net.HardwareAddr, error) {
	ifi, err := net.InterfaceByName(ifaceName)
	if err != nil {
		return nil, fmt.Errorf("arp probe: interface %q: %w", ifaceName, err)
	}
	want := map[netip.Addr]bool{}
	var probes []*arp.Packet
	for _, ip := range ips {
		p, err := ProbePacket(ifi.HardwareAddr, ip)
		if err != nil {
			return nil, err
		}
		want[ip], probes = true, append(probes, p)
	}
	if len(probes) == 0 {
		return nil, nil
	}
	c, err := arp.Dial(ifi)
	if err != nil {
		return nil, fmt.Errorf("arp probe: open %s: %w", ifaceName, err)
	}
	defer c.Close()
	deadline := time.Now().Add(ProbeWait)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	if err := c.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	sendErr := make(chan error, 1)
	go func() {
		sendErr <- send(ctx, 2, ProbeWait/2, func() error {
			for _, p := range probes {
				if err := c.WriteTo(p, ethernet.Broadcast); err != nil {
					return fmt.Errorf("arp probe for %v: %w", p.TargetIP, err)
				}
			}
			return nil
		})
	}()
	found := map[netip.Addr]net.HardwareAddr{}
	for {
		p, _, err := c.Read()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			return found, fmt.Errorf("arp probe: read %s: %w", ifaceName, err)
		}
		ip := p.SenderIP.Unmap()
		if !want[ip] || bytes.Equal(p.SenderHardwareAddr, ifi.HardwareAddr) || known != nil && known(p.SenderHardwareAddr) {
			continue
		}
		found[ip] = slices.Clone(p.SenderHardwareAddr)
	}
	if err := <-sendErr; err != nil && ctx.Err() == nil {
		return found, err
	}
	return found, nil
}
