package cniplugin

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/sluicenet/sluice/pkg/cniproto"
)

// About is the plugin's "about" string for `sluice VERSION`-style output.
const About = "sluice: chained CNI plugin reporting Pod attachments to the sluice helper"

// Funcs returns the CNI verbs for skel.PluginMainFuncs.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{
		Add:    run((*Plugin).Add),
		Del:    run((*Plugin).Del),
		Check:  run((*Plugin).Check),
		GC:     run((*Plugin).GC),
		Status: run((*Plugin).Status),
	}
}

// run parses the config, builds a Plugin with the real socket client and
// netlink, and turns a panic into a CNI error so stdout stays valid JSON.
func run(verb func(*Plugin, *skel.CmdArgs) error) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = types.NewError(types.ErrInternal, "sluice plugin panic", fmt.Sprintf("%v\n%s", r, debug.Stack()))
			}
		}()
		c, err := ParseConfig(args.StdinData)
		if err != nil {
			return types.NewError(types.ErrDecodingFailure, "sluice: invalid configuration", err.Error())
		}
		log, closeLog := newLogger(c.LogFile)
		defer closeLog()
		log = log.With("cmd", os.Getenv("CNI_COMMAND"), "containerID", args.ContainerID, "ifname", args.IfName)
		p := &Plugin{
			Config:   c,
			Reporter: &cniproto.Client{Path: c.Socket, Timeout: c.Timeout},
			Kernel:   NewNetlink(),
			Log:      log,
			Now:      time.Now,
		}
		start := time.Now()
		if err := verb(p, args); err != nil {
			log.Error("failed", "err", err, "took", time.Since(start))
			return err
		}
		log.Debug("done", "took", time.Since(start))
		return nil
	}
}

// newLogger logs to logFile when set (appending), else to stderr. Never
// stdout: that is reserved for the result.
func newLogger(logFile string) (*slog.Logger, func()) {
	var w io.Writer = os.Stderr
	closer := func() {}
	if logFile != "" {
		if f, err := os.OpenFile(logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600); err == nil {
			w, closer = f, func() { f.Close() }
		}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: logLevel()})), closer
}

// logLevel is Info unless SLUICE_CNI_DEBUG is set in the runtime's
// environment (it reaches the plugin, which inherits it).
func logLevel() slog.Level {
	if os.Getenv("SLUICE_CNI_DEBUG") != "" {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}
