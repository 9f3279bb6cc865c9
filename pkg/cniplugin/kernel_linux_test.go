package cniplugin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/pkg/nstest"
)

// TestNetlinkKernel runs the real Kernel in a throwaway node namespace: the
// host peer of a Pod's veth, tagging, listing tags (over a dump of 300 more links, long enough
// to span several answers) and the kernel's errors.
func TestNetlinkKernel(t *testing.T) {
	nstest.RequireRoot(t)
	node, pod := nstest.New(t, "kn"), nstest.New(t, "kp")
	nstest.Veth(t, node, "vhost0", pod, "eth0")
	var batch strings.Builder
	for i := range 150 {
		fmt.Fprintf(&batch, "link add a%d type veth peer name b%d\n", i, i)
	}
	f := filepath.Join(t.TempDir(), "batch")
	if err := os.WriteFile(f, []byte(batch.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	node.MustRun(t, "ip", "-batch", f)

	err := node.Do(func() error {
		k := NewNetlink()
		if k.conn == nil {
			return errors.New("no netlink socket kept")
		}
		defer k.conn.Close()
		want, err := netlink.LinkByName("vhost0")
		if err != nil {
			return err
		}
		h, err := k.HostPeer(pod.Path, "eth0")
		if err != nil {
			return err
		}
		if h.Name != "vhost0" || h.Index != want.Attrs().Index {
			return fmt.Errorf("host peer %+v, want vhost0 #%d", h, want.Attrs().Index)
		}
		if _, err := k.HostPeer(pod.Path, "lo"); err == nil || !strings.Contains(err.Error(), "not a veth") {
			return fmt.Errorf("lo as the Pod's interface: %v, want 'not a veth'", err)
		}
		if _, err := k.HostPeer(pod.Path, "nope"); err == nil || !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("missing interface: %v, want ENODEV", err)
		}
		if _, err := k.conn.linkByIndex(1 << 30); !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("missing index: %v, want ENODEV", err)
		}

		if err := k.SetAlias(h.Index, "sluice:1:test"); err != nil {
			return err
		}
		tagged, err := k.Tagged()
		if err != nil {
			return err
		}
		if len(tagged) != 1 || tagged[0].Name != "vhost0" || tagged[0].Alias != "sluice:1:test" || tagged[0].PeerNetNsID < 0 {
			return fmt.Errorf("tagged %+v, want vhost0 alone with its peer's nsid", tagged)
		}
		links, err := k.conn.linkList()
		if err != nil {
			return err
		}
		if len(links) != 302 { // lo, vhost0 and 150 pairs
			return fmt.Errorf("dump gave %d links, want 302", len(links))
		}
		if err := k.SetAlias(h.Index, ""); err != nil {
			return err
		}
		if tagged, err = TaggedLinks(); err != nil || len(tagged) != 0 {
			return fmt.Errorf("after clearing, tagged %+v (%v), want none", tagged, err)
		}
		if err := k.SetAlias(1<<30, "x"); !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("alias on a missing index: %v, want ENODEV", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
