package cniproto

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// childEnv makes the test binary act as a non-root client (see TestMain).
const childEnv = "CNIPROTO_TEST_CLIENT_SOCKET"

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		c := &Client{Path: path, Timeout: 2 * time.Second}
		_, err := c.Do(context.Background(), Request{Kind: KindAdd, Attachment: &Attachment{Key: Key{ContainerID: "c1", IfName: "eth0"}}})
		fmt.Println("add:", err)
		_, err = c.Do(context.Background(), Request{Kind: KindStatus})
		fmt.Println("status:", err)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestNonRootPeerCannotMutate runs a real client as uid 65534 against the
// default authorizer. The socket is opened up to 0666 for the test only, so
// that the SO_PEERCRED check, not the file mode, is what refuses it.
func TestNonRootPeerCannotMutate(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another uid")
	}
	dir, err := os.MkdirTemp("", "cniproto-cred-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h := &fakeHandler{added: map[Key]Attachment{}}
	path := filepath.Join(dir, "cni.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&Server{Handler: h}).Serve(ctx, l) }()
	t.Cleanup(func() { cancel(); <-done })
	for _, p := range []string{dir, path} {
		if err := os.Chmod(p, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The test binary's own directory is 0700; give nobody a copy.
	bin, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	child := filepath.Join(dir, "client")
	if err := os.WriteFile(child, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(child, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	s := string(out)
	if !strings.Contains(s, "add: helper refused add: permission denied: uid 65534") {
		t.Fatalf("non-root add was not refused:\n%s", s)
	}
	if !strings.Contains(s, "status: <nil>") {
		t.Fatalf("non-root status was refused:\n%s", s)
	}
	if len(h.added) != 0 {
		t.Fatalf("handler recorded %v", h.added)
	}
}
