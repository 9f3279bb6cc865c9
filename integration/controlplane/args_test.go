package controlplane

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func testLayout() layout {
	return layout{dir: "/d", host: "192.0.2.10", etcdClient: 2379, etcdPeer: 2380, apiPort: 6443}
}

func TestEtcdArgs(t *testing.T) {
	args := etcdArgs(testLayout())
	for _, want := range []string{
		"--data-dir=/d/etcd-data",
		"--listen-client-urls=http://192.0.2.10:2379",
		"--advertise-client-urls=http://192.0.2.10:2379",
		"--listen-peer-urls=http://192.0.2.10:2380",
		"--initial-cluster=default=http://192.0.2.10:2380",
	} {
		if !slices.Contains(args, want) {
			t.Errorf("etcd args lack %q: %v", want, args)
		}
	}
}

func TestAPIServerArgs(t *testing.T) {
	args := apiserverArgs(testLayout())
	for _, want := range []string{
		"--etcd-servers=http://192.0.2.10:2379",
		"--bind-address=192.0.2.10",
		"--secure-port=6443",
		"--cert-dir=/d/apiserver-certs",
		"--token-auth-file=/d/tokens.csv",
		"--authorization-mode=RBAC",
		"--service-account-key-file=/d/service-account.key",
		"--service-account-signing-key-file=/d/service-account.key",
		"--service-cluster-ip-range=10.96.0.0/16",
	} {
		if !slices.Contains(args, want) {
			t.Errorf("apiserver args lack %q: %v", want, args)
		}
	}
	for _, a := range args {
		if strings.HasPrefix(a, "--service-account-issuer=") {
			return
		}
	}
	t.Error("apiserver args lack --service-account-issuer")
}

func TestIPv6Layout(t *testing.T) {
	l := layout{host: "::1", etcdClient: 1, apiPort: 2}
	if got, want := l.etcdURL(), "http://[::1]:1"; got != want {
		t.Errorf("etcdURL = %s, want %s", got, want)
	}
	if got, want := l.apiURL(), "https://[::1]:2"; got != want {
		t.Errorf("apiURL = %s, want %s", got, want)
	}
}

func TestTokenLine(t *testing.T) {
	if got, want := tokenLine("abc"), "abc,sluice-admin,sluice-admin,\"system:masters\"\n"; got != want {
		t.Errorf("tokenLine = %q, want %q", got, want)
	}
}

func TestTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(p, []byte("1\n2\n3\n4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := Tail(p, 2); got != "3\n4" {
		t.Errorf("Tail = %q, want %q", got, "3\n4")
	}
	if got := Tail(p, 10); got != "1\n2\n3\n4" {
		t.Errorf("Tail = %q", got)
	}
	if got := Tail(filepath.Join(t.TempDir(), "none"), 2); !strings.HasPrefix(got, "(") {
		t.Errorf("Tail of a missing file = %q", got)
	}
}

// A process that died on a taken port is told apart from other failures,
// so Start retries with fresh ports only then.
func TestPollClassifiesPortInUse(t *testing.T) {
	tests := []struct {
		log      string
		wantPort bool
	}{
		{"listen tcp 127.0.0.1:2379: bind: address already in use\n", true},
		{"some other fatal error\n", false},
	}
	for _, tt := range tests {
		p := &process{name: "etcd", log: filepath.Join(t.TempDir(), "log"), done: make(chan struct{})}
		if err := os.WriteFile(p.log, []byte(tt.log), 0o644); err != nil {
			t.Fatal(err)
		}
		close(p.done)
		err := poll(context.Background(), p, func() (bool, error) { return false, nil })
		if err == nil || errors.Is(err, errPortInUse) != tt.wantPort {
			t.Errorf("log %q: poll error %v, port in use %t, want %t", tt.log, err, errors.Is(err, errPortInUse), tt.wantPort)
		}
	}
}

func TestShortFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{nil, false},
		{[]string{"-test.v", "-test.short"}, true},
		{[]string{"-test.short=true"}, true},
		{[]string{"-test.short=false"}, false},
		{[]string{"-test.run", "TestShort"}, false},
	} {
		if got := shortFlag(tc.args); got != tc.want {
			t.Errorf("shortFlag(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}
