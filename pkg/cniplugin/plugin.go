package cniplugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/sluicenet/sluice/pkg/cniproto"
)

// Reporter delivers one request to the helper and waits for its reply.
// *cniproto.Client is the real one.
type Reporter interface {
	Do(ctx context.Context, req cniproto.Request) (cniproto.Response, error)
}

// HostLink is a link in the caller's (the Node's) network namespace.
type HostLink struct {
	Name  string
	Index int
	Alias string
	// PeerNetNsID is the nsid (in the caller's namespace) of the namespace
	// holding the veth's peer, or -1; only TaggedLinks fills it.
	PeerNetNsID int
}

// Kernel is the little the plugin needs from netlink.
type Kernel interface {
	// HostPeer returns the caller-side peer of ifName inside netnsPath.
	HostPeer(netnsPath, ifName string) (HostLink, error)
	// SetAlias sets (or with "" clears) the alias of a caller-side link.
	SetAlias(index int, alias string) error
	// Tagged lists caller-side links whose alias is a sluice tag.
	Tagged() ([]HostLink, error)
}

// Plugin runs one CNI command. Build it with New, or fill it in tests.
type Plugin struct {
	Config   *Config
	Reporter Reporter
	Kernel   Kernel
	Log      *slog.Logger
	Now      func() time.Time
	// Stdout receives the result; nil means os.Stdout.
	Stdout io.Writer
}

// Add tags the host veth, reports the attachment and waits for the ack,
// then prints prevResult unchanged.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	c := p.Config
	if c.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig,
			"sluice must be chained after a primary plugin",
			"no prevResult: put the sluice entry last in a conflist, after the plugin that creates the Pod's interface")
	}
	prev, err := current.NewResultFromResult(c.PrevResult)
	if err != nil {
		return fmt.Errorf("convert prevResult: %w", err)
	}
	pa, err := parsePodArgs(args.Args)
	if err != nil {
		return err
	}
	t0 := time.Now()
	host, err := p.Kernel.HostPeer(args.Netns, args.IfName)
	if err != nil {
		return fmt.Errorf("find host veth of %s: %w", args.IfName, err)
	}
	tPeer := time.Since(t0)
	if err := crossCheck(host.Name, prev.Interfaces); err != nil {
		return err
	}
	a := cniproto.Attachment{
		Key:          cniproto.Key{ContainerID: args.ContainerID, IfName: args.IfName},
		Netns:        args.Netns,
		PodNamespace: string(pa.K8S_POD_NAMESPACE),
		PodName:      string(pa.K8S_POD_NAME),
		PodUID:       string(pa.K8S_POD_UID),
		PodIPs:       podIPs(prev),
		HostVeth:     host.Name,
		HostIfIndex:  host.Index,
	}
	tag, err := cniproto.FormatTag(a)
	if err != nil {
		return fmt.Errorf("build veth tag: %w", err)
	}
	t0 = time.Now()
	if err := p.Kernel.SetAlias(host.Index, tag); err != nil {
		return fmt.Errorf("tag host veth %s: %w", host.Name, err)
	}
	tTag := time.Since(t0)
	t0 = time.Now()
	if err := p.report(cniproto.Request{Kind: cniproto.KindAdd, Attachment: &a}); err != nil {
		return err
	}
	p.Log.Info("attachment added", "key", a.Key.String(), "veth", host.Name, "ips", a.PodIPs,
		"peerLookup", tPeer, "tag", tTag, "ack", time.Since(t0))
	r, err := c.PrevResult.GetAsVersion(c.CNIVersion)
	if err != nil {
		return err
	}
	out := p.Stdout
	if out == nil {
		out = os.Stdout
	}
	return r.PrintTo(out)
}

// Del clears the tag and reports the removal. It succeeds when the netns,
// the veth, prevResult or the helper are gone.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	key := cniproto.Key{ContainerID: args.ContainerID, IfName: args.IfName}
	links, err := p.Kernel.Tagged()
	if err != nil {
		p.Log.Warn("list tagged links", "err", err)
	}
	for _, l := range matching(links, key) {
		if err := p.Kernel.SetAlias(l.Index, ""); err != nil {
			p.Log.Warn("clear tag", "veth", l.Name, "err", err)
		}
	}
	if err := key.Validate(); err != nil {
		// Nothing a helper could hold; DEL still succeeds.
		p.Log.Warn("del with invalid key, nothing to report", "err", err)
		return nil
	}
	if err := p.report(cniproto.Request{Kind: cniproto.KindDel, Key: &key}); err != nil {
		p.Log.Warn("del not reported", "key", key.String(), "err", err)
	}
	return nil
}

// Check verifies the tag on the veth and that the helper knows the key.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	key := cniproto.Key{ContainerID: args.ContainerID, IfName: args.IfName}
	host, err := p.Kernel.HostPeer(args.Netns, args.IfName)
	if err != nil {
		return fmt.Errorf("find host veth of %s: %w", args.IfName, err)
	}
	links, err := p.Kernel.Tagged()
	if err != nil {
		return fmt.Errorf("list tagged links: %w", err)
	}
	tagged := false
	for _, l := range matching(links, key) {
		tagged = tagged || l.Index == host.Index
	}
	if !tagged {
		return fmt.Errorf("host veth %s of %s is not tagged", host.Name, key)
	}
	resp, err := p.call(cniproto.Request{Kind: cniproto.KindCheck, Key: &key})
	switch decide(cniproto.KindCheck, p.Config.FailClosed, err) {
	case outcomeDone:
		if !resp.Known {
			return fmt.Errorf("sluice helper does not know attachment %s", key)
		}
	case outcomeIgnore:
		p.Log.Warn("check: helper unreachable, failing open", "err", err)
	case outcomeRetry:
		return tryAgainLater(cniproto.KindCheck, err)
	default:
		return err
	}
	return nil
}

// GC sends the valid attachments; the helper forgets the others.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	valid := make([]cniproto.Key, 0, len(p.Config.ValidAttachments))
	for _, v := range p.Config.ValidAttachments {
		valid = append(valid, cniproto.Key{ContainerID: v.ContainerID, IfName: v.IfName})
	}
	resp, err := p.call(cniproto.Request{Kind: cniproto.KindGC, Valid: valid})
	switch decide(cniproto.KindGC, p.Config.FailClosed, err) {
	case outcomeDone:
		p.Log.Info("gc", "valid", len(valid), "removed", resp.Removed)
	case outcomeIgnore:
		p.Log.Warn("gc: helper unreachable, skipped", "err", err)
	case outcomeRetry:
		return tryAgainLater(cniproto.KindGC, err)
	default:
		return err
	}
	return nil
}

// Status is ready unless failClosed is set and the helper is unreachable:
// a failing STATUS marks the whole Node NotReady on containerd >= 2.0.1.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	_, err := p.call(cniproto.Request{Kind: cniproto.KindStatus})
	if err != nil && p.Config.FailClosed {
		return types.NewError(errPluginNotAvailable, "sluice helper unreachable", err.Error())
	}
	if err != nil {
		p.Log.Warn("status: helper unreachable, reporting ready (fail open)", "err", err)
	}
	return nil
}

func (p *Plugin) call(req cniproto.Request) (cniproto.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), p.Config.Timeout)
	defer cancel()
	return p.Reporter.Do(ctx, req)
}

// report sends an ADD or DEL and applies the failure policy.
func (p *Plugin) report(req cniproto.Request) error {
	_, err := p.call(req)
	switch decide(req.Kind, p.Config.FailClosed, err) {
	case outcomeDone:
		return nil
	case outcomeSpool:
		path, serr := cniproto.WriteSpool(p.Config.SpoolDir, req, p.Now())
		if serr != nil {
			return errors.Join(fmt.Errorf("spool %s: %w", req.Kind, serr), err)
		}
		p.Log.Warn("helper did not ack, spooled", "kind", req.Kind, "file", path, "err", err)
		return nil
	default:
		return tryAgainLater(req.Kind, err)
	}
}

func matching(links []HostLink, key cniproto.Key) []HostLink {
	var out []HostLink
	for _, l := range links {
		if a, err := cniproto.ParseTag(l.Alias); err == nil && a.Key == key {
			out = append(out, l)
		}
	}
	return out
}
