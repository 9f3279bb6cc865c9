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
	"github.com/mdlayher/ndp"
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

// fakeRounds records when each round was written.
type fakeRounds struct {
	mu    sync.Mutex
	at    []time.Time
	fails error
}

func (f *fakeRounds) write() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.at = append(f.at, time.Now())
	return f.fails
}

func TestSendCountsAndSpacing(t *testing.T) {
	f := &fakeRounds{}
	const interval = 30 * time.Millisecond
	if err := send(context.Background(), 3, interval, f.write); err != nil {
		t.Fatal(err)
	}
	if len(f.at) != 3 {
		t.Fatalf("wrote %d rounds, want 3", len(f.at))
	}
	for r := 1; r < 3; r++ {
		if gap := f.at[r].Sub(f.at[r-1]); gap < interval {
			t.Errorf("round %d came %v after the previous, want ≥ %v", r, gap, interval)
		}
	}
}

func TestSendStopsOnCancel(t *testing.T) {
	f := &fakeRounds{}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := send(ctx, 100, time.Hour, f.write)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("send = %v, want deadline exceeded", err)
	}
	if len(f.at) != 1 {
		t.Fatalf("wrote %d rounds before cancel, want the first only", len(f.at))
	}
}

func TestSendErrors(t *testing.T) {
	boom := errors.New("boom")
	if err := send(context.Background(), 2, 0, (&fakeRounds{fails: boom}).write); !errors.Is(err, boom) {
		t.Fatalf("send = %v, want wrapped boom", err)
	}
	if err := send(context.Background(), 0, 0, (&fakeRounds{}).write); err == nil {
		t.Fatal("count 0 accepted")
	}
}

func TestAdvertisement(t *testing.T) {
	ip := netip.MustParseAddr("2001:db8::100")
	na, err := Advertisement(mac, ip)
	if err != nil {
		t.Fatal(err)
	}
	if !na.Override || na.Solicited || na.Router || na.TargetAddress != ip || len(na.Options) != 1 {
		t.Fatalf("advertisement = %+v", na)
	}
	lla, ok := na.Options[0].(*ndp.LinkLayerAddress)
	if !ok || lla.Direction != ndp.Target || lla.Addr.String() != mac.String() {
		t.Fatalf("option = %+v, want target link-layer address %v", na.Options[0], mac)
	}
	if _, err := Advertisement(mac, netip.MustParseAddr("192.0.2.1")); err == nil {
		t.Fatal("IPv4 accepted")
	}
}
