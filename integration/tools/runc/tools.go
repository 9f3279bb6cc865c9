//go:build tools

// Package runc pins the OCI runtime containerd starts containers with on
// the real-Node test cluster: runc v1.5.3, built from the Go module proxy.
package runc

import (
	_ "github.com/opencontainers/runc"
)
