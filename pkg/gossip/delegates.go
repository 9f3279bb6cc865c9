package gossip

import (
	"bytes"
	"context"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// events is memberlist's EventDelegate. memberlist calls it from its own
// goroutines while holding its node lock, so it only records and signals;
// it never blocks and never calls back into memberlist.
type events struct{ g *Gossip }

func (e *events) NotifyJoin(n *memberlist.Node) {
	e.g.set(toMember(n, true))
	e.g.log.Info("member joined", "member", n.Name, "addr", n.Address())
	e.g.notify()
}

func (e *events) NotifyLeave(n *memberlist.Node) {
	e.g.set(toMember(n, false))
	e.g.log.Info("member gone", "member", n.Name)
	e.g.notify()
}

func (e *events) NotifyUpdate(n *memberlist.Node) {
	e.g.set(toMember(n, true))
	e.g.log.Info("member updated", "member", n.Name)
	e.g.notify()
}

func (g *Gossip) set(m Member) {
	g.mu.Lock()
	g.members[m.Name] = m
	g.mu.Unlock()
}

// delegate publishes this member's metadata; Sluice has no user messages.
type delegate struct{ meta []byte }

func (d *delegate) NodeMeta(limit int) []byte {
	if len(d.meta) > limit {
		return nil
	}
	return d.meta
}
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// rejoinLoop contacts remembered peers that are not alive members, every
// RejoinInterval, until ctx ends. This covers helpers that start later
// than their peers and partitions longer than GossipToTheDeadTime, after
// which memberlist stops talking to the other side on its own.
// It also watches this member's health score (see Health) and fires
// Changes when it changes.
func (g *Gossip) rejoinLoop(ctx context.Context) {
	defer close(g.done)
	tick := time.NewTicker(g.cfg.Tuning.RejoinInterval)
	defer tick.Stop()
	health := time.NewTicker(healthPoll)
	defer health.Stop()
	last := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			g.joinMissing()
		case <-health.C:
			if h := g.Health(); h != last {
				last = h
				g.notify()
			}
		}
	}
}

// healthPoll is how often the health score is read: a fraction of a probe
// interval, so that a helper cut off stops holding IPs before its peers
// take them over.
const healthPoll = 25 * time.Millisecond

// joinMissing joins every remembered peer that is not an alive member and
// returns how many answered.
func (g *Gossip) joinMissing() int {
	g.mu.Lock()
	want := make([]string, 0, len(g.peers))
	for p := range g.peers {
		want = append(want, p)
	}
	g.mu.Unlock()
	alive := map[string]bool{}
	for _, m := range g.Members() {
		if m.Alive() {
			alive[m.Addr.String()] = true
		}
	}
	missing := missingPeers(want, alive)
	if len(missing) == 0 {
		return 0
	}
	// One Join call per peer, in parallel: one unreachable peer must not
	// hide the others' result nor delay them (each costs up to TCPTimeout).
	var answered atomic.Int32
	var wg sync.WaitGroup
	for _, p := range missing {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := g.ml.Join([]string{p}); err != nil {
				g.log.Debug("join peer failed, will retry", "peer", p, "err", err)
				return
			}
			answered.Add(1)
		}()
	}
	wg.Wait()
	return int(answered.Load())
}

// missingPeers returns the wanted peers that are not alive, sorted.
func missingPeers(want []string, alive map[string]bool) []string {
	var out []string
	for _, p := range want {
		if !alive[p] {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// slogWriter turns memberlist's "[LEVEL] memberlist: ..." log lines into
// slog records at that level.
type slogWriter struct{ log *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	line := bytes.TrimSpace(p)
	level, msg := slog.LevelInfo, line
	for _, l := range []struct {
		tag   string
		level slog.Level
	}{{"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo}, {"[WARN]", slog.LevelWarn}, {"[ERR]", slog.LevelError}} {
		if i := bytes.Index(line, []byte(l.tag)); i >= 0 {
			level, msg = l.level, bytes.TrimSpace(line[i+len(l.tag):])
			break
		}
	}
	w.log.Log(context.Background(), level, string(msg))
	return len(p), nil
}
