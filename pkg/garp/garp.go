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
// IPv6 (unsolicited neighbour advertisement) is not implemented yet.
package garp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
)

// sender is the part of *arp.Client that Announce uses.
type sender interface {
	WriteTo(p *arp.Packet, addr net.HardwareAddr) error
}

// Packets returns the two gratuitous ARP packets that announce ip at mac:
// request-style first, then reply-style (see the package doc).
func Packets(mac net.HardwareAddr, ip netip.Addr) ([]*arp.Packet, error) {
	if !ip.Is4() {
		return nil, fmt.Errorf("gratuitous arp for %v: not an IPv4 address (IPv6 is not implemented)", ip)
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

// Announce sends count rounds of gratuitous ARP for ip from ifaceName's
// MAC, interval apart (the first round at once). Spacing the rounds covers
// a lost frame and a switch or neighbour that was busy. The interface must
// already carry an IPv4 address (mdlayher/arp requires one), normally ip
// itself. It returns early with ctx's error if ctx ends.
func Announce(ctx context.Context, ifaceName string, ip netip.Addr, count int, interval time.Duration) error {
	ifi, err := net.InterfaceByName(ifaceName)
	if err != nil {
		return fmt.Errorf("gratuitous arp: interface %q: %w", ifaceName, err)
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
	return send(ctx, c, pkts, count, interval)
}

// send writes every packet to the broadcast address, count times, interval
// apart.
func send(ctx context.Context, s sender, pkts []*arp.Packet, count int, interval time.Duration) error {
	if count < 1 {
		return fmt.Errorf("gratuitous arp: count %d < 1", count)
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for i := range count {
		if i > 0 {
			t.Reset(interval)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gratuitous arp: round %d of %d: %w", i+1, count, ctx.Err())
		case <-t.C:
		}
		for _, p := range pkts {
			if err := s.WriteTo(p, ethernet.Broadcast); err != nil {
				return fmt.Errorf("gratuitous arp %v for %v: %w", p.Operation, p.SenderIP, err)
			}
		}
	}
	return nil
}
