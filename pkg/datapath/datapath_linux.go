package datapath

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
)

// Datapath reconciles the kernel of the current network namespace to a
// Desired state. The kernel is the source of truth: Apply reads it back and
// diffs (at most Config.ResyncPeriod after the last full read, see
// applied), so a restart or a hand-deleted rule converges, and nothing
// that failed is ever assumed present (any error drops the record).
//
// Call its methods from the node's network namespace (for tests: on a
// locked thread inside ns.Do); commands it runs inherit that namespace.
type Datapath struct {
	cfg   Config
	ipt   iptablesRunner
	ipset ipsetRunner
	log   *slog.Logger

	mu      sync.Mutex
	writes  int        // kernel writes attempted, for tests and logs
	applied *applied   // what the last error-free Apply installed; nil = unknown
	guard   *ExitGuard // what the exit guard holds; nil = unknown
	nat     *natState  // the NAT the last conntrack hygiene pass made true; nil = unknown
	// selected and lingering feed ExitGuard.Lingering: the Pods selected
	// at the last Apply, and until when those no longer selected linger.
	selected  []netip.Addr
	lingering map[netip.Addr]time.Time
	seeded    bool // selected was read from the kernel's guard at the first Apply
	// noHygiene leaves conntrack alone (tests of the exit guard).
	noHygiene bool
}

// applied is what the last error-free Apply installed. While it is younger
// than Config.ResyncPeriod, Apply diffs ipsets, rules, routes and chains
// against it instead of reading them back: at 1,000 Egresses and 10,000
// Pods the read-back (iptables-save, ipset save, rule and route dumps)
// costs most of a second, a Pod change through this path tens of
// milliseconds. After the period, Apply reads everything again, which is
// what repairs drift; the caller must therefore call Apply at least that
// often. The tunnel, its neighbors and the held IPs are always read (cheap).
type applied struct {
	verified time.Time // last time the kernel was read back in full
	tunIdx   int
	sets     []IPSet
	chains   Chains
	rules    []Rule
	routes   []Route
}

// currentSets returns the Sluice ipsets from the record, or from the
// kernel when there is no fresh record.
func (d *Datapath) currentSets(c *applied) (map[string]*IPSet, error) {
	if c == nil {
		out, err := d.ipset.Save()
		if err != nil {
			return nil, err
		}
		return parseIPSetSave(out), nil
	}
	have := make(map[string]*IPSet, len(c.sets))
	for i := range c.sets {
		have[c.sets[i].Name] = &c.sets[i]
	}
	return have, nil
}

// New validates cfg (after defaults) and returns a Datapath using the
// iptables and ipset binaries on PATH.
func New(cfg Config, log *slog.Logger) (*Datapath, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("datapath config: %w", err)
	}
	ipt, err := newExecIPTables(cfg.IPTables)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &Datapath{cfg: cfg, ipt: ipt, ipset: execIPSet{}, log: log}, nil
}

// Config returns the defaulted configuration.
func (d *Datapath) Config() Config { return d.cfg }

// Apply makes the kernel match want. It adds and replaces first, switches
// the iptables chains atomically, then deletes what is no longer wanted,
// and returns every failure joined. Calling it again with the same state
// writes nothing.
func (d *Datapath) Apply(ctx context.Context, want Desired) error {
	if err := want.Validate(d.cfg); err != nil {
		return fmt.Errorf("invalid desired state: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	start, now := d.writes, time.Now() // the record is dated before any read
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	tun, err := d.ensureTunnel()
	add(err)
	tunIdx := 0
	if tun != nil {
		tunIdx = tun.Attrs().Index
	}
	c := d.applied
	if c != nil && (now.Sub(c.verified) >= d.cfg.resync() || c.tunIdx != tunIdx) {
		c = nil // read everything back: this is what repairs drift
	}
	add(d.syncHeldIPs(want.HeldIPs, false))
	sets := BuildIPSets(d.cfg, want)
	var setDels []byte
	if have, err := d.currentSets(c); err != nil {
		add(err)
	} else {
		var setAdds []byte
		setAdds, setDels = ipsetScripts(have, sets)
		add(d.restoreIPSet(setAdds))
	}
	peers := BuildPeers(want)
	if tun != nil {
		add(d.syncPeers(tun, peers, false))
	}
	routes, rules, chains := BuildRoutes(want), BuildRules(d.cfg, want), BuildChains(d.cfg, want)
	routesDone := c != nil && slices.Equal(routes, c.routes)
	rulesDone := c != nil && slices.Equal(rules, c.rules)
	if !routesDone {
		add(d.syncRoutes(tunIdx, routes, false))
	}
	if !rulesDone {
		add(d.syncRules(rules, false))
	}
	if err := ctx.Err(); err != nil {
		d.applied = nil
		return errors.Join(append(errs, err)...)
	}
	var same Chains
	if c != nil {
		same = c.chains
	}
	add(d.syncIPTables(chains, same))
	guard := BuildExitGuard(d.cfg, want)
	if !d.seeded {
		// The first Apply of this process (a restarted helper): the Pods
		// the previous one had selected linger too, if this first plan
		// leaves any of them out.
		d.seeded = true
		var err error
		if d.selected, err = kernelSelected(); err != nil {
			d.log.Warn("read the exit guard's selected Pods", "err", err)
		}
	}
	d.linger(&guard, now)
	add(d.ensureExitGuard(guard, c == nil))
	add(d.cleanConntrack(buildNATState(want), guard.Except))
	// Deletes, now that nothing new depends on the old objects.
	if !rulesDone {
		add(d.syncRules(rules, true))
	}
	if !routesDone {
		add(d.syncRoutes(tunIdx, routes, true))
	}
	if tun != nil {
		add(d.syncPeers(tun, peers, true))
	}
	add(d.restoreIPSet(setDels))
	add(d.syncHeldIPs(want.HeldIPs, true))
	d.applied = nil
	if len(errs) == 0 {
		verified := now
		if c != nil {
			verified = c.verified
		}
		d.applied = &applied{verified: verified, tunIdx: tunIdx, sets: sets, chains: chains, rules: rules, routes: routes}
	}
	if n := d.writes - start; n > 0 || len(errs) > 0 {
		d.log.Info("datapath applied", "writes", n, "errors", len(errs), "egresses", len(want.Egresses))
	}
	return errors.Join(errs...)
}

// Uninstall removes every kernel object Sluice owns: the exit guard's
// nftables table, chains and jumps,
// SLUICE-* ipsets, rules 9900–9999, routes of tables 9990–14095, labelled
// uplink addresses and the tunnel device.
func (d *Datapath) Uninstall(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.applied, d.guard, d.nat = nil, nil, nil
	errs := []error{d.removeExitGuard(), d.removeIPTables(), d.removeIPSets(), d.syncRules(nil, true), d.syncRoutes(0, nil, true)}
	if l, err := linkByName(d.cfg.TunnelDev); err == nil {
		d.writes++
		errs = append(errs, netlink.LinkDel(l))
	} else if !errors.As(err, &netlink.LinkNotFoundError{}) {
		errs = append(errs, fmt.Errorf("find tunnel: %w", err))
	}
	errs = append(errs, d.syncHeldIPs(nil, true), ctx.Err())
	return errors.Join(errs...)
}

// markRule recognises an egress mark rule written by BuildChains.
var markRule = regexp.MustCompile(`--comment "sluice:ip=([0-9.]+)" -j MARK --set-xmark 0x([0-9a-f]+)/0xfff0000$`)

// CurrentIDs reads the egress-IP → mark id assignment back from the
// installed mark rules, so a restarted helper passes it to AssignIDs and
// keeps every mark and table as it was.
func (d *Datapath) CurrentIDs(ctx context.Context) (map[netip.Addr]uint16, error) {
	out := map[netip.Addr]uint16{}
	have, err := d.readTable("mangle")
	if err != nil {
		return nil, err
	}
	for _, r := range have[ChainPrerouting] {
		m := markRule.FindStringSubmatch(r)
		if m == nil {
			continue
		}
		ip, err1 := netip.ParseAddr(m[1])
		mark, err2 := strconv.ParseUint(m[2], 16, 32)
		id := IDOfMark(uint32(mark))
		if err1 == nil && err2 == nil && id >= 1 && id <= MaxID {
			out[ip] = id
		}
	}
	return out, ctx.Err()
}

// RuleStats are the counters of one rule in a Sluice chain. Set and
// EgressIP are filled for per-Egress rules (mark and SNAT), so a caller
// maps them back with EgressSetName. DropReason is filled for the tunnel
// guard's drop rules (DropNotFromNode, DropFromPod, DropNotSelected).
type RuleStats struct {
	Table, Chain, Rule string
	Set                string
	EgressIP           netip.Addr
	DropReason         string
	Packets, Bytes     uint64
}

var (
	ruleSet  = regexp.MustCompile(`--match-set (` + egressSetBase + `[0-9a-f]+) src`)
	ruleIP   = regexp.MustCompile(`(?:sluice:ip=|--to-source )([0-9.]+)`)
	ruleDrop = regexp.MustCompile(`"sluice:drop=([a-z-]+)" -j DROP$`)
)

func describeRule(rs *RuleStats) {
	if m := ruleSet.FindStringSubmatch(rs.Rule); m != nil {
		rs.Set = m[1]
	}
	if m := ruleIP.FindStringSubmatch(rs.Rule); m != nil {
		rs.EgressIP, _ = netip.ParseAddr(m[1])
	}
	if m := ruleDrop.FindStringSubmatch(rs.Rule); m != nil {
		rs.DropReason = m[1]
	}
}

// SetStats is the size of one Sluice ipset.
type SetStats struct {
	Name    string
	Members int
}

// Stats are the datapath's counters, for the CLI and metrics.
type Stats struct {
	Rules []RuleStats
	Sets  []SetStats
	// ExitDrops are the exit guard's drops by reason (ExitDropInvalid,
	// ExitDropWrongSource).
	ExitDrops map[string]uint64
}

type statsReader interface {
	StructuredStats(table, chain string) ([]iptables.Stat, error)
}

// Stats returns per-rule packet and byte counters of every Sluice chain
// and the size of every Sluice ipset.
func (d *Datapath) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	sr, ok := d.ipt.(statsReader)
	if !ok {
		return st, errors.New("iptables backend has no counters")
	}
	chains := BuildChains(d.cfg, Desired{})
	var errs []error
	errs = append(errs, d.eachTable(tables, func(table string, have tableRules) error {
		var errs []error
		for _, chain := range sortedChainNames(chains[table]) {
			specs, ok := have[chain]
			if !ok {
				continue
			}
			counters, err := sr.StructuredStats(table, chain)
			if err != nil {
				errs = append(errs, fmt.Errorf("counters of %s/%s: %w", table, chain, err))
				continue
			}
			// iptables-save and -L list a chain in the same order.
			for i, spec := range specs {
				rs := RuleStats{Table: table, Chain: chain, Rule: spec}
				describeRule(&rs)
				if i < len(counters) {
					rs.Packets, rs.Bytes = counters[i].Packets, counters[i].Bytes
				}
				st.Rules = append(st.Rules, rs)
			}
		}
		return errors.Join(errs...)
	}))
	if out, err := d.ipset.Save(); err != nil {
		errs = append(errs, err)
	} else {
		sets := parseIPSetSave(out)
		for _, name := range sortedSetNames(sets) {
			st.Sets = append(st.Sets, SetStats{Name: name, Members: len(sets[name].Members)})
		}
	}
	drops, err := exitDrops()
	st.ExitDrops = drops
	errs = append(errs, err, ctx.Err())
	return st, errors.Join(errs...)
}
