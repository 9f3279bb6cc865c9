package cluster

// TEMPORARY stand-in for integration/controlplane, which is being written in
// parallel. It is the narrowest thing that runs etcd + kube-apiserver inside
// the cp namespace; it goes away when controlplane.Start lands.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"k8s.io/client-go/rest"

	"github.com/sluicenet/sluice/integration/binaries"
	"github.com/sluicenet/sluice/pkg/nstest"
)

const adminToken = "sluice-test-admin-token"

type controlPlane struct {
	kubeconfig string
	rest       *rest.Config
	etcd       *exec.Cmd
	apiserver  *exec.Cmd
	logs       []string
}

func startControlPlane(ctx context.Context, dir string, cp *nstest.NS, extraArgs []string) (*controlPlane, error) {
	etcdBin, err := binaries.Ensure(ctx, binaries.Etcd)
	if err != nil {
		return nil, err
	}
	apiBin, err := binaries.Ensure(ctx, binaries.KubeAPIServer)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create control plane dir: %w", err)
	}
	saKey := filepath.Join(dir, "sa.key")
	if err := writeECKey(saKey); err != nil {
		return nil, err
	}
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(adminToken+",admin,admin,system:masters\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write token file: %w", err)
	}
	host := net.JoinHostPort(ControlPlaneIP, strconv.Itoa(APIServerPort))
	c := &controlPlane{kubeconfig: filepath.Join(dir, "kubeconfig")}
	if err := os.WriteFile(c.kubeconfig, []byte(kubeconfigFor("https://"+host)), 0o600); err != nil {
		return nil, fmt.Errorf("write kubeconfig: %w", err)
	}
	c.rest = &rest.Config{
		Host:            "https://" + host,
		BearerToken:     adminToken,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		QPS:             1000, Burst: 2000,
	}
	etcdLog := filepath.Join(dir, "etcd.log")
	apiLog := filepath.Join(dir, "kube-apiserver.log")
	c.logs = []string{etcdLog, apiLog}
	// etcd on the cp namespace's own loopback: only the apiserver uses it.
	c.etcd, err = startIn(cp, etcdLog, etcdBin,
		"--name=default", "--data-dir="+filepath.Join(dir, "etcd-data"),
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=default=http://127.0.0.1:2380", "--unsafe-no-fsync", "--log-level=warn")
	if err != nil {
		return nil, err
	}
	args := append([]string{
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=" + ControlPlaneIP, "--advertise-address=" + ControlPlaneIP,
		"--secure-port=" + strconv.Itoa(APIServerPort),
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--token-auth-file=" + tokens, "--authorization-mode=RBAC",
		"--service-account-key-file=" + saKey, "--service-account-signing-key-file=" + saKey,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-cluster-ip-range=" + ServiceCIDR,
		// No controller-manager makes the default ServiceAccount, so the
		// admission plugin that demands it would refuse every Pod.
		"--disable-admission-plugins=ServiceAccount",
		"--endpoint-reconciler-type=none", "--enable-priority-and-fairness=false", "--profiling=false",
	}, extraArgs...)
	c.apiserver, err = startIn(cp, apiLog, apiBin, args...)
	if err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

func (c *controlPlane) restConfig() *rest.Config { return rest.CopyConfig(c.rest) }

// stop ends the apiserver before etcd: an apiserver whose etcd is gone sits
// in graceful shutdown for a minute.
func (c *controlPlane) stop() {
	stopProcess(c.apiserver, 10*time.Second)
	stopProcess(c.etcd, 5*time.Second)
}

// startIn starts a program inside the namespace, output to logPath, killed
// by the kernel if the test process dies (Pdeathsig).
func startIn(n *nstest.NS, logPath, bin string, args ...string) (*exec.Cmd, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	defer f.Close()
	cmd := n.Cmd(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", filepath.Base(bin), n.Name, err)
	}
	go func() { _ = cmd.Wait() }()
	return cmd, nil
}

// stopProcess sends SIGTERM, waits up to grace, then SIGKILL.
func stopProcess(cmd *exec.Cmd, grace time.Duration) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	pid := cmd.Process.Pid
	if syscall.Kill(pid, syscall.SIGTERM) != nil {
		return
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 100 && alive(pid); i++ {
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid still runs (a zombie counts as gone).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// Field 3 is the state; the command name before it is in parentheses.
	for i := len(b) - 1; i > 0; i-- {
		if b[i] == ')' {
			return i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
		}
	}
	return true
}

func writeECKey(path string) error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate service-account key: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return fmt.Errorf("marshal service-account key: %w", err)
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

func kubeconfigFor(server string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: %s
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
`, server, adminToken)
}
