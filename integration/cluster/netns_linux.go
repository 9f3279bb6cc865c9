package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/sluicenet/sluice/pkg/nstest"
)

// clusterSeq numbers the clusters of one process so that their namespace
// names never collide.
var clusterSeq atomic.Int64

// newNS creates the namespace "sltest-<pid>-<name>" with lo up. It follows
// nstest's naming, so nstest.Sweep removes what a killed run left behind;
// it exists because nstest.New needs a testing.TB and `make demo` and the
// benchmarks have none. The caller deletes it (Cluster.Close does).
func newNS(name string) (*nstest.NS, error) {
	full := fmt.Sprintf("%s%d-%s", nstest.Prefix, os.Getpid(), name)
	if out, err := exec.Command("ip", "netns", "add", full).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %w: %s", full, err, out)
	}
	n := &nstest.NS{Name: full, Path: filepath.Join("/run/netns", full)}
	if _, err := n.Run("ip", "link", "set", "lo", "up"); err != nil {
		n.Delete()
		return nil, err
	}
	return n, nil
}

// dialIn opens a TCP connection whose socket is created inside the
// namespace at nsPath. A socket stays in the namespace it was created in,
// so the connection is usable from any goroutine afterwards.
// ns.WithNetNSPath switches a locked thread and switches it back.
func dialIn(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		conn = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s in %s: %w", addr, filepath.Base(nsPath), err)
	}
	return conn, nil
}

// listenIn opens a listener inside the namespace at nsPath.
func listenIn(nsPath, network, addr string) (net.Listener, error) {
	var l net.Listener
	err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s in %s: %w", addr, filepath.Base(nsPath), err)
	}
	return l, nil
}

// rpFilterSysctls are the sysctls that give strict reverse-path filtering
// and forwarding in a Node namespace. "default" covers interfaces created
// later (cni0, Pod veths); setting the existing interfaces too makes the
// intent explicit, since the kernel uses max(all, <iface>).
func rpFilterSysctls(ifaces []string, forward bool) map[string]string {
	s := map[string]string{
		"net/ipv4/conf/all/rp_filter":     "1",
		"net/ipv4/conf/default/rp_filter": "1",
	}
	for _, i := range ifaces {
		s["net/ipv4/conf/"+i+"/rp_filter"] = "1"
	}
	if forward {
		s["net/ipv4/ip_forward"] = "1"
	}
	return s
}

// setSysctls writes sysctls inside the namespace: /proc/sys/net resolves to
// the network namespace of the thread that opens it.
func setSysctls(n *nstest.NS, values map[string]string) error {
	return n.Do(func() error {
		for k, v := range values {
			if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
				return fmt.Errorf("sysctl %s=%s in %s: %w", strings.ReplaceAll(k, "/", "."), v, n.Name, err)
			}
		}
		return nil
	})
}

// runBatch runs `ip -batch` inside the namespace: one exec for many
// commands keeps the cluster start fast.
func runBatch(n *nstest.NS, cmds []string) error {
	if len(cmds) == 0 {
		return nil
	}
	c := n.Cmd("ip", "-batch", "-")
	c.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("ip -batch in %s: %w: %s", n.Name, err, out)
	}
	return nil
}

// newPodNS is newNS without exec'ing ip(8): a Pod is made per test step
// and benchmarks make many, so the namespace is created in-process (on a
// locked thread that is switched back, or discarded if that fails), with lo
// up and the given sysctls set while the thread is inside.
func newPodNS(name string, sysctls map[string]string) (*nstest.NS, error) {
	full := fmt.Sprintf("%s%d-%s", nstest.Prefix, os.Getpid(), name)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		h, err := netns.NewNamed(full)
		if err != nil {
			// NewNamed may have moved the thread before failing.
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
			errc <- fmt.Errorf("create netns %s: %w", full, err)
			return
		}
		h.Close()
		err = initNS(sysctls)
		if e := netns.Set(orig); e != nil {
			// Leave the thread locked: the runtime ends it with this goroutine.
			errc <- errors.Join(err, fmt.Errorf("switch back from %s: %w", full, e))
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	n := &nstest.NS{Name: full, Path: filepath.Join("/run/netns", full)}
	if err := <-errc; err != nil {
		n.Delete()
		return nil, err
	}
	return n, nil
}

// initNS brings lo up and writes sysctls in the current thread's netns.
func initNS(sysctls map[string]string) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	for k, v := range sysctls {
		if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", k, v, err)
		}
	}
	return nil
}
