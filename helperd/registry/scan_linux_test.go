package registry

import (
	"context"
	"testing"
	"time"

	"github.com/sluicenet/sluice/pkg/cniproto"
	"github.com/sluicenet/sluice/pkg/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// TestStartFromTagsAndSpool tags a veth in a throwaway namespace, spools a
// DEL for another tagged one, and checks that Start rebuilds exactly the
// surviving attachment, with its veth, from the kernel alone.
func TestStartFromTagsAndSpool(t *testing.T) {
	nstest.RequireRoot(t)
	node := nstest.New(t, "regnode")
	pod := nstest.New(t, "regpod")
	nstest.Veth(t, node, "vethA", pod, "eth0")
	nstest.Veth(t, node, "vethB", pod, "eth1")
	keep := cniproto.Attachment{Key: cniproto.Key{ContainerID: "c-keep", IfName: "eth0"},
		PodNamespace: "default", PodName: "web", PodUID: "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9", PodIPs: []string{"10.244.0.5"}}
	gone := cniproto.Attachment{Key: cniproto.Key{ContainerID: "c-gone", IfName: "eth1"}, PodIPs: []string{"10.244.0.6"}}
	for dev, a := range map[string]cniproto.Attachment{"vethA": keep, "vethB": gone} {
		tag, err := cniproto.FormatTag(a)
		if err != nil {
			t.Fatal(err)
		}
		node.MustRun(t, "ip", "link", "set", dev, "alias", tag)
	}
	spool := t.TempDir()
	if _, err := cniproto.WriteSpool(spool, cniproto.Request{Kind: cniproto.KindDel, Key: &gone.Key}, timeNow()); err != nil {
		t.Fatal(err)
	}
	// A spooled ADD whose veth is gone (no tag anywhere) must not survive.
	ghost := cniproto.Attachment{Key: cniproto.Key{ContainerID: "c-ghost", IfName: "eth0"}, PodIPs: []string{"10.244.0.7"}}
	if _, err := cniproto.WriteSpool(spool, cniproto.Request{Kind: cniproto.KindAdd, Attachment: &ghost}, timeNow()); err != nil {
		t.Fatal(err)
	}
	r := New(Options{Log: quiet()})
	if err := node.Do(func() error { return r.Start(context.Background(), spool) }); err != nil {
		t.Fatal(err)
	}
	got := r.List(context.Background())
	if len(got) != 1 {
		t.Fatalf("registry %+v, want only c-keep", got)
	}
	g := got[0]
	if g.Key != keep.Key || g.HostVeth != "vethA" || g.HostIfIndex == 0 || g.PodUID != keep.PodUID || g.PodName != "web" || g.PodIPs[0] != "10.244.0.5" || g.Netns != pod.Path {
		t.Fatalf("rebuilt %+v", g)
	}
}

// TestAliasLimit pins the kernel's alias limit the tag format relies on.
func TestAliasLimit(t *testing.T) {
	nstest.RequireRoot(t)
	node := nstest.New(t, "alias")
	pod := nstest.New(t, "aliaspod")
	nstest.Veth(t, node, "vethL", pod, "eth0")
	long := make([]byte, cniproto.MaxTagLen)
	for i := range long {
		long[i] = 'x'
	}
	if _, err := node.Run("ip", "link", "set", "vethL", "alias", string(long)); err != nil {
		t.Fatalf("kernel refused a %d-byte alias: %v", len(long), err)
	}
	if _, err := node.Run("ip", "link", "set", "vethL", "alias", string(long)+"x"); err == nil {
		t.Fatalf("kernel accepted a %d-byte alias; MaxTagLen could be raised", len(long)+1)
	}
}

func timeNow() time.Time { return time.Now() }
