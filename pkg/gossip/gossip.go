package gossip

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// State is a member's liveness as this member sees it.
type State string

// Member states. memberlist v0.7.0 does not expose suspicion (its
// Node.State is never updated), so a suspect member is reported alive until
// the suspicion timeout declares it dead. That is also what the election
// wants: a suspicion is usually refuted, and moving an IP on it would be a
// false failover.
const (
	StateAlive State = "alive" // alive or suspect
	StateDead  State = "dead"  // failed, or left cleanly
)

// Member is one gossip member.
type Member struct {
	Name     string // memberlist name, the Node name
	NodeName string // from the member's metadata
	Addr     netip.AddrPort
	State    State
	MAC      string // the member's uplink MAC, from its metadata ("" if it sent none)
}

// Alive reports whether the member counts as alive for the election.
func (m Member) Alive() bool { return m.State == StateAlive }

// meta is what every member publishes about itself (memberlist limits it
// to 512 bytes).
type meta struct {
	Node string `json:"node"`
	MAC  string `json:"mac,omitempty"`
}

// Gossip is one running member. Create it with New, then Start.
type Gossip struct {
	cfg Config
	log *slog.Logger

	ml      *memberlist.Memberlist
	keyring *memberlist.Keyring // nil without a key
	changes chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}

	// members is this package's own copy of the member list, kept by the
	// event delegate. memberlist.Members() hands out pointers that
	// memberlist keeps writing to without a lock (a data race under -race),
	// so it is never used.
	mu      sync.Mutex
	members map[string]Member   // by name; dead or left ones stay until they come back
	peers   map[string]struct{} // "ip:port" from Join, retried until alive
}

// New checks cfg (after WithDefaults) and returns a member that is not yet
// started.
func New(cfg Config, log *slog.Logger) (*Gossip, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("gossip config: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Gossip{
		cfg:     cfg,
		log:     log.With("component", "gossip", "node", cfg.NodeName),
		changes: make(chan struct{}, 1),
		members: map[string]Member{},
		peers:   map[string]struct{}{},
	}, nil
}

// Start binds the gossip port and starts memberlist and the rejoin loop,
// which stops when ctx ends or on Shutdown.
func (g *Gossip) Start(ctx context.Context) error {
	if g.ml != nil {
		return errors.New("gossip: already started")
	}
	mc, err := memberlistConfig(g.cfg)
	if err != nil {
		return err
	}
	if len(g.cfg.SecretKey) == 0 {
		g.log.Warn("gossip is NOT encrypted (AllowInsecure)")
	}
	md, err := json.Marshal(meta{Node: g.cfg.NodeName, MAC: g.cfg.MAC})
	if err != nil {
		return fmt.Errorf("encode gossip metadata: %w", err)
	}
	mc.Delegate = &delegate{meta: md}
	mc.Events = &events{g: g}
	if g.cfg.LogOutput != nil {
		mc.LogOutput = g.cfg.LogOutput
	} else {
		mc.Logger = nil
		mc.LogOutput = &slogWriter{log: g.log}
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("start memberlist on %s:%d: %w", g.cfg.BindAddr, g.cfg.BindPort, err)
	}
	g.ml = ml
	g.keyring = mc.Keyring
	ctx, g.cancel = context.WithCancel(ctx)
	g.done = make(chan struct{})
	go g.rejoinLoop(ctx)
	return nil
}

// Join contacts the given peers ("ip" or "ip:port"; the port defaults to
// BindPort) once, and remembers them: peers that are not alive members are
// contacted again every RejoinInterval, in the background. Join replaces
// the remembered set, so pass the whole current Node list each time. It
// returns how many peers answered now; no answer is not an error.
func (g *Gossip) Join(peers []string) (int, error) {
	if g.ml == nil {
		return 0, errors.New("gossip: join before start")
	}
	set, err := normalizePeers(peers, g.cfg.BindPort, g.self())
	if err != nil {
		return 0, err
	}
	g.mu.Lock()
	g.peers = set
	g.mu.Unlock()
	return g.joinMissing(), nil
}

// Members returns every known member, sorted by name: alive (or suspect)
// ones as StateAlive, and dead or left ones as StateDead until they come
// back. It includes this member.
func (g *Gossip) Members() []Member {
	g.mu.Lock()
	out := make([]Member, 0, len(g.members))
	for _, m := range g.members {
		out = append(out, m)
	}
	g.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// SetKeys replaces the keyring while gossip runs: keys[0] encrypts what
// this member sends from now on, and every key in keys decrypts what it
// receives; other keys are dropped. A rotation with no outage adds the new
// key on every member first, then makes it the first, then drops the old
// one (README, "Rotating the gossip key").
func (g *Gossip) SetKeys(keys [][]byte) error {
	if g.keyring == nil {
		return errors.New("gossip: SetKeys on a member started without a key")
	}
	if len(keys) == 0 {
		return errors.New("gossip: SetKeys with no key")
	}
	for i, k := range keys {
		if !ValidKeyLen(len(k)) {
			return fmt.Errorf("gossip key %d: %d bytes, want 16, 24 or 32", i+1, len(k))
		}
	}
	for _, k := range keys {
		if err := g.keyring.AddKey(k); err != nil {
			return fmt.Errorf("gossip: add key: %w", err)
		}
	}
	if err := g.keyring.UseKey(keys[0]); err != nil {
		return fmt.Errorf("gossip: use key: %w", err)
	}
	for _, old := range g.keyring.GetKeys() {
		if !slices.ContainsFunc(keys, func(k []byte) bool { return bytes.Equal(k, old) }) {
			if err := g.keyring.RemoveKey(old); err != nil {
				return fmt.Errorf("gossip: remove key: %w", err)
			}
		}
	}
	return nil
}

// Keys returns the installed keys, the one that encrypts first.
func (g *Gossip) Keys() [][]byte {
	if g.keyring == nil {
		return nil
	}
	return g.keyring.GetKeys()
}

// Health is memberlist's local health score (Lifeguard's "awareness"): 0
// when this member's probes get answered, rising by one for each probe that
// failed without the other members' nacks vouching for this member, and
// falling by one for each probe answered. A member cut off from the others
// (partitioned alone, its gossip port filtered) rises at once, long before
// its suspicion timeouts declare the others dead; a healthy member at 2%
// packet loss needs two such failures in a row to reach 2, which is
// vanishingly rare. It is 0 before Start and with no other member.
func (g *Gossip) Health() int {
	if g.ml == nil {
		return 0
	}
	return g.ml.GetHealthScore()
}

// Changes fires (coalesced: one pending signal at most) when a member
// joins, leaves, dies or changes its metadata, and when Health changes.
// Read Members after it fires. Suspicions do not fire it: they do not
// change the election.
func (g *Gossip) Changes() <-chan struct{} { return g.changes }

// Leave tells the others this member is leaving, so they drop it at once
// instead of after the suspicion timeout. Call it before Shutdown on a
// clean stop.
func (g *Gossip) Leave(timeout time.Duration) error {
	if g.ml == nil {
		return nil
	}
	if err := g.ml.Leave(timeout); err != nil {
		return fmt.Errorf("gossip leave: %w", err)
	}
	return nil
}

// Shutdown stops gossiping without telling anyone (the others will see
// this member die) and releases the port.
func (g *Gossip) Shutdown() error {
	if g.ml == nil {
		return nil
	}
	g.cancel()
	<-g.done
	if err := g.ml.Shutdown(); err != nil {
		return fmt.Errorf("gossip shutdown: %w", err)
	}
	return nil
}

func (g *Gossip) self() string {
	return netip.AddrPortFrom(g.cfg.BindAddr, uint16(g.cfg.BindPort)).String()
}

func (g *Gossip) notify() {
	select {
	case g.changes <- struct{}{}:
	default: // one signal is already pending; the reader will see it all
	}
}

// toMember converts a memberlist node; alive says which list it came from
// (memberlist's Node.State is not maintained, see State).
func toMember(n *memberlist.Node, alive bool) Member {
	m := Member{Name: n.Name, NodeName: n.Name, State: StateDead}
	if alive {
		m.State = StateAlive
	}
	var md meta
	if json.Unmarshal(n.Meta, &md) == nil && md.Node != "" {
		m.NodeName, m.MAC = md.Node, md.MAC
	}
	if a, ok := netip.AddrFromSlice(n.Addr); ok {
		m.Addr = netip.AddrPortFrom(a.Unmap(), n.Port)
	}
	return m
}

// normalizePeers turns "ip" / "ip:port" into a set of "ip:port", without
// self.
func normalizePeers(peers []string, port int, self string) (map[string]struct{}, error) {
	set := map[string]struct{}{}
	for _, p := range peers {
		ap, err := netip.ParseAddrPort(p)
		if err != nil {
			a, aerr := netip.ParseAddr(p)
			if aerr != nil {
				return nil, fmt.Errorf("gossip peer %q: not ip or ip:port: %w", p, err)
			}
			ap = netip.AddrPortFrom(a, uint16(port))
		}
		s := ap.String()
		if s != self {
			set[s] = struct{}{}
		}
	}
	return set, nil
}
