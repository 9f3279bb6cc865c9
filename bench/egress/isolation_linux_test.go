package egressbench

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/sluicenet/sluice/bench"
	"github.com/sluicenet/sluice/integration/attack"
	"github.com/sluicenet/sluice/integration/cluster"
)

// TestIsolatedHelperClaims runs integration/attack's two isolations,
// SLUICE_ISOLATION_ROUNDS times each on one three-Node cluster: the idle
// helper restarted with a wrong gossip key, and a holder partitioned alone.
// Every Node's uplink is sampled every 100 ms; it reports the egress IPs the
// isolated helper added while another Node held them. Then it rotates the
// gossip key and reports the requests that failed meanwhile.
//
//	SLUICE_BENCH=1 SLUICE_BENCH_RECORD=1 go test -run TestIsolatedHelperClaims -timeout 30m -v ./bench/egress/
func TestIsolatedHelperClaims(t *testing.T) {
	bench.Require(t)
	rounds := bench.EnvInt(t, "SLUICE_ISOLATION_ROUNDS", 5, 1, 50)
	ctx := context.Background()
	c := cluster.New(t, cluster.Options{Nodes: 3, ExtServers: 1, Sluice: true})
	dumpOnFailure(t, c)
	startHelpers(t, c)
	iso, err := attack.SetupIsolation(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	claims, requests, failed := 0, 0, 0
	var kept []time.Duration
	for i := range rounds {
		wk, err := iso.WrongKey(ctx, 5*time.Second)
		t.Logf("round %d: %s", i, wk)
		if err != nil {
			t.Fatal(err)
		}
		alone, err := iso.Alone(ctx, 5*time.Second)
		t.Logf("round %d: %s", i, alone)
		if err != nil {
			t.Fatal(err)
		}
		claims += len(wk.Claims) + len(alone.Claims)
		requests, failed = requests+wk.Requests, failed+wk.Failed+wk.WrongSource
		kept = append(kept, alone.Kept)
	}
	slices.Sort(kept)
	// Then the gossip key is rotated across the three Nodes, as README
	// says, one Node's file a second after the other.
	rot, err := iso.Rotate(ctx, time.Second, 4*time.Second)
	t.Log(rot)
	if err != nil {
		t.Fatal(err)
	}
	cmd := "SLUICE_BENCH=1 SLUICE_BENCH_RECORD=1 go test -run TestIsolatedHelperClaims -timeout 30m -v ./bench/egress/"
	note := fmt.Sprintf("%d rounds on 3 Nodes, 2 pooled Egresses: the idle helper restarted with a wrong gossip key for 5 s "+
		"(%d requests from the selected Pods on all Nodes meanwhile, %d failed or had a wrong source), and the lower-named "+
		"holder partitioned alone for 5 s (it dropped its own IP after %v median, %v max). Uplinks sampled every 100 ms; "+
		"a claim is an IP the isolated Node added while another Node held it. With quorum by count alone (no health score) "+
		"one partitioned-alone round of the e2e test showed a claim, and a helper before quorum used to claim every pool IP.",
		rounds, requests, failed, kept[len(kept)/2].Round(10*time.Millisecond), kept[len(kept)-1].Round(10*time.Millisecond))
	rotNote := fmt.Sprintf("3 Nodes, 2 pooled Egresses, a Pod of each on every Node asking the external server its source in turn "+
		"(2 s timeout): %d requests during a rotation in three steps (new key second, then first, then alone), each Node's key "+
		"file rewritten 1 s after the previous one, 4 s between steps; failed plus wrong-source answers. Uplinks sampled "+
		"every 100 ms: in %d of %d samples an egress IP was off its holder.", rot.Requests, rot.Moves, rot.Samples)
	bench.Report(t,
		bench.Figure{Name: "rotation_failed_requests", Value: float64(rot.Failed + rot.WrongSource), Unit: "requests", Target: "== 0",
			Command: cmd, Note: rotNote},
		bench.Figure{Name: "isolated_helper_claims", Value: float64(claims), Unit: "IPs", Target: "== 0", Command: cmd, Note: note},
		bench.Figure{Name: "isolated_holder_release_s", Value: kept[len(kept)-1].Seconds(), Unit: "s", Target: "",
			Command: cmd, Note: "max over the rounds, from the partition to the isolated holder no longer holding its IP"})
}
