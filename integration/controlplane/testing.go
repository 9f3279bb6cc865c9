package controlplane

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// startTimeout covers a cold build of every binary plus startup.
const startTimeout = 30 * time.Minute

// StartForTest starts a loopback control plane in t.TempDir() and stops it
// at cleanup, which the testing package runs even when the test panics.
// When the test failed, the tails of both logs are printed.
func StartForTest(t testing.TB) *ControlPlane {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	dir := t.TempDir()
	cp, err := Start(ctx, Options{Dir: dir})
	if err != nil {
		t.Logf("etcd log:\n%s", Tail(dir+"/etcd.log", 40))
		t.Logf("kube-apiserver log:\n%s", Tail(dir+"/kube-apiserver.log", 40))
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() {
		cp.Stop()
		if t.Failed() {
			t.Logf("etcd log (tail):\n%s", Tail(cp.EtcdLog, 40))
			t.Logf("kube-apiserver log (tail):\n%s", Tail(cp.APIServerLog, 40))
		}
	})
	return cp
}

// Tail returns the last n lines of a file, or a note when it cannot be read.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// RunShared runs a test binary's tests against one control plane that all
// of them share, as a TestMain does: it starts etcd and kube-apiserver in a
// temporary directory named for name, installs the CRDs, hands the control
// plane to use, runs m and stops everything, and returns the exit code.
// Under -short nothing is started and use is not called: the tests skip.
func RunShared(m *testing.M, name string, use func(*ControlPlane)) int {
	if shortFlag(os.Args[1:]) {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "sluice-"+name+"-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cp, err := Start(ctx, Options{Dir: dir})
	if err != nil {
		fmt.Fprintf(os.Stderr, "start control plane: %v\netcd log:\n%s\nkube-apiserver log:\n%s\n", err,
			Tail(dir+"/etcd.log", 40), Tail(dir+"/kube-apiserver.log", 40))
		return 1
	}
	defer cp.Stop()
	if err := cp.InstallCRDs(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	use(cp)
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "kube-apiserver log (tail):\n%s\n", Tail(cp.APIServerLog, 40))
	}
	return code
}

// shortFlag reports whether args (a test binary's) set -short; TestMain
// runs before m.Run parses the flags.
func shortFlag(args []string) bool {
	for _, a := range args {
		if a == "-test.short" || a == "-test.short=true" {
			return true
		}
	}
	return false
}
