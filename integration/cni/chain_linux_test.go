package cnitest

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/sluicenet/sluice/pkg/cniproto"
	"github.com/sluicenet/sluice/pkg/nstest"
)

var versions = []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func listHelper(t *testing.T, e *Env) []cniproto.Attachment {
	t.Helper()
	resp, err := (&cniproto.Client{Path: e.Socket, Timeout: 2 * time.Second}).Do(context.Background(), cniproto.Request{Kind: cniproto.KindStatus})
	if err != nil {
		t.Fatalf("helper status: %v", err)
	}
	return resp.Attachments
}

func keys(as []cniproto.Attachment) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.ContainerID)
	}
	return out
}

// hostLink looks a link up by name in the node namespace.
func hostLink(t *testing.T, e *Env, name string) netlink.Link {
	t.Helper()
	var l netlink.Link
	if err := e.In(func() error {
		var err error
		l, err = netlink.LinkByName(name)
		return err
	}); err != nil {
		t.Fatalf("link %s in node namespace: %v", name, err)
	}
	return l
}

// TestChain runs ADD, CHECK, GC and DEL of bridge+host-local+sluice and
// ptp+host-local+sluice through libcni, for every supported cniVersion.
func TestChain(t *testing.T) {
	nstest.RequireRoot(t)
	for _, primary := range []Primary{Bridge, PTP} {
		for _, ver := range versions {
			t.Run(string(primary)+"/"+ver, func(t *testing.T) {
				testChain(t, primary, ver)
			})
		}
	}
}

func testChain(t *testing.T, primary Primary, ver string) {
	ctx := ctxT(t)
	e := NewEnv(t, bins, "node")
	e.StartHelper(t)
	l := e.Conflist(t, ConflistOpts{CNIVersion: ver, Primary: primary})
	a, b := e.NewPod(t, "pa"), e.NewPod(t, "pb")
	lo := e.Loopback(t, ver)
	if _, err := e.Add(ctx, lo, a); err != nil {
		t.Fatalf("loopback ADD: %v", err)
	}

	res, err := e.Add(ctx, l, a)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if res.Version() != ver {
		t.Fatalf("result version %s, want %s unchanged", res.Version(), ver)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	var hostVeth string
	for _, i := range r.Interfaces {
		if i.Sandbox == "" && i.Name != "cni0" {
			hostVeth = i.Name
		}
	}
	got := listHelper(t, e)
	if len(got) != 1 {
		t.Fatalf("helper knows %v, want one attachment", keys(got))
	}
	att := got[0]
	if att.ContainerID != a.RT.ContainerID || att.IfName != "eth0" || att.HostVeth != hostVeth ||
		att.PodName != "pa" || att.PodNamespace != "default" || att.Netns != a.NS.Path ||
		len(att.PodIPs) != 1 || att.PodIPs[0] != r.IPs[0].Address.IP.String() {
		t.Fatalf("helper attachment %+v; result %s", att, r)
	}
	link := hostLink(t, e, hostVeth)
	if tag, err := cniproto.ParseTag(link.Attrs().Alias); err != nil || tag.Key != att.Key || tag.PodIPs[0] != att.PodIPs[0] {
		t.Fatalf("veth alias %q: %+v %v", link.Attrs().Alias, tag, err)
	}
	if att.HostIfIndex != link.Attrs().Index {
		t.Fatalf("reported ifindex %d, veth has %d", att.HostIfIndex, link.Attrs().Index)
	}
	if _, err := netlink.LinkByName(hostVeth); err == nil {
		t.Fatalf("host veth %s appeared in the root namespace", hostVeth)
	}

	if ver != "0.3.1" {
		if err := e.Check(ctx, l, a); err != nil {
			t.Fatalf("CHECK: %v", err)
		}
	}
	if _, err := e.Add(ctx, l, b); err != nil {
		t.Fatalf("ADD b: %v", err)
	}
	if got := keys(listHelper(t, e)); len(got) != 2 {
		t.Fatalf("helper knows %v after two ADDs", got)
	}
	// GC keeping only a: libcni DELs b (stale in its cache), and on 1.1.0
	// also sends GC with cni.dev/valid-attachments.
	if err := e.GC(ctx, l, a); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if got := keys(listHelper(t, e)); len(got) != 1 || got[0] != a.RT.ContainerID {
		t.Fatalf("helper knows %v after GC, want only %s", got, a.RT.ContainerID)
	}
	if ver == "1.1.0" {
		if err := e.Status(ctx, l); err != nil {
			t.Fatalf("STATUS: %v", err)
		}
	}
	for i := 0; i < 2; i++ {
		if err := e.Del(ctx, l, a); err != nil {
			t.Fatalf("DEL #%d: %v", i+1, err)
		}
	}
	if got := listHelper(t, e); len(got) != 0 {
		t.Fatalf("helper still knows %v after DEL", keys(got))
	}
	if err := e.Del(ctx, lo, a); err != nil {
		t.Fatalf("loopback DEL: %v", err)
	}
	if ents, _ := cniproto.ReadSpool(e.Spool); len(ents) != 0 {
		t.Fatalf("spool has %d entries with a live helper", len(ents))
	}
}

// TestGCSendsValidAttachments checks that the GC verb itself (1.1.0) makes
// the helper forget attachments libcni's cache no longer knows about.
func TestGCSendsValidAttachments(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := ctxT(t)
	e := NewEnv(t, bins, "gcnode")
	e.StartHelper(t)
	l := e.Conflist(t, ConflistOpts{CNIVersion: "1.1.0", Primary: Bridge})
	a, b := e.NewPod(t, "ga"), e.NewPod(t, "gb")
	for _, p := range []*Pod{a, b} {
		if _, err := e.Add(ctx, l, p); err != nil {
			t.Fatal(err)
		}
	}
	// Forget b in libcni's cache only, as if the runtime lost it: no DEL
	// reaches sluice, so only the GC verb can remove it.
	if err := os.RemoveAll(e.Dir + "/cache"); err != nil {
		t.Fatal(err)
	}
	if err := e.GC(ctx, l, a); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if got := keys(listHelper(t, e)); len(got) != 1 || got[0] != a.RT.ContainerID {
		t.Fatalf("helper knows %v after GC, want only %s", got, a.RT.ContainerID)
	}
}

func TestAddWithoutPrevResult(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := ctxT(t)
	e := NewEnv(t, bins, "noprev")
	e.StartHelper(t)
	l := e.Conflist(t, ConflistOpts{CNIVersion: "1.0.0"})
	_, err := e.Add(ctx, l, e.NewPod(t, "np"))
	if err == nil || !strings.Contains(err.Error(), "chained after a primary plugin") {
		t.Fatalf("ADD without primary: err = %v", err)
	}
}

func TestDelAfterNetnsDeleted(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := ctxT(t)
	e := NewEnv(t, bins, "delns")
	e.StartHelper(t)
	for _, primary := range []Primary{Bridge, PTP} {
		l := e.Conflist(t, ConflistOpts{CNIVersion: "1.0.0", Primary: primary})
		p := e.NewPod(t, "dn"+string(primary))
		if _, err := e.Add(ctx, l, p); err != nil {
			t.Fatal(err)
		}
		p.NS.Delete()
		for i := 0; i < 2; i++ {
			if err := e.Del(ctx, l, p); err != nil {
				t.Fatalf("%s: DEL #%d after netns deletion: %v", primary, i+1, err)
			}
		}
		if got := listHelper(t, e); len(got) != 0 {
			t.Fatalf("%s: helper still knows %v", primary, keys(got))
		}
		// A DEL for an attachment that was never added (e.g. its ADD never
		// ran) succeeds too.
		if err := e.Del(ctx, l, e.NewPod(t, "nv"+string(primary))); err != nil {
			t.Fatalf("%s: DEL of a never-seen attachment: %v", primary, err)
		}
	}
}

func TestHelperDownFailOpenSpools(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := ctxT(t)
	e := NewEnv(t, bins, "open")
	l := e.Conflist(t, ConflistOpts{CNIVersion: "1.1.0", Primary: Bridge, Timeout: "300ms"})
	if err := e.Status(ctx, l); err != nil {
		t.Fatalf("fail-open STATUS with helper down: %v", err)
	}
	p := e.NewPod(t, "fo")
	if _, err := e.Add(ctx, l, p); err != nil {
		t.Fatalf("fail-open ADD with helper down: %v", err)
	}
	ents, err := cniproto.ReadSpool(e.Spool)
	if err != nil || len(ents) != 1 || ents[0].Request.Kind != cniproto.KindAdd || ents[0].Request.Attachment.ContainerID != p.RT.ContainerID {
		t.Fatalf("spool %+v %v", ents, err)
	}
	// The helper replays the spool when it starts, then deletes it.
	e.StartHelper(t)
	if got := keys(listHelper(t, e)); len(got) != 1 || got[0] != p.RT.ContainerID {
		t.Fatalf("helper knows %v after replay", got)
	}
	if ents, _ := cniproto.ReadSpool(e.Spool); len(ents) != 0 {
		t.Fatalf("spool not emptied: %d entries", len(ents))
	}
}

func TestHelperDownFailClosed(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := ctxT(t)
	e := NewEnv(t, bins, "closed")
	l := e.Conflist(t, ConflistOpts{CNIVersion: "1.1.0", Primary: Bridge, FailClosed: true, Timeout: "300ms"})
	p := e.NewPod(t, "fc")
	_, err := e.Add(ctx, l, p)
	var cerr *types.Error
	if !errors.As(err, &cerr) || cerr.Code != types.ErrTryAgainLater {
		t.Fatalf("fail-closed ADD: err = %v, want CNI code 11", err)
	}
	if err := e.Status(ctx, l); err == nil {
		t.Fatal("fail-closed STATUS passed with the helper down")
	}
	// libcni rolls nothing back on a failed ADD; the runtime sends DEL,
	// which must succeed even now.
	if err := e.Del(ctx, l, p); err != nil {
		t.Fatalf("DEL with helper down: %v", err)
	}
}

// TestHelperRestartRebuilds restarts the helper while the node keeps
// changing: attachments made before come back from the veth tags, those
// made or removed while it was down come from the spool.
func TestHelperRestartRebuilds(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := ctxT(t)
	e := NewEnv(t, bins, "restart")
	h := e.StartHelper(t)
	lb := e.Conflist(t, ConflistOpts{CNIVersion: "1.0.0", Primary: Bridge, Timeout: "300ms"})
	pa, pb, pc := e.NewPod(t, "ra"), e.NewPod(t, "rb"), e.NewPod(t, "rc")
	for _, p := range []*Pod{pa, pb} {
		if _, err := e.Add(ctx, lb, p); err != nil {
			t.Fatal(err)
		}
	}
	h.Stop()
	if _, err := e.Add(ctx, lb, pc); err != nil {
		t.Fatalf("ADD while helper down: %v", err)
	}
	if err := e.Del(ctx, lb, pb); err != nil {
		t.Fatalf("DEL while helper down: %v", err)
	}
	if ents, _ := cniproto.ReadSpool(e.Spool); len(ents) != 2 {
		t.Fatalf("spool has %d entries, want ADD rc and DEL rb", len(ents))
	}
	// Make the tags the only source for ra and rc's veth: a fresh helper
	// process has no memory, so what it lists came from kernel + spool.
	e.StartHelper(t)
	got := listHelper(t, e)
	want := map[string]bool{pa.RT.ContainerID: true, pc.RT.ContainerID: true}
	if len(got) != 2 || !want[got[0].ContainerID] || !want[got[1].ContainerID] {
		t.Fatalf("after restart helper knows %v, want %s and %s", keys(got), pa.RT.ContainerID, pc.RT.ContainerID)
	}
	for _, a := range got {
		if a.HostVeth == "" || len(a.PodIPs) != 1 || a.PodName == "" || a.Netns != map[string]string{pa.RT.ContainerID: pa.NS.Path, pc.RT.ContainerID: pc.NS.Path}[a.ContainerID] {
			t.Fatalf("rebuilt attachment incomplete: %+v", a)
		}
	}
	if err := e.Check(ctx, lb, pa); err != nil {
		t.Fatalf("CHECK after restart: %v", err)
	}
}

// TestCheckFailsWithoutTagOrHelperRecord removes, one at a time, the two
// things CHECK verifies: the helper's record and the veth's tag.
func TestCheckFailsWithoutTagOrHelperRecord(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := ctxT(t)
	e := NewEnv(t, bins, "check")
	e.StartHelper(t)
	l := e.Conflist(t, ConflistOpts{CNIVersion: "1.0.0", Primary: PTP})
	p := e.NewPod(t, "ck")
	if _, err := e.Add(ctx, l, p); err != nil {
		t.Fatal(err)
	}
	if err := e.Check(ctx, l, p); err != nil {
		t.Fatalf("CHECK of a fresh attachment: %v", err)
	}
	key := cniproto.Key{ContainerID: p.RT.ContainerID, IfName: p.RT.IfName}
	c := &cniproto.Client{Path: e.Socket}
	if _, err := c.Do(ctx, cniproto.Request{Kind: cniproto.KindDel, Key: &key}); err != nil {
		t.Fatal(err)
	}
	if err := e.Check(ctx, l, p); err == nil || !strings.Contains(err.Error(), "does not know") {
		t.Fatalf("CHECK with the helper's record gone: %v", err)
	}
	// Put the record back, then strip the tag from the veth.
	got := listHelper(t, e)
	if len(got) != 0 {
		t.Fatalf("helper still knows %v", keys(got))
	}
	if err := e.In(func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, lk := range links {
			if cniproto.IsTag(lk.Attrs().Alias) {
				a, _ := cniproto.ParseTag(lk.Attrs().Alias)
				if _, err := c.Do(ctx, cniproto.Request{Kind: cniproto.KindAdd, Attachment: &a}); err != nil {
					return err
				}
				return netlink.LinkSetAlias(lk, "")
			}
		}
		return errors.New("no tagged link")
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.Check(ctx, l, p); err == nil || !strings.Contains(err.Error(), "not tagged") {
		t.Fatalf("CHECK with the tag gone: %v", err)
	}
}

// TestAddWaitsForAck has the helper take its time before acking (as it
// will when it programs the Pod's egress first): within the timeout ADD
// waits for it; past the timeout ADD fails open to the spool, or fails
// closed with code 11.
func TestAddWaitsForAck(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := ctxT(t)
	e := NewEnv(t, bins, "slow")
	h := e.StartHelper(t, "-add-delay", "400ms")
	l := e.Conflist(t, ConflistOpts{CNIVersion: "1.0.0", Primary: Bridge, Timeout: "3s"})
	p := e.NewPod(t, "sw")
	start := time.Now()
	if _, err := e.Add(ctx, l, p); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Fatalf("ADD returned after %v, before the helper's 400ms ack", d)
	}
	if ents, _ := cniproto.ReadSpool(e.Spool); len(ents) != 0 {
		t.Fatalf("acked ADD was spooled")
	}
	h.Stop()

	e.StartHelper(t, "-add-delay", "5s")
	open := e.Conflist(t, ConflistOpts{CNIVersion: "1.0.0", Primary: Bridge, Timeout: "300ms"})
	q := e.NewPod(t, "so")
	if _, err := e.Add(ctx, open, q); err != nil {
		t.Fatalf("fail-open ADD with a slow helper: %v", err)
	}
	if ents, _ := cniproto.ReadSpool(e.Spool); len(ents) != 1 || ents[0].Request.Attachment.ContainerID != q.RT.ContainerID {
		t.Fatalf("slow helper: spool %+v", ents)
	}
	closed := e.Conflist(t, ConflistOpts{CNIVersion: "1.0.0", Primary: Bridge, Timeout: "300ms", FailClosed: true})
	_, err := e.Add(ctx, closed, e.NewPod(t, "sc"))
	var cerr *types.Error
	if !errors.As(err, &cerr) || cerr.Code != types.ErrTryAgainLater {
		t.Fatalf("fail-closed ADD with a slow helper: err = %v, want code 11", err)
	}
}
