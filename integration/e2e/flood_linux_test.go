package e2e_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/integration/attack"
	"github.com/sluicenet/sluice/pkg/nstest"
)

// TestMetricsFlood: a Pod opens 4,000 idle connections to its Node's
// metrics port (the flood that once raised the helper's RSS from 39 to 122
// MiB). The helper keeps 8 and closes the rest at once, its RSS stays within
// 20 MiB of where it was, and the Node's own scrape answers during the
// flood. The port does not answer on the Node's other addresses.
func TestMetricsFlood(t *testing.T) {
	ctx := context.Background()
	c := sluiceCluster(t, 1, 0)
	if err := c.CreateNamespace(ctx, "prod", nil); err != nil {
		t.Fatal(err)
	}
	n := c.Node("node-a")
	p := mustPod(t, c, "node-a", "prod", "attacker", nil)
	pid := c.HelperPID("node-a")
	if _, err := attack.Scrape(ctx, n); err != nil {
		t.Fatal(err)
	}
	before := rssKiB(t, pid)

	// Not on loopback or the Pod-facing bridge: only the Node IP.
	for _, addr := range []string{"127.0.0.1:9779", n.PodCIDR.Addr().Next().String() + ":9779"} {
		if conn, err := dialIn(n.NS, addr, 500*time.Millisecond); err == nil {
			conn.Close()
			t.Errorf("metrics answer on %s", addr)
		}
	}

	const flood = 4000
	target := net.JoinHostPort(n.IP.String(), "9779")
	var conns []net.Conn
	defer func() {
		for _, conn := range conns {
			conn.Close()
		}
	}()
	refused := 0
	for range flood {
		conn, err := dialIn(p.NS, target, 200*time.Millisecond)
		if err != nil {
			refused++ // the backlog is full: the kernel drops the SYN
			continue
		}
		conns = append(conns, conn)
	}
	time.Sleep(time.Second)
	during := rssKiB(t, pid)
	start := time.Now()
	if _, err := attack.Scrape(ctx, n); err != nil {
		t.Errorf("the Node's scrape during the flood: %v", err)
	}
	t.Logf("%d connections open (%d not accepted by the kernel); helper RSS %d KiB before, %d during; scrape took %v",
		len(conns), refused, before, during, time.Since(start).Round(time.Millisecond))
	if during-before > 20<<10 {
		t.Errorf("helper RSS grew by %d KiB during the flood, want under 20 MiB", during-before)
	}
	// The helper kept 8 of them and closed the rest; the 8 it closes
	// once their header time is up.
	closed := 0
	for _, conn := range conns {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); err != nil && !strings.Contains(err.Error(), "timeout") {
			closed++
		}
	}
	if closed != len(conns) {
		t.Errorf("%d of %d idle connections closed by the helper, want all", closed, len(conns))
	}
	body, err := attack.Scrape(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	// Slots freed by the header timeout while the flood was being opened
	// take a few more; nearly all must have been shed.
	if v, ok := metric(body, "sluice_metrics_connections_shed_total"); !ok || v < flood-100 {
		t.Errorf("sluice_metrics_connections_shed_total = %v, want at least %d", v, flood-100)
	}
}

// dialIn dials addr from inside ns.
func dialIn(ns *nstest.NS, addr string, timeout time.Duration) (net.Conn, error) {
	var conn net.Conn
	err := ns.Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	return conn, err
}

// rssKiB is a process's resident set size.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			v, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}
