// Package binaries builds, from the Go module proxy, the real programs the
// integration tests run (kube-apiserver, etcd, kubectl, the CNI reference
// plugins and cnitool, and for real Nodes the kubelet, containerd, runc and
// crictl) and caches them under <repo>/.cache/bin, keyed by
// version, so that only the first run pays for the build.
package binaries

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Tool names one program (or, for CNIPlugins, one directory of programs)
// that Ensure can provide.
type Tool string

// The tools the harness knows how to build.
const (
	KubeAPIServer Tool = "kube-apiserver"
	Etcd          Tool = "etcd"
	Kubectl       Tool = "kubectl"
	// CNIPlugins is a directory holding bridge, ptp, host-local, loopback,
	// portmap and cnitool.
	CNIPlugins Tool = "cni-plugins"
	// Kubelet is the Node agent of the real-Node cluster, built from the
	// same module and version as the API server (no version skew at all).
	Kubelet Tool = "kubelet"
	// KubeControllerManager and KubeScheduler complete the real-Node
	// cluster's control plane: DaemonSets, Deployments, the root CA
	// ConfigMap that service-account tokens need, and scheduling.
	KubeControllerManager Tool = "kube-controller-manager"
	KubeScheduler         Tool = "kube-scheduler"
	// Containerd is a directory holding containerd, containerd-shim-runc-v2
	// and ctr.
	Containerd Tool = "containerd"
	Runc       Tool = "runc"
	Crictl     Tool = "crictl"
)

// Versions of what is built. They must match the require lines of the tool
// modules in integration/tools (a test checks that).
const (
	KubernetesVersion = "v1.37.2"
	EtcdVersion       = "v3.7.3"
	CNIPluginsVersion = "v1.9.1"
	CNIToolVersion    = "v1.3.0"
	ContainerdVersion = "v2.4.2"
	RuncVersion       = "v1.5.3"
	CriToolsVersion   = "v1.37.0"
)

// All lists every tool, in the order sluice-tools builds them (cheap first).
var All = []Tool{Etcd, CNIPlugins, KubeAPIServer, Kubectl}

// RealNode lists what a real Node runs on top of All; sluice-tools builds it
// after All.
var RealNode = []Tool{Runc, Crictl, Containerd, Kubelet, KubeScheduler, KubeControllerManager}

// output is one binary: the Go package it is built from and its file name.
type output struct {
	name string
	pkg  string
}

// spec says where a tool comes from and where its cache lives.
type spec struct {
	module   string   // directory under integration/tools
	cacheKey string   // directory under .cache/bin, carries the versions
	outputs  []output // what to build into that directory
	isDir    bool     // Ensure returns the directory rather than the file
	ldflags  string   // passed to go build -ldflags
	tags     string   // passed to go build -tags
}

// kubeLDFlags stamps the version the way Kubernetes' own release build
// does (hack/lib/version.sh). Without it a module build reports
// v0.0.0-master, which kubectl's skew check and /version would show.
var kubeLDFlags = func() string {
	var flags []string
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		flags = append(flags,
			"-X "+pkg+".gitVersion="+KubernetesVersion,
			"-X "+pkg+".gitMajor="+kubeMajor,
			"-X "+pkg+".gitMinor="+kubeMinor,
			"-X "+pkg+".gitTreeState=clean",
		)
	}
	return strings.Join(flags, " ")
}()

// kubeMajor and kubeMinor are KubernetesVersion's parts, for kubeLDFlags.
const (
	kubeMajor = "1"
	kubeMinor = "37"
)

// specs is the whole build recipe, as data. kube-apiserver and kubectl
// share a cache directory because they come from one module at one version.
var specs = map[Tool]spec{
	KubeAPIServer: {
		module:   "kube",
		cacheKey: "kubernetes-" + KubernetesVersion,
		ldflags:  kubeLDFlags,
		outputs:  []output{{"kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"}},
	},
	Kubectl: {
		module:   "kube",
		cacheKey: "kubernetes-" + KubernetesVersion,
		ldflags:  kubeLDFlags,
		outputs:  []output{{"kubectl", "k8s.io/kubernetes/cmd/kubectl"}},
	},
	Kubelet: {
		module:   "kube",
		cacheKey: "kubernetes-" + KubernetesVersion,
		ldflags:  kubeLDFlags,
		outputs:  []output{{"kubelet", "k8s.io/kubernetes/cmd/kubelet"}},
	},
	KubeControllerManager: {
		module:   "kube",
		cacheKey: "kubernetes-" + KubernetesVersion,
		ldflags:  kubeLDFlags,
		outputs:  []output{{"kube-controller-manager", "k8s.io/kubernetes/cmd/kube-controller-manager"}},
	},
	KubeScheduler: {
		module:   "kube",
		cacheKey: "kubernetes-" + KubernetesVersion,
		ldflags:  kubeLDFlags,
		outputs:  []output{{"kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler"}},
	},
	// containerd without the snapshotters the tests never use: btrfs needs
	// C headers this machine lacks, and devmapper and zfs need devices.
	Containerd: {
		module:   "containerd",
		cacheKey: "containerd-" + ContainerdVersion,
		isDir:    true,
		ldflags:  "-X github.com/containerd/containerd/v2/version.Version=" + ContainerdVersion,
		tags:     "no_btrfs no_devmapper no_zfs urfave_cli_no_docs",
		outputs: []output{
			{"containerd", "github.com/containerd/containerd/v2/cmd/containerd"},
			{"containerd-shim-runc-v2", "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"},
			{"ctr", "github.com/containerd/containerd/v2/cmd/ctr"},
		},
	},
	// runc with seccomp, as distributions build it: containerd confines
	// every Pod sandbox with its default profile. Needs libseccomp-dev.
	Runc: {
		module:   "runc",
		cacheKey: "runc-" + RuncVersion + "-seccomp",
		ldflags:  "-X main.version=" + strings.TrimPrefix(RuncVersion, "v"),
		tags:     "seccomp urfave_cli_no_docs",
		outputs:  []output{{"runc", "github.com/opencontainers/runc"}},
	},
	Crictl: {
		module:   "crictl",
		cacheKey: "cri-tools-" + CriToolsVersion,
		outputs:  []output{{"crictl", "sigs.k8s.io/cri-tools/cmd/crictl"}},
	},
	Etcd: {
		module:   "etcd",
		cacheKey: "etcd-" + EtcdVersion,
		outputs:  []output{{"etcd", "go.etcd.io/etcd/server/v3"}},
	},
	CNIPlugins: {
		module:   "cni",
		cacheKey: "cni-plugins-" + CNIPluginsVersion + "-cnitool-" + CNIToolVersion,
		isDir:    true,
		outputs: []output{
			{"bridge", "github.com/containernetworking/plugins/plugins/main/bridge"},
			{"ptp", "github.com/containernetworking/plugins/plugins/main/ptp"},
			{"host-local", "github.com/containernetworking/plugins/plugins/ipam/host-local"},
			{"loopback", "github.com/containernetworking/plugins/plugins/main/loopback"},
			{"portmap", "github.com/containernetworking/plugins/plugins/meta/portmap"},
			{"cnitool", "github.com/containernetworking/cni/cnitool"},
		},
	},
}

// step is one `go build` to run: package pkg of the module in dir, written
// to out.
type step struct {
	dir     string
	pkg     string
	out     string
	ldflags string
	tags    string
}

// plan is the pure part of Ensure: for a repository root, the path Ensure
// returns and the build steps for every output (built or not).
func plan(root string, tool Tool) (result string, steps []step, err error) {
	s, ok := specs[tool]
	if !ok {
		return "", nil, fmt.Errorf("unknown tool %q", tool)
	}
	cache := filepath.Join(root, ".cache", "bin", s.cacheKey)
	for _, o := range s.outputs {
		steps = append(steps, step{
			dir:     filepath.Join(root, "integration", "tools", s.module),
			pkg:     o.pkg,
			out:     filepath.Join(cache, o.name),
			ldflags: s.ldflags,
			tags:    s.tags,
		})
	}
	if s.isDir {
		return cache, steps, nil
	}
	return steps[0].out, steps, nil
}
