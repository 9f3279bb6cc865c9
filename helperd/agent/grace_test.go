package agent

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sluicenet/sluice/helperd/placement"
	"github.com/sluicenet/sluice/pkg/datapath"
	"github.com/sluicenet/sluice/pkg/gossip"
)

type staticMembers []gossip.Member

func (m staticMembers) Members() []gossip.Member { return m }
func (m staticMembers) Changes() <-chan struct{} { return nil }

// A departed member stays in placement while its kernel answers for the
// IPs it held with its own MAC, and leaves it when the answers stop, when
// another host answers, or when the grace runs out; a returning member
// is forgotten.
func TestGraceFollowsTheKernel(t *testing.T) {
	ip := netip.MustParseAddr("192.0.2.210")
	var mu sync.Mutex
	answer := map[netip.Addr]string{ip: "02:00:00:00:00:0b"}
	a := testAgent(t, Config{Self: "node-a", Log: slog.New(slog.DiscardHandler), Grace: 30 * time.Second,
		Members: staticMembers{{Name: "node-a", MAC: "02:00:00:00:00:0a"}, {Name: "node-b", MAC: "02:00:00:00:00:0b", State: gossip.StateDead}},
		KernelProbe: func(_ context.Context, ips []netip.Addr) (map[netip.Addr]string, error) {
			mu.Lock()
			defer mu.Unlock()
			out := map[netip.Addr]string{}
			for _, ip := range ips {
				if mac, ok := answer[ip]; ok {
					out[ip] = mac
				}
			}
			return out, nil
		}})
	a.last = placement.Plan{Egresses: []placement.Egress{{Name: "e", IP: ip, Owner: "node-b"}}}
	ctx := context.Background()
	a.noteDepartures(ctx, []string{"node-a", "node-b"})
	a.noteDepartures(ctx, []string{"node-a"})
	if got := a.graced(); !slices.Equal(got, []string{"node-b"}) {
		t.Fatalf("graced %v while node-b's kernel answers, want [node-b]", got)
	}
	set := func(mac string) {
		mu.Lock()
		defer mu.Unlock()
		if mac == "" {
			delete(answer, ip)
		} else {
			answer[ip] = mac
		}
	}
	set("02:00:00:00:00:99") // a host that is not node-b
	if !a.probeDeparted(ctx, "node-b") || len(a.graced()) != 0 {
		t.Fatalf("graced %v while another host answers", a.graced())
	}
	set("02:00:00:00:00:0b")
	a.probeDeparted(ctx, "node-b")
	set("")
	if !a.probeDeparted(ctx, "node-b") || len(a.graced()) != 0 {
		t.Fatalf("graced %v after node-b's kernel stopped answering", a.graced())
	}
	set("02:00:00:00:00:0b")
	a.probeDeparted(ctx, "node-b")
	a.mu.Lock()
	a.departed["node-b"].since = time.Now().Add(-31 * time.Second)
	a.mu.Unlock()
	if len(a.graced()) != 0 {
		t.Fatal("graced past the grace")
	}
	a.noteDepartures(ctx, []string{"node-a", "node-b"})
	a.mu.Lock()
	n := len(a.departed)
	a.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d departures kept after node-b came back", n)
	}
}

// A restarting helper keeps the IPs it found held until it has quorum,
// for half the grace at most.
func TestKeptAtStart(t *testing.T) {
	ip := netip.MustParseAddr("192.0.2.210")
	a := testAgent(t, Config{Self: "node-a", Grace: 30 * time.Second, Kept: map[netip.Addr]bool{ip: true}})
	if !a.keptAtStart()[ip] {
		t.Fatal("not kept right after the start")
	}
	a.started = time.Now().Add(-16 * time.Second)
	if a.keptAtStart() != nil {
		t.Fatal("kept past half the grace")
	}
	a.started = time.Now()
	a.hadQuorum = true
	if a.keptAtStart() != nil {
		t.Fatal("kept after quorum")
	}
}

// A departure probe that found nobody answering for an IP stands in for
// the probe before holding it, for probeCovers; an IP some host answered
// for, or one probed longer ago, is probed again before it is held.
func TestDepartureProbeCoversTheHoldProbe(t *testing.T) {
	quiet, loud := netip.MustParseAddr("192.0.2.210"), netip.MustParseAddr("192.0.2.211")
	var probed []netip.Addr
	a := testAgent(t, Config{Self: "node-a", Log: slog.New(slog.DiscardHandler), Grace: 30 * time.Second,
		Members: staticMembers{{Name: "node-a", MAC: "02:00:00:00:00:0a"}, {Name: "node-b", MAC: "02:00:00:00:00:0b", State: gossip.StateDead}},
		KernelProbe: func(_ context.Context, ips []netip.Addr) (map[netip.Addr]string, error) {
			return map[netip.Addr]string{loud: "02:00:00:00:00:99"}, nil
		},
		Probe: func(_ context.Context, ips []netip.Addr) (map[netip.Addr]string, error) {
			probed = append(probed, ips...)
			return nil, nil
		}})
	a.last = placement.Plan{Egresses: []placement.Egress{{Name: "q", IP: quiet, Owner: "node-b"}, {Name: "l", IP: loud, Owner: "node-b"}}}
	ctx := context.Background()
	a.noteDepartures(ctx, []string{"node-a", "node-b"})
	a.noteDepartures(ctx, []string{"node-a"})
	take := placement.Plan{Desired: datapath.Desired{HeldIPs: []netip.Addr{quiet, loud}}}
	a.probe(ctx, take)
	if !slices.Equal(probed, []netip.Addr{loud}) {
		t.Fatalf("probed %v before holding, want only %v (another host answered for it)", probed, loud)
	}
	probed = nil
	a.mu.Lock()
	a.unanswered[quiet] = time.Now().Add(-probeCovers - time.Millisecond)
	a.mu.Unlock()
	a.probe(ctx, take)
	if !slices.Equal(probed, []netip.Addr{quiet, loud}) {
		t.Fatalf("probed %v once the departure probe was old, want both", probed)
	}
}

// A member that leaves while it is taking an IP over in a planned move has
// programmed and announced it already: its kernel answers for it, and it
// is graced like a holder (otherwise the move's old holder keeps the IP
// while the LAN's replies go to the departed Node).
func TestDepartingHandoffTargetIsGraced(t *testing.T) {
	ip := netip.MustParseAddr("192.0.2.210")
	a := testAgent(t, Config{Self: "node-c", Log: slog.New(slog.DiscardHandler), Grace: 30 * time.Second,
		Members: staticMembers{{Name: "node-c", MAC: "02:00:00:00:00:0c"}, {Name: "node-a", MAC: "02:00:00:00:00:0a", State: gossip.StateDead}},
		KernelProbe: func(_ context.Context, ips []netip.Addr) (map[netip.Addr]string, error) {
			return map[netip.Addr]string{ip: "02:00:00:00:00:0a"}, nil
		}})
	// node-c holds the IP and hands it over to node-a, whose claim has not
	// arrived.
	a.last = placement.Plan{Egresses: []placement.Egress{{Name: "e", IP: ip, Owner: "node-c", HandoffTo: "node-a"}}}
	ctx := context.Background()
	a.noteDepartures(ctx, []string{"node-a", "node-c"})
	a.noteDepartures(ctx, []string{"node-c"})
	if got := a.graced(); !slices.Equal(got, []string{"node-a"}) {
		t.Fatalf("graced %v after the handoff's new holder left with its kernel answering, want [node-a]", got)
	}
}
