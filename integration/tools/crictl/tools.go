//go:build tools

// Package crictl pins crictl (cri-tools v1.37.0), which the real-Node tests
// use to read what each Node's containerd holds through the CRI.
package crictl

import (
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
)
