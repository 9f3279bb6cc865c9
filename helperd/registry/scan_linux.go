package registry

import (
	"context"
	"errors"
	"fmt"
	"os"

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
// current network namespace. The tag holds the identity; the link gives
// the veth name and index. The netns path is not in the kernel tag.
func ScanTagged() ([]Attachment, error) {
	links, err := cniplugin.TaggedLinks()
	if err != nil {
		return nil, err
	}
	var out []Attachment
	var errs []error
	for _, l := range links {
		a, err := cniproto.ParseTag(l.Alias)
		if err != nil {
			errs = append(errs, fmt.Errorf("link %s: %w", l.Name, err))
			continue
		}
		a.HostVeth, a.HostIfIndex = l.Name, l.Index
		out = append(out, a)
	}
	return out, errors.Join(errs...)
}

// Start fills the registry as a starting helper must: first the kernel's
// tags (the state that exists), then the spool (what happened while no
// helper listened, in order, so a spooled DEL wins over a tag). Finally it
// drops what the spool added but the kernel no longer has: the plugin tags
// the veth before it reports, so an untagged spooled ADD is a Pod whose
// veth is gone without a DEL reaching us.
func (r *Registry) Start(ctx context.Context, spoolDir string) error {
	found, serr := ScanTagged()
	rerr := r.Restore(ctx, found)
	n, perr := r.ReplaySpool(ctx, spoolDir)
	stale := untagged(r.List(ctx), found)
	for _, k := range stale {
		_ = r.Del(ctx, k)
	}
	r.opts.Log.Info("registry started", "tagged", len(found), "replayed", n, "stale", len(stale))
	return errors.Join(serr, rerr, perr)
}
