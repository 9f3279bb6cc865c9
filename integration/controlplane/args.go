package controlplane

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
)

// ServiceClusterIPRange is the apiserver's virtual Service range. It is
// only ever a flag value: nothing routes it, and no address from it is put
// on an interface.
const ServiceClusterIPRange = "10.96.0.0/16"

// layout is where one control plane keeps its files, and on which ports it
// listens. Everything in it is derived from Options, so the flag builders
// below stay pure.
type layout struct {
	dir        string
	host       string // BindAddress
	etcdClient int
	etcdPeer   int
	apiPort    int
}

func (l layout) etcdDataDir() string   { return filepath.Join(l.dir, "etcd-data") }
func (l layout) certDir() string       { return filepath.Join(l.dir, "apiserver-certs") }
func (l layout) servingCert() string   { return filepath.Join(l.certDir(), "apiserver.crt") }
func (l layout) saKeyFile() string     { return filepath.Join(l.dir, "service-account.key") }
func (l layout) tokenFile() string     { return filepath.Join(l.dir, "tokens.csv") }
func (l layout) kubeconfig() string    { return filepath.Join(l.dir, "kubeconfig") }
func (l layout) etcdLog() string       { return filepath.Join(l.dir, "etcd.log") }
func (l layout) apiserverLog() string  { return filepath.Join(l.dir, "kube-apiserver.log") }
func (l layout) kubectlCache() string  { return filepath.Join(l.dir, "kubectl-cache") }
func (l layout) kcmLog() string        { return filepath.Join(l.dir, "kube-controller-manager.log") }
func (l layout) schedulerLog() string  { return filepath.Join(l.dir, "kube-scheduler.log") }
func (l layout) hostPort(p int) string { return net.JoinHostPort(l.host, strconv.Itoa(p)) }
func (l layout) etcdURL() string       { return "http://" + l.hostPort(l.etcdClient) }
func (l layout) apiURL() string        { return "https://" + l.hostPort(l.apiPort) }

// etcdArgs are the flags of a single-member etcd for tests. fsync is off:
// the data is thrown away with the test.
func etcdArgs(l layout) []string {
	peer := "http://" + l.hostPort(l.etcdPeer)
	return []string{
		"--name=default",
		"--data-dir=" + l.etcdDataDir(),
		"--listen-client-urls=" + l.etcdURL(),
		"--advertise-client-urls=" + l.etcdURL(),
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=default=" + peer,
		"--initial-cluster-state=new",
		"--unsafe-no-fsync",
		"--log-level=warn",
	}
}

// apiserverArgs are the kube-apiserver flags: self-signed serving certs in
// cert-dir, a static admin token, RBAC, and a service-account key.
func apiserverArgs(l layout) []string {
	return []string{
		"--etcd-servers=" + l.etcdURL(),
		"--bind-address=" + l.host,
		"--advertise-address=" + l.host,
		"--secure-port=" + strconv.Itoa(l.apiPort),
		"--cert-dir=" + l.certDir(),
		"--token-auth-file=" + l.tokenFile(),
		"--authorization-mode=RBAC",
		"--service-account-key-file=" + l.saKeyFile(),
		"--service-account-signing-key-file=" + l.saKeyFile(),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-cluster-ip-range=" + ServiceClusterIPRange,
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false",
		fmt.Sprintf("--profiling=%t", false),
	}
}

// controllerManagerArgs are kube-controller-manager's flags: the admin
// kubeconfig for every controller, one instance (no election), and the
// apiserver's serving bundle as the root CA that kube-root-ca.crt, and so
// every Pod's service-account token volume, carries. Node CIDRs are the
// harness's to assign, not the node-ipam controller's. No HTTPS serving:
// nothing scrapes it.
func controllerManagerArgs(l layout) []string {
	return []string{
		"--kubeconfig=" + l.kubeconfig(),
		"--leader-elect=false",
		"--root-ca-file=" + l.servingCert(),
		"--service-account-private-key-file=" + l.saKeyFile(),
		"--service-cluster-ip-range=" + ServiceClusterIPRange,
		"--allocate-node-cidrs=false",
		"--secure-port=0",
		"--v=1",
	}
}

// schedulerArgs are kube-scheduler's flags: the admin kubeconfig, one
// instance, no HTTPS serving.
func schedulerArgs(l layout) []string {
	return []string{
		"--kubeconfig=" + l.kubeconfig(),
		"--leader-elect=false",
		"--secure-port=0",
		"--v=1",
	}
}
