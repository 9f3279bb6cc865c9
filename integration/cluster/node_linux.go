package cluster

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containernetworking/cni/libcni"

	"github.com/sluicenet/sluice/conflist"
	"github.com/sluicenet/sluice/integration/binaries"
	"github.com/sluicenet/sluice/pkg/nstest"
)

// referencePlugins are the CNI plugins each Node's bin dir gets.
var referencePlugins = []string{"bridge", "host-local", "loopback", "ptp", "portmap"}

// Node is one Node namespace.
type Node struct {
	Name    string
	Index   int // 1-based
	IP      netip.Addr
	PodCIDR netip.Prefix
	NS      *nstest.NS
	Paths   NodePaths

	cluster *Cluster
	cni     *libcni.CNIConfig

	mu         sync.Mutex
	helper     *exec.Cmd
	helperDone chan struct{} // closed when the helper has been reaped
	frozen     []int
	real       *realNode // Options.Kubelet: containerd and the kubelet
}

// newNode makes node i: its namespace on the lan, sysctls, host-gw routes
// and the CNI configuration.
func (c *Cluster) newNode(ctx context.Context, tag string, i int) (*Node, error) {
	name := NodeName(i)
	n := &Node{
		Name: name, Index: i, IP: NodeIP(i), PodCIDR: PodCIDR(i),
		Paths: nodePaths(c.Dir, name), cluster: c,
	}
	var err error
	if n.NS, err = c.newNS(tag + "-" + name); err != nil {
		return nil, err
	}
	// Strict reverse-path filtering before any interface exists, so that
	// every later one (eth0, cni0, Pod veths) inherits it from "default".
	if err := setSysctls(n.NS, rpFilterSysctls(nil, true)); err != nil {
		return n, err
	}
	if err := c.plug(n.NS, name, n.IP.String()); err != nil {
		return n, err
	}
	var cmds []string
	for _, r := range hostGWRoutes(i, c.Opts.Nodes) {
		cmds = append(cmds, fmt.Sprintf("route add %s via %s dev %s", r.Dst, r.Via, defaultUplink))
	}
	if err := runBatch(n.NS, cmds); err != nil {
		return n, err
	}
	if err := setSysctls(n.NS, rpFilterSysctls([]string{"lo", defaultUplink}, true)); err != nil {
		return n, err
	}
	for _, rule := range nodeNATRules(i, c.Opts.Masquerade) {
		if _, err := n.NS.Run("iptables", append([]string{"-w", "-t", "nat", "-A", "POSTROUTING"}, rule...)...); err != nil {
			return n, err
		}
	}
	// Each Node has its own copy of the cluster's gossip key, as each
	// kubelet mounts its own copy of the Secret; a rotation test rewrites
	// them one by one (WriteGossipKeys).
	key, err := os.ReadFile(filepath.Join(c.Dir, "gossip.key"))
	if err != nil {
		return n, fmt.Errorf("read the gossip key: %w", err)
	}
	if err := os.MkdirAll(n.Paths.Root, 0o755); err != nil {
		return n, err
	}
	if err := os.WriteFile(n.Paths.GossipKey, key, 0o600); err != nil {
		return n, fmt.Errorf("write %s's gossip key: %w", name, err)
	}
	return n, n.setupCNI(ctx)
}

// WriteGossipKeys replaces the Node's gossip key file, as the kubelet does
// when the Secret changes (a new file, renamed into place): keys one per
// line, base64, the first the one to send with.
func (n *Node) WriteGossipKeys(keys ...[]byte) error {
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(base64.StdEncoding.EncodeToString(k) + "\n")
	}
	tmp := n.Paths.GossipKey + ".new"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, n.Paths.GossipKey)
}

// GossipKey is the cluster's gossip key as first written.
func (c *Cluster) GossipKey() ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(c.Dir, "gossip.key"))
	if err != nil {
		return nil, err
	}
	return base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
}

// setupCNI writes the Node's conflist, fills its bin dir, and appends the
// sluice entry with the installer when Options.Sluice is set.
func (n *Node) setupCNI(ctx context.Context) error {
	p := n.Paths
	for _, d := range []string{p.ConfDir, p.BinDir, p.CacheDir, p.IPAMDir, p.RunDir, p.SpoolDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	pluginDir, err := binaries.Ensure(ctx, binaries.CNIPlugins)
	if err != nil {
		return err
	}
	for _, name := range referencePlugins {
		src := filepath.Join(pluginDir, name)
		if _, err := os.Stat(src); err != nil {
			continue // portmap and ptp are optional for this topology
		}
		dst := filepath.Join(p.BinDir, name)
		_ = os.Remove(dst) // a reused Options.Dir
		if err := os.Symlink(src, dst); err != nil {
			return fmt.Errorf("link plugin %s: %w", name, err)
		}
	}
	conf := filepath.Join(p.ConfDir, primaryConfFile)
	if err := os.WriteFile(conf, []byte(primaryConflist(n.Index, p.IPAMDir, n.cluster.Opts.Masquerade == MasqueradeBridge)), 0o644); err != nil {
		return fmt.Errorf("write conflist: %w", err)
	}
	if n.cluster.Opts.Sluice {
		if _, err := conflist.CopyBinary(n.cluster.Opts.SluicePlugin, p.BinDir); err != nil {
			return fmt.Errorf("install sluice plugin on %s: %w", n.Name, err)
		}
		entry := conflist.Entry{Socket: p.CNISocket, LogFile: filepath.Join(p.Root, "sluice-cni.log")}
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		ch, _, err := conflist.Install(p.ConfDir, entry, log)
		if err != nil {
			return fmt.Errorf("append sluice to the conflist of %s: %w", n.Name, err)
		}
		if err := setSpoolDir(ch.Path, p.SpoolDir); err != nil {
			return err
		}
	}
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{p.BinDir}, p.CacheDir, nil)
	return nil
}

// ConflistPath is the Node's primary conflist.
func (n *Node) ConflistPath() string { return filepath.Join(n.Paths.ConfDir, primaryConfFile) }

// Exec runs a command inside the Node's namespace (iptables, ip, ...) and
// returns its combined output.
func (n *Node) Exec(ctx context.Context, name string, args ...string) (string, error) {
	full := append([]string{"netns", "exec", n.NS.Name, name}, args...)
	out, err := execCommand(ctx, "ip", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s on %s: %w: %s", name, strings.Join(args, " "), n.Name, err, out)
	}
	return string(out), nil
}

// Exec runs a command inside the namespace of the Node called node.
func (c *Cluster) Exec(ctx context.Context, node string, name string, args ...string) (string, error) {
	n := c.Node(node)
	if n == nil {
		return "", fmt.Errorf("no node %q", node)
	}
	return n.Exec(ctx, name, args...)
}

var execCommand = exec.CommandContext

// setSpoolDir sets the sluice entry's spoolDir in the conflist at path, so
// that each Node's plugin spools where that Node's helper reads (the
// default is one machine-wide directory). Stand-in: conflist.Entry has no
// SpoolDir field yet.
func setSpoolDir(path, dir string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read conflist: %w", err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("parse conflist %s: %w", path, err)
	}
	plugins, _ := doc["plugins"].([]any)
	found := false
	for _, pl := range plugins {
		if m, ok := pl.(map[string]any); ok && m["type"] == conflist.PluginType {
			m["spoolDir"] = dir
			found = true
		}
	}
	if !found {
		return fmt.Errorf("conflist %s has no sluice entry", path)
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("marshal conflist: %w", err)
	}
	return conflist.WriteFileAtomic(path, out, 0o644)
}
