package daemon

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestMetricsAddr(t *testing.T) {
	ip := netip.MustParseAddr("192.0.2.11")
	for in, want := range map[string]string{"node-ip:9779": "192.0.2.11:9779", ":9779": ":9779", "127.0.0.1:9": "127.0.0.1:9"} {
		if got := metricsAddr(in, ip); got != want {
			t.Errorf("metricsAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

// A flood of idle connections from one address neither grows the server
// nor keeps another client from answering: that address keeps
// metricsPerSource connections, the rest are closed on accept, an idle one
// is closed after the header timeout, and a scrape from elsewhere gets
// through at once.
func TestMetricsFloodIsBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := metricsServer(prometheus.NewRegistry(), func() bool { return true })
	shed := newShedListener(ln, metricsMaxConns, metricsPerSource)
	go srv.Serve(shed)
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
	if g := runtime.NumGoroutine() - base; g > metricsPerSource+10 {
		t.Errorf("%d more goroutines with %d idle connections, want about %d", g, flood, metricsPerSource)
	}
	if d := shed.Denied.Load(); d < flood-metricsPerSource {
		t.Errorf("%d connections shed, want %d", d, flood-metricsPerSource)
	}
	// A scrape from another address answers at once.
	other := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}}
	start := time.Now()
	resp, err := other.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatalf("scrape from 127.0.0.2 during the flood: %v", err)
	}
	resp.Body.Close()
	t.Logf("healthz answered in %v during the flood", time.Since(start).Round(time.Millisecond))
	// The idle ones the server kept are closed once their header time is up.
	closed := 0
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(metricsHeaderTimeout + 2*time.Second))
		if _, err := c.Read(make([]byte, 1)); err == io.EOF {
			closed++
		}
	}
	if closed != flood {
		t.Errorf("%d of %d idle connections closed by the server, want all", closed, flood)
	}
	// The slots are free again.
	resp, err = http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatalf("scrape after the flood: %v", err)
	}
	resp.Body.Close()
}
