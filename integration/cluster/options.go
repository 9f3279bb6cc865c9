// Package cluster builds a multi-node Kubernetes test cluster out of network
// namespaces: a real etcd and kube-apiserver in a "cp" namespace, N Node
// namespaces with a bridge + host-local primary CNI routed like flannel's
// host-gw, one or two external servers that echo the source IP they saw,
// and Pods created the way a container runtime does it, through libcni.
//
// Layout on the shared L2 segment (bridge br0 in the "lan" namespace):
//
//	          lan: br0 (no address, a plain switch)
//	┌──────────┬──────────┬──────────┬──────────┐
//	cp         node-a     node-b     node-c     ext
//	192.0.2.2  .11        .12        .13        192.0.2.100 (.101)
//	etcd,      cni0 10.244.1.1/24, pods 10.244.1.x, routes to
//	apiserver  10.244.<j>.0/24 via 192.0.2.1<j> (host-gw)
//
// The test process itself stays in the root namespace and gets no
// interface anywhere: it reaches the apiserver with sockets opened inside
// the cp namespace, and Pods and the external server the same way.
//
// Typical use in a test:
//
//	c := cluster.New(t, cluster.Options{Sluice: true})
//	for _, n := range c.Nodes { c.StartHelper(n.Name) }
//	p, _ := c.AddPod(ctx, "node-a", "prod", "web", map[string]string{"app": "web"})
//	src, _ := c.Whoami(ctx, p) // the source IP the external server saw
//
// Without a testing.T (make demo, benchmarks): c, err := cluster.Start(ctx,
// opts); defer c.Close().
package cluster

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/sluicenet/sluice/integration/controlplane"
)

// Fixed addresses of the topology. All of it lives inside namespaces the
// cluster creates; nothing is routed out of the machine.
const (
	LANPrefix       = "192.0.2.0/24"
	ControlPlaneIP  = "192.0.2.2"
	ClusterCIDR     = "10.244.0.0/16" // all Pod CIDRs
	ServiceCIDR     = controlplane.ServiceClusterIPRange
	WhoamiPort      = 8080 // the external servers' echo port
	firstNodeHost   = 11   // node i (1-based) is 192.0.2.(10+i)
	firstExtHost    = 100  // external server k (0-based) is 192.0.2.(100+k)
	maxNodes        = 80   // keeps node addresses below the external servers
	defaultNodes    = 3
	defaultUplink   = "eth0"
	defaultBridge   = "cni0"
	primaryNetName  = "hostgw"
	primaryConfFile = "10-hostgw.conflist"
)

// Options configure a cluster. The zero value is a valid three-node cluster.
type Options struct {
	// Nodes is the number of Node namespaces, named node-a, node-b, ...
	// Default 3.
	Nodes int
	// ExtServers is the number of external echo servers (1 or 2). Default 1.
	ExtServers int
	// Dir holds everything the cluster writes: certificates, etcd data,
	// kubeconfig, per-node CNI config, caches and logs. Default: a new
	// temporary directory (removed by Close unless KeepDir).
	Dir     string
	KeepDir bool
	// NodeLabels adds labels to the Node object of node i (1-based).
	NodeLabels func(i int, name string) map[string]string
	// Sluice appends the sluice CNI plugin to every Node's conflist (with
	// the installer of the conflist package) and puts the plugin binary in
	// the Node's CNI bin dir. Without it the Nodes run the primary CNI only.
	Sluice bool
	// SluicePlugin is the plugin binary. Default <repo>/bin/sluice.
	SluicePlugin string
	// Masquerade says who makes Pods leave with the Node IP:
	// MasqueradeBridge (default) is the bridge plugin's ipMasq, one nat
	// chain per Pod, as containerd's sample conflist does; MasqueradeNode
	// is one rule per Node, as flannel does. The latter skips the per-Pod
	// iptables work: AddPod took ~150 ms instead of ~240 ms here (2 busy
	// cores), which matters for benchmarks that create many Pods.
	Masquerade string
	// HelperBinary is sluice-helperd. Default <repo>/bin/sluice-helperd.
	HelperBinary string
	// HelperArgs are appended to every helper's default command line (see
	// Cluster.HelperArgs); StartHelper's extra arguments come after them.
	HelperArgs []string
	// Kubelet makes every Node a real one: containerd, runc and a kubelet
	// in the Node's namespaces (see kubelet_linux.go), which adopt the
	// Node object the cluster creates; the control plane then also runs
	// kube-controller-manager and kube-scheduler. Pods are made through the
	// API (CreateRealPod, or any workload object) and started by the
	// kubelet, not through libcni.
	Kubelet bool
}

// Masquerade modes (Options.Masquerade).
const (
	MasqueradeBridge = "bridge"
	MasqueradeNode   = "node"
)

// withDefaults returns o with every zero field filled in, or an error
// naming the first invalid field.
func (o Options) withDefaults(repoRoot string) (Options, error) {
	if o.Nodes == 0 {
		o.Nodes = defaultNodes
	}
	if o.Nodes < 1 || o.Nodes > maxNodes {
		return o, fmt.Errorf("options: Nodes must be 1..%d, got %d", maxNodes, o.Nodes)
	}
	if o.ExtServers == 0 {
		o.ExtServers = 1
	}
	if o.ExtServers < 1 || o.ExtServers > 2 {
		return o, fmt.Errorf("options: ExtServers must be 1 or 2, got %d", o.ExtServers)
	}
	switch o.Masquerade {
	case "":
		o.Masquerade = MasqueradeBridge
	case MasqueradeBridge, MasqueradeNode:
	default:
		return o, fmt.Errorf("options: Masquerade must be %q or %q, got %q", MasqueradeBridge, MasqueradeNode, o.Masquerade)
	}
	if o.SluicePlugin == "" {
		o.SluicePlugin = filepath.Join(repoRoot, "bin", "sluice")
	}
	if o.HelperBinary == "" {
		o.HelperBinary = filepath.Join(repoRoot, "bin", "sluice-helperd")
	}
	return o, nil
}

// NodeName is the name of node i (1-based): node-a, node-b, ..., then
// node-27 and up once the alphabet runs out.
func NodeName(i int) string {
	if i >= 1 && i <= 26 {
		return "node-" + string(rune('a'+i-1))
	}
	return fmt.Sprintf("node-%d", i)
}

// NodeIP is node i's (1-based) InternalIP on the lan.
func NodeIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{192, 0, 2, byte(firstNodeHost - 1 + i)})
}

// PodCIDR is node i's (1-based) Pod CIDR, 10.244.<i>.0/24.
func PodCIDR(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24)
}

// PodGateway is the address of cni0 on node i: the first host of its CIDR.
func PodGateway(i int) netip.Addr {
	return PodCIDR(i).Addr().Next()
}

// ExtIP is external server k's (0-based) address.
func ExtIP(k int) netip.Addr {
	return netip.AddrFrom4([4]byte{192, 0, 2, byte(firstExtHost + k)})
}

// Route is one host-gw route: Dst via Via on the uplink.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr
}

// hostGWRoutes are node i's routes to every other Node's Pod CIDR through
// that Node's lan address, as flannel's host-gw backend installs them.
func hostGWRoutes(i, nodes int) []Route {
	var out []Route
	for j := 1; j <= nodes; j++ {
		if j != i {
			out = append(out, Route{Dst: PodCIDR(j), Via: NodeIP(j)})
		}
	}
	return out
}

// primaryConflist is node i's primary CNI network: bridge + host-local with
// the Node's Pod CIDR and a default route through cni0. With ipMasq the
// bridge plugin makes Pods leave with the Node IP; the masquerade is kept
// off Pod↔Pod traffic by a rule the node setup puts in front of it (see
// nodeNATRules). cniVersion 1.0.0 so that CHECK/STATUS/GC reach a chained
// plugin too.
func primaryConflist(i int, ipamDir string, ipMasq bool) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": %t,
      "ipMasqBackend": "iptables",
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": %q,
        "ranges": [[{"subnet": %q, "gateway": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
`, primaryNetName, defaultBridge, ipMasq, ipamDir, PodCIDR(i).String(), PodGateway(i).String())
}

// nodeNATRules are the nat POSTROUTING rules node i gets at setup, in
// order, ahead of anything a plugin adds later. The first keeps Pod↔Pod
// traffic across Nodes unmasqueraded (flannel does the same); with
// MasqueradeNode the second masquerades the Node's Pods to everything
// outside the cluster, as flannel's one rule does.
func nodeNATRules(i int, mode string) [][]string {
	rules := [][]string{{"-s", ClusterCIDR, "-d", ClusterCIDR, "-m", "comment", "--comment", "test cluster: pod to pod unmasqueraded", "-j", "ACCEPT"}}
	if mode == MasqueradeNode {
		rules = append(rules, []string{"-s", PodCIDR(i).String(), "!", "-d", ClusterCIDR, "-m", "comment", "--comment", "test cluster: node masquerade", "-j", "MASQUERADE"})
	}
	return rules
}

// NodePaths are the files and directories of one Node under the cluster
// directory.
type NodePaths struct {
	Root       string // <dir>/<node>
	ConfDir    string // CNI conf dir (net.d)
	BinDir     string // CNI bin dir: reference plugins (+ sluice)
	CacheDir   string // libcni cache
	IPAMDir    string // host-local's dataDir
	RunDir     string // sockets
	SpoolDir   string // plugin spool, read by the helper (--spool-dir)
	CNISocket  string // plugin → helper socket
	StatusSock string // the helper's status socket
	HelperLog  string // the helper's stdout and stderr, across restarts
	GossipKey  string // the Node's copy of the cluster's gossip key file
}

func nodePaths(dir, name string) NodePaths {
	root := filepath.Join(dir, name)
	run := filepath.Join(root, "run")
	return NodePaths{
		Root:       root,
		ConfDir:    filepath.Join(root, "net.d"),
		BinDir:     filepath.Join(root, "cni-bin"),
		CacheDir:   filepath.Join(root, "cni-cache"),
		IPAMDir:    filepath.Join(root, "ipam"),
		RunDir:     run,
		SpoolDir:   filepath.Join(run, "spool"),
		CNISocket:  filepath.Join(run, "cni.sock"),
		StatusSock: filepath.Join(run, "status.sock"),
		HelperLog:  filepath.Join(root, "helperd.log"),
		GossipKey:  filepath.Join(root, "gossip.key"),
	}
}

// defaultHelperArgs is the helper command line for one Node, before
// Options.HelperArgs and StartHelper's extras.
func defaultHelperArgs(name, kubeconfig string, p NodePaths) []string {
	return []string{
		"--node-name=" + name,
		"--kubeconfig=" + kubeconfig,
		"--cluster-cidrs=" + ClusterCIDR + "," + ServiceCIDR,
		"--uplink=" + defaultUplink,
		"--cni-socket=" + p.CNISocket,
		"--status-socket=" + p.StatusSock,
		"--spool-dir=" + p.SpoolDir,
		"--gossip-key-file=" + p.GossipKey,
	}
}

// cniArgs is the CNI_ARGS a kubelet passes for a Pod.
func cniArgs(namespace, name, uid string) [][2]string {
	return [][2]string{
		{"IgnoreUnknown", "1"},
		{"K8S_POD_NAMESPACE", namespace},
		{"K8S_POD_NAME", name},
		{"K8S_POD_INFRA_CONTAINER_ID", containerID(uid)},
		{"K8S_POD_UID", uid},
	}
}

// containerID derives a sandbox ID from the Pod UID: unique, stable, and
// made of characters CNI accepts.
func containerID(uid string) string {
	return strings.ReplaceAll(uid, "-", "")
}

// tail returns the last n lines of the file at path, for failure reports.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return ""
		}
		return fmt.Sprintf("(read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
