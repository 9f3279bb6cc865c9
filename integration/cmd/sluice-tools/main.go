// Command sluice-tools builds every program the integration tests run
// (kube-apiserver, etcd, kubectl, CNI plugins; kubelet, containerd, runc
// and crictl for real Nodes) into .cache/bin and prints
// one line per tool with its path. `make tools` runs it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluicenet/sluice/integration/binaries"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, tool := range append(binaries.All, binaries.RealNode...) {
		path, err := binaries.Ensure(ctx, tool)
		if err != nil {
			fmt.Fprintf(os.Stderr, "sluice-tools: %s: %v\n", tool, err)
			os.Exit(1)
		}
		fmt.Printf("%-15s %s\n", tool, path)
	}
}
