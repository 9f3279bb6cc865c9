package cniplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/sluicenet/sluice/pkg/cniproto"
)

// InProcess runs the plugin's ADD, DEL and CHECK inside the helper, for
// invocations the C front (plugin/shim) forwards over the socket. It runs
// the very verbs the exec'd plugin runs, with the helper's registry as the
// Reporter, and answers Fallback for every request skel would not hand to
// a verb unchanged (missing or invalid variables, a configuration it
// cannot parse, an unsupported cniVersion, the Pod's netns being the
// helper's own): the exec'd plugin then prints its own error.
type InProcess struct {
	Handler cniproto.Handler
	// Socket is the path this helper listens on. A configuration that
	// names another (the front's pick of its "socket" is not exact; see
	// plugin/shim/front.h) falls back, so the plugin binary reports to
	// the helper the configuration names. "" accepts any.
	Socket string
	Log    *slog.Logger
	// Kernel builds the Kernel for a Pod netns given as a path the helper
	// can open; nil means netlink.
	Kernel func(netnsPath string) Kernel
	// Now defaults to time.Now.
	Now func() time.Time

	hostOnce sync.Once
	host     Netlink // with a netlink socket of the helper's own netns, kept open
}

var inProcessVerbs = map[string]func(*Plugin, *skel.CmdArgs) error{
	"ADD":   (*Plugin).Add,
	"DEL":   (*Plugin).Del,
	"CHECK": (*Plugin).Check,
}

// Exec implements cniproto.ExecHandler.
func (x *InProcess) Exec(ctx context.Context, req cniproto.ExecRequest) cniproto.ExecReply {
	cmd := req.Env["CNI_COMMAND"]
	verb, ok := inProcessVerbs[cmd]
	if !ok {
		return cniproto.ExecReply{Fallback: true}
	}
	// One parse serves both skel's checks and the verb. A configuration
	// ParseConfig refuses is one the plugin binary refuses too, in its
	// own words.
	c, err := ParseConfig(req.Stdin)
	if err != nil {
		x.log().Debug("exec falls back to the plugin binary", "cmd", cmd, "why", "invalid configuration", "err", err)
		return cniproto.ExecReply{Fallback: true}
	}
	if x.Socket != "" && filepath.Clean(c.Socket) != filepath.Clean(x.Socket) {
		x.log().Debug("exec falls back to the plugin binary", "cmd", cmd, "why", "the configuration names another socket", "socket", c.Socket)
		return cniproto.ExecReply{Fallback: true}
	}
	args, why := skelArgs(cmd, req, c.Name, c.CNIVersion)
	if why != "" {
		x.log().Debug("exec falls back to the plugin binary", "cmd", cmd, "why", why)
		return cniproto.ExecReply{Fallback: true}
	}
	var out bytes.Buffer
	err = x.run(ctx, verb, args, c, req, &out)
	if errors.Is(err, ErrNoNetnsAccess) {
		// Nothing was changed yet (the lookup comes first); the exec'd
		// plugin runs as root on the Node.
		x.log().Warn("cannot look into the Pod's netns, falling back to the plugin binary", "err", err)
		return cniproto.ExecReply{Fallback: true}
	}
	if err != nil {
		// What skel prints for a failed verb.
		var e *types.Error
		if !errors.As(err, &e) {
			e = types.NewError(types.ErrInternal, err.Error(), "")
		}
		b, merr := json.MarshalIndent(e, "", "    ")
		if merr != nil {
			return cniproto.ExecReply{Fallback: true}
		}
		return cniproto.ExecReply{ExitCode: 1, Stdout: b}
	}
	return cniproto.ExecReply{Stdout: out.Bytes()}
}

func (x *InProcess) log() *slog.Logger {
	if x.Log != nil {
		return x.Log
	}
	return slog.Default()
}

// run is the in-process twin of the exec'd plugin's run: build the Plugin
// for the parsed configuration, call the verb, turn a panic into an error.
func (x *InProcess) run(ctx context.Context, verb func(*Plugin, *skel.CmdArgs) error, args *skel.CmdArgs, c *Config, req cniproto.ExecRequest, out *bytes.Buffer) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = types.NewError(types.ErrInternal, "sluice plugin panic", fmt.Sprint(r))
		}
	}()
	kernelFor := x.Kernel
	if kernelFor == nil {
		// Opened on whatever thread runs this: all of the helper's threads
		// are in its own netns (nothing here enters another).
		x.hostOnce.Do(func() { x.host = NewNetlink() })
		kernelFor = func(p string) Kernel { return netnsAt{Netlink: x.host, path: p, pod: req.Netns} }
	}
	nsPath := ""
	if req.Netns != nil {
		// The front passed the Pod's netns open: reach it through our own
		// descriptor table, whatever mounts this helper sees.
		nsPath = fmt.Sprintf("/proc/self/fd/%d", req.Netns.Fd())
	}
	now := x.Now
	if now == nil {
		now = time.Now
	}
	log := x.log().With("cmd", req.Env["CNI_COMMAND"], "containerID", args.ContainerID, "ifname", args.IfName, "via", "helper")
	p := &Plugin{
		Config:   c,
		Reporter: direct{h: x.Handler},
		Kernel:   kernelFor(nsPath),
		Log:      log,
		Now:      now,
		Stdout:   out,
	}
	start := now()
	if err := verb(p, args); err != nil {
		log.Error("failed", "err", err, "took", time.Since(start))
		return err
	}
	log.Debug("done", "took", time.Since(start))
	return nil
}

// skelArgs builds the CmdArgs skel would, or says why skel would not call
// the verb with them (then the plugin binary must run, to say it itself).
// name and confVersion are the configuration's "name" and "cniVersion".
func skelArgs(cmd string, req cniproto.ExecRequest, name, confVersion string) (*skel.CmdArgs, string) {
	env := req.Env
	args := &skel.CmdArgs{
		ContainerID:   env["CNI_CONTAINERID"],
		Netns:         env["CNI_NETNS"],
		IfName:        env["CNI_IFNAME"],
		Args:          env["CNI_ARGS"],
		Path:          env["CNI_PATH"],
		NetnsOverride: env["CNI_NETNS_OVERRIDE"],
		StdinData:     req.Stdin,
	}
	if args.ContainerID == "" || args.IfName == "" || args.Path == "" {
		return nil, "a required variable is missing"
	}
	if utils.ValidateContainerID(args.ContainerID) != nil || utils.ValidateInterfaceName(args.IfName) != nil {
		return nil, "invalid container ID or interface name"
	}
	// What skel's validateConfig and version.ConfigDecoder check: the
	// name, and cniVersion ("" meaning 0.1.0).
	if name == "" || utils.ValidateNetworkName(name) != nil {
		return nil, "configuration skel refuses"
	}
	if confVersion == "" {
		confVersion = "0.1.0"
	}
	if (&version.Reconciler{}).Check(confVersion, version.All) != nil {
		return nil, "cniVersion not supported"
	}
	if cmd == "CHECK" {
		if ok, err := version.GreaterThanOrEqualTo(confVersion, "0.4.0"); err != nil || !ok {
			return nil, "cniVersion does not allow CHECK"
		}
	}
	if cmd == "ADD" || cmd == "CHECK" {
		if args.Netns == "" || req.Netns == nil {
			return nil, "no netns"
		}
	}
	// skel refuses (after the verb) a Pod netns that is the plugin's own.
	if req.Netns != nil && !netnsOverride(args.NetnsOverride) {
		same, err := sameNetns(req.Netns)
		if err != nil || same {
			return nil, "netns is the helper's own"
		}
	}
	return args, ""
}

func netnsOverride(v string) bool { return strings.ToUpper(v) == "TRUE" || v == "1" }

// ownNetns is this process's network namespace, read once: the helper
// never moves.
var ownNetns = sync.OnceValues(func() (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Stat("/proc/self/ns/net", &st)
	return st, err
})

// sameNetns tells whether f is the network namespace this process runs in.
func sameNetns(f *os.File) (bool, error) {
	var a unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &a); err != nil {
		return false, err
	}
	b, err := ownNetns()
	if err != nil {
		return false, err
	}
	return a.Dev == b.Dev && a.Ino == b.Ino, nil
}

// netnsAt is netlink with HostPeer looking into the Pod netns the front
// passed open (reachable as path) instead of the one the runtime named,
// which the helper may not see.
type netnsAt struct {
	Netlink
	path string
	pod  *os.File
}

func (k netnsAt) HostPeer(_, ifName string) (HostLink, error) {
	if k.pod == nil {
		return HostLink{}, errors.New("no netns")
	}
	return k.Netlink.hostPeer(netns.NsHandle(k.pod.Fd()), k.path, ifName)
}

// direct is the Reporter of an in-process run: the helper's own handler.
// A handler that does not answer within the plugin's timeout counts as
// unreachable, exactly as a socket read timing out does for the exec'd
// plugin, so fail-open behaves the same.
type direct struct{ h cniproto.Handler }

func (d direct) Do(ctx context.Context, req cniproto.Request) (cniproto.Response, error) {
	req.Version = cniproto.Version
	if err := req.Validate(); err != nil {
		return cniproto.Response{}, fmt.Errorf("invalid request: %w", err)
	}
	resp := cniproto.Dispatch(ctx, d.h, req)
	if ctx.Err() != nil {
		return cniproto.Response{}, &cniproto.UnreachableError{Err: fmt.Errorf("no %s reply: %w", req.Kind, ctx.Err())}
	}
	if !resp.OK {
		return resp, fmt.Errorf("helper refused %s: %s", req.Kind, resp.Error)
	}
	return resp, nil
}
