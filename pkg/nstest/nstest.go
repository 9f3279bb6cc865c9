//go:build linux

// Package nstest makes throwaway network namespaces for kernel and
// integration tests, and removes them when the test ends, whether it passed,
// failed or panicked.
//
// Every namespace is named "sltest-<pid>-<name>", so a later run can tell
// its own namespaces from those of a run that was killed (Sweep removes the
// latter). Nothing here ever touches the root namespace.
package nstest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Prefix starts the name of every namespace this package creates.
const Prefix = "sltest-"

// NS is a named network namespace created for one test.
type NS struct {
	Name string // as `ip netns` lists it
	Path string // /run/netns/<Name>
}

// RequireRoot skips the test when it does not run as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
}

// New creates a namespace for t, with lo up, and deletes it at cleanup.
// It also ends, at cleanup, every process still running inside it.
func New(t testing.TB, name string) *NS {
	t.Helper()
	RequireRoot(t)
	full := fmt.Sprintf("%s%d-%s", Prefix, os.Getpid(), name)
	if out, err := exec.Command("ip", "netns", "add", full).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", full, err, out)
	}
	n := &NS{Name: full, Path: filepath.Join("/run/netns", full)}
	t.Cleanup(func() { n.Delete() })
	n.MustRun(t, "ip", "link", "set", "lo", "up")
	return n
}

// Delete kills what still runs in the namespace and removes it. It is safe
// to call twice.
func (n *NS) Delete() {
	killPIDs(n.Name)
	_ = exec.Command("ip", "netns", "del", n.Name).Run()
}

// Do runs fn inside the namespace on a locked OS thread.
func (n *NS) Do(fn func() error) error {
	return ns.WithNetNSPath(n.Path, func(ns.NetNS) error { return fn() })
}

// Cmd returns a command that runs inside the namespace.
func (n *NS) Cmd(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command inside the namespace and returns its combined output.
func (n *NS) Run(name string, args ...string) (string, error) {
	out, err := n.Cmd(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), n.Name, err, out)
	}
	return string(out), nil
}

// MustRun is Run that fails the test on error.
func (n *NS) MustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := n.Run(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Veth joins two namespaces with a veth pair, aName in a and bName in b,
// both up.
func Veth(t testing.TB, a *NS, aName string, b *NS, bName string) {
	t.Helper()
	a.MustRun(t, "ip", "link", "add", aName, "type", "veth", "peer", "name", bName, "netns", b.Name)
	a.MustRun(t, "ip", "link", "set", aName, "up")
	b.MustRun(t, "ip", "link", "set", bName, "up")
}

// LAN is one L2 segment for tests: a bridge, br0, in a namespace of its
// own, which other namespaces plug into (the "lan plus N Nodes" every
// kernel test starts from).
type LAN struct {
	NS    *NS
	ports int
}

// NewLAN makes the segment's namespace and its bridge.
func NewLAN(t testing.TB, name string) *LAN {
	t.Helper()
	l := &LAN{NS: New(t, name)}
	l.NS.MustRun(t, "ip", "link", "add", "br0", "type", "bridge")
	l.NS.MustRun(t, "ip", "link", "set", "br0", "up")
	return l
}

// Plug connects n to the segment by a veth, dev in n (up, with addr when
// it is not "", as a prefix such as "192.0.2.11/24") and the next port
// p0, p1, ... on the bridge.
func (l *LAN) Plug(t testing.TB, n *NS, dev, addr string) {
	t.Helper()
	port := fmt.Sprintf("p%d", l.ports)
	l.ports++
	Veth(t, l.NS, port, n, dev)
	l.NS.MustRun(t, "ip", "link", "set", port, "master", "br0")
	if addr != "" {
		n.MustRun(t, "ip", "addr", "add", addr, "dev", dev)
	}
}

// Main is a whole TestMain for a package that makes namespaces: it runs
// Sweep, then the tests, and exits with their code.
func Main(m *testing.M) {
	Sweep()
	os.Exit(m.Run())
}

// Sweep removes namespaces left by earlier test processes that no longer
// run. Call it from TestMain (Main does). Namespaces of live processes are left alone,
// so parallel test binaries do not disturb each other.
func Sweep() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if !strings.HasPrefix(name, Prefix) {
			continue
		}
		pidStr, _, _ := strings.Cut(strings.TrimPrefix(name, Prefix), "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || processAlive(pid) {
			continue
		}
		killPIDs(name)
		_ = exec.Command("ip", "netns", "del", name).Run()
	}
}

func processAlive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// killPIDs ends the processes inside a namespace that this test run started.
// `ip netns pids` lists only processes whose network namespace is this one,
// which the test created, so nothing outside is touched.
func killPIDs(name string) {
	out, err := exec.Command("ip", "netns", "pids", name).Output()
	if err != nil {
		return
	}
	self := os.Getpid()
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid == self {
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	runtime.Gosched()
}
