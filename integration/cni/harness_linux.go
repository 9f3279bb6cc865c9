// Package cnitest runs real CNI chains (reference plugins + sluice) through
// libcni, the library containerd uses, inside throwaway "node" namespaces.
// The chain tests in this directory and bench/cni share it.
//
// Layout of one Env: a node namespace (the Node's host side: the bridge,
// the host veths and the helper live there), one namespace per Pod, and a
// temp dir holding the libcni cache, host-local's data, the spool and the
// helper socket. libcni runs on a goroutine locked inside the node
// namespace, so the plugins it execs start there too.
package cnitest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/sluicenet/sluice/integration/binaries"
	"github.com/sluicenet/sluice/pkg/nstest"
)

// Bins holds the binaries a chain needs.
type Bins struct {
	Reference string // directory with bridge, ptp, host-local, loopback
	Sluice    string // directory with the sluice plugin (C front and sluice-full)
	Helper    string // path of the testhelper binary
}

// BuildBins ensures the reference plugins and builds sluice and the test
// helper into dir (one build per test binary: call it from TestMain).
func BuildBins(ctx context.Context, dir string) (Bins, error) {
	ref, err := binaries.Ensure(ctx, binaries.CNIPlugins)
	if err != nil {
		return Bins{}, fmt.Errorf("reference plugins: %w", err)
	}
	root, err := binaries.RepoRoot()
	if err != nil {
		return Bins{}, err
	}
	b := Bins{Reference: ref, Sluice: filepath.Join(dir, "plugins"), Helper: filepath.Join(dir, "testhelper")}
	if _, err := binaries.BuildSluice(ctx, b.Sluice); err != nil {
		return Bins{}, err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", b.Helper, "./integration/cni/testhelper")
	cmd.Dir = root
	if o, err := cmd.CombinedOutput(); err != nil {
		return Bins{}, fmt.Errorf("go build testhelper: %w: %s", err, o)
	}
	return b, nil
}

// Env is one node namespace with its CNI state.
type Env struct {
	Node   *nstest.NS
	Bins   Bins
	Dir    string
	Socket string
	Spool  string
	CNI    *libcni.CNIConfig
	// HelperWrap runs the helper through a command, e.g. setpriv to drop
	// capabilities as a DaemonSet's securityContext does.
	HelperWrap []string
}

// NewEnv makes a node namespace and the directories of one test.
func NewEnv(t testing.TB, bins Bins, name string) *Env {
	t.Helper()
	dir := t.TempDir()
	e := &Env{
		Node:   nstest.New(t, name),
		Bins:   bins,
		Dir:    dir,
		Socket: filepath.Join(dir, "run", "cni.sock"),
		Spool:  filepath.Join(dir, "spool"),
	}
	e.CNI = libcni.NewCNIConfigWithCacheDir([]string{bins.Reference, bins.Sluice}, filepath.Join(dir, "cache"), nil)
	return e
}

// Primary names a primary plugin configuration.
type Primary string

const (
	Bridge Primary = "bridge" // flannel-like: cni0 bridge, host-local
	PTP    Primary = "ptp"    // Calico-like: routed veth, host-local
)

// ConflistOpts shapes a generated conflist.
type ConflistOpts struct {
	CNIVersion string
	Primary    Primary // "" means sluice alone (no primary)
	NoSluice   bool
	FailClosed bool
	Timeout    string
}

// Conflist builds the network configuration of a test. ipMasq stays off:
// nothing here may touch iptables, even in a namespace.
func (e *Env) Conflist(t testing.TB, o ConflistOpts) *libcni.NetworkConfigList {
	t.Helper()
	ipam := map[string]any{
		"type":    "host-local",
		"ranges":  [][]map[string]string{{{"subnet": "10.244.0.0/24"}}},
		"dataDir": filepath.Join(e.Dir, "ipam"),
	}
	var plugins []map[string]any
	switch o.Primary {
	case Bridge:
		plugins = append(plugins, map[string]any{"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "ipam": ipam})
	case PTP:
		plugins = append(plugins, map[string]any{"type": "ptp", "ipMasq": false, "ipam": ipam})
	}
	if !o.NoSluice {
		s := map[string]any{"type": "sluice", "socket": e.Socket, "spoolDir": e.Spool,
			"logFile": filepath.Join(e.Dir, "sluice.log"), "failClosed": o.FailClosed}
		if f := os.Getenv("SLUICE_CNI_LOG"); f != "" {
			s["logFile"] = f // keep the plugin's log past the test, for debugging
		}
		if o.Timeout != "" {
			s["timeout"] = o.Timeout
		}
		plugins = append(plugins, s)
	}
	raw, err := json.Marshal(map[string]any{"cniVersion": o.CNIVersion, "name": "sltest", "plugins": plugins})
	if err != nil {
		t.Fatal(err)
	}
	l, err := libcni.NetworkConfFromBytes(raw)
	if err != nil {
		t.Fatalf("conflist %s: %v", raw, err)
	}
	return l
}

// Pod is one sandbox: its namespace and the runtime config libcni gets.
type Pod struct {
	NS *nstest.NS
	RT *libcni.RuntimeConf
}

// NewPod makes a Pod namespace with CNI_ARGS like kubelet's.
func (e *Env) NewPod(t testing.TB, name string) *Pod {
	t.Helper()
	n := nstest.New(t, name)
	return &Pod{NS: n, RT: &libcni.RuntimeConf{
		ContainerID: "ctr-" + strings.ReplaceAll(n.Name, "_", "-"),
		NetNS:       n.Path,
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", "default"},
			{"K8S_POD_NAME", name},
			{"K8S_POD_UID", "0f1e2d3c-4b5a-6978-8695-" + fmt.Sprintf("%012x", len(name)*7919)},
		},
	}}
}

// In runs fn inside the node namespace on a locked thread.
func (e *Env) In(fn func() error) error { return e.Node.Do(fn) }

// Add runs ADD of the whole list from the node namespace.
func (e *Env) Add(ctx context.Context, l *libcni.NetworkConfigList, p *Pod) (types.Result, error) {
	var r types.Result
	err := e.In(func() error {
		var err error
		r, err = e.CNI.AddNetworkList(ctx, l, p.RT)
		return err
	})
	return r, err
}

// Del runs DEL of the whole list from the node namespace.
func (e *Env) Del(ctx context.Context, l *libcni.NetworkConfigList, p *Pod) error {
	return e.In(func() error { return e.CNI.DelNetworkList(ctx, l, p.RT) })
}

// Check runs CHECK of the whole list from the node namespace.
func (e *Env) Check(ctx context.Context, l *libcni.NetworkConfigList, p *Pod) error {
	return e.In(func() error { return e.CNI.CheckNetworkList(ctx, l, p.RT) })
}

// GC runs libcni's GC (stale DELs, then GC on 1.1.0+) keeping valid.
func (e *Env) GC(ctx context.Context, l *libcni.NetworkConfigList, valid ...*Pod) error {
	args := &libcni.GCArgs{}
	for _, p := range valid {
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: p.RT.ContainerID, IfName: p.RT.IfName})
	}
	return e.In(func() error { return e.CNI.GCNetworkList(ctx, l, args) })
}

// Status runs STATUS of the whole list from the node namespace.
func (e *Env) Status(ctx context.Context, l *libcni.NetworkConfigList) error {
	return e.In(func() error { return e.CNI.GetStatusNetworkList(ctx, l) })
}

// Helper is a running testhelper process inside the node namespace.
type Helper struct {
	cmd  *exec.Cmd
	done chan error
}

// StartHelper starts the test helper in the node namespace and waits until
// it serves. It is stopped at cleanup if the test did not stop it.
func (e *Env) StartHelper(t testing.TB, extraArgs ...string) *Helper {
	t.Helper()
	argv := append(append(append([]string{}, e.HelperWrap...), e.Bins.Helper, "-socket", e.Socket, "-spool", e.Spool), extraArgs...)
	cmd := e.Node.Cmd(argv[0], argv[1:]...)
	logf, err := os.OpenFile(filepath.Join(e.Dir, "helper.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &Helper{cmd: cmd, done: make(chan error, 1)}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := sc.Scan() && sc.Text() == "ready"
		ready <- ok
		for sc.Scan() {
		}
		h.done <- cmd.Wait()
	}()
	t.Cleanup(h.Stop)
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("helper did not start; log in %s", filepath.Join(e.Dir, "helper.log"))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("helper not ready after 20s")
	}
	return h
}

// Stop ends the helper (SIGTERM to the process this test started, then
// SIGKILL after 5s) and waits for it. Safe to call twice.
func (h *Helper) Stop() {
	if h.cmd.Process == nil || h.done == nil {
		return
	}
	_ = h.cmd.Process.Signal(os.Interrupt)
	select {
	case <-h.done:
	case <-time.After(5 * time.Second):
		_ = h.cmd.Process.Kill()
		<-h.done
	}
	h.done = nil
}

// Loopback is the separate "lo" network runtimes set up in every sandbox
// before the Pod network (containerd does this with the loopback plugin).
func (e *Env) Loopback(t testing.TB, cniVersion string) *libcni.NetworkConfigList {
	t.Helper()
	l, err := libcni.NetworkConfFromBytes([]byte(`{"cniVersion":"` + cniVersion + `","name":"cni-loopback","plugins":[{"type":"loopback"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	return l
}
