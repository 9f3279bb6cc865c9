package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluicenet/sluice/helperd/hint"
	"github.com/sluicenet/sluice/helperd/placement"
	"github.com/sluicenet/sluice/helperd/registry"
	"github.com/sluicenet/sluice/helperd/view"
	"github.com/sluicenet/sluice/pkg/apis/sluice/v1alpha1"
	"github.com/sluicenet/sluice/pkg/cniproto"
	"github.com/sluicenet/sluice/pkg/datapath"
	"github.com/sluicenet/sluice/pkg/election"
	"github.com/sluicenet/sluice/pkg/gossip"
	"github.com/sluicenet/sluice/pkg/policy"
)

// Datapath is the kernel side: one idempotent Apply of the whole state.
type Datapath interface {
	Apply(ctx context.Context, want datapath.Desired) error
	Stats(ctx context.Context) (datapath.Stats, error)
}

// Members is the gossip view.
type Members interface {
	Members() []gossip.Member
	Changes() <-chan struct{}
}

// Announcer sends gratuitous ARP for an IP this Node just took.
type Announcer func(ctx context.Context, ip netip.Addr)

// Prober asks the link whether another host answers for ips, before this
// Node holds them (garp.Probe); it returns who answers for each IP taken.
type Prober func(ctx context.Context, ips []netip.Addr) (map[netip.Addr]string, error)

// errNotApplied is lastApplyErr before the first Apply.
var errNotApplied = errors.New("no Apply yet")

// conflictRetry is how long an IP found taken stays unheld before it is
// probed again.
const conflictRetry = 10 * time.Second

// Status writes Egress status from each plan (StatusWriter).
type Status interface {
	Write(ctx context.Context, plan placement.Plan, leader bool) error
	Overlaps(plan placement.Plan)
}

// Allocator hands out pool IPs (alloc.Allocator); the allocator leader's
// status loop runs it.
type Allocator interface {
	Sync(ctx context.Context, pools []*v1alpha1.ExternalIPPool, egresses []*v1alpha1.Egress) error
}

// HintSender tells another helper about a Pod of this Node (hint.Client).
type HintSender interface {
	Send(ctx context.Context, addr string, h hint.Hint) error
}

// Config is what an Agent is made of. Self, Log, Cache and Datapath are
// required; New stands in for every other part left out with one that does
// nothing, as said at each.
type Config struct {
	Self     string
	NodeIP   netip.Addr
	Log      *slog.Logger
	Cache    *view.Cache
	Datapath Datapath
	// Members is the gossip view; without it this Node alone is alive.
	Members Members
	// Allocator and Status write the API; without them nothing is
	// allocated or written.
	Allocator Allocator
	Status    Status
	// Announce sends gratuitous ARP for an IP taken; Probe asks who
	// answers for IPs before they are held. Without them nothing is sent.
	Announce Announcer
	Probe    Prober
	Election election.Policy
	// Resync is the period of the reconcile that runs whatever changed;
	// 2 s without it.
	Resync time.Duration
	// ClusterCIDRs are the Pod and Service CIDRs, never egress IPs.
	ClusterCIDRs []netip.Prefix
	// PrevIDs are the mark ids found in the kernel at start.
	PrevIDs map[netip.Addr]uint16
	// Metrics are registered nowhere without it.
	Metrics *Metrics
	// HintClient tells the helper holding an Egress's IP about a new Pod
	// at its ADD (see package hint), at HintPort; without it no hints go
	// out.
	HintClient HintSender
	HintPort   int
	// Grace is the restart grace (see grace.go); 0 moves a departed
	// member's IPs at once. It needs KernelProbe, which finds who answers
	// ARP for IPs.
	Grace       time.Duration
	KernelProbe KernelProber
	// Kept are the egress IPs found held on the uplink at start.
	Kept map[netip.Addr]bool
	// RegistryLog logs the registry's records; Log without it.
	RegistryLog *slog.Logger
}

// Agent runs the helper's reconcile loop.
type Agent struct {
	Config
	// Registry is the Node's CNI attachments; its OnAdd is the agent's
	// OnCNIAdd.
	Registry *registry.Registry

	trigger   chan struct{}
	requested atomic.Uint64

	mu      sync.Mutex
	done    uint64
	doneCh  chan struct{}
	last    placement.Plan // the plan of the last Apply
	lastErr error
	// lastApplyErr is how the last Apply ended (errNotApplied before the
	// first); lastErr is also set by a reconcile that stopped before its
	// Apply.
	lastApplyErr error
	hints        map[policy.PodKey]hintEntry // Pods other helpers announced to us
	held         map[netip.Addr]bool
	lastAlive    string
	// announcedAll is when every held IP was last announced.
	announcedAll time.Time
	statusCh     chan placement.Plan
	conflicts    map[netip.Addr]conflict  // IPs another host answers for
	departed     map[string]*departure    // members in their restart grace
	unanswered   map[netip.Addr]time.Time // IPs a departure probe found nobody answering for, and when
	ipSeen       map[string]seen          // Egress → its IP and since when (placement.Snapshot.Settling)
	handoffs     map[string]seen          // Egress → its planned move and since when
	prevAlive    map[string]bool
	started      time.Time
	hadQuorum    bool // reconcile's goroutine only
}

type conflict struct {
	who string
	at  time.Time
}

// New returns an agent ready to Run, with its registry.
func New(cfg Config) (*Agent, error) {
	switch {
	case cfg.Self == "":
		return nil, errors.New("agent: Self (the Node's name) is required")
	case cfg.Log == nil || cfg.Cache == nil || cfg.Datapath == nil:
		return nil, errors.New("agent: Log, Cache and Datapath are required")
	case cfg.Grace > 0 && cfg.KernelProbe == nil:
		return nil, errors.New("agent: a restart grace needs a KernelProbe")
	}
	if cfg.Members == nil {
		cfg.Members = alone{}
	}
	if cfg.Allocator == nil {
		cfg.Allocator = noAllocator{}
	}
	if cfg.Status == nil {
		cfg.Status = noStatus{}
	}
	if cfg.Announce == nil {
		cfg.Announce = func(context.Context, netip.Addr) {}
	}
	if cfg.Probe == nil {
		cfg.Probe = func(context.Context, []netip.Addr) (map[netip.Addr]string, error) { return nil, nil }
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	if cfg.HintClient == nil {
		cfg.HintClient = noHints{}
	}
	if cfg.Resync == 0 {
		cfg.Resync = 2 * time.Second
	}
	if cfg.RegistryLog == nil {
		cfg.RegistryLog = cfg.Log
	}
	a := &Agent{
		Config:       cfg,
		trigger:      make(chan struct{}, 1),
		doneCh:       make(chan struct{}),
		hints:        map[policy.PodKey]hintEntry{},
		held:         map[netip.Addr]bool{},
		conflicts:    map[netip.Addr]conflict{},
		departed:     map[string]*departure{},
		unanswered:   map[netip.Addr]time.Time{},
		ipSeen:       map[string]seen{},
		handoffs:     map[string]seen{},
		started:      time.Now(),
		statusCh:     make(chan placement.Plan, 1),
		lastApplyErr: errNotApplied,
	}
	a.Registry = registry.New(registry.Options{OnAdd: a.OnCNIAdd, Log: cfg.RegistryLog})
	return a, nil
}

// The parts New stands in for those left out.
type (
	alone       struct{}
	noAllocator struct{}
	noStatus    struct{}
	noHints     struct{}
)

func (alone) Members() []gossip.Member { return nil }
func (alone) Changes() <-chan struct{} { return nil }
func (noAllocator) Sync(context.Context, []*v1alpha1.ExternalIPPool, []*v1alpha1.Egress) error {
	return nil
}
func (noStatus) Write(context.Context, placement.Plan, bool) error { return nil }
func (noStatus) Overlaps(placement.Plan)                           {}
func (noHints) Send(context.Context, string, hint.Hint) error      { return nil }

// Poke asks for a reconcile without waiting.
func (a *Agent) Poke() {
	a.requested.Add(1)
	select {
	case a.trigger <- struct{}{}:
	default:
	}
}

// Sync asks for a reconcile and waits until one that started after the
// request has applied the datapath.
func (a *Agent) Sync(ctx context.Context) error {
	gen := a.requested.Add(1)
	select {
	case a.trigger <- struct{}{}:
	default:
	}
	for {
		a.mu.Lock()
		done, ch, err := a.done, a.doneCh, a.lastErr
		a.mu.Unlock()
		if done >= gen {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the datapath: %w", ctx.Err())
		case <-ch:
		}
	}
}

// OnCNIAdd is the registry's OnAdd hook: it programs the Pod's egress
// before the plugin's ADD is acknowledged, so that even the Pod's first
// packet leaves with the right IP. The registry lists att while this
// runs, so a reconcile that starts now has it; one that this waits for.
func (a *Agent) OnCNIAdd(ctx context.Context, att cniproto.Attachment) error {
	start := time.Now()
	if att.PodNamespace != "" && att.PodName != "" {
		a.Cache.EnsurePod(ctx, att.PodNamespace, att.PodName)
	}
	err := a.Sync(ctx)
	if err != nil && ctx.Err() == nil && !a.selected(att) {
		// The reconcile failed on something else; this Pod needs no
		// Sluice state, so its ADD does not wait for that to be fixed.
		a.Log.Warn("datapath apply failed; acking the ADD of a Pod no Egress selects", "pod", att.PodNamespace+"/"+att.PodName, "err", err)
		err = nil
	}
	// Refused or timed out, the registry drops att and says so, and the
	// next reconcile removes whatever this one programmed for it.
	a.Metrics.observeCNI("add", start, err)
	return err
}

// selected tells whether an Egress selects att's Pod in the last plan; a
// Pod the ADD does not name counts as selected.
func (a *Agent) selected(att cniproto.Attachment) bool {
	if att.PodNamespace == "" || att.PodName == "" {
		return true
	}
	as, ok := a.LastPlan().Policy.Pods[policy.PodKey{Namespace: att.PodNamespace, Name: att.PodName}]
	return ok && as.Egress != ""
}

type hintEntry struct {
	placement.HintedIP
	expires time.Time
}

// ReceiveHint records the IP of a Pod that another helper announced, once
// the API confirms that the Pod runs on the announcing Node and the IP can
// be its, and returns when the datapath has it. Which Egress selects the
// Pod is decided by placement.Decide from the API's labels, never by the hint.
func (a *Agent) ReceiveHint(ctx context.Context, h hint.Hint) error {
	seen, err := a.checkHint(ctx, h)
	if err != nil {
		return fmt.Errorf("%w: %w", hint.ErrRefused, err)
	}
	key := policy.PodKey{Namespace: h.Namespace, Name: h.Pod}
	a.mu.Lock()
	a.hints[key] = hintEntry{placement.HintedIP{PodIP: h.PodIP.Unmap(), Node: h.Sender, Seen: seen}, time.Now().Add(hint.TTL)}
	a.mu.Unlock()
	return a.Sync(ctx)
}

// checkHint: the Pod exists (read from the API server when the informer
// has not seen it yet), is scheduled to the sender, and the IP is in the
// sender's Pod CIDRs when the Node has any. An IP other than the Pod
// object's is a recreated sandbox's, which the sender's CNI knows before
// the kubelet writes it (see withHints). It returns the object's IPs.
func (a *Agent) checkHint(ctx context.Context, h hint.Hint) ([]netip.Addr, error) {
	a.Cache.EnsurePod(ctx, h.Namespace, h.Pod)
	p, ok := a.Cache.Pod(h.Namespace, h.Pod)
	if !ok {
		return nil, fmt.Errorf("pod %s/%s: not found", h.Namespace, h.Pod)
	}
	if p.Spec.NodeName != h.Sender {
		return nil, fmt.Errorf("pod %s/%s: scheduled to %q, not to the sender %q", h.Namespace, h.Pod, p.Spec.NodeName, h.Sender)
	}
	ip := h.PodIP.Unmap()
	if cidrs := a.Cache.Nodes()[h.Sender].PodCIDRs; len(cidrs) > 0 && !slices.ContainsFunc(cidrs, func(c netip.Prefix) bool { return c.Contains(ip) }) {
		return nil, fmt.Errorf("pod %s/%s: %v is outside node %s's podCIDRs %v", h.Namespace, h.Pod, ip, h.Sender, cidrs)
	}
	return policy.PodInfoFromPod(p).IPs, nil
}

// hintTimeout bounds how long a reconcile waits for holders to take new
// Pods' IPs. Past it the mark goes in anyway: the holder learns the Pods
// from the API server a moment later.
const hintTimeout = 300 * time.Millisecond

// sendHints tells the holder of each redirected Egress about the local Pod
// IPs this plan newly sends to it, and waits (bounded) until the holder has
// programmed them. Called before the mark is applied, it orders the two
// Nodes: the holder SNATs a Pod before the Pod's first packet reaches it,
// whether the Pod is new (CNI ADD) or was just selected by a label change.
func (a *Agent) sendHints(ctx context.Context, prev, next placement.Plan) {
	if _, off := a.HintClient.(noHints); off || prev.IDs == nil {
		return // no previous plan (a restart): the kernel already holds the state
	}
	type target struct {
		eg   string
		addr string
	}
	before := map[target]map[netip.Addr]bool{}
	for _, e := range prev.Desired.Egresses {
		if !e.Local && e.OwnerNodeIP.IsValid() {
			t := target{e.Name, netip.AddrPortFrom(e.OwnerNodeIP, uint16(a.HintPort)).String()}
			before[t] = map[netip.Addr]bool{}
			for _, ip := range e.LocalPodIPs {
				before[t][ip] = true
			}
		}
	}
	pods := map[netip.Addr]policy.PodKey{}
	for key, as := range next.Policy.Pods {
		if as.Node == a.Self {
			for _, ip := range as.IPs {
				pods[ip] = key
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, hintTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, e := range next.Desired.Egresses {
		if e.Local || !e.OwnerNodeIP.IsValid() {
			continue
		}
		t := target{e.Name, netip.AddrPortFrom(e.OwnerNodeIP, uint16(a.HintPort)).String()}
		for _, ip := range e.LocalPodIPs {
			key, ok := pods[ip]
			if before[t][ip] || !ok {
				continue
			}
			wg.Add(1)
			go func(h hint.Hint) {
				defer wg.Done()
				if err := a.HintClient.Send(ctx, t.addr, h); err != nil {
					a.Log.Debug("hint the egress Node", "egress", t.eg, "pod", h.Namespace+"/"+h.Pod, "ip", h.PodIP, "err", err)
				}
			}(hint.Hint{Namespace: key.Namespace, Pod: key.Name, PodIP: ip, Sender: a.Self, NodeIP: a.NodeIP})
		}
	}
	wg.Wait()
}

// liveHints drops expired hints and returns the rest.
func (a *Agent) liveHints() map[policy.PodKey]placement.HintedIP {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	out := make(map[policy.PodKey]placement.HintedIP, len(a.hints))
	for key, h := range a.hints {
		if now.After(h.expires) {
			delete(a.hints, key)
			continue
		}
		out[key] = h.HintedIP
	}
	return out
}

// renewEvery is how often the loop renews the held IPs' lifetimes: in the
// same loop as the reconciles, so a helper stuck in one stops renewing, and
// its Node stops answering for the IPs (datapath.Config.HeldLifetime).
const renewEvery = time.Second

// reannounceEvery is how often a holder sends gratuitous ARP for every IP
// it holds, even when nothing changed.
const reannounceEvery = 30 * time.Second

type renewer interface {
	RenewHeld(ctx context.Context) error
}

func (a *Agent) renewHeld(ctx context.Context) {
	if r, ok := a.Datapath.(renewer); ok {
		if err := r.RenewHeld(ctx); err != nil && ctx.Err() == nil {
			a.Log.Warn("renew held egress IPs", "err", err)
		}
	}
}

// Run runs until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	cancel := a.Registry.Subscribe(func(ev registry.Event) {
		if ev.Type == registry.Added && ev.Prepared {
			// The ADD's own reconcile had it: the plan is the same
			// without a second one.
			return
		}
		a.Poke()
	})
	defer cancel()
	a.Cache.OnChange(a.Poke)
	go a.statusLoop(ctx)
	go a.graceLoop(ctx)
	changes := a.Members.Changes()
	ticker := time.NewTicker(a.Resync)
	defer ticker.Stop()
	renew := time.NewTicker(renewEvery)
	defer renew.Stop()
	a.Poke()
	for {
		select {
		case <-ctx.Done():
			a.finishOnStop()
			return nil
		case <-renew.C:
			a.renewHeld(ctx)
			continue
		case <-a.trigger:
		case <-changes:
			a.requested.Add(1)
		case <-ticker.C:
			a.requested.Add(1)
		}
		gen := a.requested.Load()
		err := a.reconcile(ctx)
		a.mu.Lock()
		a.done, a.lastErr = gen, err
		close(a.doneCh)
		a.doneCh = make(chan struct{})
		a.mu.Unlock()
	}
}

func (a *Agent) reconcile(ctx context.Context) error {
	start := time.Now()
	a.mu.Lock()
	prev := a.last.IDs
	a.mu.Unlock()
	if prev == nil {
		prev = a.PrevIDs
	}
	snap := a.Cache.Snapshot(a.Self, a.Registry.List(ctx))
	snap.Alive = a.alive()
	a.noteDepartures(ctx, snap.Alive)
	departuresAt := time.Now()
	snap.Graced, snap.Keep = a.graced(), a.keptAtStart()
	snap.Settling = a.settling(snap.Egresses, time.Now())
	if h, ok := a.Members.(interface{ Health() int }); ok {
		snap.Health = h.Health()
	}
	membersChanged := a.noteAlive(slices.Concat(snap.Alive, snap.Graced))
	snap.Election = a.Election
	snap.PrevIDs = prev
	snap.ClusterCIDRs = a.ClusterCIDRs
	snap.Hints = a.liveHints()
	snap.Conflicts = a.liveConflicts()
	snap.HandoffExpired = a.handoffExpired(time.Now())
	plan := placement.Decide(snap)
	if found := a.probe(ctx, plan); len(found) > 0 {
		snap.Conflicts = found
		plan = placement.Decide(snap)
	}
	probedAt := time.Now()
	a.noteHandoffs(plan, time.Now())
	a.hadQuorum = a.hadQuorum || plan.Quorum.OK
	a.mu.Lock()
	last := a.last
	a.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err // told to stop before anything was written
	}
	// Hints go out while the datapath is programmed, not before: after a
	// failover every moved Egress's Pods are hinted to their new holder,
	// whose helper answers while it is itself taking over, and a third
	// Node's tunnel to the new holder waited for those answers (100–300 ms
	// of a failover). The reconcile still ends only once both are done,
	// so a new Pod's ADD is acknowledged after its hint has arrived.
	hinted := make(chan struct{})
	go func() {
		defer close(hinted)
		a.sendHints(ctx, last, plan)
	}()
	// An Apply that has begun runs to its end even when the helper is told
	// to stop meanwhile: one cut short leaves the kernel half-programmed
	// (an IP taken and announced without its SNAT rules, say), and a
	// restart keeps whatever the kernel holds.
	err := a.Datapath.Apply(context.WithoutCancel(ctx), plan.Desired)
	if err != nil {
		a.Log.Warn("apply datapath", "err", err)
	}
	a.Metrics.observeReconcile(start, err)
	a.Metrics.setQuorum(plan.Quorum)
	appliedAt := time.Now()
	a.announce(ctx, ownedIPs(plan, a.Self), membersChanged)
	<-hinted
	a.Log.Debug("reconciled", "departures", departuresAt.Sub(start), "plan+probe", probedAt.Sub(departuresAt),
		"apply", appliedAt.Sub(probedAt), "announce+hints", time.Since(appliedAt), "alive", len(snap.Alive), "held", len(plan.Desired.HeldIPs))

	a.mu.Lock()
	a.last, a.lastApplyErr = plan, err
	a.mu.Unlock()
	select { // hand the newest plan to the status writer, dropping a stale one
	case <-a.statusCh:
	default:
	}
	a.statusCh <- plan
	return err
}

// StopFinishFor bounds what finishOnStop adds to a helper's stop.
const StopFinishFor = 1500 * time.Millisecond

// finishOnStop ends the planned moves under way when the helper is told
// to stop (SIGTERM), before it leaves gossip. The kernel goes on with
// whatever it holds through the restart, and during a move that is the
// state of the move's first half: the new holder has taken the IP and
// announced it, the old holder still holds it too, the others tunnel to
// the old holder. Frozen there, the LAN's replies go to the new holder
// while some Pods' packets leave from the old one, and those connections
// stall until the helper is back. So:
//   - a new holder writes its claim (and announces the IP once more, as
//     the stop cut its announcement short);
//   - every other Node waits for the claim and reconciles once more, so
//     that its kernel has let go of the IP, or tunnels to its new holder.
//
// Only with the restart grace on: without it peers move a departed Node's
// IPs at once, and a claim would only add a move. Runs on Run's goroutine,
// after ctx has ended.
func (a *Agent) finishOnStop() {
	a.mu.Lock()
	plan, ok := a.last, a.lastApplyErr == nil
	a.mu.Unlock()
	if a.Grace <= 0 || !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), StopFinishFor)
	defer cancel()
	var taking, giving placement.Plan
	for _, ep := range plan.Egresses {
		switch {
		case ep.HandoffFrom != "" && ep.Owner == a.Self:
			taking.Egresses = append(taking.Egresses, ep)
		case ep.HandoffTo != "":
			giving.Egresses = append(giving.Egresses, ep)
		}
	}
	if len(taking.Egresses) > 0 {
		var wg sync.WaitGroup
		for _, ep := range taking.Egresses {
			wg.Go(func() { a.Announce(ctx, ep.IP) })
		}
		err := a.Status.Write(ctx, taking, false)
		wg.Wait()
		for _, ep := range taking.Egresses {
			a.Log.Info("stopping: claimed the egress IP this Node had taken over", "egress", ep.Name, "ip", ep.IP, "from", ep.HandoffFrom, "err", err)
		}
	}
	if len(giving.Egresses) == 0 {
		return
	}
	if !a.awaitClaims(ctx, giving) {
		a.Log.Info("stopping in the middle of a planned move whose claim did not come", "egresses", len(giving.Egresses))
		return
	}
	if err := a.reconcile(ctx); err != nil {
		a.Log.Warn("stopping: the reconcile after a planned move's claim", "err", err)
		return
	}
	a.Log.Info("stopping: a planned move under way ended first", "egresses", len(giving.Egresses))
}

// awaitClaims waits until the cache shows each of the moves in plan
// claimed by its new holder, and reports whether they all were.
func (a *Agent) awaitClaims(ctx context.Context, plan placement.Plan) bool {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		claimed := true
		for _, ep := range plan.Egresses {
			if eg := a.Cache.Egress(ep.Name); eg != nil && eg.Status.EgressNode != ep.HandoffTo {
				claimed = false
			}
		}
		if claimed {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

// probeCovers is how long a departure probe that found nobody answering
// for an IP stands in for the probe before holding it: the departure
// probe asked the same question of every host, the departed Node
// included, in the same reconcile, so a failover pays for one probe, not
// two.
const probeCovers = 500 * time.Millisecond

// probe checks the pool IPs the plan makes this Node hold that it did not
// hold before (and that no departure probe just found unanswered), and
// returns every live conflict when it found a new one (nil otherwise). A
// probe that fails is logged and the IPs are held: a broken probe must not
// stop a failover.
func (a *Agent) probe(ctx context.Context, plan placement.Plan) map[netip.Addr]string {
	var fresh []netip.Addr
	a.mu.Lock()
	for _, ip := range plan.Desired.HeldIPs {
		if !a.held[ip] && time.Since(a.unanswered[ip]) > probeCovers {
			fresh = append(fresh, ip)
		}
	}
	a.mu.Unlock()
	if len(fresh) == 0 {
		return nil
	}
	found, err := a.Probe(ctx, fresh)
	if err != nil {
		a.Log.Warn("arp probe before holding egress IPs (holding them anyway)", "ips", fresh, "err", err)
	}
	if len(found) == 0 {
		return nil
	}
	now := time.Now()
	for ip, who := range found {
		a.Log.Warn("another host answers for an egress IP: not holding it", "ip", ip, "mac", who, "retry", conflictRetry)
		a.conflicts[ip] = conflict{who: who, at: now}
	}
	return a.liveConflicts()
}

// liveConflicts are the conflicts found less than conflictRetry ago.
func (a *Agent) liveConflicts() map[netip.Addr]string {
	out := map[netip.Addr]string{}
	for ip, c := range a.conflicts {
		if time.Since(c.at) < conflictRetry {
			out[ip] = c.who
		} else {
			delete(a.conflicts, ip)
		}
	}
	return out
}

func (a *Agent) alive() []string {
	out := []string{a.Self}
	for _, m := range a.Members.Members() {
		if m.Alive() && m.Name != a.Self {
			out = append(out, m.Name)
		}
	}
	return out
}

// ownedIPs are the egress IPs this Node answers for: the pool IPs it holds
// and the static ones found on its interfaces. A static IP moved here by
// hand is announced too: Linux sends no gratuitous ARP for a new IPv4
// address, and the documented recovery of a static IP (configure it on
// another Node) would otherwise wait for neighbours' ARP caches to expire.
func ownedIPs(plan placement.Plan, self string) []netip.Addr {
	out := append([]netip.Addr(nil), plan.Desired.HeldIPs...)
	for _, ep := range plan.Egresses {
		if ep.Static && ep.Owner == self && ep.IP.Is4() {
			out = append(out, ep.IP)
		}
	}
	return out
}

// settleFor is how long after an Egress's IP changes a static Egress
// whose IP is on no Node fails closed (see placement.Snapshot.Settling).
const settleFor = 5 * time.Second

// seen is a value (an Egress's IP, a planned move "from>to") and since
// when it has been so.
type seen struct {
	value string
	since time.Time
}

// settling notes each Egress's IP (spec for static, status for pooled) and
// returns those that changed less than settleFor ago. Reconcile's goroutine
// only.
func (a *Agent) settling(egs []*v1alpha1.Egress, now time.Time) map[string]bool {
	out := map[string]bool{}
	live := map[string]bool{}
	for _, eg := range egs {
		ip := eg.Spec.EgressIP
		if eg.Spec.ExternalIPPool != "" {
			ip = eg.Status.EgressIP
		}
		live[eg.Name] = true
		was, ok := a.ipSeen[eg.Name]
		if !ok || was.value != ip {
			was = seen{value: ip, since: now}
			a.ipSeen[eg.Name] = was
		}
		if now.Sub(was.since) < settleFor {
			out[eg.Name] = true
		}
	}
	for name := range a.ipSeen {
		if !live[name] {
			delete(a.ipSeen, name)
		}
	}
	return out
}

// handoffExpired are the Egresses whose planned move began placement.HandoffMax ago
// or more. Reconcile's goroutine only.
func (a *Agent) handoffExpired(now time.Time) map[string]bool {
	out := map[string]bool{}
	for name, h := range a.handoffs {
		if now.Sub(h.since) >= placement.HandoffMax {
			out[name] = true
		}
	}
	return out
}

// noteHandoffs times the planned moves the plan has due, and asks for a
// reconcile when a new one will expire. Reconcile's goroutine only.
func (a *Agent) noteHandoffs(plan placement.Plan, now time.Time) {
	due := map[string]bool{}
	for _, ep := range plan.Egresses {
		if ep.Moving == "" {
			continue
		}
		due[ep.Name] = true
		if h, ok := a.handoffs[ep.Name]; ok && h.value == ep.Moving {
			continue
		}
		a.handoffs[ep.Name] = seen{value: ep.Moving, since: now}
		a.Log.Info("planned move: the new holder takes the egress IP before the old one lets go",
			"egress", ep.Name, "ip", ep.IP, "move", ep.Moving)
		time.AfterFunc(placement.HandoffMax, a.Poke)
	}
	for name := range a.handoffs {
		if !due[name] {
			delete(a.handoffs, name)
		}
	}
}

// noteAlive records the alive set and reports whether it changed.
func (a *Agent) noteAlive(alive []string) bool {
	key := strings.Join(slices.Sorted(slices.Values(alive)), ",")
	changed := key != a.lastAlive
	a.lastAlive = key
	return changed
}

// announce sends gratuitous ARP for IPs this Node did not hold before, and
// for all it holds when the membership changed: after a partition heals or
// a frozen Node thaws, the Node that keeps an IP never "took" it, yet the
// neighbours' ARP caches may still point at the Node that stood in.
func (a *Agent) announce(ctx context.Context, held []netip.Addr, all bool) {
	// Holders also announce everything on a slow timer, so that a wrong
	// claim (a Node that held an IP it should not have, then gave it up)
	// heals in neighbours' ARP caches by itself.
	if t := time.Now(); all || t.Sub(a.announcedAll) >= reannounceEvery {
		all, a.announcedAll = true, t
	}
	now := map[netip.Addr]bool{}
	for _, ip := range held {
		now[ip] = true
		if all || !a.held[ip] {
			go a.Announce(ctx, ip)
		}
	}
	a.held = now
	a.Metrics.setHeld(len(now))
}

// statusLoop writes Egress status and runs the allocator, off the
// datapath's path: API latency never delays a Pod's ADD.
func (a *Agent) statusLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case plan := <-a.statusCh:
			var errs []error
			// Without quorum this helper may see itself as the only member:
			// it neither allocates nor writes status for IPs no one holds.
			leader := plan.Quorum.OK && a.isLeader()
			if leader {
				errs = append(errs, a.Allocator.Sync(ctx, a.Cache.Pools(), a.Cache.Egresses()))
			}
			errs = append(errs, a.Status.Write(ctx, plan, leader))
			if leader {
				a.Status.Overlaps(plan)
			}
			if err := errors.Join(errs...); err != nil && ctx.Err() == nil {
				a.Log.Info("status write (will retry)", "err", err)
				a.Metrics.allocError()
				time.AfterFunc(500*time.Millisecond, a.Poke)
			}
		}
	}
}

// isLeader tells whether this Node runs the allocator and writes status for
// Egresses no Node holds. Every helper computes the same leader from the
// alive members; two leaders (during a partition) are safe because the
// allocator's writes are conditional.
func (a *Agent) isLeader() bool {
	return election.Owner("sluice/allocator", a.alive(), "", election.Rebalance) == a.Self
}

// LastPlan returns the last computed plan.
func (a *Agent) LastPlan() placement.Plan {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

// Ready reports whether the agent has applied the datapath at least once.
func (a *Agent) Ready() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.done > 0
}
