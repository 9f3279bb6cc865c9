package cniproto

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeHandler records calls; a test sets addErr or addDelay to shape Add.
type fakeHandler struct {
	mu       sync.Mutex
	added    map[Key]Attachment
	addDelay time.Duration
}

func (h *fakeHandler) Add(ctx context.Context, a Attachment) error {
	select {
	case <-time.After(h.addDelay):
	case <-ctx.Done():
		return ctx.Err()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.added[a.Key] = a
	return nil
}
func (h *fakeHandler) Del(_ context.Context, k Key) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.added, k)
	return nil
}
func (h *fakeHandler) Check(_ context.Context, k Key) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.added[k]
	return ok, nil
}
func (h *fakeHandler) GC(context.Context, []Key) (int, error) { return 0, nil }
func (h *fakeHandler) List(context.Context) []Attachment {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Attachment
	for _, a := range h.added {
		out = append(out, a)
	}
	return out
}

func startServer(t *testing.T, s *Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sock", "cni.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return path
}

func TestServerRoundTripAndMode(t *testing.T) {
	h := &fakeHandler{added: map[Key]Attachment{}}
	path := startServer(t, &Server{Handler: h, Authorize: func(PeerCred, Kind) error { return nil }})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want 0600", fi.Mode().Perm())
	}
	c := &Client{Path: path, Timeout: time.Second}
	ctx := context.Background()
	k := Key{ContainerID: "c1", IfName: "eth0"}
	if _, err := c.Do(ctx, Request{Kind: KindAdd, Attachment: &Attachment{Key: k, PodIPs: []string{"10.244.0.2"}}}); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(ctx, Request{Kind: KindCheck, Key: &k})
	if err != nil || !resp.Known {
		t.Fatalf("check: %+v %v", resp, err)
	}
	resp, err = c.Do(ctx, Request{Kind: KindStatus})
	if err != nil || len(resp.Attachments) != 1 || resp.Attachments[0].PodIPs[0] != "10.244.0.2" {
		t.Fatalf("status: %+v %v", resp, err)
	}
}

func TestServerRejectsBadInputAndKeepsServing(t *testing.T) {
	h := &fakeHandler{added: map[Key]Attachment{}}
	path := startServer(t, &Server{Handler: h, Authorize: func(PeerCred, Kind) error { return nil }})
	raw := func(t *testing.T, payload []byte) Response {
		t.Helper()
		conn, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.Write(payload); err != nil {
			t.Fatal(err)
		}
		body, err := ReadFrame(conn, MaxMessageSize)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := DecodeResponse(body)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	frame := func(s string) []byte {
		b := make([]byte, 4+len(s))
		binary.BigEndian.PutUint32(b, uint32(len(s)))
		copy(b[4:], s)
		return b
	}
	for name, tc := range map[string]struct {
		payload []byte
		want    string
	}{
		"malformed": {frame(`{not json`), "decode request"},
		"version":   {frame(`{"version":9,"kind":"status"}`), "unsupported protocol version 9"},
		"oversize":  {[]byte{0, 0x10, 0, 0}, "size limit"},
	} {
		t.Run(name, func(t *testing.T) {
			resp := raw(t, tc.payload)
			if resp.OK || !strings.Contains(resp.Error, tc.want) {
				t.Fatalf("reply %+v, want error containing %q", resp, tc.want)
			}
		})
	}
	// And the server still answers.
	c := &Client{Path: path}
	if _, err := c.Do(context.Background(), Request{Kind: KindStatus}); err != nil {
		t.Fatalf("server stopped serving: %v", err)
	}
}

func TestServerPeerCredAuthorization(t *testing.T) {
	h := &fakeHandler{added: map[Key]Attachment{}}
	var seen PeerCred
	var mu sync.Mutex
	auth := func(c PeerCred, k Kind) error {
		mu.Lock()
		seen = c
		mu.Unlock()
		// Pretend we are not root: the real check against a uid that no
		// caller has.
		return RootMutations(PeerCred{UID: c.UID + 1000}, k)
	}
	path := startServer(t, &Server{Handler: h, Authorize: auth})
	c := &Client{Path: path}
	k := Key{ContainerID: "c1", IfName: "eth0"}
	_, err := c.Do(context.Background(), Request{Kind: KindAdd, Attachment: &Attachment{Key: k}})
	if err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("add from non-root: err = %v", err)
	}
	if _, err := c.Do(context.Background(), Request{Kind: KindStatus}); err != nil {
		t.Fatalf("status from non-root: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen.PID != uint32(os.Getpid()) || seen.UID != uint32(os.Getuid()) {
		t.Fatalf("peer cred %+v, want pid %d uid %d", seen, os.Getpid(), os.Getuid())
	}
}

func TestRootMutations(t *testing.T) {
	for _, k := range []Kind{KindAdd, KindDel, KindGC} {
		if RootMutations(PeerCred{UID: 1000}, k) == nil {
			t.Errorf("uid 1000 allowed %s", k)
		}
		if err := RootMutations(PeerCred{UID: 0}, k); err != nil {
			t.Errorf("uid 0 refused %s: %v", k, err)
		}
	}
	for _, k := range []Kind{KindCheck, KindStatus} {
		if err := RootMutations(PeerCred{UID: 1000}, k); err != nil {
			t.Errorf("uid 1000 refused read-only %s: %v", k, err)
		}
	}
}

func TestClientTimeoutAndUnreachable(t *testing.T) {
	h := &fakeHandler{added: map[Key]Attachment{}, addDelay: 3 * time.Second}
	path := startServer(t, &Server{Handler: h, Authorize: func(PeerCred, Kind) error { return nil }})
	c := &Client{Path: path, Timeout: 100 * time.Millisecond}
	start := time.Now()
	_, err := c.Do(context.Background(), Request{Kind: KindAdd, Attachment: &Attachment{Key: Key{ContainerID: "c", IfName: "eth0"}}})
	if !IsUnreachable(err) {
		t.Fatalf("slow helper: err = %v, want unreachable", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("call took %v despite 100ms timeout", d)
	}
	c = &Client{Path: filepath.Join(t.TempDir(), "none.sock")}
	_, err = c.Do(context.Background(), Request{Kind: KindStatus})
	if !IsUnreachable(err) || errors.Is(err, io.EOF) {
		t.Fatalf("missing socket: err = %v", err)
	}
}
