package controlplane

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/discovery"

	"github.com/sluicenet/sluice/integration/binaries"
	"github.com/sluicenet/sluice/pkg/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// checkServing asserts the apiserver answers through both the rest.Config
// and kubectl, as the static admin.
func checkServing(t *testing.T, cp *ControlPlane) {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	v, err := dc.ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	if v.GitVersion != binaries.KubernetesVersion {
		t.Errorf("server version %s, want %s", v.GitVersion, binaries.KubernetesVersion)
	}
	out, err := cp.Kubectl("auth", "can-i", "*", "*")
	if err != nil || strings.TrimSpace(out) != "yes" {
		t.Errorf("kubectl auth can-i '*' '*' = %q, %v; want yes", out, err)
	}
}

func gone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

func TestStartStopLoopback(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	cp := StartForTest(t)
	checkServing(t, cp)
	if _, err := os.Stat(cp.Kubeconfig); err != nil {
		t.Errorf("kubeconfig: %v", err)
	}
	apiPID, etcdPID := cp.apiserver.cmd.Process.Pid, cp.etcd.cmd.Process.Pid
	start := time.Now()
	cp.Stop()
	if d := time.Since(start); d > 2*stopGrace+time.Second {
		t.Errorf("Stop took %s", d)
	}
	if !gone(apiPID) || !gone(etcdPID) {
		t.Errorf("processes still running after Stop: apiserver %d gone=%t, etcd %d gone=%t",
			apiPID, gone(apiPID), etcdPID, gone(etcdPID))
	}
	if cp.apiserver.err != nil && !strings.Contains(cp.apiserver.err.Error(), "signal: terminated") {
		// A clean SIGTERM shutdown exits 0; a kill shows as an error.
		t.Logf("kube-apiserver exit: %v", cp.apiserver.err)
	}
	cp.Stop() // a second Stop (the cleanup's) is harmless
}

// The multi-node cluster runs the control plane inside a namespace; the
// test process still reaches it through Config, whose Dial opens sockets
// inside that namespace.
func TestStartInNetNS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	nstest.RequireRoot(t)
	n := nstest.New(t, "cp")
	n.MustRun(t, "ip", "addr", "add", "192.0.2.10/32", "dev", "lo")
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cp, err := Start(ctx, Options{Dir: t.TempDir(), NetNS: n.Path, BindAddress: "192.0.2.10"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	if !strings.HasPrefix(cp.URL(), "https://192.0.2.10:") {
		t.Errorf("URL = %s", cp.URL())
	}
	checkServing(t, cp)
	// The processes really live in the namespace.
	pids := n.MustRun(t, "ip", "netns", "pids", n.Name)
	for _, p := range []*process{cp.etcd, cp.apiserver} {
		if !strings.Contains(" "+strings.Join(strings.Fields(pids), " ")+" ", " "+strconv.Itoa(p.cmd.Process.Pid)+" ") {
			t.Errorf("%s (pid %d) is not in %s (pids %q)", p.name, p.cmd.Process.Pid, n.Name, pids)
		}
	}
}
