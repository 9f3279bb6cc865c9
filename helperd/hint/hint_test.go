package hint

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func serve(t *testing.T, key []byte, got chan<- Hint) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go (&Server{Addr: addr, Key: key, Receive: func(_ context.Context, h Hint) error { got <- h; return nil }}).Serve(ctx)
	for range 50 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return addr
}

func TestHintRoundTripAndSignature(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	got := make(chan Hint, 1)
	addr := serve(t, key, got)
	h := Hint{Egress: "prod", PodIP: netip.MustParseAddr("10.244.3.7"), NodeIP: netip.MustParseAddr("192.0.2.13")}
	if err := (&Client{Key: key}).Send(context.Background(), addr, h); err != nil {
		t.Fatal(err)
	}
	if g := <-got; g != h {
		t.Fatalf("received %+v, want %+v", g, h)
	}
	err := (&Client{Key: []byte("wrong key wrong key wrong key!!!")}).Send(context.Background(), addr, h)
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("wrong key: got %v, want 403", err)
	}
	err = (&Client{Key: key}).Send(context.Background(), addr, Hint{Egress: "prod"})
	if err == nil || !strings.Contains(err.Error(), "podIP") {
		t.Fatalf("invalid hint: got %v, want an error naming podIP", err)
	}
}
