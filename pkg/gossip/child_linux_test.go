//go:build linux

package gossip

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
)

// The kernel tests run each member as a child process inside its own
// network namespace (the test binary re-executed with these variables),
// because memberlist dials new TCP connections from arbitrary goroutines:
// in-process, those would leave from whatever namespace the thread is in.
const (
	envChild = "SLUICE_GOSSIP_CHILD" // member name; its presence selects child mode
	envBind  = "SLUICE_GOSSIP_BIND"
	envPeers = "SLUICE_GOSSIP_PEERS" // comma-separated
	envKey   = "SLUICE_GOSSIP_KEY"   // hex
)

// runChild runs one member until stdin closes. It prints
// "STATE a=alive b=dead ..." on every membership change and
// "LOG <memberlist line>" for memberlist's log.
func runChild() int {
	key, err := hex.DecodeString(os.Getenv(envKey))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bad key:", err)
		return 2
	}
	out := &lockedWriter{w: os.Stdout}
	g, err := New(Config{
		NodeName:  os.Getenv(envChild),
		BindAddr:  netip.MustParseAddr(os.Getenv(envBind)),
		SecretKey: key,
		LogOutput: &prefixWriter{prefix: "LOG ", w: out},
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := g.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if _, err := g.Join(strings.Split(os.Getenv(envPeers), ",")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	stop := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	for {
		select {
		case <-stop:
			_ = g.Shutdown()
			return 0
		case <-g.Changes():
			fmt.Fprintf(out, "STATE %s\n", states(g))
		}
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

type prefixWriter struct {
	prefix string
	w      io.Writer
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	var buf bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		buf.WriteString(p.prefix + sc.Text() + "\n")
	}
	if _, err := p.w.Write(buf.Bytes()); err != nil {
		return 0, err
	}
	return len(b), nil
}
