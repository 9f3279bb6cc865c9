package binaries

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPlan(t *testing.T) {
	tests := []struct {
		tool       Tool
		wantResult string
		wantOuts   []string
		wantDir    string
	}{
		{KubeAPIServer, "/r/.cache/bin/kubernetes-v1.37.2/kube-apiserver", []string{"kube-apiserver"}, "/r/integration/tools/kube"},
		{Kubectl, "/r/.cache/bin/kubernetes-v1.37.2/kubectl", []string{"kubectl"}, "/r/integration/tools/kube"},
		{Etcd, "/r/.cache/bin/etcd-v3.7.3/etcd", []string{"etcd"}, "/r/integration/tools/etcd"},
		{CNIPlugins, "/r/.cache/bin/cni-plugins-v1.9.1-cnitool-v1.3.0",
			[]string{"bridge", "ptp", "host-local", "loopback", "portmap", "cnitool"}, "/r/integration/tools/cni"},
		{Kubelet, "/r/.cache/bin/kubernetes-v1.37.2/kubelet", []string{"kubelet"}, "/r/integration/tools/kube"},
		{KubeControllerManager, "/r/.cache/bin/kubernetes-v1.37.2/kube-controller-manager", []string{"kube-controller-manager"}, "/r/integration/tools/kube"},
		{KubeScheduler, "/r/.cache/bin/kubernetes-v1.37.2/kube-scheduler", []string{"kube-scheduler"}, "/r/integration/tools/kube"},
		{Containerd, "/r/.cache/bin/containerd-v2.4.2",
			[]string{"containerd", "containerd-shim-runc-v2", "ctr"}, "/r/integration/tools/containerd"},
		{Runc, "/r/.cache/bin/runc-v1.5.3-seccomp/runc", []string{"runc"}, "/r/integration/tools/runc"},
		{Crictl, "/r/.cache/bin/cri-tools-v1.37.0/crictl", []string{"crictl"}, "/r/integration/tools/crictl"},
	}
	for _, tt := range tests {
		t.Run(string(tt.tool), func(t *testing.T) {
			result, steps, err := plan("/r", tt.tool)
			if err != nil {
				t.Fatal(err)
			}
			if result != tt.wantResult {
				t.Errorf("result = %q, want %q", result, tt.wantResult)
			}
			if len(steps) != len(tt.wantOuts) {
				t.Fatalf("got %d steps, want %d", len(steps), len(tt.wantOuts))
			}
			for i, s := range steps {
				if filepath.Base(s.out) != tt.wantOuts[i] || s.dir != tt.wantDir {
					t.Errorf("step %d = %+v, want out %s in %s", i, s, tt.wantOuts[i], tt.wantDir)
				}
				if !strings.HasPrefix(s.out, "/r/.cache/bin/") {
					t.Errorf("step %d writes outside the cache: %s", i, s.out)
				}
			}
		})
	}
	_, steps, _ := plan("/r", KubeAPIServer)
	if !strings.Contains(steps[0].ldflags, "k8s.io/component-base/version.gitVersion=v1.37.2") {
		t.Errorf("kube-apiserver is not stamped with its version: %q", steps[0].ldflags)
	}
	if !strings.HasPrefix(KubernetesVersion, "v"+kubeMajor+"."+kubeMinor+".") {
		t.Errorf("kubeMajor/kubeMinor %s.%s do not match %s", kubeMajor, kubeMinor, KubernetesVersion)
	}
	if _, _, err := plan("/r", "nope"); err == nil {
		t.Error("plan of an unknown tool succeeded")
	}
}

// The versions in the cache keys must be the ones the tool modules build,
// or a bumped module would be served a stale cached binary.
func TestVersionsMatchToolModules(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ module, require string }{
		{"kube", "k8s.io/kubernetes " + KubernetesVersion},
		{"etcd", "go.etcd.io/etcd/server/v3 " + EtcdVersion},
		{"cni", "github.com/containernetworking/plugins " + CNIPluginsVersion},
		{"cni", "github.com/containernetworking/cni " + CNIToolVersion},
		{"containerd", "github.com/containerd/containerd/v2 " + ContainerdVersion},
		{"runc", "github.com/opencontainers/runc " + RuncVersion},
		{"crictl", "sigs.k8s.io/cri-tools " + CriToolsVersion},
	}
	for _, tt := range tests {
		b, err := os.ReadFile(filepath.Join(root, "integration", "tools", tt.module, "go.mod"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "\t"+tt.require+"\n") && !strings.Contains(string(b), "require "+tt.require+"\n") {
			t.Errorf("integration/tools/%s/go.mod does not require %q", tt.module, tt.require)
		}
	}
}

func TestRepoRoot(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "integration", "binaries", "tools.go")); err != nil {
		t.Errorf("RepoRoot() = %s, which does not hold this package: %v", root, err)
	}
	if isRepoRoot(t.TempDir()) {
		t.Error("an empty directory was taken for the repository root")
	}
}
