package attack

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"time"
)

// RotationResult is what the wire and the kernels showed while the gossip
// key was rotated across every Node.
type RotationResult struct {
	Steps []string // what was done, with when, from the start
	Traffic
	// Moves counts samples in which an egress IP was not on exactly the
	// Node that held it before the rotation. Must be 0.
	Moves   int
	Samples int
}

func (r RotationResult) String() string {
	return fmt.Sprintf("rotation in %d steps: %d samples, %d with an IP off its holder; %d requests, %d failed, %d wrong source",
		len(r.Steps), r.Samples, r.Moves, r.Requests, r.Failed, r.WrongSource)
}

// Rotate replaces the cluster's gossip key with a new one, the way README
// says to: every Node's key file gets the new key as a second line, then
// first, then alone. Each Node's file is rewritten stagger after the
// previous one (kubelets update a Secret's files at different times), and
// each step waits settle after the last Node before the next. All along,
// every Pod asks the external server its source and every uplink is
// sampled.
func (iso *Isolation) Rotate(ctx context.Context, stagger, settle time.Duration) (RotationResult, error) {
	var res RotationResult
	oldKey, err := iso.c.GossipKey()
	if err != nil {
		return res, err
	}
	newKey := make([]byte, 32)
	if _, err := rand.Read(newKey); err != nil {
		return res, err
	}
	start := time.Now()
	stopTraffic := iso.traffic(ctx)
	stopSampling := make(chan struct{})
	sampled := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stopSampling:
				sampled <- nil
				return
			default:
			}
			h, err := iso.held()
			if err != nil {
				sampled <- err
				return
			}
			res.Samples++
			for ip, holder := range iso.Holders {
				if len(h[ip]) != 1 || h[ip][0] != holder {
					res.Moves++
					res.Steps = append(res.Steps, fmt.Sprintf("%v %s held by %v", time.Since(start).Round(time.Millisecond), ip, h[ip]))
					break
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	var stepErr error
	for _, step := range []struct {
		name string
		keys [][]byte
	}{
		{"add the new key second", [][]byte{oldKey, newKey}},
		{"send with the new key", [][]byte{newKey, oldKey}},
		{"drop the old key", [][]byte{newKey}},
	} {
		for _, n := range iso.c.Nodes {
			if stepErr = n.WriteGossipKeys(step.keys...); stepErr != nil {
				break
			}
			res.Steps = append(res.Steps, fmt.Sprintf("%v %s: %s", time.Since(start).Round(time.Millisecond), n.Name, step.name))
			time.Sleep(stagger)
		}
		if stepErr != nil {
			break
		}
		time.Sleep(settle)
	}
	close(stopSampling)
	sampleErr := <-sampled
	res.Traffic = stopTraffic()
	if stepErr != nil {
		return res, stepErr
	}
	if sampleErr != nil {
		return res, sampleErr
	}
	// Every helper took each step, and runs on the new key alone.
	for _, n := range iso.c.Nodes {
		body, err := Scrape(ctx, n)
		if err != nil {
			return res, err
		}
		for _, want := range []string{"sluice_gossip_keys 1", `sluice_gossip_key_reloads_total{result="ok"} 3`, `sluice_quorum{value="alive"} 3`} {
			if !strings.Contains(body, want) {
				return res, fmt.Errorf("after the rotation %s's metrics lack %q", n.Name, want)
			}
		}
	}
	return res, nil
}
