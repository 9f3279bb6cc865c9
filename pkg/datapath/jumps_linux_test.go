package datapath

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sluicenet/sluice/pkg/iptbackend"
	"github.com/sluicenet/sluice/pkg/nstest"
)

// Another agent inserts a MASQUERADE ahead of Sluice's SNAT jump, and
// ahead of its mangle and filter jumps: WatchJumps puts them back long
// before the next full Apply (an hour away here), on both backends.
func TestJumpsHeldFirst(t *testing.T) {
	for _, mode := range []iptbackend.Mode{iptbackend.NFT, iptbackend.Legacy} {
		t.Run(string(mode), func(t *testing.T) {
			nstest.RequireRoot(t)
			node, peer := nstest.New(t, "jumps"), nstest.New(t, "jumpspeer")
			nstest.Veth(t, node, "eth0", peer, "eth0")
			node.MustRun(t, "ip", "addr", "add", "192.0.2.12/24", "dev", "eth0")
			var d *Datapath
			if err := node.Do(func() (err error) {
				d, err = New(Config{Uplink: "eth0", NodeIP: node2, ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix(clusterA)},
					ResyncPeriod: time.Hour, IPTables: iptbackend.Backend{Mode: mode}}, nil)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			apply(t, node, d, desiredFor(true, 1))
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- node.Do(func() error { return d.WatchJumps(ctx) }) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Error(err)
				}
			}()
			time.Sleep(200 * time.Millisecond) // the watch is open
			ipt := "iptables-" + string(mode)
			first := func(table, chain string) string {
				out := node.MustRun(t, ipt, "-w", "-t", table, "-S", chain, "1")
				return strings.TrimSpace(out)
			}
			for _, c := range []struct{ table, chain, jump string }{
				{"nat", "POSTROUTING", ChainPostrouting},
				{"mangle", "PREROUTING", ChainPrerouting},
				{"filter", "FORWARD", ChainGuard},
			} {
				target := "ACCEPT"
				if c.table == "nat" {
					target = "MASQUERADE"
				}
				node.MustRun(t, ipt, "-w", "-t", c.table, "-I", c.chain, "1", "-s", "10.244.0.0/16", "-j", target)
				start := time.Now()
				for first(c.table, c.chain) != "-A "+c.chain+" -j "+c.jump {
					if time.Since(start) > 2*time.Second {
						t.Fatalf("%s %s: Sluice's jump not first after 2 s: %q", c.table, c.chain, first(c.table, c.chain))
					}
					time.Sleep(5 * time.Millisecond)
				}
				t.Logf("%s %s: jump first again after %v", c.table, c.chain, time.Since(start).Round(time.Millisecond))
				if out := node.MustRun(t, ipt, "-w", "-t", c.table, "-S", c.chain); !strings.Contains(out, "-s 10.244.0.0/16 -j "+target) {
					t.Errorf("%s %s: the other agent's rule is gone:\n%s", c.table, c.chain, out)
				}
			}
		})
	}
}
