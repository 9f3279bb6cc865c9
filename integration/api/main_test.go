// Package api_test checks the Egress and ExternalIPPool API against a real
// kube-apiserver and etcd started by the test binary: the API's examples
// (package seed), the printer columns, schema validation, and the
// generated clients.
package api_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/sluicenet/sluice/integration/controlplane"
)

// cp is the control plane shared by every test of this package: starting
// one costs seconds, and the tests use distinct cluster-scoped names.
var cp *controlplane.ControlPlane

// TestMain starts etcd and kube-apiserver once and installs the CRDs.
// This package makes no network namespaces, so it needs no nstest.Sweep.
// With -short nothing is started and every test skips.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if testingShort() {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "sluice-api-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cp, err = controlplane.Start(ctx, controlplane.Options{Dir: dir})
	if err != nil {
		fmt.Fprintf(os.Stderr, "start control plane: %v\netcd log:\n%s\nkube-apiserver log:\n%s\n", err,
			controlplane.Tail(dir+"/etcd.log", 40), controlplane.Tail(dir+"/kube-apiserver.log", 40))
		return 1
	}
	defer cp.Stop()
	if err := cp.InstallCRDs(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "kube-apiserver log (tail):\n%s\n", controlplane.Tail(cp.APIServerLog, 40))
	}
	return code
}

// testingShort reads -short before m.Run parses flags for the tests.
func testingShort() bool {
	for _, a := range os.Args[1:] {
		if a == "-test.short" || a == "-test.short=true" {
			return true
		}
	}
	return false
}

// needServer skips under -short, where TestMain started nothing.
func needServer(t *testing.T) {
	t.Helper()
	if cp == nil {
		t.Skip("-short: no control plane")
	}
}
