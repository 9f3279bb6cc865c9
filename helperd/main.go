// Command sluice-helperd runs on every Node: it keeps the egress datapath,
// gossips liveness, holds egress IPs, and answers the CLI. With a CLI verb
// as its first argument (egresses, pods, datapath, explain) it queries the
// running helper instead.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/sluicenet/sluice/helperd/config"
	"github.com/sluicenet/sluice/helperd/daemon"
	"github.com/sluicenet/sluice/helperd/inspect"
)

// defaultMemoryLimit is the helper's soft heap limit (see main).
const defaultMemoryLimit = 100 << 20

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "egresses", "pods", "datapath", "explain":
			if err := inspect.RunCLI(ctx, os.Args[1], os.Args[2:], os.Stdout); err != nil {
				fmt.Fprintln(os.Stderr, "sluice-helperd:", err)
				os.Exit(1)
			}
			return
		case "help":
			fmt.Print(inspect.CLIUsage)
			return
		}
	}
	fs := flag.NewFlagSet("sluice-helperd", flag.ExitOnError)
	cfg := config.Bind(fs)
	_ = fs.Parse(os.Args[1:])
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "sluice-helperd: invalid configuration:\n%v\n", err)
		os.Exit(2)
	}
	// A soft memory limit: without one the Go heap may grow to twice its
	// live size between collections, which at 10,000 Pods is ~130 MiB of
	// RSS for ~60 MiB of live data. GOMEMLIMIT overrides it.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.Level()}))
	slog.SetDefault(log)
	if err := daemon.Run(ctx, cfg, log); err != nil {
		log.Error("sluice-helperd stopped", "err", err)
		os.Exit(1)
	}
}
