package registry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"

	"github.com/sluicenet/sluice/pkg/cniplugin"
	"github.com/sluicenet/sluice/pkg/cniproto"
)

func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove replayed spool file: %w", err)
	}
	return nil
}

// ScanTagged rebuilds attachments from the aliases of the host veths in the
// current network namespace. The tag holds the identity; the link gives the
// veth name and index, and its peer's nsid gives back the netns path when
// the namespace is bind-mounted under NetnsDirs.
func ScanTagged() ([]Attachment, error) {
	links, err := cniplugin.TaggedLinks()
	if err != nil || len(links) == 0 {
		return nil, err
	}
	paths := netnsPaths(NetnsDirs...)
	var out []Attachment
	var errs []error
	for _, l := range links {
		a, err := cniproto.ParseTag(l.Alias)
		if err != nil {
			errs = append(errs, fmt.Errorf("link %s: %w", l.Name, err))
			continue
		}
		a.HostVeth, a.HostIfIndex, a.Netns = l.Name, l.Index, paths[l.PeerNetNsID]
		out = append(out, a)
	}
	return out, errors.Join(errs...)
}

// NetnsDirs are where runtimes bind-mount Pod namespaces (containerd and
// CRI-O use /var/run/netns, which is /run/netns on most distributions).
var NetnsDirs = []string{"/run/netns", "/var/run/netns"}

// netnsPaths maps the nsids this namespace has for the named namespaces in
// dirs to their paths, so a tagged veth's peer nsid gives back the netns
// path the plugin was called with. Namespaces without an nsid are skipped.
func netnsPaths(dirs ...string) map[int]string {
	out := map[int]string{}
	for _, d := range dirs {
		ents, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range ents {
			p := filepath.Join(d, e.Name())
			f, err := os.Open(p)
			if err != nil {
				continue
			}
			id, err := netlink.GetNetNsIdByFd(int(f.Fd()))
			f.Close()
			if err != nil || id < 0 {
				continue
			}
			if _, seen := out[id]; !seen {
				out[id] = p
			}
		}
	}
	return out
}

// Start fills the registry as a starting helper must: first the kernel's
// tags (the state that exists), then the spool (what happened while no
// helper listened, in order, so a spooled DEL wins over a tag). Finally it
// drops what the spool added but the kernel no longer has: the plugin tags
// the veth before it reports, so an untagged spooled ADD is a Pod whose
// veth is gone without a DEL reaching us.
//
// The helper runs it in two steps, StartFromKernel before its agent's first
// reconcile (so the first plan has every Pod of this Node) and
// FinishStart once the agent runs (a spooled ADD waits for a reconcile).
func (r *Registry) Start(ctx context.Context, spoolDir string) error {
	found, err := r.StartFromKernel(ctx)
	return errors.Join(err, r.FinishStart(ctx, spoolDir, found))
}

// StartFromKernel records the kernel's tagged attachments and returns them
// for FinishStart.
func (r *Registry) StartFromKernel(ctx context.Context) ([]Attachment, error) {
	found, serr := ScanTagged()
	return found, errors.Join(serr, r.Restore(ctx, found))
}

// FinishStart replays the spool, then drops what it added that is not
// among found (the kernel's tagged attachments).
func (r *Registry) FinishStart(ctx context.Context, spoolDir string, found []Attachment) error {
	n, perr := r.ReplaySpool(ctx, spoolDir)
	stale := untagged(r.List(ctx), found)
	for _, k := range stale {
		_ = r.Del(ctx, k)
	}
	r.opts.Log.Info("registry started", "tagged", len(found), "replayed", n, "stale", len(stale))
	return perr
}
