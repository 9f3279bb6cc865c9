package hint

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	self   = netip.MustParseAddr("127.0.0.1") // the server's Node IP
	sender = netip.MustParseAddr("127.0.0.1") // where the client dials from
)

func serve(t *testing.T, s *Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s.Addr = addr
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go s.Serve(ctx)
	for range 50 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return addr
}

func testHint() Hint {
	return Hint{Namespace: "prod", Pod: "web-c", PodIP: netip.MustParseAddr("10.244.3.7"), Sender: "node-c", NodeIP: sender}
}

func expectCode(t *testing.T, err error, code, what string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), code) || !strings.Contains(err.Error(), what) {
		t.Fatalf("got %v, want %s naming %q", err, code, what)
	}
}

func TestHintRoundTripAndRefusals(t *testing.T) {
	key, err := DeriveKey([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan Hint, 10)
	var mu sync.Mutex
	results := map[string]int{}
	srv := &Server{Self: self, Key: key, Receive: func(_ context.Context, h Hint) error { got <- h; return nil },
		IsNode:  func(name string, ip netip.Addr) bool { return name == "node-c" && ip == sender },
		Observe: func(r string) { mu.Lock(); results[r]++; mu.Unlock() }}
	addr := serve(t, srv)
	c := &Client{Key: key}
	ctx := context.Background()

	h := testHint()
	if err := c.Send(ctx, addr, h); err != nil {
		t.Fatal(err)
	}
	g := <-got
	if g.Namespace != h.Namespace || g.Pod != h.Pod || g.PodIP != h.PodIP || g.Sender != h.Sender || g.Recipient != self {
		t.Fatalf("received %+v, want %+v to %v", g, h, self)
	}

	t.Run("wrong key", func(t *testing.T) {
		wrong, _ := DeriveKey([]byte("wrong key wrong key wrong key!!!"))
		expectCode(t, (&Client{Key: wrong}).Send(ctx, addr, h), "403", "bad signature")
	})
	t.Run("the gossip key itself", func(t *testing.T) {
		expectCode(t, (&Client{Key: []byte("0123456789abcdef0123456789abcdef")}).Send(ctx, addr, h), "403", "bad signature")
	})
	t.Run("invalid", func(t *testing.T) {
		expectCode(t, c.Send(ctx, addr, Hint{Namespace: "prod", Pod: "x"}), "400", "podIP")
	})
	t.Run("stale", func(t *testing.T) {
		old := &Client{Key: key, Now: func() time.Time { return time.Now().Add(-MaxSkew - time.Second) }}
		expectCode(t, old.Send(ctx, addr, h), "403", "from this Node's clock")
	})
	t.Run("from the future", func(t *testing.T) {
		future := &Client{Key: key, Now: func() time.Time { return time.Now().Add(MaxSkew + time.Second) }}
		expectCode(t, future.Send(ctx, addr, h), "403", "from this Node's clock")
	})
	t.Run("forged sender address", func(t *testing.T) {
		f := h
		f.NodeIP = netip.MustParseAddr("192.0.2.13")
		expectCode(t, c.Send(ctx, addr, f), "403", "sent from 127.0.0.1")
	})
	t.Run("sender is not a Node", func(t *testing.T) {
		f := h
		f.Sender = "node-x"
		expectCode(t, c.Send(ctx, addr, f), "403", "no such Node")
	})
	t.Run("addressed to another Node", func(t *testing.T) {
		// A hint signed for 192.0.2.12 and delivered here.
		f := h
		f.Recipient, f.Time, f.Nonce = netip.MustParseAddr("192.0.2.12"), time.Now(), strings.Repeat("ab", 16)
		body, _ := json.Marshal(f)
		expectCode(t, c.post(ctx, addr, body), "403", "recipient 192.0.2.12")
	})
	t.Run("replayed", func(t *testing.T) {
		f := h
		f.Recipient, f.Time, f.Nonce = self, time.Now(), strings.Repeat("cd", 16)
		body, _ := json.Marshal(f)
		if err := c.post(ctx, addr, body); err != nil {
			t.Fatal(err)
		}
		<-got
		expectCode(t, c.post(ctx, addr, body), "403", "replayed")
	})
	t.Run("receiver refuses", func(t *testing.T) {
		srv := &Server{Self: self, Key: key, Receive: func(context.Context, Hint) error {
			return fmt.Errorf("pod prod/web-c is on node-a: %w", ErrRefused)
		}}
		expectCode(t, c.Send(ctx, serve(t, srv), h), "403", "is on node-a")
	})
	mu.Lock()
	defer mu.Unlock()
	want := map[string]int{ResultOK: 2, ResultBadSignature: 2, ResultInvalid: 1, ResultRefused: 6}
	if fmt.Sprint(results) != fmt.Sprint(want) {
		t.Errorf("observed %v, want %v", results, want)
	}
}

// A sender past its burst is turned away until its bucket refills; the
// hints it did get through were all delivered.
func TestHintRateLimit(t *testing.T) {
	n := 0
	srv := &Server{Self: self, Receive: func(context.Context, Hint) error { n++; return nil }}
	addr := serve(t, srv)
	c := &Client{}
	var limited int
	for range RateBurst + 50 {
		if err := c.Send(context.Background(), addr, testHint()); err != nil {
			if !strings.Contains(err.Error(), "429") {
				t.Fatal(err)
			}
			limited++
		}
	}
	if limited == 0 || n+limited != RateBurst+50 {
		t.Fatalf("%d delivered, %d limited of %d", n, limited, RateBurst+50)
	}
	if n > RateBurst+RatePerSecond {
		t.Fatalf("%d delivered, more than the burst allows", n)
	}
}

func TestDeriveKey(t *testing.T) {
	a, _ := DeriveKey([]byte("0123456789abcdef"))
	b, _ := DeriveKey([]byte("0123456789abcdeg"))
	if len(a) != 32 || string(a) == string(b) || string(a) == "0123456789abcdef" {
		t.Fatalf("derived keys %x %x", a, b)
	}
	if k, err := DeriveKey(nil); k != nil || err != nil {
		t.Fatalf("no gossip key: %x %v", k, err)
	}
}

// Hint keys follow a gossip key rotation: while the receiver has both
// keys, a sender with either is accepted; once it drops the old one, a
// sender still on it is refused.
func TestKeyringRotation(t *testing.T) {
	oldKey, newKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	srvKeys, err := NewKeyring([][]byte{newKey, oldKey})
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Self: self, Keys: srvKeys, Receive: func(context.Context, Hint) error { return nil }}
	addr := serve(t, srv)
	ctx := context.Background()
	oldSender, _ := NewKeyring([][]byte{oldKey})
	newSender, _ := NewKeyring([][]byte{newKey, oldKey})
	for name, c := range map[string]*Client{"old": {Keys: oldSender}, "new": {Keys: newSender}} {
		if err := c.Send(ctx, addr, testHint()); err != nil {
			t.Errorf("sender with the %s key during the rotation: %v", name, err)
		}
	}
	if err := srvKeys.Set([][]byte{newKey}); err != nil {
		t.Fatal(err)
	}
	expectCode(t, (&Client{Keys: oldSender}).Send(ctx, addr, testHint()), "403", "bad signature")
	if err := (&Client{Keys: newSender}).Send(ctx, addr, testHint()); err != nil {
		t.Errorf("sender with the new key after the rotation: %v", err)
	}
	if _, err := NewKeyring(nil); err == nil {
		t.Error("NewKeyring(nil) succeeded")
	}
}
