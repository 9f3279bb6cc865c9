package inspect

import (
	"context"
	"strings"
	"testing"

	"github.com/sluicenet/sluice/helperd/placement"
	"github.com/sluicenet/sluice/helperd/placement/placementtest"
	"github.com/sluicenet/sluice/pkg/datapath"
)

// explain reads this Node's part of a Pod's path off the applied desired
// state, as the datapath builds it: the tunnel's mark and table, SNAT
// here, or the exit guard's drop when no holder is known (never "the Node
// IP" then).
var eg, snapshot = placementtest.Egress, placementtest.Snapshot

// noCounters is a kernel with no counters yet.
type noCounters struct{}

func (noCounters) Stats(context.Context) (datapath.Stats, error) { return datapath.Stats{}, nil }

func TestExplainReadsTheDesiredState(t *testing.T) {
	e := eg("prod", "198.51.100.5", "pool", "prod")
	for _, tc := range []struct {
		name, self string
		alive      []string
		want       string
	}{
		{"tunnel", "node-c", []string{"node-a", "node-b", "node-c"}, "tunnel: marked"},
		{"no quorum", "node-c", []string{"node-c"}, "dropped by the exit guard"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := snapshot(tc.self, e)
			s.Alive = tc.alive
			plan := placement.Decide(s)
			src := &State{Self: tc.self, Plan: func() placement.Plan { return plan }, Counters: noCounters{},
				Config: datapath.Config{Uplink: "eth0", TunnelDev: datapath.DefaultTunnelDev}}
			ex, err := src.Explain(context.Background(), "prod", "web-c")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(ex.Path, tc.want) {
				t.Fatalf("path %q, want %q… (plan %+v)", ex.Path, tc.want, plan.Egresses)
			}
			if tc.name == "tunnel" {
				id := plan.Egresses[0].ID
				if want := datapath.TableOf(id); ex.Table != want || ex.Mark != markString(datapath.MarkOf(id)) {
					t.Fatalf("mark %s table %d, want the datapath's %#x and %d", ex.Mark, ex.Table, datapath.MarkOf(id), want)
				}
			}
		})
	}
}
