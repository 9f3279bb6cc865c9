package datapath

import (
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/sluicenet/sluice/pkg/nstest"
)

// randomDesired is one of many states node1 could be asked for: up to
// three Egresses, each held here or by node2 (or by no one known, failing
// closed), with some of the Pods, under a random mark id.
func randomDesired(r *rand.Rand) Desired {
	ip1b := netip.MustParseAddr("10.244.1.3")
	d := Desired{NodeIPs: []netip.Addr{node1, node2}}
	ids := r.Perm(3)
	for i, eip := range []string{"203.0.113.10", "203.0.113.20", "203.0.113.30"} {
		if r.IntN(4) == 0 {
			continue // absent from this state
		}
		e := EgressState{Name: "eg-" + strconv.Itoa(i), EgressIP: netip.MustParseAddr(eip), ID: uint16(ids[i] + 1)}
		for _, p := range []netip.Addr{ip1a, ip1b, ip2a} {
			if r.IntN(2) == 0 {
				e.AllPodIPs = append(e.AllPodIPs, p)
				if p != ip2a {
					e.LocalPodIPs = append(e.LocalPodIPs, p)
				}
			}
		}
		switch r.IntN(3) {
		case 0:
			e.Local = true
			d.HeldIPs = append(d.HeldIPs, e.EgressIP)
			if len(e.AllPodIPs) > 0 && e.AllPodIPs[len(e.AllPodIPs)-1] == ip2a {
				d.RemotePods = append(d.RemotePods, RemotePod{IP: ip2a, NodeIP: node2})
			}
		case 1:
			e.OwnerNodeIP = node2
		default:
			e.FailClosed = true
		}
		d.Egresses = append(d.Egresses, e)
	}
	return d
}

// Whatever order desired states come in, the kernel ends in the last one:
// a datapath that read nothing before (a restarted helper) finds nothing
// to write for it. SLUICE_REPLAY_SEED repeats a run.
func TestReplayEndsInTheLastState(t *testing.T) {
	nstest.RequireRoot(t)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SLUICE_REPLAY_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (SLUICE_REPLAY_SEED)", seed)
	r := rand.New(rand.NewPCG(seed, seed))
	tp := newTopo(t)
	d := newDatapath(t, tp.node1, "192.0.2.11", -1)
	var last Desired
	for i := 0; i < 12; {
		want := randomDesired(r)
		if err := want.Validate(d.Config()); err != nil {
			continue // a state the agent never asks for
		}
		apply(t, tp.node1, d, want)
		last, i = want, i+1
	}
	if n := apply(t, tp.node1, d, last); n != 0 {
		t.Errorf("the same datapath wrote %d objects for the state it had just applied", n)
	}
	fresh := newDatapath(t, tp.node1, "192.0.2.11", -1)
	if n := apply(t, tp.node1, fresh, last); n != 0 {
		t.Errorf("a fresh datapath wrote %d objects: the kernel was not in the last state %+v", n, last)
	}
}
