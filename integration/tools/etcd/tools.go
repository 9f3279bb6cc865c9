//go:build tools

// Package etcd pins the etcd server that the integration harness builds
// from the Go module proxy. It is a module of its own for the same reason
// as ../kube.
package etcd

import _ "go.etcd.io/etcd/server/v3"
