package gossip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// freePort finds a port free for both TCP and UDP on loopback.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startMember(t *testing.T, name string, key []byte) *Gossip {
	t.Helper()
	return startMemberLog(t, name, key, io.Discard)
}

func startMemberLog(t *testing.T, name string, key []byte, w io.Writer) *Gossip {
	t.Helper()
	g, err := New(Config{NodeName: name, BindAddr: loopback, BindPort: freePort(t), SecretKey: key, LogOutput: w}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Shutdown() })
	return g
}

func addrOf(g *Gossip) string { return g.self() }

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", d, what)
	return 0
}

func states(g *Gossip) string {
	var b strings.Builder
	for _, m := range g.Members() {
		fmt.Fprintf(&b, "%s=%s ", m.Name, m.State)
	}
	return strings.TrimSpace(b.String())
}

func TestClusterDetectsAbruptDeath(t *testing.T) {
	key := bytes.Repeat([]byte{0x42}, 32)
	const n = 4
	var gs []*Gossip
	for i := range n {
		gs = append(gs, startMember(t, fmt.Sprintf("node%d", i), key))
	}
	for _, g := range gs[1:] {
		if _, err := g.Join([]string{addrOf(gs[0])}); err != nil {
			t.Fatal(err)
		}
	}
	want := "node0=alive node1=alive node2=alive node3=alive"
	for _, g := range gs {
		waitFor(t, 10*time.Second, "full membership", func() bool { return states(g) == want })
	}
	m := gs[1].Members()[2]
	if m.NodeName != "node2" || m.Addr.String() != addrOf(gs[2]) {
		t.Fatalf("member metadata/address wrong: %+v", m)
	}
	// Changes fired for the joins; drain it so the death signal is new.
	select {
	case <-gs[0].Changes():
	default:
		t.Fatal("no change signal after joins")
	}

	// Abrupt death: no Leave.
	died := time.Now()
	if err := gs[3].Shutdown(); err != nil {
		t.Fatal(err)
	}
	model := DetectionBounds(DefaultTuning(), n)
	// Generous for a shared 2-core box running -race; the measured value
	// is logged for the record.
	bound := 5 * model.P99
	wantDead := "node0=alive node1=alive node2=alive node3=dead"
	for _, g := range gs[:3] {
		waitFor(t, bound, "node3 dead", func() bool { return states(g) == wantDead })
		t.Logf("%s saw node3 dead after %v (model: mean %v, p99 %v)", g.cfg.NodeName, time.Since(died).Round(time.Millisecond), model.Mean, model.P99)
	}
	select {
	case <-gs[0].Changes():
	case <-time.After(time.Second):
		t.Fatal("no change signal after death")
	}
	if gs[0].Members()[3].Alive() {
		t.Fatal("dead member reports Alive()")
	}
}

func TestCleanLeaveIsImmediate(t *testing.T) {
	key := bytes.Repeat([]byte{1}, 16)
	a, b := startMemberLog(t, "a", key, os.Stderr), startMemberLog(t, "b", key, os.Stderr)
	if _, err := b.Join([]string{addrOf(a)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "join", func() bool { return states(a) == "a=alive b=alive" })
	if err := b.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	d := waitFor(t, 2*time.Second, "b gone", func() bool { return states(a) == "a=alive b=dead" })
	t.Logf("leave seen after %v", d)
}

func TestWrongKeyCannotJoin(t *testing.T) {
	a := startMember(t, "a", bytes.Repeat([]byte{1}, 32))
	b := startMember(t, "b", bytes.Repeat([]byte{2}, 32))
	n, err := b.Join([]string{addrOf(a)})
	if err != nil || n != 0 {
		t.Fatalf("Join = %d, %v; want 0 answered", n, err)
	}
	time.Sleep(time.Second) // let any stray gossip arrive
	if got := states(a); got != "a=alive" {
		t.Fatalf("a sees %q; the wrong-key member got in", got)
	}
	if got := states(b); got != "b=alive" {
		t.Fatalf("b sees %q", got)
	}
}

func TestInsecureNeedsFlag(t *testing.T) {
	_, err := New(Config{NodeName: "a", BindAddr: loopback, BindPort: freePort(t)}, quietLog())
	if !errors.Is(err, ErrNoKey) {
		t.Fatalf("New without key = %v, want ErrNoKey", err)
	}
	// With the test flag, two insecure members gossip.
	g, err := New(Config{NodeName: "a", BindAddr: loopback, BindPort: freePort(t), AllowInsecure: true, LogOutput: io.Discard}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer g.Shutdown()
	if got := states(g); got != "a=alive" {
		t.Fatalf("got %q", got)
	}
}

// TestRejoinLatePeer: a peer that is not up at Join time is joined in the
// background once it starts.
func TestRejoinLatePeer(t *testing.T) {
	key := bytes.Repeat([]byte{3}, 24)
	a := startMember(t, "a", key)
	port := freePort(t)
	if n, err := a.Join([]string{fmt.Sprintf("127.0.0.1:%d", port)}); err != nil || n != 0 {
		t.Fatalf("Join to nobody = %d, %v", n, err)
	}
	b, err := New(Config{NodeName: "b", BindAddr: loopback, BindPort: port, SecretKey: key, LogOutput: io.Discard}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown()
	d := waitFor(t, 4*DefaultTuning().RejoinInterval, "background join", func() bool { return states(b) == "a=alive b=alive" })
	t.Logf("late peer joined after %v", d)
}

// A rotation in three steps (add the new key, make it the first, drop the
// old) keeps two members together throughout; a member left with only the
// old key is then shut out.
func TestKeyRotation(t *testing.T) {
	oldKey, newKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	a := startMember(t, "a", oldKey)
	b := startMember(t, "b", oldKey)
	if n, err := b.Join([]string{addrOf(a)}); err != nil || n != 1 {
		t.Fatalf("Join = %d, %v", n, err)
	}
	both := func() bool { return states(a) == "a=alive b=alive" && states(b) == "a=alive b=alive" }
	waitFor(t, 5*time.Second, "a and b together", both)
	steady := func(step string) {
		t.Helper()
		// Long enough for several probe rounds and a suspicion timeout.
		for end := time.Now().Add(2500 * time.Millisecond); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if !both() {
				t.Fatalf("%s: a sees %q, b sees %q", step, states(a), states(b))
			}
		}
	}
	for _, step := range []struct {
		name string
		a, b [][]byte
	}{
		{"a adds the new key", [][]byte{oldKey, newKey}, [][]byte{oldKey}},
		{"b adds the new key", [][]byte{oldKey, newKey}, [][]byte{oldKey, newKey}},
		{"a sends with the new key", [][]byte{newKey, oldKey}, [][]byte{oldKey, newKey}},
		{"b sends with the new key", [][]byte{newKey, oldKey}, [][]byte{newKey, oldKey}},
		{"a drops the old key", [][]byte{newKey}, [][]byte{newKey, oldKey}},
		{"b drops the old key", [][]byte{newKey}, [][]byte{newKey}},
	} {
		if err := a.SetKeys(step.a); err != nil {
			t.Fatal(err)
		}
		if err := b.SetKeys(step.b); err != nil {
			t.Fatal(err)
		}
		if got := a.Keys(); !bytes.Equal(got[0], step.a[0]) || len(got) != len(step.a) {
			t.Fatalf("%s: a has %d keys, first %x", step.name, len(got), got[0][:1])
		}
		steady(step.name)
	}
	c := startMember(t, "c", oldKey)
	if n, _ := c.Join([]string{addrOf(a)}); n != 0 {
		t.Fatalf("a member with the dropped key joined (%d answered)", n)
	}
	if err := a.SetKeys(nil); err == nil {
		t.Fatal("SetKeys(nil) succeeded")
	}
	if err := a.SetKeys([][]byte{{1, 2, 3}}); err == nil || !strings.Contains(err.Error(), "3 bytes") {
		t.Fatalf("SetKeys with a 3-byte key: %v", err)
	}
}
