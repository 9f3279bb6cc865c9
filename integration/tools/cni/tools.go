//go:build tools

// Package cni pins the CNI reference plugins (v1.9.1) and cnitool (v1.3.0)
// that the integration harness builds from the Go module proxy. It is a
// module of its own, like ../kube and ../etcd, so that main packages of
// other projects never enter the project's main go.mod.
package cni

import (
	_ "github.com/containernetworking/cni/cnitool"
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/bridge"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
	_ "github.com/containernetworking/plugins/plugins/main/ptp"
	_ "github.com/containernetworking/plugins/plugins/meta/portmap"
)
