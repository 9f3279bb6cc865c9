package daemon

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/netutil"
)

func TestMetricsAddr(t *testing.T) {
	ip := netip.MustParseAddr("192.0.2.11")
	for in, want := range map[string]string{"node-ip:9779": "192.0.2.11:9779", ":9779": ":9779", "127.0.0.1:9": "127.0.0.1:9"} {
		if got := metricsAddr(in, ip); got != want {
			t.Errorf("metricsAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

// A flood of idle connections neither grows the server without bound nor
// keeps it from answering: at most metricsMaxConns are served at once, an
// idle one is closed after the header timeout, and a scrape gets through.
func TestMetricsFloodIsBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := metricsServer(prometheus.NewRegistry(), func() bool { return true })
	go srv.Serve(netutil.LimitListener(ln, metricsMaxConns))
	t.Cleanup(func() { srv.Close() })
	base := runtime.NumGoroutine()

	const flood = 400
	conns := make([]net.Conn, 0, flood)
	for range flood {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	time.Sleep(500 * time.Millisecond)
	if g := runtime.NumGoroutine() - base; g > metricsMaxConns+10 {
		t.Errorf("%d more goroutines with %d idle connections, want at most about %d", g, flood, metricsMaxConns)
	}
	// The first idle connection is closed by the server once its header
	// time is up.
	_ = conns[0].SetReadDeadline(time.Now().Add(metricsHeaderTimeout + 2*time.Second))
	if _, err := conns[0].Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("an idle connection: read %v, want EOF from the server", err)
	}
	// A scrape gets through while the flood drains.
	ctx, cancel := context.WithTimeout(context.Background(), flood/metricsMaxConns*metricsHeaderTimeout+10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ln.Addr().String()+"/healthz", nil)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape during the flood: %v", err)
	}
	resp.Body.Close()
	t.Logf("healthz answered %v into the flood", time.Since(start).Round(time.Millisecond))
}
