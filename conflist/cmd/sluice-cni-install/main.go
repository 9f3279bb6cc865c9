// Command sluice-cni-install copies the sluice CNI plugin into the CNI bin
// dir and chains it last in the primary network configuration; with --watch
// it keeps it there while the primary CNI rewrites its file. The DaemonSet
// runs it as an init container (one shot) and as a sidecar (--watch).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluicenet/sluice/conflist"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "sluice-cni-install:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("sluice-cni-install", flag.ContinueOnError)
	confDir := fs.String("cni-conf-dir", "/etc/cni/net.d", "CNI network configuration directory")
	binDir := fs.String("cni-bin-dir", "/opt/cni/bin", "CNI plugin binary directory")
	binary := fs.String("plugin-binary", "", "path of the sluice plugin binary to copy into --cni-bin-dir, with the sluice-full next to it if there is one (empty: do not copy)")
	watch := fs.Bool("watch", false, "keep running and re-append the entry when the primary CNI rewrites its file")
	uninstall := fs.Bool("uninstall", false, "remove the sluice entry instead of adding it")
	removeBinary := fs.Bool("remove-binary", false, "with --uninstall, also remove sluice and sluice-full from --cni-bin-dir")
	var e conflist.Entry
	fs.StringVar(&e.Socket, "socket", "", "helper socket written into the entry (empty: plugin default)")
	fs.StringVar(&e.Timeout, "timeout", "", "ADD timeout written into the entry, e.g. 1s (empty: plugin default)")
	fs.BoolVar(&e.FailClosed, "fail-closed", false, "fail ADD when the helper is unreachable")
	fs.StringVar(&e.LogFile, "log-file", "", "plugin log file written into the entry (empty: stderr)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := e.Validate(); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	if *uninstall {
		if _, err := conflist.Uninstall(*confDir, log); err != nil {
			return err
		}
		if *removeBinary {
			return conflist.RemoveBinary(*binDir)
		}
		return nil
	}
	if *binary != "" {
		dst, err := conflist.CopyBinary(*binary, *binDir)
		if err != nil {
			return err
		}
		log.Info("plugin binary installed", "path", dst)
	}
	if *watch {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		return conflist.Watch(ctx, conflist.WatchConfig{Dir: *confDir, Entry: e, Log: log})
	}
	_, _, err := conflist.Install(*confDir, e, log)
	if errors.Is(err, conflist.ErrNoPrimary) {
		return fmt.Errorf("%w (is the primary CNI installed yet? --watch waits for it)", err)
	}
	return err
}
