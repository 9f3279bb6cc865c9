//go:build linux

package nstest

import (
	"os/exec"
	"strings"
	"testing"
)

func TestNewVethAndCleanup(t *testing.T) {
	RequireRoot(t)
	var name string
	t.Run("inner", func(t *testing.T) {
		a := New(t, "a")
		b := New(t, "b")
		name = a.Name
		Veth(t, a, "va", b, "vb")
		a.MustRun(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "va")
		b.MustRun(t, "ip", "addr", "add", "192.0.2.2/24", "dev", "vb")
		a.MustRun(t, "ping", "-c1", "-W1", "192.0.2.2")
	})
	out := string(must(t, "ip", "netns", "list"))
	if strings.Contains(out, name) {
		t.Fatalf("namespace %s survived its test", name)
	}
}

func TestLAN(t *testing.T) {
	RequireRoot(t)
	lan := NewLAN(t, "lan")
	a, b := New(t, "a"), New(t, "b")
	lan.Plug(t, a, "eth0", "192.0.2.1/24")
	lan.Plug(t, b, "eth0", "192.0.2.2/24")
	a.MustRun(t, "ping", "-c1", "-W1", "192.0.2.2")
	if ports := lan.NS.MustRun(t, "ip", "-o", "link", "show", "master", "br0"); !strings.Contains(ports, "p0") || !strings.Contains(ports, "p1") {
		t.Fatalf("bridge ports: %s", ports)
	}
}

func must(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", name, err, out)
	}
	return out
}
