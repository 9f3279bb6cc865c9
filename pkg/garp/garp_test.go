package garp

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
)

var mac = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}

func TestPackets(t *testing.T) {
	ip := netip.MustParseAddr("203.0.113.10")
	pkts, err := Packets(mac, ip)
	if err != nil {
		t.Fatal(err)
	}
	zero := net.HardwareAddr{0, 0, 0, 0, 0, 0}
	want := []struct {
		op  arp.Operation
		tha net.HardwareAddr
	}{
		{arp.OperationRequest, zero}, // RFC 5227 announcement
		{arp.OperationReply, mac},    // THA = SHA, as Linux's arp_is_garp wants
	}
	if len(pkts) != len(want) {
		t.Fatalf("got %d packets, want %d", len(pkts), len(want))
	}
	for i, w := range want {
		p := pkts[i]
		if p.Operation != w.op || p.SenderIP != ip || p.TargetIP != ip ||
			p.SenderHardwareAddr.String() != mac.String() || p.TargetHardwareAddr.String() != w.tha.String() {
			t.Errorf("packet %d = %+v, want op %v SPA=TPA=%v SHA=%v THA=%v", i, p, w.op, ip, mac, w.tha)
		}
	}
	if _, err := Packets(mac, netip.MustParseAddr("2001:db8::1")); err == nil {
		t.Error("IPv6 accepted, want error")
	}
}

type fakeSender struct {
	mu    sync.Mutex
	at    []time.Time
	dst   []net.HardwareAddr
	fails error
}

func (f *fakeSender) WriteTo(p *arp.Packet, addr net.HardwareAddr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.at = append(f.at, time.Now())
	f.dst = append(f.dst, addr)
	return f.fails
}

func TestSendCountsAndSpacing(t *testing.T) {
	pkts, _ := Packets(mac, netip.MustParseAddr("192.0.2.9"))
	f := &fakeSender{}
	const interval = 30 * time.Millisecond
	if err := send(context.Background(), f, pkts, 3, interval); err != nil {
		t.Fatal(err)
	}
	if len(f.at) != 6 {
		t.Fatalf("sent %d packets, want 3 rounds × 2", len(f.at))
	}
	for i, d := range f.dst {
		if d.String() != ethernet.Broadcast.String() {
			t.Errorf("packet %d sent to %v, want broadcast", i, d)
		}
	}
	for r := 1; r < 3; r++ {
		if gap := f.at[2*r].Sub(f.at[2*r-2]); gap < interval {
			t.Errorf("round %d came %v after the previous, want ≥ %v", r, gap, interval)
		}
	}
}

func TestSendStopsOnCancel(t *testing.T) {
	pkts, _ := Packets(mac, netip.MustParseAddr("192.0.2.9"))
	f := &fakeSender{}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := send(ctx, f, pkts, 100, time.Hour)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("send = %v, want deadline exceeded", err)
	}
	if len(f.at) != 2 {
		t.Fatalf("sent %d packets before cancel, want the first round (2)", len(f.at))
	}
}

func TestSendErrors(t *testing.T) {
	pkts, _ := Packets(mac, netip.MustParseAddr("192.0.2.9"))
	boom := errors.New("boom")
	if err := send(context.Background(), &fakeSender{fails: boom}, pkts, 2, 0); !errors.Is(err, boom) {
		t.Fatalf("send = %v, want wrapped boom", err)
	}
	if err := send(context.Background(), &fakeSender{}, pkts, 0, 0); err == nil {
		t.Fatal("count 0 accepted")
	}
}
