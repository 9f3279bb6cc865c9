package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// helperGrace is how long a helper gets after SIGTERM before SIGKILL.
const helperGrace = 5 * time.Second

// HelperArgs is the command line StartHelper gives node's sluice-helperd,
// before StartHelper's extra arguments: the defaults (node name,
// kubeconfig, cluster CIDRs, uplink, per-node sockets and state, gossip),
// then Options.HelperArgs. Go's flag package keeps the last value of a
// repeated flag, so callers override a default by repeating it.
func (c *Cluster) HelperArgs(n *Node) []string {
	args := defaultHelperArgs(n.Name, c.Kubeconfig(), n.Paths)
	return append(args, c.Opts.HelperArgs...)
}

// StartHelper starts sluice-helperd inside the Node's namespace, logging
// to Node.Paths.HelperLog (appended across restarts). It fails if the
// Node's helper already runs.
func (c *Cluster) StartHelper(node string, extraArgs ...string) error {
	n := c.Node(node)
	if n == nil {
		return fmt.Errorf("start helper: no node %q", node)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.helper != nil {
		return fmt.Errorf("start helper on %s: already running (pid %d)", node, n.helper.Process.Pid)
	}
	if _, err := os.Stat(c.Opts.HelperBinary); err != nil {
		return fmt.Errorf("start helper on %s: %w (run make build)", node, err)
	}
	args := append(c.HelperArgs(n), extraArgs...)
	f, err := os.OpenFile(n.Paths.HelperLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open helper log: %w", err)
	}
	defer f.Close()
	fmt.Fprintf(f, "=== %s start: %s %s\n", time.Now().Format(time.RFC3339Nano), c.Opts.HelperBinary, strings.Join(args, " "))
	cmd := n.NS.Cmd(c.Opts.HelperBinary, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start helper on %s: %w", node, err)
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		if lf, e := os.OpenFile(n.Paths.HelperLog, os.O_WRONLY|os.O_APPEND, 0o644); e == nil {
			fmt.Fprintf(lf, "=== %s exit: %v\n", time.Now().Format(time.RFC3339Nano), err)
			lf.Close()
		}
		close(done)
	}()
	n.helper = cmd
	n.helperDone = done
	return nil
}

// StartHelpers starts the helper on every Node, then waits (WaitHelper,
// each bounded at limit) until all of them serve.
func (c *Cluster) StartHelpers(ctx context.Context, limit time.Duration) error {
	for _, n := range c.Nodes {
		if err := c.StartHelper(n.Name); err != nil {
			return err
		}
	}
	for _, n := range c.Nodes {
		if err := c.WaitHelper(ctx, n.Name, limit); err != nil {
			return err
		}
	}
	return nil
}

// WaitHelper waits until the Node's helper serves its CNI and status
// sockets, or fails early when the helper exits. It bounds the wait at
// limit.
func (c *Cluster) WaitHelper(ctx context.Context, node string, limit time.Duration) error {
	n := c.Node(node)
	if n == nil {
		return fmt.Errorf("wait helper: no node %q", node)
	}
	err := poll(ctx, limit, func() (bool, error) {
		n.mu.Lock()
		done := n.helperDone
		n.mu.Unlock()
		if done == nil {
			return false, fmt.Errorf("helper on %s is not running", node)
		}
		select {
		case <-done:
			return false, fmt.Errorf("helper on %s exited:\n%s", node, tail(n.Paths.HelperLog, 20))
		default:
		}
		for _, sock := range []string{n.Paths.CNISocket, n.Paths.StatusSock} {
			if fi, err := os.Stat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("wait helper on %s: %w", node, err)
	}
	return nil
}

// HelperCLI runs the helper binary's CLI verb (egresses, pods, datapath,
// explain) inside the Node namespace against that Node's status socket,
// and returns its stdout and stderr.
func (c *Cluster) HelperCLI(ctx context.Context, node, verb string, args ...string) (string, error) {
	n := c.Node(node)
	if n == nil {
		return "", fmt.Errorf("helper cli: no node %q", node)
	}
	full := append([]string{verb, "--status-socket=" + n.Paths.StatusSock}, args...)
	return n.Exec(ctx, c.Opts.HelperBinary, full...)
}

// HelperPID is the pid of the Node's running helper, or 0.
func (c *Cluster) HelperPID(node string) int {
	n := c.Node(node)
	if n == nil {
		return 0
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.helper == nil {
		return 0
	}
	return n.helper.Process.Pid
}

// StopHelper stops the Node's helper with SIGTERM (SIGKILL after a grace
// period) and waits for it.
func (c *Cluster) StopHelper(node string) error {
	n := c.Node(node)
	if n == nil {
		return fmt.Errorf("stop helper: no node %q", node)
	}
	n.stopHelper(helperGrace)
	return nil
}

// RestartEach restarts every Node's helper in turn, as a DaemonSet rolling
// update does: stop it (SIGTERM, or SIGKILL when kill, as a crash), wait
// down, start it with extraArgs, wait until it serves, then wait settle
// before the next Node.
func (c *Cluster) RestartEach(ctx context.Context, kill bool, down, settle time.Duration, extraArgs ...string) error {
	grace := helperGrace
	if kill {
		grace = 0
	}
	for _, n := range c.Nodes {
		n.stopHelper(grace)
		time.Sleep(down)
		if err := c.StartHelper(n.Name, extraArgs...); err != nil {
			return err
		}
		if err := c.WaitHelper(ctx, n.Name, 30*time.Second); err != nil {
			return err
		}
		time.Sleep(settle)
	}
	return nil
}

// KillHelper ends the Node's helper with SIGKILL, as a crash would.
func (c *Cluster) KillHelper(node string) error {
	n := c.Node(node)
	if n == nil {
		return fmt.Errorf("kill helper: no node %q", node)
	}
	n.stopHelper(0)
	return nil
}

// stopHelper signals the helper (SIGKILL at once when grace is 0) and
// waits until it has been reaped. A frozen helper is thawed first, or
// SIGTERM would wait for nothing.
func (n *Node) stopHelper(grace time.Duration) {
	n.mu.Lock()
	cmd, done := n.helper, n.helperDone
	n.helper, n.helperDone = nil, nil
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return // already exited and reaped: its pid may belong to someone else now
	default:
	}
	pid := cmd.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGCONT)
	if grace > 0 {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-done:
			return
		case <-time.After(grace):
		}
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	<-done
}

// LogTails returns the last lines of every log the cluster keeps: the
// helpers', etcd's and kube-apiserver's, and on real Nodes containerd's
// and the kubelet's. New prints it when a test fails.
func (c *Cluster) LogTails(lines int) string {
	var b strings.Builder
	paths := []string{}
	for _, n := range c.Nodes {
		paths = append(paths, n.Paths.HelperLog, filepath.Join(n.Paths.Root, "sluice-cni.log"),
			filepath.Join(n.Paths.Root, "containerd.log"), filepath.Join(n.Paths.Root, "kubelet.log"))
	}
	paths = append(paths, filepath.Join(c.controlPlaneDir(), "etcd.log"), filepath.Join(c.controlPlaneDir(), "kube-apiserver.log"))
	if c.Opts.Kubelet {
		paths = append(paths, filepath.Join(c.controlPlaneDir(), "kube-controller-manager.log"), filepath.Join(c.controlPlaneDir(), "kube-scheduler.log"))
	}
	for _, p := range paths {
		if t := tail(p, lines); t != "" {
			fmt.Fprintf(&b, "--- %s (last %d lines)\n%s\n", p, lines, t)
		}
	}
	return b.String()
}

// pids lists the processes inside the Node namespace.
func (n *Node) pids() ([]int, error) { return nsPIDs(n.NS.Name) }

// nsPIDs lists the processes inside a namespace, except this one.
func nsPIDs(name string) ([]int, error) {
	out, err := exec.Command("ip", "netns", "pids", name).Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns pids %s: %w", name, err)
	}
	var pids []int
	self := os.Getpid()
	for _, f := range strings.Fields(string(out)) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err == nil && pid != self {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// alive reports whether pid still runs (a zombie counts as gone).
func alive(pid int) bool {
	st := procState(pid)
	return st != 0 && st != 'Z' && st != 'X'
}

// Placement says, for each of ips, which Nodes hold it on their uplink,
// as "ip@node[+node]" joined by spaces: a string that changes whenever
// an IP moves or is held twice.
func (c *Cluster) Placement(ctx context.Context, ips []netip.Addr) string {
	var parts []string
	for _, ip := range ips {
		var on []string
		for _, n := range c.Nodes {
			addrs, err := c.Exec(ctx, n.Name, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
			if err == nil && strings.Contains(addrs, " "+ip.String()+"/") {
				on = append(on, n.Name)
			}
		}
		parts = append(parts, ip.String()+"@"+strings.Join(on, "+"))
	}
	return strings.Join(parts, " ")
}

// placementWatch samples Placement until its context ends.
type placementWatch struct {
	Start   string // the placement when the watch began
	done    chan struct{}
	moves   []string
	samples int
}

// watchPlacement samples Placement(ips) every interval until ctx ends.
// wait then returns each change from one sample to the next, timed.
func (c *Cluster) watchPlacement(ctx context.Context, ips []netip.Addr, every time.Duration) *placementWatch {
	w := &placementWatch{Start: c.Placement(ctx, ips), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		last := w.Start
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(every):
			}
			now := c.Placement(ctx, ips)
			if ctx.Err() != nil {
				return // a sample cut short by the end is no placement
			}
			w.samples++
			if now != last {
				w.moves = append(w.moves, time.Now().Format("15:04:05.000")+" "+now)
				last = now
			}
		}
	}()
	return w
}

// wait waits for the watch's context to end and returns the changes seen
// (each "hh:mm:ss.mmm placement") and the number of samples taken.
func (w *placementWatch) wait() (moves []string, samples int) {
	<-w.done
	return w.moves, w.samples
}
