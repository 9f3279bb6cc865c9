package kubelet

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/integration/binaries"
	"github.com/sluicenet/sluice/integration/cluster"
	"github.com/sluicenet/sluice/pkg/nstest"
)

// hostState is what a real Node must leave as it found it on the machine.
type hostState struct {
	sysctls map[string]string // the kubelet's tunables, host values
	mounts  []string          // "mountpoint fstype source", sorted
	cgroups map[string]bool   // every cgroup directory
}

func readHost(t *testing.T) hostState {
	t.Helper()
	s := hostState{sysctls: map[string]string{}, cgroups: map[string]bool{}}
	for _, p := range cluster.KernelTunables() {
		b, err := os.ReadFile(filepath.Join("/proc/sys", p))
		if err != nil {
			t.Fatal(err)
		}
		s.sysctls[p] = strings.TrimSpace(string(b))
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	// Other test packages run at the same time and make namespaces of
	// their own (sltest-<their pid>-...): those mounts are theirs.
	ours := fmt.Sprintf("%s%d-", nstest.Prefix, os.Getpid())
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		pre, post, _ := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 2 {
			continue
		}
		base := filepath.Base(f[4])
		if strings.HasPrefix(base, nstest.Prefix) && !strings.HasPrefix(base, ours) {
			continue
		}
		s.mounts = append(s.mounts, f[4]+" "+g[0]+" "+g[1])
	}
	sort.Strings(s.mounts)
	_ = filepath.WalkDir("/sys/fs/cgroup", func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			s.cgroups[p] = true
		}
		return nil
	})
	return s
}

// runtimeProcs lists the processes running a binary of the real-Node
// runtime (kubelet, containerd, its shim, runc) from this repository's
// cache. Other test packages run at the same time with etcd and API
// servers from the same cache: those are not counted.
func runtimeProcs(t *testing.T) []string {
	t.Helper()
	root, err := binaries.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(root, ".cache", "bin") + "/"
	runtime := map[string]bool{"kubelet": true, "containerd": true, "containerd-shim-runc-v2": true, "runc": true}
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		exe, err := os.Readlink("/proc/" + e.Name() + "/exe")
		if err == nil && strings.HasPrefix(exe, cache) && runtime[filepath.Base(exe)] {
			out = append(out, e.Name()+" "+exe)
		}
	}
	return out
}

// A real Node runs a Pod, and the kubelet's sysctl writes, its mounts, its
// cgroups and its processes all stay inside what the test made, and are
// gone after Close. The machine reboots on any oops with kernel.panic=1:
// the kubelet would set it to 10 and kernel.panic_on_oops to 1.
func TestRealNodeLeavesTheHostAsItWas(t *testing.T) {
	nstest.RequireRoot(t)
	if testing.Short() {
		t.Skip("starts containerd and a kubelet")
	}
	before := readHost(t)
	if procs := runtimeProcs(t); len(procs) != 0 {
		t.Fatalf("runtime processes before the test: %v", procs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := cluster.New(t, cluster.Options{Nodes: 1, Kubelet: true})
	n := c.Nodes[0]

	pod, err := c.CreateRealPod(ctx, cluster.RealPod{Node: n.Name, Namespace: "default", Name: "sleeper"}, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ip, err := netip.ParseAddr(pod.Status.PodIP)
	if err != nil || !n.PodCIDR.Contains(ip) {
		t.Fatalf("pod IP %q is not in %s's Pod CIDR %s", pod.Status.PodIP, n.Name, n.PodCIDR)
	}
	// The kernel holds the Pod: its address answers from the Node.
	if _, err := n.NS.Run("ping", "-c", "1", "-W", "2", ip.String()); err != nil {
		t.Errorf("the Pod's address does not answer on %s: %v", n.Name, err)
	}

	during := readHost(t)
	for p, v := range before.sysctls {
		if during.sysctls[p] != v {
			t.Errorf("host %s changed while the kubelet ran: %s → %s", p, v, during.sysctls[p])
		}
	}
	// The kubelet did write them: into the Node's private copies.
	for p, want := range map[string]string{"kernel/panic": "10", "kernel/panic_on_oops": "1", "vm/overcommit_memory": "1"} {
		b, err := os.ReadFile(n.NodeSysctlFile(p))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(b)); got != want {
			t.Errorf("the Node's private %s = %q, want the kubelet's %q (did it write elsewhere?)", p, got, want)
		}
	}
	subtree := filepath.Base(c.CgroupSubtree())
	var inSubtree int
	for dir := range during.cgroups {
		if before.cgroups[dir] {
			continue
		}
		if !strings.Contains(dir+"/", "/"+subtree+"/") {
			t.Errorf("cgroup %s made outside the test's subtree %s", dir, c.CgroupSubtree())
		}
		if strings.Contains(dir, "/kubepods") {
			inSubtree++
		}
	}
	if inSubtree == 0 {
		t.Error("the kubelet made no kubepods cgroup under the test's subtree")
	}
	if len(runtimeProcs(t)) < 3 {
		t.Errorf("expected the kubelet, containerd and a shim running, saw %v", runtimeProcs(t))
	}

	if err := c.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	after := readHost(t)
	for p, v := range before.sysctls {
		if after.sysctls[p] != v {
			t.Errorf("host %s changed: %s → %s", p, v, after.sysctls[p])
		}
	}
	if strings.Join(after.mounts, "\n") != strings.Join(before.mounts, "\n") {
		t.Errorf("host mounts changed:\nbefore:\n%s\nafter:\n%s", strings.Join(before.mounts, "\n"), strings.Join(after.mounts, "\n"))
	}
	for dir := range after.cgroups {
		if !before.cgroups[dir] {
			t.Errorf("cgroup %s left behind", dir)
		}
	}
	if procs := runtimeProcs(t); len(procs) != 0 {
		t.Errorf("runtime processes outlived the test: %v", procs)
	}
}
