package gossip

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"time"

	"github.com/hashicorp/memberlist"
)

// DefaultPort is the gossip port (UDP and TCP) on each Node IP. It is away
// from memberlist's 7946, which other cluster software (MetalLB, Serf,
// Consul) already uses on Nodes.
const DefaultPort = 10351

// clusterLabel is sent in every packet; memberlist drops packets from a
// different label, so a stray memberlist on the same port cannot join.
const clusterLabel = "sluice"

// Config is everything a gossip member needs. Zero fields take the
// defaults (see WithDefaults); Validate names the field that is wrong.
type Config struct {
	// NodeName is the Kubernetes Node name. It is the memberlist member
	// name and is also carried in the member's metadata.
	NodeName string
	// BindAddr is the Node IP to bind to and advertise.
	BindAddr netip.Addr
	// BindPort is the UDP and TCP port; 0 means DefaultPort.
	BindPort int
	// MAC is this member's uplink MAC, published to the others so that an
	// ARP probe can tell another Node (a stale holder) from a stranger.
	MAC string
	// SecretKey encrypts and authenticates gossip (AES-GCM; 16, 24 or 32
	// bytes for AES-128/192/256).
	SecretKey []byte
	// OtherKeys are further keys accepted from others (never used to
	// send), for a key rotation; see SetKeys.
	OtherKeys [][]byte
	// AllowInsecure lets a member without SecretKey start. Only for tests.
	AllowInsecure bool
	// Tuning holds the timing knobs; zero fields take DefaultTuning.
	Tuning Tuning
	// LogOutput, when set, receives memberlist's own log lines; otherwise
	// they go to slog at their level.
	LogOutput io.Writer
}

// Tuning holds memberlist's timing knobs. See the package doc for the
// detection time and the loss-safety reasoning behind the defaults.
type Tuning struct {
	// ProbeInterval: each member probes one peer this often. 150 ms (not
	// memberlist's 1 s) is what brings detection under a second; the cost
	// is ~7 small UDP probes/s per member.
	ProbeInterval time.Duration
	// ProbeTimeout: wait this long for a direct ack before asking peers
	// to probe indirectly. 80 ms is far above LAN RTT (<1 ms) yet tolerates
	// a busy scheduler, and leaves the rest of the interval for the
	// indirect and TCP probes.
	ProbeTimeout time.Duration
	// SuspicionMult: the minimum suspicion timeout is SuspicionMult ×
	// max(1, log10(n)) × ProbeInterval = 450 ms for n < 10. With 3,
	// Lifeguard expects SuspicionMult-2 = 1 independent confirmation: a
	// member is declared dead after the minimum only if a second member
	// also failed to reach it (which, for a really dead Node, happens
	// within the minimum). A lone accuser, one whose packets were lost or
	// whose target was briefly starved of CPU, waits the maximum instead.
	// (SuspicionMult 2 had no confirmation and gave false deaths in the
	// kernel test on an overloaded box.)
	SuspicionMult int
	// SuspicionMaxTimeoutMult: an unconfirmed suspicion lasts this many
	// times the minimum: 4 × 450 ms = 1.8 s for the suspected member to
	// refute, which covers dozens of retransmissions and CPU stalls.
	SuspicionMaxTimeoutMult int
	// IndirectChecks: peers asked to probe a member that missed its
	// direct ack. 3 paths make one lost packet harmless.
	IndirectChecks int
	// GossipInterval: how often queued messages (suspect, alive, dead) are
	// sent. 50 ms lets a suspected member hear of it and refute well inside
	// the 450 ms minimum suspicion timeout.
	GossipInterval time.Duration
	// GossipNodes: peers each gossip round goes to.
	GossipNodes int
	// RetransmitMult: each message is sent RetransmitMult × ⌈log10(n+1)⌉
	// times. 6 (memberlist: 4) makes losing every copy of a suspicion or
	// its refutation under 2% loss ≈ 3e-8; packets are tiny.
	RetransmitMult int
	// GossipToTheDeadTime: keep gossiping to a dead member this long, so a
	// member that was wrongly declared dead learns it and refutes.
	GossipToTheDeadTime time.Duration
	// PushPullInterval: full state exchange over TCP, the anti-entropy
	// that repairs anything gossip missed. Cheap on small clusters.
	PushPullInterval time.Duration
	// TCPTimeout bounds join and push/pull connections. 3 s, not 1 s:
	// Linux retransmits a lost SYN after 1 s, and under 2% loss a 1 s
	// timeout made push/pull fail every few seconds in the kernel test.
	TCPTimeout time.Duration
	// AwarenessMaxMultiplier: Lifeguard lets a member that is itself
	// unhealthy (its probes go unanswered) stretch its probe interval up
	// to this factor instead of accusing healthy peers.
	AwarenessMaxMultiplier int
	// RejoinInterval: how often peers from Join that are not alive members
	// are contacted again (late starters, and partitions that outlived
	// GossipToTheDeadTime, which memberlist alone never heals).
	RejoinInterval time.Duration
}

// DefaultTuning is the fast-detection tuning; see the package doc.
func DefaultTuning() Tuning {
	return Tuning{
		ProbeInterval:           150 * time.Millisecond,
		ProbeTimeout:            80 * time.Millisecond,
		SuspicionMult:           3,
		SuspicionMaxTimeoutMult: 4,
		IndirectChecks:          3,
		GossipInterval:          50 * time.Millisecond,
		GossipNodes:             3,
		RetransmitMult:          6,
		GossipToTheDeadTime:     10 * time.Second,
		PushPullInterval:        10 * time.Second,
		TCPTimeout:              3 * time.Second,
		AwarenessMaxMultiplier:  8,
		RejoinInterval:          2 * time.Second,
	}
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.BindPort == 0 {
		c.BindPort = DefaultPort
	}
	c.Tuning = c.Tuning.withDefaults()
	return c
}

func (t Tuning) withDefaults() Tuning {
	d := DefaultTuning()
	setDur(&t.ProbeInterval, d.ProbeInterval)
	setDur(&t.ProbeTimeout, d.ProbeTimeout)
	setInt(&t.SuspicionMult, d.SuspicionMult)
	setInt(&t.SuspicionMaxTimeoutMult, d.SuspicionMaxTimeoutMult)
	setInt(&t.IndirectChecks, d.IndirectChecks)
	setDur(&t.GossipInterval, d.GossipInterval)
	setInt(&t.GossipNodes, d.GossipNodes)
	setInt(&t.RetransmitMult, d.RetransmitMult)
	setDur(&t.GossipToTheDeadTime, d.GossipToTheDeadTime)
	setDur(&t.PushPullInterval, d.PushPullInterval)
	setDur(&t.TCPTimeout, d.TCPTimeout)
	setInt(&t.AwarenessMaxMultiplier, d.AwarenessMaxMultiplier)
	setDur(&t.RejoinInterval, d.RejoinInterval)
	return t
}

func setDur(p *time.Duration, d time.Duration) {
	if *p == 0 {
		*p = d
	}
}

func setInt(p *int, d int) {
	if *p == 0 {
		*p = d
	}
}

// ErrNoKey is returned when no SecretKey is set and AllowInsecure is not.
var ErrNoKey = errors.New("gossip: SecretKey is empty: refusing to gossip unencrypted (AllowInsecure is for tests only)")

// Validate checks a config after WithDefaults.
func (c Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("NodeName: empty"))
	}
	if !c.BindAddr.IsValid() || c.BindAddr.IsUnspecified() {
		errs = append(errs, fmt.Errorf("BindAddr: %v is not a usable Node IP", c.BindAddr))
	}
	if c.BindPort < 1 || c.BindPort > 65535 {
		errs = append(errs, fmt.Errorf("BindPort: %d out of 1..65535", c.BindPort))
	}
	switch len(c.SecretKey) {
	case 0:
		if !c.AllowInsecure {
			errs = append(errs, ErrNoKey)
		}
	case 16, 24, 32:
	default:
		errs = append(errs, fmt.Errorf("SecretKey: %d bytes, want 16, 24 or 32", len(c.SecretKey)))
	}
	for i, k := range c.OtherKeys {
		if !ValidKeyLen(len(k)) {
			errs = append(errs, fmt.Errorf("OtherKeys[%d]: %d bytes, want 16, 24 or 32", i, len(k)))
		}
	}
	if len(c.OtherKeys) > 0 && len(c.SecretKey) == 0 {
		errs = append(errs, errors.New("OtherKeys without a SecretKey"))
	}
	errs = append(errs, c.Tuning.validate()...)
	return errors.Join(errs...)
}

// ValidKeyLen tells whether n bytes make an AES-128, -192 or -256 key.
func ValidKeyLen(n int) bool { return n == 16 || n == 24 || n == 32 }

func (t Tuning) validate() []error {
	var errs []error
	if t.ProbeInterval <= 0 || t.ProbeTimeout <= 0 || t.ProbeTimeout >= t.ProbeInterval {
		errs = append(errs, fmt.Errorf("Tuning.ProbeTimeout: %v must be positive and below ProbeInterval %v", t.ProbeTimeout, t.ProbeInterval))
	}
	if t.SuspicionMult < 1 {
		errs = append(errs, fmt.Errorf("Tuning.SuspicionMult: %d < 1", t.SuspicionMult))
	}
	if t.SuspicionMaxTimeoutMult < 1 {
		errs = append(errs, fmt.Errorf("Tuning.SuspicionMaxTimeoutMult: %d < 1", t.SuspicionMaxTimeoutMult))
	}
	if t.IndirectChecks < 0 {
		errs = append(errs, fmt.Errorf("Tuning.IndirectChecks: %d < 0", t.IndirectChecks))
	}
	if t.GossipInterval <= 0 || t.GossipNodes < 1 || t.RetransmitMult < 1 {
		errs = append(errs, fmt.Errorf("Tuning.GossipInterval/GossipNodes/RetransmitMult: %v/%d/%d must be positive", t.GossipInterval, t.GossipNodes, t.RetransmitMult))
	}
	if t.TCPTimeout <= 0 || t.PushPullInterval <= 0 || t.GossipToTheDeadTime <= 0 || t.RejoinInterval <= 0 {
		errs = append(errs, errors.New("Tuning.TCPTimeout/PushPullInterval/GossipToTheDeadTime/RejoinInterval: must be positive"))
	}
	if t.AwarenessMaxMultiplier < 1 {
		errs = append(errs, fmt.Errorf("Tuning.AwarenessMaxMultiplier: %d < 1", t.AwarenessMaxMultiplier))
	}
	return errs
}

// memberlistConfig builds memberlist's config from a validated Config. It
// is pure, apart from the keyring it allocates.
func memberlistConfig(c Config) (*memberlist.Config, error) {
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.NodeName
	mc.BindAddr = c.BindAddr.String()
	mc.BindPort = c.BindPort
	mc.AdvertiseAddr = c.BindAddr.String()
	mc.AdvertisePort = c.BindPort
	mc.Label = clusterLabel
	t := c.Tuning
	mc.ProbeInterval = t.ProbeInterval
	mc.ProbeTimeout = t.ProbeTimeout
	mc.SuspicionMult = t.SuspicionMult
	mc.SuspicionMaxTimeoutMult = t.SuspicionMaxTimeoutMult
	mc.IndirectChecks = t.IndirectChecks
	mc.GossipInterval = t.GossipInterval
	mc.GossipNodes = t.GossipNodes
	mc.RetransmitMult = t.RetransmitMult
	mc.GossipToTheDeadTime = t.GossipToTheDeadTime
	mc.PushPullInterval = t.PushPullInterval
	mc.TCPTimeout = t.TCPTimeout
	mc.AwarenessMaxMultiplier = t.AwarenessMaxMultiplier
	mc.DisableTcpPings = false // the TCP fallback is a third path that loss rarely breaks
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	if len(c.SecretKey) > 0 {
		kr, err := memberlist.NewKeyring(c.OtherKeys, c.SecretKey)
		if err != nil {
			return nil, fmt.Errorf("gossip keyring: %w", err)
		}
		mc.Keyring = kr
	}
	return mc, nil
}

// Detection is the modelled time from a member's death to the others
// marking it dead, for one cluster size.
type Detection struct {
	Suspicion    time.Duration // suspicion timeout once confirmed (memberlist's minimum)
	MaxSuspicion time.Duration // an unconfirmed suspicion: the time a wrongly suspected member has to refute
	Mean         time.Duration // first probe + failed probe + suspicion, mean
	P99          time.Duration // the same at the 99th percentile
}

// DetectionBounds models detection in a cluster of n members (see the
// package doc). Each of the n-1 survivors probes the dead member once per
// n-1 intervals at a random phase, so the first probe comes after the
// minimum of n-1 uniform draws on [0, (n-1)·ProbeInterval). The failed
// probe takes one ProbeInterval, then the suspicion timer runs; a second
// survivor's confirmation arrives within the minimum timeout, so the
// minimum applies. It mirrors memberlist's suspicionTimeout and ignores
// gossip latency (tens of ms) and Lifeguard awareness.
func DetectionBounds(t Tuning, n int) Detection {
	t = t.withDefaults()
	scale := math.Max(1, math.Log10(math.Max(1, float64(n))))
	minS := (time.Duration(t.SuspicionMult) * time.Duration(scale*1000) * t.ProbeInterval / 1000).Round(time.Millisecond)
	maxS := minS
	if k := t.SuspicionMult - 2; k >= 1 && n-2 >= k {
		// Lifeguard starts at the max and shrinks to the min with k
		// confirmations; with fewer peers memberlist uses the min.
		maxS = time.Duration(t.SuspicionMaxTimeoutMult) * minS
	}
	probers := float64(max(1, n-1))
	cycle := probers * t.ProbeInterval.Seconds()
	sec := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)).Round(time.Millisecond) }
	firstMean := sec(cycle / (probers + 1))
	firstP99 := sec(cycle * (1 - math.Pow(0.01, 1/probers)))
	return Detection{
		Suspicion:    minS,
		MaxSuspicion: maxS,
		Mean:         firstMean + t.ProbeInterval + minS,
		P99:          firstP99 + t.ProbeInterval + minS,
	}
}
