// Package api_test checks the Egress and ExternalIPPool API against a real
// kube-apiserver and etcd started by the test binary: the API's examples
// (package seed), the printer columns, schema validation, and the
// generated clients.
package api_test

import (
	"os"
	"testing"

	"github.com/sluicenet/sluice/integration/controlplane"
)

// cp is the control plane shared by every test of this package: starting
// one costs seconds, and the tests use distinct cluster-scoped names.
var cp *controlplane.ControlPlane

// TestMain starts etcd and kube-apiserver once and installs the CRDs.
// This package makes no network namespaces, so it needs no nstest.Sweep.
// With -short nothing is started and every test skips.
func TestMain(m *testing.M) {
	os.Exit(controlplane.RunShared(m, "api", func(shared *controlplane.ControlPlane) { cp = shared }))
}

// needServer skips under -short, where TestMain started nothing.
func needServer(t *testing.T) {
	t.Helper()
	if cp == nil {
		t.Skip("-short: no control plane")
	}
}
