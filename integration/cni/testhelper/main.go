// Command testhelper is a stand-in for sluice-helperd in the CNI chain
// tests: it rebuilds the attachment registry from the tagged veths of its
// network namespace and the spool, then serves the cniproto socket until
// SIGTERM. Only tests run it; the real helper wires the same registry.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sluicenet/sluice/helperd/registry"
	"github.com/sluicenet/sluice/pkg/cniplugin"
	"github.com/sluicenet/sluice/pkg/cniproto"
)

func main() {
	socket := flag.String("socket", cniproto.DefaultSocketPath, "socket to serve")
	spool := flag.String("spool", cniproto.DefaultSpoolDir, "spool directory to replay at start")
	addDelay := flag.Duration("add-delay", 0, "time each ADD takes before the ack (stands in for datapath programming)")
	flag.Parse()
	if err := run(*socket, *spool, *addDelay); err != nil {
		fmt.Fprintln(os.Stderr, "testhelper:", err)
		os.Exit(1)
	}
}

func run(socket, spool string, addDelay time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	reg := registry.New(registry.Options{Log: log, OnAdd: func(ctx context.Context, a registry.Attachment) error {
		if addDelay <= 0 {
			return nil // acks at once: no timer round in the runtime
		}
		select {
		case <-time.After(addDelay):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}})
	if err := reg.Start(ctx, spool); err != nil {
		log.Warn("start", "err", err)
	}
	l, err := cniproto.Listen(socket)
	if err != nil {
		return err
	}
	fmt.Println("ready") // the test waits for this line
	return (&cniproto.Server{Handler: reg, Exec: &cniplugin.InProcess{Handler: reg, Socket: socket, Log: log}, Log: log}).Serve(ctx, l)
}
