package e2e_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluicenet/sluice/integration/cluster"
)

// A recreated sandbox (new container ID, new IP, the Pod object's
// status.podIPs still the old one) leaves with its Egress's IP from its
// first connection, whichever order the new ADD and the old DEL come in,
// on the holder's own Node and through the tunnel. The external server's
// raw table counts every packet from any other source: there must be none.
// A crash of the holder's helper before the status is written stalls
// nothing.
func TestSandboxRecreation(t *testing.T) {
	ctx := context.Background()
	c, ip, pods, wire := watchedEgress(t)

	for _, order := range []struct {
		name     string
		addFirst bool
	}{{"del then add", cluster.DelThenAdd}, {"add then del", cluster.AddThenDel}} {
		for _, p := range pods {
			before := p.IP
			if err := c.RecreateSandbox(ctx, p, order.addFirst); err != nil {
				t.Fatalf("%s: recreate %s: %v", order.name, p, err)
			}
			if p.IP == before {
				t.Fatalf("%s: %s kept IP %s; the test needs a new one", order.name, p, before)
			}
			// The kubelet writes the new IP a moment later; until then
			// only the CNI's attachment and the hint know it.
			for i := range 12 {
				if i == 8 {
					if err := c.WritePodIP(ctx, p); err != nil {
						t.Fatal(err)
					}
				}
				got, err := c.Whoami(ctx, p)
				if err != nil || got != ip {
					t.Errorf("%s: %s (%s, was %s) connection %d: %v %v, want %s", order.name, p, p.IP, before, i, got, err, ip)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	// Then the helper of the holder's Node crashes while a recreated
	// sandbox's status is still stale: the restarted helper's first plan
	// must already have the sandbox (the kernel's tagged veth), or the
	// Pod's flow is dropped until a later plan has it.
	p := pods[0]
	if err := c.RecreateSandbox(ctx, p, cluster.DelThenAdd); err != nil {
		t.Fatal(err)
	}
	expectSource(t, c, p, ip, converge)
	fctx, stop := context.WithCancel(ctx)
	flow := c.Ext[0].KeepFlowing(fctx, p, ip)
	time.Sleep(time.Second)
	if err := c.KillHelper(p.Node.Name); err != nil {
		t.Fatal(err)
	}
	if err := c.StartHelper(p.Node.Name); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitHelper(ctx, p.Node.Name, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	stop()
	st := <-flow
	t.Logf("flow from %s through the restart: %d asks, %d answered, %d connections, longest gap %v", p, st.Asks, st.OK, st.Connections, st.MaxGap)
	if st.Connections != 1 || st.MaxGap > 500*time.Millisecond || len(st.Wrong) > 0 {
		t.Errorf("the flow from the recreated sandbox broke or stalled through its helper's restart: %d connections, longest gap %v, wrong %v",
			st.Connections, st.MaxGap, st.Wrong)
	}
	if _, n, err := wire.Wrong(); err != nil || n > 0 {
		t.Errorf("the external server saw %v (%v)", wire, err)
	}
}
