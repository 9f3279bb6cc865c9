package e2e_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluicenet/sluice/integration/attack"
)

// TestIsolatedHelper: a helper that cannot gossip with the others, because
// it has the wrong key or is partitioned alone, claims no IP that another
// Node holds, and the selected Pods' traffic goes on. The kernels of all
// three Nodes are sampled every 100 ms and the external server answers
// every request.
func TestIsolatedHelper(t *testing.T) {
	ctx := context.Background()
	c := sluiceCluster(t, 3, 1)
	iso, err := attack.SetupIsolation(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("placed: %v, idle: %s", iso.Holders, iso.Idle)

	t.Run("wrong gossip key", func(t *testing.T) {
		res, err := iso.WrongKey(ctx, 6*time.Second)
		t.Log(res)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Claims) != 0 || res.Kept != 0 {
			t.Errorf("the helper with the wrong key claimed %v (kept %v)", res.Claims, res.Kept)
		}
		if res.Unheld > 0 {
			t.Errorf("an egress IP was held by no Node for %v", res.Unheld)
		}
		// Its own Pods included: it routes them to the holders the API names.
		if res.Requests < 20 || res.Failed != 0 || res.WrongSource != 0 {
			t.Errorf("%d requests: %d failed, %d with a wrong source; want none", res.Requests, res.Failed, res.WrongSource)
		}
	})

	t.Run("partitioned alone", func(t *testing.T) {
		res, err := iso.Alone(ctx, 6*time.Second)
		t.Log(res)
		for _, l := range res.Timeline {
			t.Log(l)
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Claims) != 0 {
			t.Errorf("the Node partitioned alone claimed %v", res.Claims)
		}
		// It sees it is alone as fast as the others see it gone.
		if res.Kept > 2*time.Second {
			t.Errorf("the Node partitioned alone kept its IP for %v, want it dropped within 2 s", res.Kept)
		}
	})
}

// TestGossipKeyRotation rotates the gossip key across three live Nodes as
// README says (add the new key second, then first, then alone), one Node's
// file at a time: no egress IP moves and every request from the selected
// Pods, on every Node, is answered with its Egress's IP.
func TestGossipKeyRotation(t *testing.T) {
	ctx := context.Background()
	c := sluiceCluster(t, 3, 1)
	iso, err := attack.SetupIsolation(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	res, err := iso.Rotate(ctx, time.Second, 4*time.Second)
	t.Log(res)
	for _, s := range res.Steps {
		t.Log(s)
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.Moves != 0 {
		t.Errorf("an egress IP left its holder in %d samples", res.Moves)
	}
	if res.Requests < 100 || res.Failed != 0 || res.WrongSource != 0 {
		t.Errorf("%d requests: %d failed, %d with a wrong source; want none", res.Requests, res.Failed, res.WrongSource)
	}
}
