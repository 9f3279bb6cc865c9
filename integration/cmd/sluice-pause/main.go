// Command sluice-pause is the sandbox ("pause") process of the real-Node
// test cluster's Pods: it holds the Pod's namespaces open, reaps the
// children it inherits as PID 1, and exits on SIGINT or SIGTERM. It is the
// only file of the pause image, which the harness builds offline (no
// registry is reachable from the test machines).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
