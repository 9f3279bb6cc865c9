//go:build tools

// Package kube pins the Kubernetes binaries that the integration harness
// builds from the Go module proxy at v1.37.2: kube-apiserver, kubectl, and
// for real Nodes the kubelet, kube-controller-manager and kube-scheduler.
// It is a module of its own so that k8s.io/kubernetes never enters the
// project's main go.mod.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
