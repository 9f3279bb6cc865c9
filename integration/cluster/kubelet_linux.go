package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicenet/sluice/integration/binaries"
	"github.com/sluicenet/sluice/integration/images"
	"github.com/sluicenet/sluice/pkg/nstest"
)

// A real Node (Options.Kubelet) runs containerd, runc and the kubelet
// inside its network namespace and a mount namespace of its own. What the
// kubelet and the runtime would change on a machine stays in that mount
// namespace:
//
//   - /run, /var/log and /opt are fresh tmpfs mounts, and /etc is an
//     overlay whose writes land in the Node's directory; /etc/cni/net.d and
//     /opt/cni/bin are the Node's CNI directories, so that the manifests'
//     hostPath volumes mean what they mean on a real Node;
//   - /sys is the sysfs of the Node's network namespace, with the
//     machine's cgroup hierarchies mounted back under /sys/fs/cgroup;
//   - the sysctls the kubelet sets at start (kernelTunables) are private
//     files bound over their /proc/sys entries, so its writes never reach
//     the machine (whose kernel.panic=1 reboots it on an oops);
//   - the kubelet's cgroup root is the Node's directory in the test's own
//     subtree of every cgroup hierarchy (Cluster.CgroupSubtree), removed at
//     Close.
//
// The mount namespace is held by an anchor process (a shell sleeping after
// it made the mounts); every process of the Node joins it with nsenter, and
// it vanishes with its last process. Nothing is bind-mounted on the
// machine's own tree.

// kernelTunables are the sysctls the kubelet writes at start unless
// protectKernelDefaults is set (setupKernelTunables in the kubelet's
// container manager), as paths under /proc/sys.
var kernelTunables = []string{
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
	"vm/overcommit_memory",
	"vm/panic_on_oom",
}

// KernelTunables returns the paths under /proc/sys the kubelet writes.
func KernelTunables() []string { return append([]string(nil), kernelTunables...) }

// realNode is the runtime and kubelet of one Node.
type realNode struct {
	dir        string // <node root>/real
	anchor     *exec.Cmd
	anchorDone chan struct{}
	cgroup     string // the kubelet's cgroup root, e.g. /sltest-12-c1/node-a
	procs      []*exec.Cmd
}

// Node-private paths (inside its mount namespace) the runtime uses.
const (
	containerdSock = "/run/containerd/containerd.sock"
	kubeletPort    = 10250
)

// CgroupSubtree is this cluster's directory in every cgroup hierarchy
// ("/sltest-<pid>-<tag>"); each real Node's kubelet has its cgroup root
// below it.
func (c *Cluster) CgroupSubtree() string {
	return fmt.Sprintf("/%s%d-%s", nstest.Prefix, os.Getpid(), c.tag)
}

// NodeSysctlFile is where the private copy of sysctl p (a path under
// /proc/sys) of a real Node lives: what the kubelet wrote there.
func (n *Node) NodeSysctlFile(p string) string {
	return filepath.Join(n.Paths.Root, "real", "sysctl", strings.ReplaceAll(p, "/", "."))
}

// cgroupMounts lists the machine's cgroup v1 hierarchies (mount points
// under /sys/fs/cgroup) and whether the machine uses the unified v2 tree.
func cgroupMounts() (v1 []string, unified string, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, "", err
	}
	defer func() { _ = f.Close() }()
	s := bufio.NewScanner(f)
	for s.Scan() {
		// id parent maj:min root mountpoint opts ... - fstype source superopts
		pre, post, ok := strings.Cut(s.Text(), " - ")
		if !ok {
			continue
		}
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(tail) < 1 {
			continue
		}
		switch tail[0] {
		case "cgroup":
			v1 = append(v1, fields[4])
		case "cgroup2":
			unified = fields[4]
		}
	}
	return v1, unified, s.Err()
}

// makeCgroup creates rel (e.g. /sltest-12-c1/node-a) in every hierarchy,
// with cpuset's cpus and mems copied from the parent at each level (a new
// cpuset cgroup starts empty, and no task could join it).
func makeCgroup(rel string) error {
	v1, unified, err := cgroupMounts()
	if err != nil {
		return err
	}
	if unified != "" {
		v1 = append(v1, unified)
	}
	parts := strings.Split(strings.Trim(rel, "/"), "/")
	for _, mnt := range v1 {
		dir := mnt
		for _, p := range parts {
			parent := dir
			dir = filepath.Join(dir, p)
			if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
				return fmt.Errorf("create cgroup %s: %w", dir, err)
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join(parent, f))
				if err != nil {
					continue // not the cpuset hierarchy
				}
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
					return fmt.Errorf("set %s of %s: %w", f, dir, err)
				}
			}
		}
	}
	return nil
}

// removeCgroup kills every task left in rel's tree, in every hierarchy,
// and removes its directories, deepest first.
func removeCgroup(rel string) error {
	v1, unified, err := cgroupMounts()
	if err != nil {
		return err
	}
	if unified != "" {
		v1 = append(v1, unified)
	}
	var errs []error
	for _, mnt := range v1 {
		root := filepath.Join(mnt, rel)
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := rmdirCgroup(dirs[i]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// rmdirCgroup kills the tasks in one cgroup directory and removes it,
// retrying while the kernel reaps them.
func rmdirCgroup(dir string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, pid := range cgroupPIDs(dir) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		err := syscall.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w (tasks %v)", dir, err, cgroupPIDs(dir))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cgroupPIDs reads a cgroup directory's cgroup.procs.
func cgroupPIDs(dir string) []int {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// anchorScript makes the Node's mounts in the fresh mount namespace it
// runs in, prints "ready", and sleeps holding the namespace. $1 is the
// real Node's directory, $2 its CNI conf dir, $3 its CNI bin dir, then
// the kernel tunables.
const anchorScript = `set -eu
D=$1; CONF=$2; BIN=$3; shift 3
mount --make-rprivate /
mkdir -p "$D/cgroup-hold" "$D/sysctl" "$D/etc-upper" "$D/etc-work"
mount --rbind /sys/fs/cgroup "$D/cgroup-hold"
mount -t sysfs sysfs /sys
mount --rbind "$D/cgroup-hold" /sys/fs/cgroup
umount -l "$D/cgroup-hold"
for p in "$@"; do
	f="$D/sysctl/$(echo "$p" | tr / .)"
	cat "/proc/sys/$p" > "$f"
	mount --bind "$f" "/proc/sys/$p"
done
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=755 tmpfs /var/log
mount -t tmpfs -o mode=755 tmpfs /opt
mkdir -p /opt/cni/bin
mount --bind "$BIN" /opt/cni/bin
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$D/etc-upper,workdir=$D/etc-work" /etc
mkdir -p /etc/cni/net.d
mount --bind "$CONF" /etc/cni/net.d
echo ready
exec sleep 2147483647
`

// startAnchor starts the process that holds the Node's mount namespace,
// inside its network namespace, and waits for its mounts.
func (n *Node) startAnchor(ctx context.Context, r *realNode) error {
	args := append([]string{"--net=" + n.NS.Path, "--", "unshare", "--mount", "--propagation", "private", "--",
		"sh", "-c", anchorScript, "anchor", r.dir, n.Paths.ConfDir, n.Paths.BinDir}, kernelTunables...)
	cmd := exec.Command("nsenter", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: start the mount namespace: %w", n.Name, err)
	}
	r.anchor, r.anchorDone = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(r.anchorDone) }()
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "ready" {
			err = fmt.Errorf("unexpected %q", line)
		}
		ready <- err
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case err := <-ready:
		if err != nil {
			return fmt.Errorf("%s: mounts: %w: %s", n.Name, err, stderr.String())
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s: mounts not ready after 30 s: %s", n.Name, stderr.String())
	}
}

// inNode returns a command that runs in the Node's network and mount
// namespaces.
func (n *Node) inNode(ctx context.Context, name string, args ...string) *exec.Cmd {
	r := n.real
	all := append([]string{"--target=" + strconv.Itoa(r.anchor.Process.Pid), "--mount", "--net", "--", name}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", all...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// RunInNode runs a command in a real Node's network and mount namespaces
// and returns its combined output.
func (n *Node) RunInNode(ctx context.Context, name string, args ...string) (string, error) {
	if n.real == nil {
		return "", fmt.Errorf("%s is not a real Node", n.Name)
	}
	out, err := n.inNode(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s %s: %w: %s", n.Name, name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// startDaemon starts a long-running process of the Node, logging to log.
func (n *Node) startDaemon(log string, env []string, name string, args ...string) error {
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	cmd := n.inNode(context.Background(), name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = env
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: start %s: %w", n.Name, filepath.Base(name), err)
	}
	n.real.procs = append(n.real.procs, cmd)
	go func() { _ = cmd.Wait() }()
	return nil
}

// containerdConfig is the runtime's configuration: state under the Node's
// /run, data in its directory, runc with cgroupfs (as the kubelet), CNI
// from the standard directories, the pause image pinned, Pod network
// namespaces kept under the state dir rather than the machine's /run/netns,
// and OOM scores no lower than containerd's own.
func containerdConfig(root, runc string) string {
	return fmt.Sprintf(`version = 3
root = %q
state = "/run/containerd"

[grpc]
  address = %q

[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  enable_selinux = false
  disable_apparmor = true
  tolerate_missing_hugetlb_controller = true
  # This machine's root lacks CAP_SYS_RESOURCE, so no process may lower its
  # oom_score_adj below its parent's: the kubelet's -998 for sandboxes would
  # fail runc. Clamp to containerd's own, as in a user namespace.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = %q
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/opt/cni/bin"]
    conf_dir = "/etc/cni/net.d"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %q

[plugins.'io.containerd.nri.v1.nri']
  disable = true
`, root, containerdSock, runc, images.PauseRef)
}

// kubeletConfig is the kubelet's configuration file for node n.
func kubeletConfig(n *Node, cgroupRoot string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupRoot: %s
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%s
podLogsDir: /var/log/pods
resolvConf: ""
localStorageCapacityIsolation: false
evictionHard: {memory.available: "1Mi", nodefs.available: "1%%", nodefs.inodesFree: "1%%", imagefs.available: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
fileCheckFrequency: 5s
syncFrequency: 10s
nodeStatusUpdateFrequency: 2s
shutdownGracePeriod: 0s
protectKernelDefaults: false
oomScoreAdj: 0
`, n.IP, kubeletPort, cgroupRoot, containerdSock)
}

// startReal brings up node n as a real Node: mount namespace, cgroup
// root, containerd with the test images imported, then the kubelet. The
// Node object exists already (registerNodes); the kubelet adopts it.
func (c *Cluster) startReal(ctx context.Context, n *Node, archive string) error {
	r := &realNode{dir: filepath.Join(n.Paths.Root, "real"), cgroup: c.CgroupSubtree() + "/" + n.Name}
	n.real = r
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return err
	}
	if err := makeCgroup(r.cgroup); err != nil {
		return err
	}
	if err := n.startAnchor(ctx, r); err != nil {
		return err
	}
	containerdDir, err := binaries.Ensure(ctx, binaries.Containerd)
	if err != nil {
		return err
	}
	runc, err := binaries.Ensure(ctx, binaries.Runc)
	if err != nil {
		return err
	}
	kubelet, err := binaries.Ensure(ctx, binaries.Kubelet)
	if err != nil {
		return err
	}
	cfg := filepath.Join(r.dir, "containerd.toml")
	if err := os.WriteFile(cfg, []byte(containerdConfig(filepath.Join(r.dir, "containerd"), runc)), 0o644); err != nil {
		return err
	}
	env := []string{"PATH=" + containerdDir + ":" + filepath.Dir(runc) + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if err := n.startDaemon(filepath.Join(n.Paths.Root, "containerd.log"), env,
		filepath.Join(containerdDir, "containerd"), "--config", cfg); err != nil {
		return err
	}
	ctr := filepath.Join(containerdDir, "ctr")
	if err := poll(ctx, 30*time.Second, func() (bool, error) {
		_, err := n.RunInNode(ctx, ctr, "--address", containerdSock, "version")
		return err == nil, nil
	}); err != nil {
		return fmt.Errorf("%s: containerd did not answer: %w", n.Name, err)
	}
	if _, err := n.RunInNode(ctx, ctr, "--address", containerdSock, "-n", "k8s.io", "images", "import", archive); err != nil {
		return err
	}
	kcfg := filepath.Join(r.dir, "kubelet.yaml")
	if err := os.WriteFile(kcfg, []byte(kubeletConfig(n, r.cgroup)), 0o644); err != nil {
		return err
	}
	root := filepath.Join(r.dir, "kubelet")
	return n.startDaemon(filepath.Join(n.Paths.Root, "kubelet.log"), env, kubelet,
		"--config="+kcfg,
		"--kubeconfig="+c.Kubeconfig(),
		"--hostname-override="+n.Name,
		"--node-ip="+n.IP.String(),
		"--root-dir="+root,
		"--cert-dir="+filepath.Join(root, "pki"),
		"--v=2",
	)
}

// testImages builds the images every real Node imports into one archive
// in the cluster's directory.
func (c *Cluster) testImages(ctx context.Context) (string, error) {
	pause, err := images.Pause(ctx)
	if err != nil {
		return "", err
	}
	path := filepath.Join(c.Dir, "images.tar")
	return path, images.WriteArchive(path, map[string]v1.Image{images.PauseRef: pause})
}

// startRealNodes starts every Node's runtime and kubelet, then waits until
// the API shows each Node Ready (the kubelet's own status: the runtime is
// up and the CNI configuration was found).
func (c *Cluster) startRealNodes(ctx context.Context) error {
	archive, err := c.testImages(ctx)
	if err != nil {
		return err
	}
	for _, n := range c.Nodes {
		if err := c.startReal(ctx, n, archive); err != nil {
			return err
		}
	}
	for _, n := range c.Nodes {
		if err := c.waitNodeReady(ctx, n.Name, 90*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// waitNodeReady waits until the kubelet reports the Node Ready.
func (c *Cluster) waitNodeReady(ctx context.Context, name string, limit time.Duration) error {
	var last string
	err := poll(ctx, limit, func() (bool, error) {
		node, err := c.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				last = fmt.Sprintf("%s: %s", cond.Reason, cond.Message)
				return cond.Status == corev1.ConditionTrue && cond.Reason != "TestCluster", nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("node %s not Ready (last: %s): %w", name, last, err)
	}
	return nil
}

// stopReal stops the kubelet, then containerd, then every process left in
// the Node's pods or its mount namespace (shims, containers), then the
// anchor, and removes the Node's cgroups.
func (n *Node) stopReal() error {
	r := n.real
	if r == nil {
		return nil
	}
	for i := len(r.procs) - 1; i >= 0; i-- {
		p := r.procs[i]
		if p.Process == nil {
			continue
		}
		_ = syscall.Kill(-p.Process.Pid, syscall.SIGTERM)
		deadline := time.Now().Add(5 * time.Second)
		for alive(p.Process.Pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		_ = syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
	}
	var errs []error
	if r.anchor != nil && r.anchor.Process != nil {
		// Shims and containers left behind: the shims share the anchor's
		// mount namespace; Pod processes are in the Node's cgroups.
		mnt, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", r.anchor.Process.Pid))
		for range 50 {
			left := 0
			for _, pid := range pidsInMountNS(mnt) {
				if pid != r.anchor.Process.Pid {
					_ = syscall.Kill(pid, syscall.SIGKILL)
					left++
				}
			}
			if left == 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		_ = syscall.Kill(-r.anchor.Process.Pid, syscall.SIGKILL)
		select {
		case <-r.anchorDone:
		case <-time.After(5 * time.Second):
			errs = append(errs, fmt.Errorf("%s: the mount namespace's anchor did not exit", n.Name))
		}
	}
	if err := removeCgroup(r.cgroup); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// pidsInMountNS lists the processes whose mount namespace is mnt (as
// /proc/<pid>/ns/mnt reads, "mnt:[4026532...]").
func pidsInMountNS(mnt string) []int {
	if mnt == "" {
		return nil
	}
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink("/proc/" + e.Name() + "/ns/mnt"); err == nil && l == mnt {
			out = append(out, pid)
		}
	}
	return out
}

// RealPod describes a Pod for a real Node: CreateRealPod binds it to Node
// itself and the kubelet starts it through containerd.
type RealPod struct {
	Node, Namespace, Name string
	Labels                map[string]string
	Image                 string   // default the pause image
	Command               []string // default the image's entrypoint
}

// CreateRealPod creates the Pod object and waits until the kubelet
// reports it Running with an IP.
func (c *Cluster) CreateRealPod(ctx context.Context, p RealPod, limit time.Duration) (*corev1.Pod, error) {
	if c.Node(p.Node) == nil || c.Node(p.Node).real == nil {
		return nil, fmt.Errorf("create pod %s/%s: %q is not a real Node", p.Namespace, p.Name, p.Node)
	}
	if p.Image == "" {
		p.Image = images.PauseRef
	}
	if err := c.ensureServiceAccount(ctx, p.Namespace); err != nil {
		return nil, err
	}
	grace := int64(1)
	obj := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, Labels: p.Labels},
		Spec: corev1.PodSpec{
			// Bound here rather than by the scheduler: the caller picks
			// the Node. The service-account token volume is mounted as in
			// any cluster (its CA comes from the controller manager's
			// kube-root-ca.crt).
			NodeName:                      p.Node,
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "main", Image: p.Image, Command: p.Command,
				ImagePullPolicy: corev1.PullNever,
			}},
		},
	}
	if _, err := c.client.CoreV1().Pods(p.Namespace).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	var got *corev1.Pod
	err := poll(ctx, limit, func() (bool, error) {
		pod, err := c.client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		got = pod
		return pod.Status.Phase == corev1.PodRunning && pod.Status.PodIP != "", nil
	})
	if err != nil {
		status := "no status"
		if got != nil {
			status = fmt.Sprintf("phase %s, conditions %v, containers %v", got.Status.Phase, got.Status.Conditions, got.Status.ContainerStatuses)
		}
		return got, fmt.Errorf("pod %s/%s not running on %s: %s: %w", p.Namespace, p.Name, p.Node, status, err)
	}
	return got, nil
}
