package controlplane

import (
	"context"
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
