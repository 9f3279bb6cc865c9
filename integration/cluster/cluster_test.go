//go:build linux

package cluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicenet/sluice/pkg/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestCluster brings up the default topology once and checks, without any
// helper running: the API objects, the primary CNI's masquerade to the
// Node IP, Pod↔Pod across Nodes with Pod IPs preserved, rp_filter, and
// the fault injectors.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	c := New(t, Options{})
	ctx := testCtx(t)
	if err := c.CreateNamespace(ctx, "prod", map[string]string{"env": "prod"}); err != nil {
		t.Fatal(err)
	}
	pa, err := c.AddPod(ctx, "node-a", "prod", "web-a", map[string]string{"app": "web"})
	if err != nil {
		t.Fatal(err)
	}
	pb, err := c.AddPod(ctx, "node-b", "prod", "web-b", map[string]string{"app": "web"})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("api objects", func(t *testing.T) {
		nodes, err := c.Client().CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(nodes.Items) != 3 {
			t.Fatalf("%d Nodes in the API, want 3", len(nodes.Items))
		}
		for _, n := range nodes.Items {
			want := c.Node(n.Name)
			if want == nil {
				t.Fatalf("unexpected Node %s", n.Name)
			}
			if len(n.Status.Addresses) == 0 || n.Status.Addresses[0].Address != want.IP.String() {
				t.Errorf("Node %s addresses %v, want InternalIP %s", n.Name, n.Status.Addresses, want.IP)
			}
			if n.Spec.PodCIDR != want.PodCIDR.String() || n.Labels["kubernetes.io/hostname"] != n.Name {
				t.Errorf("Node %s podCIDR %s labels %v", n.Name, n.Spec.PodCIDR, n.Labels)
			}
		}
		pod, err := c.Client().CoreV1().Pods("prod").Get(ctx, "web-a", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if pod.Status.PodIP != pa.IP.String() || pod.Spec.NodeName != "node-a" || pod.Status.Phase != "Running" || pod.Labels["app"] != "web" {
			t.Errorf("Pod object: ip %s node %s phase %s labels %v; want ip %s on node-a", pod.Status.PodIP, pod.Spec.NodeName, pod.Status.Phase, pod.Labels, pa.IP)
		}
		if !c.Node("node-a").PodCIDR.Contains(pa.IP) || !c.Node("node-b").PodCIDR.Contains(pb.IP) {
			t.Errorf("pod IPs %s, %s outside their Node's CIDR", pa.IP, pb.IP)
		}
		if _, err := c.SluiceClient().SluiceV1alpha1().Egresses().List(ctx, metav1.ListOptions{}); err != nil {
			t.Errorf("Egress CRD not served: %v", err)
		}
	})

	t.Run("pod to ext leaves with the node IP", func(t *testing.T) {
		for _, p := range []*Pod{pa, pb} {
			got, err := c.Whoami(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			if got != p.Node.IP {
				t.Errorf("ext saw %s from %s, want its Node IP %s", got, p, p.Node.IP)
			}
		}
	})

	t.Run("pod to pod across nodes keeps pod IPs", func(t *testing.T) {
		seen := listenInPod(t, pb, 9000)
		conn, err := pa.Dial(ctx, net.JoinHostPort(pb.IP.String(), "9000"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if got := <-seen; got != pa.IP.String() {
			t.Errorf("pod %s saw source %s, want %s", pb, got, pa.IP)
		}
	})

	t.Run("rp_filter is strict everywhere", func(t *testing.T) {
		for _, ns := range []*nstest.NS{c.Node("node-a").NS, pa.NS} {
			out, err := ns.Run("sh", "-c", "grep -H . /proc/sys/net/ipv4/conf/*/rp_filter")
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				if !strings.HasSuffix(line, ":1") {
					t.Errorf("%s: %s", ns.Name, line)
				}
			}
		}
	})

	t.Run("partition and heal", func(t *testing.T) {
		if err := c.Partition(ctx, []string{"node-a"}, []string{"node-b"}); err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		if conn, err := pa.Dial(short, net.JoinHostPort(pb.IP.String(), "9001")); err == nil {
			conn.Close()
			t.Error("pod to pod connected across a partition")
		}
		cancel()
		if got, err := c.Whoami(ctx, pa); err != nil || got != pa.Node.IP {
			t.Errorf("ext unreachable from a partitioned node: %s %v", got, err)
		}
		if err := c.Heal(ctx); err != nil {
			t.Fatal(err)
		}
		seen := listenInPod(t, pb, 9001)
		conn, err := pa.Dial(ctx, net.JoinHostPort(pb.IP.String(), "9001"))
		if err != nil {
			t.Fatalf("after heal: %v", err)
		}
		conn.Close()
		<-seen
	})

	t.Run("uplink down and up", func(t *testing.T) {
		if err := c.UplinkDown(ctx, "node-a"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Whoami(ctx, pa); err == nil {
			t.Error("whoami worked with the uplink down")
		}
		if err := c.UplinkUp(ctx, "node-a"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Whoami(ctx, pa); err != nil {
			t.Errorf("after uplink up: %v", err)
		}
	})

	t.Run("loss", func(t *testing.T) {
		if err := c.Loss(ctx, "node-a", 1); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Whoami(ctx, pa); err == nil {
			t.Error("whoami worked through 100% loss")
		}
		if err := c.Loss(ctx, "node-a", 0); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Whoami(ctx, pa); err != nil {
			t.Errorf("after loss removed: %v", err)
		}
	})

	t.Run("del pod", func(t *testing.T) {
		if err := c.DelPod(ctx, pb); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Client().CoreV1().Pods("prod").Get(ctx, "web-b", metav1.GetOptions{}); err == nil {
			t.Error("pod object survived DelPod")
		}
		// host-local must have released the IP.
		lease := filepath.Join(pb.Node.Paths.IPAMDir, primaryNetName, pb.IP.String())
		if _, err := os.Stat(lease); !os.IsNotExist(err) {
			t.Errorf("host-local lease %s survived CNI DEL: %v", lease, err)
		}
		if pb.NS != nil {
			t.Error("pod namespace not released")
		}
	})
}

// listenInPod accepts one connection inside the Pod and reports the peer
// address it saw.
func listenInPod(t *testing.T, p *Pod, port int) <-chan string {
	t.Helper()
	l, err := listenIn(p.NS.Path, "tcp", net.JoinHostPort(p.IP.String(), strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	seen := make(chan string, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			seen <- err.Error()
			return
		}
		defer conn.Close()
		seen <- sourceIP(conn)
		_, _ = io.Copy(io.Discard, conn)
	}()
	return seen
}

// TestCloseLeavesNothing starts a cluster with a process running in a Node
// (standing in for a helper) and a frozen Node, closes it, and checks that
// no namespace and no process of it remain.
func TestCloseLeavesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	nstest.RequireRoot(t)
	ctx := testCtx(t)
	// A stand-in helper that ignores its flags and ignores SIGTERM, so
	// Close has to escalate to SIGKILL.
	fakeHelper := filepath.Join(t.TempDir(), "helperd")
	if err := os.WriteFile(fakeHelper, []byte("#!/bin/sh\ntrap '' TERM\nsleep 600 & wait\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := Start(ctx, Options{Nodes: 2, ExtServers: 2, HelperBinary: fakeHelper})
	if err != nil {
		if c != nil {
			c.Close()
		}
		t.Fatal(err)
	}
	t.Logf("cluster ready in %s", c.Started.Round(time.Millisecond))
	names := c.Namespaces()
	p, err := c.AddPod(ctx, "node-a", "default", "p", nil)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	if len(c.Ext) != 2 {
		c.Close()
		t.Fatalf("%d external servers, want 2", len(c.Ext))
	}
	if got, err := c.Ext[1].Whoami(ctx, p); err != nil || got != c.Node("node-a").IP || c.Ext[1].IP.String() != "192.0.2.101" {
		t.Errorf("second external server at %s saw %s (%v), want %s", c.Ext[1].IP, got, err, c.Node("node-a").IP)
	}
	if err := c.StartHelper("node-a"); err != nil {
		c.Close()
		t.Fatal(err)
	}
	helperPID := c.HelperPID("node-a")
	sleeper := c.Node("node-b").NS.Cmd("sleep", "600")
	if err := sleeper.Start(); err != nil {
		c.Close()
		t.Fatal(err)
	}
	go func() { _ = sleeper.Wait() }()
	if err := c.FreezeNode("node-b"); err != nil {
		c.Close()
		t.Fatal(err)
	}
	cpPIDs, err := nsPIDs(c.CP.Name)
	if err != nil || len(cpPIDs) < 2 {
		c.Close()
		t.Fatalf("etcd and kube-apiserver not found in %s: %v %v", c.CP.Name, cpPIDs, err)
	}
	pids := append([]int{sleeper.Process.Pid, helperPID}, cpPIDs...)
	dir := c.Dir
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Errorf("namespace %s survived Close", n)
		}
	}
	if strings.Contains(string(out), fmt.Sprintf("%s%d-", nstest.Prefix, os.Getpid())) {
		t.Errorf("a namespace of this process survived Close:\n%s", out)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("pid %d survived Close", pid)
		}
	}
	if out, err := exec.Command("pgrep", "-af", dir).Output(); err == nil {
		t.Errorf("processes of the cluster survived Close:\n%s", out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("cluster dir %s survived Close: %v", dir, err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestNodeMasquerade checks the flannel-style mode: Pods still leave with
// their Node's IP and keep their IPs Pod to Pod, with no per-Pod nat chain.
func TestNodeMasquerade(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	c := New(t, Options{Nodes: 2, Masquerade: MasqueradeNode})
	ctx := testCtx(t)
	start := time.Now()
	pa, err := c.AddPod(ctx, "node-a", "default", "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("AddPod took %s", time.Since(start).Round(time.Millisecond))
	pb, err := c.AddPod(ctx, "node-b", "default", "b", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.Whoami(ctx, pa); err != nil || got != pa.Node.IP {
		t.Errorf("ext saw %s (%v), want node-a's %s", got, err, pa.Node.IP)
	}
	seen := listenInPod(t, pb, 9000)
	conn, err := pa.Dial(ctx, net.JoinHostPort(pb.IP.String(), "9000"))
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if got := <-seen; got != pa.IP.String() {
		t.Errorf("pod b saw %s, want pod a's %s", got, pa.IP)
	}
	out, err := c.Exec(ctx, "node-a", "iptables", "-w", "-t", "nat", "-S")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "CNI-") {
		t.Errorf("node mode left per-Pod CNI chains:\n%s", out)
	}
}
