// Package config holds sluice-helperd's configuration: flags, defaults and
// validation in one place.
package config

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/sluicenet/sluice/helperd/inspect"
	"github.com/sluicenet/sluice/pkg/cniproto"
	"github.com/sluicenet/sluice/pkg/datapath"
	"github.com/sluicenet/sluice/pkg/election"
)

// Defaults. The tunnel's (device, port, VNI) are the datapath's, the
// sockets' and the spool's those of the packages that speak over them.
const (
	DefaultGossipPort   = 10351
	DefaultHintPort     = 10352
	DefaultKubeAPIQPS   = 50
	DefaultKubeAPIBurst = 100
	DefaultResync       = 2 * time.Second
	DefaultHeldLifetime = 4 * time.Second
	// DefaultRestartGrace covers a DaemonSet rolling update: a helper
	// stops, its new image starts and it rejoins within seconds.
	DefaultRestartGrace = 30 * time.Second
	DefaultMetricsAddr  = NodeIPHost + ":9779"
	// NodeIPHost in --metrics-addr stands for the Node IP.
	NodeIPHost = "node-ip"
)

// Config is everything sluice-helperd needs to run on one Node.
type Config struct {
	NodeName   string
	Kubeconfig string // empty: in-cluster
	// KubeAPIQPS and KubeAPIBurst limit the API client's request rate,
	// in the cluster and with a kubeconfig alike.
	KubeAPIQPS   float64
	KubeAPIBurst int

	// ClusterCIDRs are the Pod and Service CIDRs; ExceptCIDRs are extra
	// destinations to leave alone. Traffic to either, and to Node IPs, is
	// never redirected or SNATed.
	ClusterCIDRs []netip.Prefix
	ExceptCIDRs  []netip.Prefix

	Uplink     string // empty: the interface holding the Node's InternalIP
	TunnelDev  string
	TunnelPort int
	VNI        int

	CNISocket    string
	StatusSocket string
	SpoolDir     string

	GossipPort     int
	HintPort       int
	GossipKeyFile  string // a file holding the key, as mounted from the Secret
	GossipInsecure bool   // tests only: gossip without encryption

	MetricsAddr string // empty: no metrics endpoint
	Resync      time.Duration
	// HeldLifetime is the kernel lifetime of held egress IPs, renewed every
	// second while the helper lives; 0 keeps them forever (no fencing).
	HeldLifetime time.Duration
	// RestartGrace is how long peers keep a departed helper's egress IPs
	// in place while its Node's kernel still answers for them (see
	// helperd/agent/grace.go); 0 moves them at once.
	RestartGrace time.Duration
	// OnReturn is what a returning Node gets back: "failback" (its fair
	// share of the pool IPs) or "stay" (nothing: IPs stay where they are).
	OnReturn string
	LogLevel string
}

// Election is the placement policy OnReturn names.
func (c *Config) Election() election.Policy {
	if c.OnReturn == "stay" {
		return election.Sticky
	}
	return election.Rebalance
}

// EffectiveHeldLifetime is HeldLifetime, raised to RestartGrace: a helper
// in its grace is not there to renew.
func (c *Config) EffectiveHeldLifetime() time.Duration {
	if c.HeldLifetime != 0 && c.RestartGrace > c.HeldLifetime {
		return c.RestartGrace
	}
	return c.HeldLifetime
}

// Bind registers the flags on fs, with defaults, and returns the Config
// they fill.
func Bind(fs *flag.FlagSet) *Config {
	c := &Config{}
	fs.StringVar(&c.NodeName, "node-name", os.Getenv("NODE_NAME"), "name of this Node (default $NODE_NAME)")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty means in-cluster")
	fs.Float64Var(&c.KubeAPIQPS, "kube-api-qps", DefaultKubeAPIQPS, "requests per second the helper may send the API server, sustained")
	fs.IntVar(&c.KubeAPIBurst, "kube-api-burst", DefaultKubeAPIBurst, "requests the helper may send the API server at once, above --kube-api-qps")
	fs.Func("cluster-cidrs", "comma-separated Pod and Service CIDRs, never SNATed", prefixList(&c.ClusterCIDRs))
	fs.Func("except-cidrs", "comma-separated extra CIDRs to leave alone", prefixList(&c.ExceptCIDRs))
	fs.StringVar(&c.Uplink, "uplink", "", "uplink interface; empty means the one holding the Node's InternalIP")
	fs.StringVar(&c.TunnelDev, "tunnel-dev", datapath.DefaultTunnelDev, "name of the VXLAN device")
	fs.IntVar(&c.TunnelPort, "tunnel-port", datapath.DefaultTunnelPort, "UDP port of the VXLAN tunnel")
	fs.IntVar(&c.VNI, "tunnel-vni", datapath.DefaultVNI, "VXLAN network identifier")
	fs.StringVar(&c.CNISocket, "cni-socket", cniproto.DefaultSocketPath, "Unix socket the CNI plugin reports to")
	fs.StringVar(&c.StatusSocket, "status-socket", inspect.DefaultSocket, "Unix socket the CLI queries")
	fs.StringVar(&c.SpoolDir, "spool-dir", cniproto.DefaultSpoolDir, "where the CNI plugin spools reports while the helper is down")
	fs.IntVar(&c.GossipPort, "gossip-port", DefaultGossipPort, "memberlist port, bound on the Node IP")
	fs.IntVar(&c.HintPort, "hint-port", DefaultHintPort, "TCP port, on the Node IP, where helpers tell each other about new Pods at their CNI ADD")
	fs.StringVar(&c.GossipKeyFile, "gossip-key-file", "", "file holding the gossip keys, one per line, each the base64 of 16, 24 or 32 bytes (or one raw key): the first encrypts, all decrypt; reread every 2 s, for a rotation")
	fs.BoolVar(&c.GossipInsecure, "gossip-insecure", false, "allow gossip without encryption (tests only)")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", DefaultMetricsAddr, "address of /metrics, /healthz and /readyz; the host node-ip means the Node IP, an empty host every address; empty disables it")
	fs.DurationVar(&c.Resync, "resync", DefaultResync, "period of the reconcile that runs when nothing changed; every other one reads the kernel back and repairs drift")
	fs.DurationVar(&c.HeldLifetime, "held-ip-lifetime", DefaultHeldLifetime,
		"lifetime of the egress IPs held on the uplink, renewed every second while the helper lives: a dead or stuck helper's Node stops answering for them within it (whole seconds, 2s..60s; 0 keeps them forever)")
	fs.DurationVar(&c.RestartGrace, "restart-grace", DefaultRestartGrace,
		"how long the other helpers keep a stopped or crashed helper's egress IPs on its Node while the Node's kernel still answers ARP for them, so a restart moves nothing; held IPs then live at least this long (whole seconds, 5s..60s; 0 moves them at once)")
	fs.StringVar(&c.OnReturn, "on-node-return", "failback",
		"what a Node that comes back gets: failback (its fair share of the pool IPs moves back to it) or stay (the IPs stay where they are); a departure moves only the departed Node's IPs either way")
	fs.StringVar(&c.LogLevel, "v", "info", "log level: debug, info, warn or error")
	return c
}

func prefixList(dst *[]netip.Prefix) func(string) error {
	return func(s string) error {
		*dst = nil
		for _, f := range strings.Split(s, ",") {
			f = strings.TrimSpace(f)
			if f == "" {
				continue
			}
			p, err := netip.ParsePrefix(f)
			if err != nil {
				return fmt.Errorf("%q is not a CIDR: %w", f, err)
			}
			*dst = append(*dst, p.Masked())
		}
		return nil
	}
}

// Validate reports every problem, each naming its flag.
func (c *Config) Validate() error {
	var errs []error
	bad := func(flag, format string, a ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, a...)))
	}
	if c.NodeName == "" {
		bad("node-name", "required (or set $NODE_NAME)")
	}
	if len(c.ClusterCIDRs) == 0 {
		bad("cluster-cidrs", "required: the Pod and Service CIDRs, so that in-cluster traffic is left alone")
	}
	if c.TunnelDev == "" || len(c.TunnelDev) > 15 || strings.ContainsAny(c.TunnelDev, "/ ") {
		bad("tunnel-dev", "%q is not a valid interface name (1-15 characters, no '/' or space)", c.TunnelDev)
	}
	switch c.TunnelPort {
	case 8472, 4789:
		bad("tunnel-port", "%d is flannel's or Calico's VXLAN port; pick another", c.TunnelPort)
	}
	if c.TunnelPort < 1 || c.TunnelPort > 65535 {
		bad("tunnel-port", "%d is out of range 1-65535", c.TunnelPort)
	}
	if c.VNI < 1 || c.VNI > 1<<24-1 {
		bad("tunnel-vni", "%d is out of range 1-16777215", c.VNI)
	}
	if c.GossipPort < 1 || c.GossipPort > 65535 {
		bad("gossip-port", "%d is out of range 1-65535", c.GossipPort)
	}
	if c.HintPort < 1 || c.HintPort > 65535 || c.HintPort == c.GossipPort {
		bad("hint-port", "%d must be in 1-65535 and differ from --gossip-port", c.HintPort)
	}
	if c.GossipKeyFile == "" && !c.GossipInsecure {
		bad("gossip-key-file", "required: gossip is encrypted; create the Secret (see README) or pass --gossip-insecure in tests")
	}
	for _, p := range []struct{ flag, path string }{
		{"cni-socket", c.CNISocket}, {"status-socket", c.StatusSocket},
		{"spool-dir", c.SpoolDir},
	} {
		if p.path == "" || !strings.HasPrefix(p.path, "/") {
			bad(p.flag, "%q must be an absolute path", p.path)
		}
	}
	if c.HeldLifetime != 0 && (c.HeldLifetime < 2*time.Second || c.HeldLifetime > time.Minute || c.HeldLifetime%time.Second != 0) {
		bad("held-ip-lifetime", "%s: must be whole seconds from 2s to 60s, or 0", c.HeldLifetime)
	}
	if c.RestartGrace != 0 && (c.RestartGrace < 5*time.Second || c.RestartGrace > time.Minute || c.RestartGrace%time.Second != 0) {
		bad("restart-grace", "%s: must be whole seconds from 5s to 60s, or 0", c.RestartGrace)
	}
	switch c.OnReturn {
	case "failback", "stay":
	default:
		bad("on-node-return", "%q: want failback or stay", c.OnReturn)
	}
	if c.KubeAPIQPS <= 0 || c.KubeAPIQPS > 10000 {
		bad("kube-api-qps", "%g: must be above 0 and at most 10000", c.KubeAPIQPS)
	}
	if c.KubeAPIBurst < 1 || c.KubeAPIBurst > 100000 {
		bad("kube-api-burst", "%d: must be 1 to 100000", c.KubeAPIBurst)
	}
	if c.Resync < 100*time.Millisecond {
		bad("resync", "%s is too short; use at least 100ms", c.Resync)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("v", "%q is not one of debug, info, warn, error", c.LogLevel)
	}
	return errors.Join(errs...)
}

// Excluded returns every destination prefix that Sluice leaves alone.
func (c *Config) Excluded() []netip.Prefix {
	return append(append([]netip.Prefix(nil), c.ClusterCIDRs...), c.ExceptCIDRs...)
}

// Level is the slog level of LogLevel.
func (c *Config) Level() slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(c.LogLevel))
	return l
}
