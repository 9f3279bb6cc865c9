package cluster

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/sluicenet/sluice/integration/binaries"
	"github.com/sluicenet/sluice/integration/controlplane"
	sluiceclient "github.com/sluicenet/sluice/pkg/client/clientset/versioned"
	"github.com/sluicenet/sluice/pkg/nstest"
)

// Cluster is a running test cluster. Its methods are safe for concurrent
// use unless noted.
type Cluster struct {
	Opts    Options
	Dir     string
	LAN     *nstest.NS // the switch: br0
	CP      *nstest.NS // etcd + kube-apiserver at ControlPlaneIP
	Nodes   []*Node
	Ext     []*Ext
	Started time.Duration // from New/Start to ready
	// Phases times the parts of the start: "topology" and "controlplane"
	// run concurrently, then "api" (clients, CRDs) and "nodes" (Node
	// objects).
	Phases map[string]time.Duration

	tag    string // names this cluster's namespaces
	cp     *controlplane.ControlPlane
	client kubernetes.Interface
	sluice sluiceclient.Interface

	mu     sync.Mutex
	nsList []*nstest.NS // every namespace made, deleted in reverse
	pods   []*Pod
	podSeq int
	// serviceAccounts records the namespaces whose default ServiceAccount
	// exists (see ensureServiceAccount).
	serviceAccounts sync.Map
	closeOnce       sync.Once
	closeErr        error
	tmpDir          bool
}

// New starts a cluster for a test, fails the test if it cannot, and closes
// it at cleanup (which also runs when the test panics). When the test has
// failed, the tail of every log is printed first.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	nstest.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	c, err := Start(ctx, opts)
	if c != nil {
		t.Cleanup(func() {
			if t.Failed() {
				t.Log(c.LogTails(40))
			}
			if err := c.Close(); err != nil {
				t.Errorf("close cluster: %v", err)
			}
		})
	}
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Logf("cluster ready in %s (%d nodes, dir %s; phases %v)", c.Started.Round(time.Millisecond), len(c.Nodes), c.Dir, c.Phases)
	return c
}

// Start starts a cluster without a testing.T, for `make demo` and the
// benchmarks. The caller must Close it (also on error, when the returned
// cluster is not nil: Close removes what was already made).
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	begin := time.Now()
	root, err := binaries.RepoRoot()
	if err != nil {
		return nil, err
	}
	opts, err = opts.withDefaults(root)
	if err != nil {
		return nil, err
	}
	c = &Cluster{Opts: opts, Dir: opts.Dir}
	if c.Dir == "" {
		if c.Dir, err = os.MkdirTemp("", "sluice-cluster-"); err != nil {
			return nil, fmt.Errorf("create cluster dir: %w", err)
		}
		c.tmpDir = !opts.KeepDir
	}
	// A panic half-way through must not leave namespaces or processes.
	defer func() {
		if p := recover(); p != nil {
			_ = c.Close()
			panic(p)
		}
	}()
	if err := c.build(ctx); err != nil {
		return c, err
	}
	c.Started = time.Since(begin)
	return c, nil
}

// build brings everything up: the control plane starts in the background
// while the namespaces are wired, since the apiserver's start dominates.
func (c *Cluster) build(ctx context.Context) error {
	tag := fmt.Sprintf("c%d", clusterSeq.Add(1))
	c.tag = tag
	// Gossip and hints are keyed, as in a real cluster.
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	if err := os.WriteFile(filepath.Join(c.Dir, "gossip.key"), []byte(base64.StdEncoding.EncodeToString(key)), 0o600); err != nil {
		return fmt.Errorf("write the gossip key: %w", err)
	}
	var err error
	if c.LAN, err = c.newNS(tag + "-lan"); err != nil {
		return err
	}
	if err := runBatch(c.LAN, []string{
		"link add br0 type bridge",
		"link set br0 up",
	}); err != nil {
		return err
	}
	if err := switchSysctls(c.LAN); err != nil {
		return err
	}
	if c.CP, err = c.newNS(tag + "-cp"); err != nil {
		return err
	}
	if err := c.plug(c.CP, "cp", ControlPlaneIP); err != nil {
		return err
	}
	type cpResult struct {
		cp  *controlplane.ControlPlane
		err error
	}
	cpDone := make(chan cpResult, 1)
	c.Phases = map[string]time.Duration{}
	begin := time.Now()
	go func() {
		cp, err := c.startControlPlane(ctx)
		cpDone <- cpResult{cp, err}
	}()
	topoErr := c.buildTopology(ctx, tag)
	c.Phases["topology"] = time.Since(begin)
	r := <-cpDone
	c.Phases["controlplane"] = time.Since(begin)
	c.cp = r.cp
	if err := errors.Join(topoErr, r.err); err != nil {
		return err
	}
	step := time.Now()
	if err := c.connectAPI(ctx); err != nil {
		return err
	}
	c.Phases["api"] = time.Since(step)
	step = time.Now()
	err = c.registerNodes(ctx)
	c.Phases["nodes"] = time.Since(step)
	if err != nil || !c.Opts.Kubelet {
		return err
	}
	step = time.Now()
	err = c.startRealNodes(ctx)
	c.Phases["kubelets"] = time.Since(step)
	return err
}

// buildTopology makes the lan bridge, the Nodes and the external servers.
func (c *Cluster) buildTopology(ctx context.Context, tag string) error {
	for i := 1; i <= c.Opts.Nodes; i++ {
		n, err := c.newNode(ctx, tag, i)
		if n != nil {
			c.Nodes = append(c.Nodes, n)
		}
		if err != nil {
			return err
		}
	}
	for k := 0; k < c.Opts.ExtServers; k++ {
		e, err := c.newExt(tag, k)
		if e != nil {
			c.Ext = append(c.Ext, e)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// newNS makes a namespace and records it for Close.
func (c *Cluster) newNS(name string) (*nstest.NS, error) {
	n, err := newNS(name)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.nsList = append(c.nsList, n)
	c.mu.Unlock()
	return n, nil
}

// plug connects n to br0 with a veth: "eth0" inside n, "v-<short>" in lan.
func (c *Cluster) plug(n *nstest.NS, short, addr string) error {
	lanEnd := "v-" + short
	if err := runBatch(c.LAN, []string{
		fmt.Sprintf("link add %s type veth peer name eth0 netns %s", lanEnd, n.Name),
		fmt.Sprintf("link set %s master br0", lanEnd),
		fmt.Sprintf("link set %s up", lanEnd),
	}); err != nil {
		return err
	}
	if err := runBatch(n, []string{
		fmt.Sprintf("addr add %s/24 dev eth0", addr),
		"link set eth0 up",
	}); err != nil {
		return err
	}
	// A veth has GRO off by default; a real NIC has it on. Without it the
	// Node holding an egress IP decapsulates and forwards every tunnelled
	// segment alone, which no real Node does. Both ends, when ethtool is
	// there.
	if _, err := exec.LookPath("ethtool"); err == nil {
		_, _ = c.LAN.Run("ethtool", "-K", lanEnd, "gro", "on")
		_, _ = n.Run("ethtool", "-K", "eth0", "gro", "on")
	}
	return nil
}

// switchSysctls makes br0 in the lan namespace switch frames as the
// physical switch it stands for does: without netfilter. When br_netfilter
// is loaded on the host (Kubernetes hosts load it for their Pod bridges),
// a new namespace starts with bridge-nf-call-{ip,ip6,arp}tables=1, so every
// switched frame runs the IPv4 hooks of the lan namespace (an skb
// extension, a fake route, PREROUTING/FORWARD/POSTROUTING) although
// nothing there filters. A Pod leaving through a remote egress IP crosses
// the switch twice (Node → egress Node → server), the Node's own traffic
// once, so this overhead, which no real switch has, weighed on the Pod
// path twice. Measured with the switch's hooks toggled between
// interleaved iperf3 runs on one cluster: Pod path +5 to +7%, direct path
// unchanged within noise. Absent when br_netfilter is not loaded.
func switchSysctls(lan *nstest.NS) error {
	s := map[string]string{}
	for _, k := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables"} {
		p := "net/bridge/" + k
		if err := lan.Do(func() error { _, err := os.Stat(filepath.Join("/proc/sys", p)); return err }); err == nil {
			s[p] = "0"
		}
	}
	return setSysctls(lan, s)
}

// Node returns the Node called name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Close stops everything, in an order that shuts down quickly: helpers
// (SIGTERM, then SIGKILL), the external servers, the apiserver, etcd, and
// last the namespaces, which also ends any process still inside one. It is
// safe to call more than once and on a half-built cluster.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		var errs []error
		var wg sync.WaitGroup
		for _, n := range c.Nodes {
			wg.Add(1)
			go func() { defer wg.Done(); n.stopHelper(helperGrace) }()
		}
		wg.Wait()
		for _, n := range c.Nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := n.stopReal(); err != nil {
					c.mu.Lock()
					errs = append(errs, err)
					c.mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if c.Opts.Kubelet && c.tag != "" {
			if err := removeCgroup(c.CgroupSubtree()); err != nil {
				errs = append(errs, err)
			}
		}
		for _, e := range c.Ext {
			e.close()
		}
		c.cp.Stop() // nil-safe
		c.mu.Lock()
		list := c.nsList
		c.nsList = nil
		c.mu.Unlock()
		for i := len(list) - 1; i >= 0; i-- {
			list[i].Delete()
		}
		if c.tmpDir {
			if err := os.RemoveAll(c.Dir); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", c.Dir, err))
			}
		}
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

// Namespaces lists the names of every namespace the cluster made and has
// not yet removed.
func (c *Cluster) Namespaces() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, n := range c.nsList {
		out = append(out, n.Name)
	}
	return out
}

// RESTConfig returns a copy of the admin rest config, with the dialer that
// opens sockets inside the cp namespace.
func (c *Cluster) RESTConfig() *rest.Config {
	return rest.CopyConfig(c.cp.Config)
}

// startControlPlane runs etcd and kube-apiserver inside the cp namespace,
// listening on ControlPlaneIP so that helpers in the Node namespaces reach
// the apiserver over the lan. Real Nodes also get the controller manager
// and the scheduler.
func (c *Cluster) startControlPlane(ctx context.Context) (*controlplane.ControlPlane, error) {
	dir := c.controlPlaneDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create control plane dir: %w", err)
	}
	return controlplane.Start(ctx, controlplane.Options{Dir: dir, NetNS: c.CP.Path, BindAddress: ControlPlaneIP, Controllers: c.Opts.Kubelet})
}

func (c *Cluster) controlPlaneDir() string { return filepath.Join(c.Dir, "controlplane") }

// Kubeconfig is the admin kubeconfig's path. It names the apiserver by its
// lan address, so it works from the cp and every Node namespace (not from
// the root namespace).
func (c *Cluster) Kubeconfig() string { return c.cp.Kubeconfig }

// APIServerURL is the apiserver's https URL on the lan.
func (c *Cluster) APIServerURL() string { return c.cp.URL() }
