package agent

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// Restart grace. A helper that stops (SIGTERM, a rolling update) or
// crashes leaves gossip, but its Node's kernel goes on holding its egress
// IPs, answering ARP for them and forwarding: nothing needs to move, and a
// move would break every connection through those IPs twice (away, and
// back when the helper returns). So for Grace after a member departs, the
// others keep it in placement as long as its kernel still answers ARP for
// the egress IPs it held, with the MAC it published in gossip: a liveness
// signal of the datapath, which the helper's process does not give. When
// the answers stop (the uplink is cut, the Node is gone) the IPs move at
// once; when Grace runs out they move too. The departed Node's held IPs
// carry a kernel lifetime of at least Grace (daemon), so they are gone from
// its uplink by then: the fencing of a helper that stays away still holds.
//
// A restarting helper, for its part, keeps the IPs it finds held on its
// uplink until it has quorum (at most Grace/2 after its start), instead of
// giving them up while it gathers its peers.

// KernelProber asks the link which MAC answers ARP for each of ips (any
// host, Nodes included).
type KernelProber func(ctx context.Context, ips []netip.Addr) (map[netip.Addr]string, error)

// graceProbeEvery is how often the departed members' kernels are probed.
const graceProbeEvery = 200 * time.Millisecond

type departure struct {
	since    time.Time
	mac      string
	ips      []netip.Addr // the pool IPs it held in the last plan
	answered bool         // its kernel answered for them at the last probe
	probed   bool
}

// noteDepartures records the members that left since the last reconcile
// (alive is the gossip view), probing each new one's kernel at once so
// that this reconcile already knows whether to keep its IPs (a cut
// uplink then costs one probe, not a second reconcile), and forgets those
// that returned or whose grace ran out.
func (a *Agent) noteDepartures(ctx context.Context, alive []string) {
	if a.Grace <= 0 {
		return
	}
	fresh := a.recordDepartures(alive)
	for _, name := range fresh {
		a.probeDeparted(ctx, name)
	}
}

func (a *Agent) recordDepartures(alive []string) []string {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	macs := map[string]string{}
	for _, m := range a.Members.Members() {
		macs[m.Name] = m.MAC
	}
	var fresh []string
	for name := range a.prevAlive {
		if slices.Contains(alive, name) || a.departed[name] != nil {
			continue
		}
		// The IPs it held, and those it was taking over in a planned move
		// (it programs and announces them before its claim arrives).
		var ips []netip.Addr
		for _, ep := range a.last.Egresses {
			if (ep.Owner == name || ep.HandoffTo == name) && !ep.Static && ep.IP.Is4() {
				ips = append(ips, ep.IP)
			}
		}
		if len(ips) == 0 || macs[name] == "" {
			continue // it held nothing (or cannot be recognised): nothing to keep
		}
		a.departed[name] = &departure{since: now, mac: macs[name], ips: ips}
		fresh = append(fresh, name)
	}
	for name, d := range a.departed {
		switch {
		case slices.Contains(alive, name):
			delete(a.departed, name)
			a.Log.Info("member back within its grace", "member", name, "after", now.Sub(d.since).Round(time.Millisecond))
		case now.Sub(d.since) >= a.Grace:
			delete(a.departed, name)
			a.Log.Info("member's grace ran out; its egress IPs move", "member", name)
		}
	}
	a.prevAlive = map[string]bool{}
	for _, name := range alive {
		a.prevAlive[name] = true
	}
	return fresh
}

// probeDeparted asks the link whether the departed member's kernel still
// answers for its egress IPs with its MAC, and records the answer. It
// reports whether the answer changed.
func (a *Agent) probeDeparted(ctx context.Context, name string) bool {
	a.mu.Lock()
	d := a.departed[name]
	if d == nil {
		a.mu.Unlock()
		return false
	}
	ips, mac := d.ips, d.mac
	a.mu.Unlock()
	found, err := a.KernelProbe(ctx, ips)
	answered := err == nil && slices.ContainsFunc(ips, func(ip netip.Addr) bool { return found[ip] == mac })
	a.mu.Lock()
	defer a.mu.Unlock()
	if err == nil {
		now := time.Now()
		for ip, at := range a.unanswered {
			if now.Sub(at) > probeCovers {
				delete(a.unanswered, ip)
			}
		}
		for _, ip := range ips {
			if found[ip] == "" {
				a.unanswered[ip] = now
			}
		}
	}
	cur := a.departed[name]
	if cur == nil || cur.answered == answered && cur.probed {
		return false
	}
	first := !cur.probed
	cur.answered, cur.probed = answered, true
	switch {
	case answered && first:
		a.Log.Info("member left; its kernel still answers for its egress IPs, which stay", "member", name, "ips", ips, "grace", a.Grace)
	case !answered:
		a.Log.Info("departed member's kernel does not answer for its egress IPs; they move", "member", name, "ips", ips, "err", err)
	}
	return true
}

// graced are the departed members placement still counts.
func (a *Agent) graced() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for name, d := range a.departed {
		if d.answered && time.Since(d.since) < a.Grace {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// graceLoop probes the departed members' kernels, and reconciles when one
// stops answering or its grace runs out.
func (a *Agent) graceLoop(ctx context.Context) {
	if a.Grace <= 0 {
		return
	}
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		a.mu.Lock()
		var names []string
		expired := false
		for name, d := range a.departed {
			if time.Since(d.since) >= a.Grace {
				expired = true
			} else {
				names = append(names, name)
			}
		}
		a.mu.Unlock()
		changed := expired
		for _, name := range names {
			changed = a.probeDeparted(ctx, name) || changed
		}
		if changed {
			a.Poke()
		}
	}, graceProbeEvery)
}

// keptAtStart are the IPs a restarting helper keeps holding while it has
// not had quorum yet, for half the grace after its start: its peers'
// grace began when it left, before it started again, and must outlast
// its keeping (a helper that cannot join, with a wrong key, then lets go
// before anyone takes over).
func (a *Agent) keptAtStart() map[netip.Addr]bool {
	if a.Grace <= 0 || a.hadQuorum || time.Since(a.started) >= a.Grace/2 {
		return nil
	}
	return a.Kept
}
