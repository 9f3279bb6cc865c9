//go:build tools

// Package containerd pins the container runtime of the real-Node test
// cluster: containerd v2.4.2, its runc shim and ctr, built from the Go
// module proxy. A module of its own, like ../kube, so that containerd's
// dependencies never enter the project's main go.mod.
package containerd

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
